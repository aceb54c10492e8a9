//! Prints one Lua script of the Redis store as the engine sends it:
//! `<LUA_DIR>/<NAME>.lua` after the helpers of `<LUA_DIR>/common.lua` it
//! calls, by the engine's own rule (`flashsale::store::with_helpers`).
//! `benches/redis_cost.sh` sends these bodies, for this tree's `lua/` and
//! for an older tree's, so the bench and the engine build them one way.
//!
//! Not part of the product.
//!
//! Run: `cargo run --quiet --example lua_body -- lua reserve`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [lua_dir, name] = args.as_slice() else {
        anyhow::bail!("usage: lua_body LUA_DIR NAME (prints LUA_DIR/NAME.lua with the helpers of LUA_DIR/common.lua it calls)");
    };
    let read = |file: &str| {
        let path = Path::new(lua_dir).join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let body = flashsale::store::with_helpers(&read("common.lua")?, &read(&format!("{name}.lua"))?);
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes())?;
    out.flush()?;
    Ok(())
}

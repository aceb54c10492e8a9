//! The Lua scripts of the Redis store (`lua/`, each prefixed with the
//! helpers of `lua/common.lua` it calls) and how they run: EVALSHA, and
//! when Redis has lost its script cache (a restart, a failover, `SCRIPT
//! FLUSH`) the script's body with EVAL, which cannot miss the cache however
//! often it is flushed. NOSCRIPT means the script did not run, so the
//! second send is safe.

use std::collections::HashSet;

use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, ErrorKind, RedisResult, Script, ServerErrorKind, ToRedisArgs, Value};

/// The helpers a script may call: one top-level `local` each.
const COMMON: &str = include_str!("../../lua/common.lua");

/// One script: its body and its SHA1 (held by `redis::Script`).
pub struct LuaScript {
    script: Script,
    body: String,
}

/// `lua/<name>.lua`, prefixed with the helpers of `lua/common.lua` it calls.
macro_rules! script {
    ($name:literal) => {
        LuaScript::new(include_str!(concat!("../../lua/", $name, ".lua")))
    };
}

impl LuaScript {
    fn new(script: &str) -> Self {
        let body = with_helpers(COMMON, script);
        Self {
            script: Script::new(&body),
            body,
        }
    }

    /// Starts a call with its first key.
    pub fn key(&self, key: impl ToRedisArgs) -> Invocation<'_> {
        let mut invocation = Invocation {
            script: self,
            keys: Cmd::new(),
            args: Cmd::new(),
        };
        invocation.key(key);
        invocation
    }
}

/// A call of a script: its keys and arguments, each list written into one
/// buffer (a `Cmd` used as an argument list, never sent) rather than an
/// allocation per argument: the reserve script takes three to six
/// arguments per reservation.
pub struct Invocation<'a> {
    script: &'a LuaScript,
    keys: Cmd,
    args: Cmd,
}

impl Invocation<'_> {
    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.arg(key);
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.arg(arg);
        self
    }

    /// EVALSHA; on NOSCRIPT, EVAL with the body (which also caches it again).
    pub async fn invoke(&self, conn: &mut impl ConnectionLike) -> RedisResult<Value> {
        match self
            .command("EVALSHA", self.script.script.get_hash())
            .query_async(conn)
            .await
        {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", &self.script.body)
                    .query_async(conn)
                    .await
            }
            reply => reply,
        }
    }

    fn command(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.args_iter().len());
        // Only `arg` writes these lists: every argument is a simple one.
        for arg in self.keys.args_iter().chain(self.args.args_iter()) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// The Lua scripts, one per state change plus the consistent reads.
pub struct Scripts {
    pub index_sale: LuaScript,
    pub create_sale: LuaScript,
    pub create_campaign: LuaScript,
    pub forget_campaign: LuaScript,
    pub unindex_campaign: LuaScript,
    pub update_campaign: LuaScript,
    pub sale_snapshot: LuaScript,
    pub update_sale: LuaScript,
    pub cancel_sale: LuaScript,
    pub reserve: LuaScript,
    pub cancel_order: LuaScript,
    pub take_cancel: LuaScript,
    pub give_back_cancel: LuaScript,
    pub pay_order: LuaScript,
    pub record_prepay: LuaScript,
    pub refund_order: LuaScript,
    pub settle_refund: LuaScript,
    pub end_refund_call: LuaScript,
    pub expire_orders: LuaScript,
    pub expire_order: LuaScript,
    pub postpone_expiry: LuaScript,
    pub join_reservations: LuaScript,
    pub accept_orders: LuaScript,
    pub ack_reservations: LuaScript,
    pub claim_deliveries: LuaScript,
    pub delivered: LuaScript,
    pub postpone_delivery: LuaScript,
    pub dead_letter: LuaScript,
    pub redrive_dead_letters: LuaScript,
    pub audit_sale: LuaScript,
    pub record_payment_exception: LuaScript,
    pub settle_payment_exception: LuaScript,
    pub open_sales: LuaScript,
    pub settle_sale: LuaScript,
    pub release_settle: LuaScript,
    pub forget_sale: LuaScript,
    pub queue_join: LuaScript,
    pub queue_poll: LuaScript,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            index_sale: script!("index_sale"),
            create_sale: script!("create_sale"),
            create_campaign: script!("create_campaign"),
            forget_campaign: script!("forget_campaign"),
            unindex_campaign: script!("unindex_campaign"),
            update_campaign: script!("update_campaign"),
            sale_snapshot: script!("sale_snapshot"),
            update_sale: script!("update_sale"),
            cancel_sale: script!("cancel_sale"),
            reserve: script!("reserve"),
            cancel_order: script!("cancel_order"),
            take_cancel: script!("take_cancel"),
            give_back_cancel: script!("give_back_cancel"),
            pay_order: script!("pay_order"),
            record_prepay: script!("record_prepay"),
            refund_order: script!("refund_order"),
            settle_refund: script!("settle_refund"),
            end_refund_call: script!("end_refund_call"),
            expire_orders: script!("expire_orders"),
            expire_order: script!("expire_order"),
            postpone_expiry: script!("postpone_expiry"),
            join_reservations: script!("join_reservations"),
            accept_orders: script!("accept_orders"),
            ack_reservations: script!("ack_reservations"),
            claim_deliveries: script!("claim_deliveries"),
            delivered: script!("delivered"),
            postpone_delivery: script!("postpone_delivery"),
            dead_letter: script!("dead_letter"),
            redrive_dead_letters: script!("redrive_dead_letters"),
            audit_sale: script!("audit_sale"),
            record_payment_exception: script!("record_payment_exception"),
            settle_payment_exception: script!("settle_payment_exception"),
            open_sales: script!("open_sales"),
            settle_sale: script!("settle_sale"),
            release_settle: script!("release_settle"),
            forget_sale: script!("forget_sale"),
            queue_join: script!("queue_join"),
            queue_poll: script!("queue_poll"),
        }
    }

    /// Every script.
    fn all(&self) -> [&LuaScript; 38] {
        [
            &self.index_sale,
            &self.create_sale,
            &self.create_campaign,
            &self.forget_campaign,
            &self.unindex_campaign,
            &self.update_campaign,
            &self.sale_snapshot,
            &self.update_sale,
            &self.cancel_sale,
            &self.reserve,
            &self.cancel_order,
            &self.take_cancel,
            &self.give_back_cancel,
            &self.pay_order,
            &self.record_prepay,
            &self.refund_order,
            &self.settle_refund,
            &self.end_refund_call,
            &self.expire_orders,
            &self.expire_order,
            &self.postpone_expiry,
            &self.join_reservations,
            &self.accept_orders,
            &self.ack_reservations,
            &self.claim_deliveries,
            &self.delivered,
            &self.postpone_delivery,
            &self.dead_letter,
            &self.redrive_dead_letters,
            &self.audit_sale,
            &self.record_payment_exception,
            &self.settle_payment_exception,
            &self.open_sales,
            &self.settle_sale,
            &self.release_settle,
            &self.forget_sale,
            &self.queue_join,
            &self.queue_poll,
        ]
    }

    /// Loads every script into the script cache (on a Cluster, every
    /// primary's), so the first calls need not send the bodies.
    pub async fn load(&self, conn: &mut impl ConnectionLike) -> RedisResult<()> {
        for script in self.all() {
            script.script.load_async(conn).await?;
        }
        Ok(())
    }

    /// Whether every script is in the script cache (on a Cluster, in every
    /// primary's): one SCRIPT EXISTS with their hashes.
    pub async fn all_cached(&self, conn: &mut impl ConnectionLike) -> RedisResult<bool> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("EXISTS");
        for script in self.all() {
            cmd.arg(script.script.get_hash());
        }
        let cached: Vec<bool> = cmd.query_async(conn).await?;
        Ok(cached.into_iter().all(|cached| cached))
    }
}

/// `script` after the definitions of `common` it names, and those they
/// name in turn, in `common`'s order. Redis runs a script's whole body on
/// every call, so every helper it carries is a closure made and collected
/// per call: all of `lua/common.lua` cost the reserve script about 14,000
/// instructions of Redis a call (`PER_CALL=1 bash benches/redis_cost.sh`),
/// where it calls one helper. A name is looked for as a whole identifier
/// anywhere in the script's text and its helpers', comments too: a helper
/// named only in a comment is carried for nothing, never one called left
/// out. A Lua `local` sees only what is defined above it, so a helper calls
/// only earlier ones, and one pass from the last definition up finds them
/// all. `common` is read line by line: a definition's comment lines start
/// with `--`, and it holds no `--[[` block comment (this tree's
/// `lua/common.lua` is checked for both by a test below). Public for
/// `examples/lua_body.rs`, which prints a script's body by this rule for
/// `benches/redis_cost.sh`, so the bench sends what the engine sends.
pub fn with_helpers(common: &str, script: &str) -> String {
    let definitions = definitions(common);
    let mut named: HashSet<&str> = identifiers(script).collect();
    let mut kept = vec![false; definitions.len()];
    for (i, definition) in definitions.iter().enumerate().rev() {
        if named.contains(definition.name) {
            kept[i] = true;
            named.extend(identifiers(definition.text));
        }
    }
    let mut body = String::with_capacity(common.len() + script.len());
    for (definition, kept) in definitions.iter().zip(kept) {
        if kept {
            body.push_str(definition.text);
        }
    }
    body.push_str(script);
    body
}

/// A top-level `local` of `lua/common.lua`: its name and its text, from
/// the comment lines right above it to the next definition's.
struct Definition<'a> {
    name: &'a str,
    text: &'a str,
}

/// The definitions of `common`, in order: each line that starts with
/// `local ` begins one (`local function name(` or `local NAME =`, one name
/// each); what comes before the first (the file's own comments) is left
/// out.
fn definitions(common: &str) -> Vec<Definition<'_>> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in common.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let mut starts = Vec::new();
    for (i, (_, line)) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("local ") {
            let rest = rest.strip_prefix("function ").unwrap_or(rest);
            let name = identifiers(rest).next().unwrap_or_default();
            let mut first = i;
            while first > 0 && lines[first - 1].1.starts_with("--") {
                first -= 1;
            }
            starts.push((lines[first].0, name));
        }
    }
    let ends = starts
        .iter()
        .skip(1)
        .map(|(start, _)| *start)
        .chain([common.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&(start, name), end)| Definition {
            name,
            text: &common[start..end],
        })
        .collect()
}

/// The identifiers (letters, digits and `_`, not starting with a digit)
/// in `text`, in order.
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELPERS: &str = "-- the file's own comment

-- a
local function a()
end

-- b calls a
-- (two comment lines)
local function b()
  return a()
end

local C = {'x'}

local function d()
  return C
end
";

    #[test]
    fn a_script_carries_the_helpers_it_names_and_theirs_in_order() {
        // Goal: what a script calls is defined above it, and nothing else is.
        assert_eq!(
            with_helpers(HELPERS, "return b()\n"),
            "-- a\nlocal function a()\nend\n\n-- b calls a\n-- (two comment lines)\n\
             local function b()\n  return a()\nend\n\nreturn b()\n"
        );
        assert_eq!(
            with_helpers(HELPERS, "return d()\n"),
            "local C = {'x'}\n\nlocal function d()\n  return C\nend\nreturn d()\n"
        );
        assert_eq!(with_helpers(HELPERS, "return bd()\n"), "return bd()\n");
    }

    #[test]
    fn every_line_of_common_lua_belongs_to_a_definition() {
        // Goal: no top-level statement of common.lua falls outside the
        // definitions a script can be given (it would run only with the
        // definition above it).
        let definitions = definitions(COMMON);
        let first = COMMON.find(definitions[0].text).unwrap();
        assert!(COMMON[..first]
            .lines()
            .all(|line| line.is_empty() || line.starts_with("--")));
        let joined: String = definitions.iter().map(|d| d.text).collect();
        assert_eq!(joined, COMMON[first..]);
        for line in COMMON.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with([' ', '-', '}'])
                    || line.starts_with("local ")
                    || line == "end",
                "a top-level line of common.lua that is not a definition: {line}"
            );
        }
        let names: HashSet<&str> = definitions.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), definitions.len(), "a helper defined twice");
        for definition in &definitions {
            let line = definition.text.lines().find(|l| l.starts_with("local "));
            let declared = line.unwrap().strip_prefix("local ").unwrap();
            let one_name = declared.starts_with("function ")
                || !declared.split('=').next().unwrap().contains(',');
            assert!(
                !definition.name.is_empty() && one_name,
                "a definition of one name each: {declared}"
            );
        }
        // Lua ends a line at a lone `\r` too, and a block comment may hide
        // a line that starts a definition: neither is read as Lua reads it.
        assert!(!COMMON.contains('\r') && !COMMON.contains("--[["));
    }

    #[test]
    fn the_reserve_script_carries_only_the_clock() {
        // Goal: the hot path's every call does not build the helpers it
        // never calls.
        let body = &Scripts::new().reserve.body;
        let helpers = body
            .strip_suffix(include_str!("../../lua/reserve.lua"))
            .unwrap();
        let names: Vec<&str> = definitions(helpers).iter().map(|d| d.name).collect();
        assert_eq!(names, ["now_ms"]);
    }
}

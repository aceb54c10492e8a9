//! `wechatpay-standin`: the WeChat Pay stand-in as a process of its own,
//! for the load suite (`loadtest/lib.sh` starts it before the engine).
//!
//! It listens on `--listen`, writes the engine's key files into `--dir`
//! (`merchant.pem`, `platform.pem`) and, last, `engine.env`: the engine's
//! `FLASHSALE_PAYMENTS` and `FLASHSALE_WECHATPAY_*` settings that point at
//! it, one `NAME='value'` a line, for a shell to source (all but the
//! notify URL, which names the engine's own address). Its presence means
//! the stand-in is serving. It runs until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use wechatpay_standin::{WeChatPayServer, APPID, MCHID, MERCHANT_SERIAL};

#[derive(Debug, Parser)]
#[command(
    name = "wechatpay-standin",
    about = "A WeChat Pay APIv3 stand-in for flashsale's load suite (127.0.0.1 only)"
)]
struct Args {
    /// Address to serve on; only 127.0.0.1 (the stand-in holds the keys
    /// that pay any order).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory (existing) for the engine's key files and `engine.env`.
    #[arg(long)]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen {}: the stand-in serves 127.0.0.1 only",
        args.listen
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", args.listen))?;
    let server = WeChatPayServer::start_on(listener, &args.dir)
        .with_context(|| format!("Failed to write the key files to {}", args.dir.display()))?;
    write_engine_env(&server, &args.dir)?;
    eprintln!("wechatpay-standin: WeChat Pay on {}", server.base_url);
    stopped().await?;
    Ok(())
}

/// Writes `engine.env` (see the crate docs), through a temporary file so a
/// reader never sees half of it.
fn write_engine_env(server: &WeChatPayServer, dir: &Path) -> anyhow::Result<()> {
    let path = |path: &Path| path.display().to_string();
    let settings = [
        ("FLASHSALE_PAYMENTS", "wechatpay".to_owned()),
        ("FLASHSALE_WECHATPAY_BASE_URL", server.base_url.clone()),
        ("FLASHSALE_WECHATPAY_MCHID", MCHID.to_owned()),
        ("FLASHSALE_WECHATPAY_APPID", APPID.to_owned()),
        (
            "FLASHSALE_WECHATPAY_MERCHANT_KEY",
            path(&server.merchant_key_path()),
        ),
        (
            "FLASHSALE_WECHATPAY_MERCHANT_SERIAL",
            MERCHANT_SERIAL.to_owned(),
        ),
        (
            "FLASHSALE_WECHATPAY_PLATFORM_KEY",
            path(server.platform_key_path()),
        ),
        ("FLASHSALE_WECHATPAY_APIV3_KEY", server.sim.apiv3_key()),
    ];
    let text: String = settings
        .iter()
        .map(|(name, value)| format!("{name}='{}'\n", value.replace('\'', r"'\''")))
        .collect();
    let partial = dir.join("engine.env.partial");
    std::fs::write(&partial, text).context("Failed to write engine.env")?;
    std::fs::rename(&partial, dir.join("engine.env")).context("Failed to write engine.env")
}

/// Until SIGTERM or ctrl-c.
async fn stopped() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("Failed to watch for SIGTERM")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("Failed to watch for ctrl-c"),
        _ = terminate.recv() => Ok(()),
    }
}

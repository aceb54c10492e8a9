//! The `flashsale` binary: parse settings, start logging, run the engine
//! until ctrl-c or SIGTERM (or mint a development token).

use clap::Parser;
use flashsale::config::{Cli, Command, Config};
use flashsale::{http, startup, telemetry, Application};
use mimalloc::MiMalloc;

/// The engine's allocator: mimalloc rather than glibc's malloc, which
/// took about a fifth of the instructions of a sold-out order request
/// (`docs/performance.md`, the first pass: 0.88x the instructions per
/// request with it).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => {
            let token = http::mint_shopper_token(args.secret.as_bytes(), &args.sub, args.ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Serve(config)) => serve(*config),
        None => serve(cli.config),
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init_tracing(config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(startup::shutdown_signal()).await
}

//! `flashsale-loadtest`: goose load suites for flashsale that say, after
//! every run, not only how fast the engine was but whether it kept its
//! promises.
//!
//! A run: create the suite's sales through the admin API, let goose run the
//! chosen scenario (`--scenarios spike|browse|buyandpay|mixed`), then read
//! the engine's stats and orders, print the verdict, add it to goose's JSON
//! report and exit non-zero on FAIL.
//!
//! # Layout
//! - `settings`: goose's options plus the suite's own (flags and `FLASHSALE_*` variables).
//! - `engine`: the engine's wire types and the admin client for set-up and verdict.
//! - `shoppers`: which shopper each goose user is; their JWTs.
//! - `scenarios`: the goose scenarios and what shoppers do in each.
//! - `tally`: what the answers meant, shared by every user.
//! - `verdict`: the checks, the PASS/FAIL block, the JSON report.

mod engine;
mod scenarios;
mod settings;
mod shoppers;
mod tally;
mod verdict;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use clap::Parser;
use goose::{GooseAttack, GooseError};
use rand::distr::{Alphanumeric, SampleString};

use crate::engine::{Engine, NewSale};
use crate::scenarios::Suite;
use crate::settings::Settings;
use crate::shoppers::Shoppers;
use crate::tally::Tally;
use crate::verdict::SuiteSale;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let settings = Settings::parse();
    if settings.goose.scenarios_list {
        // Lists the scenarios and exits: no engine needed.
        scenarios::register(GooseAttack::initialize_with_config(settings.goose).map_err(goose)?)
            .execute()
            .await
            .map_err(goose)?;
        return Ok(ExitCode::SUCCESS);
    }
    let host =
        settings.goose.host.clone().context(
            "-H/--host is required: the engine's address, e.g. -H http://127.0.0.1:8080",
        )?;
    let engine = Engine::new(&host, &settings.admin_token)?;
    let run = Alphanumeric.sample_string(&mut rand::rng(), 6);
    let sales = set_up(&engine, &settings, &run).await?;
    let tally = Arc::new(Tally::default());
    scenarios::install(Suite {
        spike_sale: sales[0].id.clone(),
        buy_sale: sales[1].id.clone(),
        shoppers: Shoppers::new(
            &settings.user_token_secret,
            settings.users_per_shopper,
            &run,
        )?,
        tally: Arc::clone(&tally),
        think_ms_max: settings.think_ms_max,
        abandon_percent: settings.abandon_percent,
        patience: Duration::from_secs(settings.patience_secs),
    })?;

    let report_files = settings.goose.report_file.clone();
    scenarios::register(GooseAttack::initialize_with_config(settings.goose).map_err(goose)?)
        .execute()
        .await
        .map_err(goose)?;

    let verdict = verdict::judge(&engine, &sales, &tally.snapshot()).await?;
    verdict.print();
    for path in report_files.iter().filter(|path| path.ends_with(".json")) {
        verdict.merge_into(path)?;
    }
    Ok(if verdict.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// goose's errors, with the details their `Display` leaves out.
fn goose(err: GooseError) -> anyhow::Error {
    anyhow::anyhow!("goose: {err:?}")
}

/// Creates the suite's two sales: the spike sale, opening
/// `start_in_secs` from now, and the buy-and-pay sale, open now with a
/// short payment timeout. `browse` reads both.
async fn set_up(engine: &Engine, settings: &Settings, run: &str) -> anyhow::Result<[SuiteSale; 2]> {
    let now = Utc::now();
    let spike_start = now + chrono::Duration::seconds(settings.start_in_secs.into());
    let open_for = chrono::Duration::seconds(settings.sale_secs.into());
    let time = |at: chrono::DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let sale = |name: &str, starts_at| NewSale {
        sku: format!("LT-{}-{run}", name.to_uppercase()),
        title: format!("loadtest {name} {run}"),
        price_cents: 19900,
        stock_total: settings.stock,
        per_user_limit: settings.per_user_limit,
        starts_at: time(starts_at),
        ends_at: time(starts_at + open_for),
        payment_timeout_secs: settings.payment_timeout_secs,
    };
    let spike_id = engine.create_sale(&sale("spike", spike_start)).await?;
    let buy_id = engine
        .create_sale(&sale("buy-and-pay", now - chrono::Duration::seconds(1)))
        .await?;
    println!(
        "flashsale-loadtest: run {run}: spike sale {spike_id} opens at {}; buy-and-pay sale {buy_id} is open",
        time(spike_start)
    );
    Ok([
        SuiteSale {
            name: "spike",
            id: spike_id,
        },
        SuiteSale {
            name: "buy-and-pay",
            id: buy_id,
        },
    ])
}

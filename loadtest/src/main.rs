//! `flashsale-loadtest`: goose load suites for flashsale that say, after
//! every run, not only how fast the engine was but whether it kept its
//! promises.
//!
//! A run: create the suite's sales through the admin API (or join existing
//! ones, `--spike-sale`, `--buy-sale`), let goose run the chosen scenario
//! (`--scenarios spike|browse|buyandpay|mixed|queue|campaign`), then read the engine's
//! stats and orders, print the verdict, add it to goose's JSON report and
//! exit non-zero on FAIL.
//!
//! Buy-and-pay shoppers (`buyandpay`, and those of `mixed`) pay through the
//! engine's simulated pay route (`--payments simulated`, the default) or
//! through WeChat Pay (`--payments wechatpay`): they ask the engine for
//! the `wx.requestPayment` parameters (`/wechatpay`) and pay at the WeChat
//! Pay stand-in (`--wechatpay-standin`, the `wechatpay-standin` binary the
//! engine is configured against), which notifies the engine; abandoned
//! orders expire through the engine's close. The verdict then also reads
//! the stand-in's ledger.
//!
//! A bigger load is split across generators, on one machine or several, by
//! creating the sales once (`--create-sales-only`, which prints their ids
//! and exits) and letting every generator join them. Each run's shoppers
//! are its own (see `run` in [`main`]); each verdict judges its own
//! shoppers' orders against the shared sales' stats.
//!
//! # Layout
//! - `settings`: goose's options plus the suite's own (flags and `FLASHSALE_*` variables).
//! - `engine`: the engine's wire types and the admin client for set-up and verdict.
//! - `shoppers`: which shopper each goose user is; their JWTs.
//! - `scenarios`: the goose scenarios and what shoppers do in each.
//! - `tally`: what the answers meant, shared by every user.
//! - `verdict`: the checks, the PASS/FAIL block, the JSON report.

mod engine;
mod fairness;
mod scenarios;
mod settings;
mod shoppers;
mod tally;
mod verdict;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use goose::{GooseAttack, GooseError};
use rand::distr::{Alphanumeric, SampleString};

use crate::engine::{Engine, NewAdmission, NewCampaign, NewItem, NewRound, NewSale};
use crate::scenarios::Suite;
use crate::settings::Payments;
use crate::settings::Settings;
use crate::shoppers::Shoppers;
use crate::tally::Tally;
use crate::verdict::{QueuedSale, SuiteCampaign, SuiteSale, WeChatPayRun, BUY_AND_PAY};

/// The queued sale's pre-queue opens this long before its creation.
const PREQUEUE_LEAD_SECS: u32 = 60;
/// With WeChat Pay, the verdict waits this long past the payment timeout
/// for the run's prepaid orders to settle: closes retried with backoff,
/// notifications posted again.
const WECHATPAY_SETTLE_GRACE_SECS: u64 = 60;

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
    // Names this run's shoppers (`lt-{run}-{n}`), so generators sharing a
    // sale never play the same shopper: one of 62^6 values from the OS-seeded
    // generator, under one chance in ten million that two of a hundred
    // generators draw the same. The engine keys idempotency by shopper, so
    // equal `Idempotency-Key`s of two runs do not meet either.
    let run = Alphanumeric.sample_string(&mut rand::rng(), 6);
    let (sales, described) = set_up(&engine, &settings, &run).await?;
    if settings.create_sales_only {
        // Only the ids on stdout, for `export $(...)`.
        eprintln!("{described}");
        println!(
            "FLASHSALE_LOADTEST_SPIKE_SALE={} FLASHSALE_LOADTEST_BUY_SALE={}",
            sales[0].id, sales[1].id
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{described}");
    let runs = |scenario: &str| {
        settings
            .goose
            .scenarios
            .as_ref()
            .is_some_and(|scenarios| scenarios.active.iter().any(|name| name == scenario))
    };
    let queued = if runs("queue") {
        Some(set_up_queue(&engine, &settings, &run).await?)
    } else {
        None
    };
    let wechatpay_standin = match settings.payments {
        Payments::Wechatpay => settings.wechatpay_standin.clone(),
        Payments::Simulated => None,
    };
    // `mixed` has campaign shoppers among its roles.
    let campaign = if runs("campaign") || runs("mixed") {
        Some(set_up_campaign(&engine, &settings, &run).await?)
    } else {
        None
    };
    let tally = Arc::new(Tally::default());
    scenarios::install(Suite {
        spike_sale: sales[0].id.clone(),
        buy_sale: sales[1].id.clone(),
        queue_sale: queued.as_ref().map(|queued| queued.id.clone()),
        campaign: campaign.as_ref().map(|campaign| campaign.id.clone()),
        shoppers: Shoppers::new(
            &settings.user_token_secret,
            settings.users_per_shopper,
            &run,
        )?,
        tally: Arc::clone(&tally),
        think_ms_max: settings.think_ms_max,
        abandon_percent: settings.abandon_percent,
        wechatpay_standin: wechatpay_standin.clone(),
        patience: Duration::from_secs(settings.patience_secs),
    })?;

    let report_files = settings.goose.report_file.clone();
    let settle_within =
        Duration::from_secs(u64::from(settings.payment_timeout_secs) + WECHATPAY_SETTLE_GRACE_SECS);
    scenarios::register(GooseAttack::initialize_with_config(settings.goose).map_err(goose)?)
        .execute()
        .await
        .map_err(goose)?;

    let mut judged: Vec<SuiteSale> = sales.into();
    if let Some(queued) = &queued {
        judged.push(SuiteSale {
            name: "queue",
            id: queued.id.clone(),
            shared: false,
        });
    }
    if let Some(campaign) = &campaign {
        judged.extend(campaign.rounds.iter().flatten().map(|id| SuiteSale {
            name: "campaign",
            id: id.clone(),
            shared: false,
        }));
    }
    let wechatpay = wechatpay_standin.as_deref().map(|standin| WeChatPayRun {
        standin,
        settle_within,
    });
    let verdict = verdict::judge(
        &engine,
        &judged,
        queued.as_ref(),
        wechatpay.as_ref(),
        campaign.as_ref(),
        &tally.snapshot(),
    )
    .await?;
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

/// The suite's two sales, each created or, when its id is given
/// (`--spike-sale`, `--buy-sale`), joined; and a line saying which they
/// are. A created spike sale opens `start_in_secs` from now, a created
/// buy-and-pay sale at once, with the settings' payment timeout. `browse`
/// reads both.
async fn set_up(
    engine: &Engine,
    settings: &Settings,
    run: &str,
) -> anyhow::Result<([SuiteSale; 2], String)> {
    let now = Utc::now();
    let spike_start = now + chrono::Duration::seconds(settings.start_in_secs.into());
    let sale = |name: &str, starts_at: DateTime<Utc>| new_sale(settings, run, name, starts_at);
    // Both joins first: a wrong id fails the run before it creates anything.
    let joined_spike = match &settings.spike_sale {
        Some(id) => Some(join(engine, "spike", "--spike-sale", id).await?),
        None => None,
    };
    let joined_buy = match &settings.buy_sale {
        Some(id) => Some(join(engine, BUY_AND_PAY, "--buy-sale", id).await?),
        None => None,
    };
    let (spike, spike_line) = match joined_spike {
        Some(joined) => joined,
        None => create(engine, "spike", &sale("spike", spike_start)).await?,
    };
    let buy_start = now - chrono::Duration::seconds(1);
    let (buy, buy_line) = match joined_buy {
        Some(joined) => joined,
        None => create(engine, BUY_AND_PAY, &sale(BUY_AND_PAY, buy_start)).await?,
    };
    Ok((
        [spike, buy],
        format!("flashsale-loadtest: run {run}: {spike_line}; {buy_line}"),
    ))
}

/// The `queue` scenario's sale, created by every run (a waiting room's
/// verdict needs all its joiners): queued, opening with the spike sale
/// (`--start-in-secs` from now), its pre-queue open from creation; and the
/// commitment to its shuffle's seed, read before anyone joins.
async fn set_up_queue(
    engine: &Engine,
    settings: &Settings,
    run: &str,
) -> anyhow::Result<QueuedSale> {
    let starts_at = Utc::now() + chrono::Duration::seconds(settings.start_in_secs.into());
    let new = NewSale {
        admission: Some(NewAdmission {
            mode: "queue",
            prequeue_opens_secs: settings.start_in_secs.saturating_add(PREQUEUE_LEAD_SECS),
            admit_per_sec: settings.queue_admit_per_sec,
        }),
        ..new_sale(settings, run, "queue", starts_at)
    };
    let (sale, line) = create(engine, "queue", &new).await?;
    println!("{line}");
    let commitment = engine
        .public_sale(&sale.id)
        .await?
        .admission
        .and_then(|admission| admission.seed_sha256)
        .context("the queued sale shows no seed_sha256")?;
    Ok(QueuedSale {
        id: sale.id,
        commitment,
    })
}

/// The campaign of `campaign` and of `mixed`'s campaign shoppers, created
/// by every run of either as the settings shape it: `--campaign-rounds`
/// rounds of `--campaign-round-secs`
/// each, as long apart, the first opening `--start-in-secs` from now;
/// `--campaign-items` items of `--campaign-stock` units per round, each
/// limited to 1 per shopper, under the campaign's limits per round and in
/// total.
async fn set_up_campaign(
    engine: &Engine,
    settings: &Settings,
    run: &str,
) -> anyhow::Result<SuiteCampaign> {
    let start = Utc::now() + chrono::Duration::seconds(settings.start_in_secs.into());
    let round_secs = i64::from(settings.campaign_round_secs);
    let new = NewCampaign {
        title: format!("loadtest campaign {run}"),
        rounds: (0..i64::from(settings.campaign_rounds))
            .map(|round| {
                let starts_at = start + chrono::Duration::seconds(2 * round * round_secs);
                NewRound {
                    starts_at: time(starts_at),
                    ends_at: time(starts_at + chrono::Duration::seconds(round_secs)),
                }
            })
            .collect(),
        items: (0..settings.campaign_items)
            .map(|item| NewItem {
                sku: format!("LT-CAMPAIGN-{run}-{item}"),
                title: format!("loadtest campaign item {item} {run}"),
                price_cents: 9900,
                original_price_cents: 19900,
                stock_per_round: settings.campaign_stock,
                per_user_limit: 1,
            })
            .collect(),
        per_user_limit_per_round: settings.campaign_limit_per_round,
        per_user_limit_total: Some(settings.campaign_limit_total).filter(|total| *total > 0),
        payment_timeout_secs: settings.payment_timeout_secs,
    };
    let created = engine.create_campaign(&new).await?;
    println!(
        "campaign {} (created): {} rounds x {} items, first round opens at {}",
        created.id,
        created.rounds.len(),
        new.items.len(),
        time(start)
    );
    Ok(SuiteCampaign {
        id: created.id,
        per_round: created.per_user_limit_per_round,
        total: created.per_user_limit_total,
        rounds: created
            .rounds
            .into_iter()
            .map(|round| round.items.into_iter().map(|item| item.sale_id).collect())
            .collect(),
    })
}

/// The open sale `name` of the run `run`, from `starts_at` for `--sale-secs`,
/// shaped by the settings.
fn new_sale(settings: &Settings, run: &str, name: &str, starts_at: DateTime<Utc>) -> NewSale {
    NewSale {
        sku: format!("LT-{}-{run}", name.to_uppercase()),
        title: format!("loadtest {name} {run}"),
        price_cents: 19900,
        stock_total: settings.stock,
        per_user_limit: settings.per_user_limit,
        starts_at: time(starts_at),
        ends_at: time(starts_at + chrono::Duration::seconds(settings.sale_secs.into())),
        payment_timeout_secs: settings.payment_timeout_secs,
        admission: None,
    }
}

/// Creates the sale `name`.
async fn create(
    engine: &Engine,
    name: &'static str,
    new: &NewSale,
) -> anyhow::Result<(SuiteSale, String)> {
    let id = engine.create_sale(new).await?;
    let line = format!("{name} sale {id} (created) opens at {}", new.starts_at);
    let shared = false;
    Ok((SuiteSale { name, id, shared }, line))
}

/// Joins the existing sale `id`, given with `flag`, as the sale `name`.
async fn join(
    engine: &Engine,
    name: &'static str,
    flag: &str,
    id: &str,
) -> anyhow::Result<(SuiteSale, String)> {
    let sale = engine
        .find_sale(id)
        .await
        .with_context(|| format!("{flag} {id}: Failed to read the sale"))?
        .with_context(|| {
            format!("{flag} {id}: the engine has no such sale (create it with --create-sales-only)")
        })?;
    let line = format!(
        "{name} sale {id} (joined, shared; {}) opens at {}",
        sale.status,
        time(sale.starts_at)
    );
    let shared = true;
    Ok((
        SuiteSale {
            name,
            id: sale.id,
            shared,
        },
        line,
    ))
}

/// A time as the admin API takes it.
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

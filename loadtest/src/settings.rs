//! The command line: every goose option (flattened from
//! [`GooseConfiguration`]) plus the suite's own, each of those also an
//! environment variable. Owns nothing else.
//!
//! `--stock`, `--per-user-limit`, `--start-in-secs`, `--sale-secs`,
//! `--payment-timeout-secs` and `--queue-admit-per-sec` shape the sales a
//! run creates, the `--campaign-*` options the campaign the `campaign`
//! scenario races for; a joined sale (`--spike-sale`, `--buy-sale`) keeps its own.

use clap::{Parser, ValueEnum};
use goose::config::GooseConfiguration;

/// How buy-and-pay shoppers pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payments {
    /// The engine's `POST /api/v1/orders/{id}/pay` (`FLASHSALE_PAYMENTS=simulated`).
    Simulated,
    /// `POST /api/v1/orders/{id}/wechatpay`, then the WeChat Pay stand-in
    /// pays by notification (`FLASHSALE_PAYMENTS=wechatpay` against
    /// `--wechatpay-standin`).
    Wechatpay,
}

/// goose's options, plus how the suite sets up its sales and shoppers.
#[derive(Debug, Parser)]
#[command(
    name = "flashsale-loadtest",
    about = "goose load suites for flashsale; the engine's promises are checked after every run",
    after_help = "Scenarios (--scenarios, goose's machine names): spike, browse, buyandpay, mixed, queue, campaign.\n\
                  Buy-and-pay shoppers pay through the engine's simulated pay route, or with \
                  --payments wechatpay through the WeChat Pay stand-in (--wechatpay-standin).\n\
                  Several generators against one engine: create the sales once with \
                  --create-sales-only, then give each generator --spike-sale and --buy-sale."
)]
pub struct Settings {
    #[command(flatten)]
    pub goose: GooseConfiguration,

    /// Bearer token of the engine's admin API (the engine's own variable).
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    /// HS256 secret the engine verifies shopper tokens with (the engine's own variable).
    #[arg(long, env = "FLASHSALE_USER_TOKEN_SECRET", hide_env_values = true)]
    pub user_token_secret: String,

    /// Join this spike sale instead of creating one: a sale that already
    /// exists, shared with other generators (`--create-sales-only` makes
    /// one). Its stock, limit and times are its own.
    #[arg(long, env = "FLASHSALE_LOADTEST_SPIKE_SALE", value_name = "ID",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub spike_sale: Option<String>,

    /// Join this buy-and-pay sale instead of creating one, as `--spike-sale`.
    #[arg(long, env = "FLASHSALE_LOADTEST_BUY_SALE", value_name = "ID",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub buy_sale: Option<String>,

    /// Create the suite's two sales, print their ids as one line of
    /// `FLASHSALE_LOADTEST_SPIKE_SALE=... FLASHSALE_LOADTEST_BUY_SALE=...`
    /// (for `export`) and exit without attacking: shared sales for several
    /// generators to join.
    #[arg(long, env = "FLASHSALE_LOADTEST_CREATE_SALES_ONLY",
          conflicts_with_all = ["spike_sale", "buy_sale"])]
    pub create_sales_only: bool,

    /// Units on sale in each of the suite's sales.
    #[arg(long, env = "FLASHSALE_LOADTEST_STOCK", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub stock: u32,

    /// The sales' per-user limit (units one shopper may hold).
    #[arg(long, env = "FLASHSALE_LOADTEST_PER_USER_LIMIT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub per_user_limit: u32,

    /// Goose users that share one shopper (1: every user is its own shopper;
    /// more exercises the per-user limit).
    #[arg(long, env = "FLASHSALE_LOADTEST_USERS_PER_SHOPPER", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub users_per_shopper: u32,

    /// The spike sale opens this long after set-up; users wait for it by
    /// the engine's `server_time`. Leave time for goose to start every user.
    #[arg(long, env = "FLASHSALE_LOADTEST_START_IN_SECS", default_value_t = 5)]
    pub start_in_secs: u32,

    /// `queue`: shoppers admitted per second from the queued sale's line
    /// (the sale's `admission.admit_per_sec`).
    #[arg(long, env = "FLASHSALE_LOADTEST_QUEUE_ADMIT_PER_SEC", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_admit_per_sec: u32,

    /// How long each sale stays open.
    #[arg(long, env = "FLASHSALE_LOADTEST_SALE_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sale_secs: u32,

    /// The sales' `payment_timeout_secs`: abandoned buy-and-pay orders
    /// expire and their stock comes back after it. The engine refuses values
    /// below its `FLASHSALE_PAYMENT_TIMEOUT_MIN_SECS` (default 60).
    #[arg(long, env = "FLASHSALE_LOADTEST_PAYMENT_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=7200))]
    pub payment_timeout_secs: u32,

    /// Share of buy-and-pay shoppers, in percent, who abandon their order
    /// instead of paying.
    #[arg(long, env = "FLASHSALE_LOADTEST_ABANDON_PERCENT", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub abandon_percent: u32,

    /// Longest think time, in milliseconds, between an order and its payment.
    #[arg(long, env = "FLASHSALE_LOADTEST_THINK_MS_MAX", default_value_t = 2000)]
    pub think_ms_max: u64,

    /// How buy-and-pay shoppers pay: `simulated` (the engine's pay route)
    /// or `wechatpay` (prepay with the engine, pay at the WeChat Pay
    /// stand-in, which notifies the engine; abandoned orders expire through
    /// the close).
    #[arg(long, env = "FLASHSALE_LOADTEST_PAYMENTS", value_enum, default_value_t = Payments::Simulated)]
    pub payments: Payments,

    /// The WeChat Pay stand-in's address (`wechatpay-standin`, which the
    /// engine must be configured against), e.g. `http://127.0.0.1:9090`.
    /// Required with `--payments wechatpay`.
    #[arg(
        long,
        env = "FLASHSALE_LOADTEST_WECHATPAY_STANDIN",
        value_name = "URL",
        required_if_eq("payments", "wechatpay")
    )]
    pub wechatpay_standin: Option<String>,

    /// How long, in seconds, a buy-and-pay shopper who found the sale sold
    /// out keeps polling for returned stock before leaving.
    #[arg(long, env = "FLASHSALE_LOADTEST_PATIENCE_SECS", default_value_t = 90)]
    pub patience_secs: u64,

    /// `campaign`: rounds of the campaign the run creates; the first opens
    /// `--start-in-secs` from now.
    #[arg(long, env = "FLASHSALE_LOADTEST_CAMPAIGN_ROUNDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=24))]
    pub campaign_rounds: u32,

    /// `campaign`: how long each round lasts; the next opens as long after
    /// it ends.
    #[arg(long, env = "FLASHSALE_LOADTEST_CAMPAIGN_ROUND_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub campaign_round_secs: u32,

    /// `campaign`: items offered in every round.
    #[arg(long, env = "FLASHSALE_LOADTEST_CAMPAIGN_ITEMS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub campaign_items: u32,

    /// `campaign`: units of each item in each round.
    #[arg(long, env = "FLASHSALE_LOADTEST_CAMPAIGN_STOCK", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub campaign_stock: u32,

    /// `campaign`: units one shopper may hold across the items of one round
    /// (`per_user_limit_per_round`; each item's own limit is 1).
    #[arg(long, env = "FLASHSALE_LOADTEST_CAMPAIGN_LIMIT_PER_ROUND", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub campaign_limit_per_round: u32,

    /// `campaign`: units one shopper may hold across the whole campaign
    /// (`per_user_limit_total`; 0: none).
    #[arg(
        long,
        env = "FLASHSALE_LOADTEST_CAMPAIGN_LIMIT_TOTAL",
        default_value_t = 3
    )]
    pub campaign_limit_total: u32,
}

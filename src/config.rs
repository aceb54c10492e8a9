//! Every setting: a CLI flag and a `FLASHSALE_*` environment variable (the
//! flag wins), with its default, validated once at start. `flashsale --help`
//! lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::{RedisTarget, ShopperBounds};

#[derive(Debug, Parser)]
#[command(
    name = "flashsale",
    version,
    about = "A flash-sale and seckill engine",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, the default command.
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine (the default).
    Serve(Box<Config>),
    /// Mint a shopper token for development and demos (in production the
    /// merchant's login service issues them).
    Token(TokenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How payments reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaymentMode {
    /// Verified WeChat Pay v3 notifications.
    Wechatpay,
    /// `POST /api/v1/orders/{id}/pay` pays at once: demos and load suites.
    Simulated,
}

/// What Redis's persistence must guarantee before the engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisDurability {
    /// Every acknowledged change is on Redis's disk: refuse any other
    /// setting.
    Always,
    /// Start on any setting, warning what a crash would lose.
    Warn,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP server binds.
    #[arg(long, env = "FLASHSALE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Connections the kernel may hold completed but not yet accepted (the
    /// listen backlog; the kernel caps it at net.core.somaxconn). A flash
    /// sale's opening connects thousands of shoppers within a second; a
    /// connection that finds the queue full is retried by the client's TCP
    /// seconds later.
    #[arg(long, env = "FLASHSALE_LISTEN_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub listen_backlog: u32,

    /// Most connections the engine holds open at once. Past it a new
    /// connection's request is answered 503 `overloaded` (with
    /// `Retry-After`; the ops routes are still answered) and the
    /// connection closed; at most an eighth as
    /// many such answers are in progress at once, and past that too a
    /// connection is closed unanswered. Keep it below the process's limit
    /// of open files.
    #[arg(long, env = "FLASHSALE_MAX_CONNECTIONS", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// `redis://host:port/db`, or with --redis-cluster a comma-separated list
    /// of node URLs. Unset: the embedded in-memory store. May carry a
    /// password (`redis://:password@host:port/db`): logs show it redacted.
    #[arg(long, env = "FLASHSALE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Treat FLASHSALE_REDIS_URL as the nodes of a Redis Cluster.
    #[arg(long, env = "FLASHSALE_REDIS_CLUSTER", default_value_t = false)]
    pub redis_cluster: bool,

    /// Bearer token of the admin API, at least 32 bytes (the engine refuses
    /// to start with a shorter one). Unset: a random one is generated and
    /// logged once at start.
    #[arg(long, env = "FLASHSALE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Failed admin authentications one client address may make per
    /// minute (at once, then one every 60 s / this); past it the address
    /// gets 429 `rate_limited` on the admin API, whatever token it sends,
    /// until its Retry-After has passed.
    #[arg(long, env = "FLASHSALE_ADMIN_AUTH_FAILURES_PER_MIN", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub admin_auth_failures_per_min: u32,

    /// HS256 secret that verifies shoppers' tokens. Unset: a random one is
    /// generated and logged once at start (development only).
    #[arg(long, env = "FLASHSALE_USER_TOKEN_SECRET", hide_env_values = true)]
    pub user_token_secret: Option<String>,

    /// The `aud` claim shoppers' tokens must carry (the login service's
    /// audience for this engine). Unset: `aud` is not checked, and a token
    /// with one is accepted.
    #[arg(long, env = "FLASHSALE_USER_TOKEN_AUDIENCE")]
    pub user_token_audience: Option<String>,

    /// Longest lifetime of a shopper token accepted, in seconds: `exp - iat`
    /// (`exp - now` for a token without `iat`); a longer-lived token is
    /// refused with 401. Unset: no cap.
    #[arg(long, env = "FLASHSALE_USER_TOKEN_LIFETIME_MAX_SECS",
          value_parser = clap::value_parser!(i64).range(1..=31_622_400))]
    pub user_token_lifetime_max_secs: Option<i64>,

    /// Shopper tokens kept verified, per generation of the cache (it holds
    /// at most twice this many): a token seen again (a shopper retrying)
    /// skips its signature check until its `exp`. `0` turns the cache off.
    #[arg(long, env = "FLASHSALE_USER_TOKEN_CACHE", default_value_t = 32_768,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub user_token_cache: u64,

    /// Bound on every Redis connect and command, in milliseconds; past it the
    /// call fails with 503 `unavailable`. Also how often the stock-return
    /// subscription PINGs its node.
    #[arg(long, env = "FLASHSALE_STORE_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_timeout_ms: u64,

    /// Longest a reservation may wait for its sale's actor and the store, in
    /// milliseconds; past it the client gets 503 `unavailable` and may retry
    /// with the same Idempotency-Key.
    #[arg(long, env = "FLASHSALE_RESERVE_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub reserve_timeout_ms: u64,

    /// Largest request body accepted, in bytes (413 `payload_too_large` past it).
    #[arg(long, env = "FLASHSALE_BODY_LIMIT_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub body_limit_bytes: u64,

    /// Threads (actix arbiters) that run the per-sale inventory actors.
    #[arg(long, env = "FLASHSALE_ACTOR_ARBITERS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub actor_arbiters: u64,

    /// Reservations that may wait in one sale actor's mailbox (its inbox,
    /// not yet taken in); past it the engine answers 503 `overloaded` at
    /// once.
    #[arg(long, env = "FLASHSALE_ACTOR_MAILBOX", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub actor_mailbox: u64,

    /// Reservations one sale actor may hold waiting for, or in, its store
    /// calls; past it the engine answers 503 `overloaded`.
    #[arg(long, env = "FLASHSALE_ACTOR_IN_FLIGHT_MAX", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub actor_in_flight_max: u64,

    /// Reservations one sale actor sends in one store call: what queued
    /// while its previous call was in flight, oldest first.
    #[arg(long, env = "FLASHSALE_ACTOR_BATCH_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub actor_batch_max: u64,

    /// Store calls one sale actor may have in flight at once. 1 batches the
    /// most; with `FLASHSALE_ACTOR_BATCH_MAX=1` and more calls, each
    /// reservation is its own call (the unbatched baseline of the benches).
    #[arg(long, env = "FLASHSALE_ACTOR_STORE_CALLS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub actor_store_calls: u64,

    /// Shoppers at their limit that one sale actor remembers (answering
    /// `limit_exceeded` from memory); past it the store decides.
    #[arg(long, env = "FLASHSALE_ACTOR_KNOWN_SHOPPERS_MAX", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub actor_known_shoppers_max: u64,

    /// How often a sale actor re-reads its sale from the store (changes made
    /// through another engine node, stock returned elsewhere), in milliseconds.
    #[arg(long, env = "FLASHSALE_SALE_REFRESH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub sale_refresh_ms: u64,

    /// Seconds without a reservation after which a sale's actor stops (it
    /// starts again on the next request).
    #[arg(long, env = "FLASHSALE_ACTOR_IDLE_STOP_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub actor_idle_stop_secs: u64,

    /// Margin around a sale's start and end inside which actors leave every
    /// decision to the store, in milliseconds: it covers steps of this
    /// machine's clock between two refreshes.
    #[arg(long, env = "FLASHSALE_CLOCK_MARGIN_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub clock_margin_ms: u64,

    /// Orders per second accepted on the order route overall (protects the
    /// store); 0 turns the limit off. Past it: 429 `rate_limited`.
    #[arg(long, env = "FLASHSALE_RATE_GLOBAL_PER_SEC", default_value_t = 50_000)]
    pub rate_global_per_sec: u32,

    /// Burst above the overall rate (requests at once); 0: the rate.
    #[arg(long, env = "FLASHSALE_RATE_GLOBAL_BURST", default_value_t = 0)]
    pub rate_global_burst: u32,

    /// Order requests per second one shopper (the token's `sub`) may make;
    /// 0 turns the limit off.
    #[arg(long, env = "FLASHSALE_RATE_USER_PER_SEC", default_value_t = 5)]
    pub rate_user_per_sec: u32,

    /// Burst above the per-shopper rate; 0: the rate.
    #[arg(long, env = "FLASHSALE_RATE_USER_BURST", default_value_t = 10)]
    pub rate_user_burst: u32,

    /// Order requests per second one client address may make; 0 turns the
    /// limit off (a benchmark from one address).
    #[arg(long, env = "FLASHSALE_RATE_IP_PER_SEC", default_value_t = 200)]
    pub rate_ip_per_sec: u32,

    /// Burst above the per-address rate; 0: the rate.
    #[arg(long, env = "FLASHSALE_RATE_IP_BURST", default_value_t = 400)]
    pub rate_ip_burst: u32,

    /// Take the client address from the last entry of X-Forwarded-For (set
    /// only behind your own proxy, which appends it: clients can forge the
    /// header).
    #[arg(
        long,
        env = "FLASHSALE_RATE_TRUST_FORWARDED_FOR",
        default_value_t = false
    )]
    pub rate_trust_forwarded_for: bool,

    /// How often the per-shopper and per-address limiters forget keys that
    /// are back to a full burst, in milliseconds (bounds their memory); the
    /// node then also forgets the sale views and campaign pages nobody
    /// asked it for in 10 minutes.
    #[arg(long, env = "FLASHSALE_RATE_PRUNE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub rate_prune_ms: u64,

    /// How long a purchase token stays valid, in seconds.
    #[arg(long, env = "FLASHSALE_PURCHASE_TOKEN_TTL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub purchase_token_ttl_secs: i64,

    /// The most places one queued sale's waiting room gives: every join
    /// takes one, kept in the line once taken (a shopper whose admission
    /// lapsed and who joins again takes a second); past it, joining is 503
    /// `overloaded`.
    #[arg(long, env = "FLASHSALE_QUEUE_SIZE_MAX", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub queue_size_max: u64,

    /// Admissions outstanding (admitted, token neither used nor expired)
    /// may reach this percentage of the units remaining (in units of the
    /// sale's `per_user_limit`, rounded up).
    #[arg(long, env = "FLASHSALE_QUEUE_HEADROOM_PCT", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(100..=1000))]
    pub queue_headroom_pct: u64,

    /// The shortest `poll_after_ms` the waiting room advises, in
    /// milliseconds: one shopper reaches the store at most once per this
    /// interval on each engine node.
    #[arg(long, env = "FLASHSALE_QUEUE_POLL_MS_MIN", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub queue_poll_ms_min: u64,

    /// The longest `poll_after_ms` the waiting room advises, in
    /// milliseconds.
    #[arg(long, env = "FLASHSALE_QUEUE_POLL_MS_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub queue_poll_ms_max: u64,

    /// The most waiting-room shoppers whose last answer one engine node
    /// remembers; a new poller past it gets 429 `rate_limited`.
    #[arg(long, env = "FLASHSALE_QUEUE_POLLERS_MAX", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub queue_pollers_max: u64,

    /// Requests the server handles at once (ops routes aside); past it 503
    /// `overloaded` at once.
    #[arg(long, env = "FLASHSALE_MAX_IN_FLIGHT", default_value_t = 8192,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,

    /// WeChat Pay notifications the server handles at once, apart from
    /// `FLASHSALE_MAX_IN_FLIGHT` (their bodies are read before anything
    /// can check them, so clients sending them slowly never take the
    /// shoppers' places); past it 503 `overloaded` at once, and WeChat Pay
    /// notifies again later.
    #[arg(long, env = "FLASHSALE_NOTIFY_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub notify_max_in_flight: u64,

    /// Longest a client may take to send a request's headers, in
    /// milliseconds; past it the connection is closed (slow-loris).
    #[arg(long, env = "FLASHSALE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub header_read_timeout_ms: u64,

    /// Longest a kept-alive connection waits for the first byte of its next
    /// request, in milliseconds; past it the engine closes the connection.
    /// Shoppers polling a sale's countdown keep their connection between
    /// polls.
    #[arg(long, env = "FLASHSALE_IDLE_TIMEOUT_MS", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub idle_timeout_ms: u64,

    /// How long each engine node serves a sale's public view (`GET
    /// /api/v1/sales/{id}`, the countdown shoppers poll) before reading it
    /// from the store again, in milliseconds; also its Cache-Control
    /// max-age. Status and server_time stay exact; remaining may be this old.
    #[arg(long, env = "FLASHSALE_SALE_POLL_CACHE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub sale_poll_cache_ms: u64,

    /// How long each engine node serves a campaign's seckill page (`GET
    /// /api/v1/campaigns/{id}`) and the list of campaigns before reading
    /// them from the store again, in milliseconds; also their
    /// Cache-Control max-age. Statuses and server_time stay exact;
    /// remaining may be this old.
    #[arg(long, env = "FLASHSALE_CAMPAIGN_PAGE_CACHE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub campaign_page_cache_ms: u64,

    /// How often a sale watched in the merchant console is read and its
    /// live feed (`GET /admin/v1/sales/{id}/events`) ticks, in
    /// milliseconds: one store read per tick per watched sale, however many
    /// consoles watch it.
    #[arg(long, env = "FLASHSALE_CONSOLE_EVENTS_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub console_events_ms: u64,

    /// Live feeds (`GET /admin/v1/sales/{id}/events` streams) open at once
    /// on this node, which also bounds the sales read for them; past it 503
    /// `overloaded`.
    #[arg(long, env = "FLASHSALE_CONSOLE_WATCHERS_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub console_watchers_max: u64,

    /// Longest any request may take, in milliseconds; past it 503
    /// `unavailable`.
    #[arg(long, env = "FLASHSALE_REQUEST_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,

    /// `wechatpay` (verify WeChat Pay notifications; needs the platform key
    /// and APIv3 key) or `simulated` (a pay route for demos and load
    /// suites). Unset: `simulated` with the embedded store, else `wechatpay`.
    #[arg(long, env = "FLASHSALE_PAYMENTS", value_enum)]
    pub payments: Option<PaymentMode>,

    /// WeChat Pay's platform public key(s), which sign notifications and
    /// API answers: one PEM file (an RSA public key, or a platform
    /// certificate; used whatever serial a message names), or
    /// a directory of `<serial>.pem` files (a platform certificate's serial
    /// or a `PUB_KEY_ID_...`), re-read when a message names a serial not
    /// loaded and the directory changed: add the new key there to rotate.
    #[arg(long, env = "FLASHSALE_WECHATPAY_PLATFORM_KEY")]
    pub wechatpay_platform_key: Option<PathBuf>,

    /// The WeChat Pay merchant id (mchid). Required with wechatpay.
    #[arg(long, env = "FLASHSALE_WECHATPAY_MCHID")]
    pub wechatpay_mchid: Option<String>,

    /// The Mini Program's AppID, bound to the merchant id. Required with
    /// wechatpay.
    #[arg(long, env = "FLASHSALE_WECHATPAY_APPID")]
    pub wechatpay_appid: Option<String>,

    /// Path of the merchant API private key (PEM, `apiclient_key.pem`) that
    /// signs calls to WeChat Pay and `paySign`. Required with wechatpay.
    #[arg(long, env = "FLASHSALE_WECHATPAY_MERCHANT_KEY")]
    pub wechatpay_merchant_key: Option<PathBuf>,

    /// The serial of the merchant API certificate (sent as `serial_no`).
    /// Required with wechatpay.
    #[arg(long, env = "FLASHSALE_WECHATPAY_MERCHANT_SERIAL")]
    pub wechatpay_merchant_serial: Option<String>,

    /// The public URL of this engine's notify route
    /// (`https://.../api/v1/payments/wechatpay/notify`), given to WeChat
    /// Pay with every order. Required with wechatpay.
    #[arg(long, env = "FLASHSALE_WECHATPAY_NOTIFY_URL")]
    pub wechatpay_notify_url: Option<String>,

    /// WeChat Pay's API host (tests point it at a stand-in).
    #[arg(long, env = "FLASHSALE_WECHATPAY_BASE_URL",
          default_value = crate::payments::wechatpay::client::DEFAULT_BASE_URL)]
    pub wechatpay_base_url: String,

    /// Longest one call to WeChat Pay may take, in milliseconds; past it
    /// the call counts as WeChat Pay unavailable.
    #[arg(long, env = "FLASHSALE_WECHATPAY_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub wechatpay_timeout_ms: u64,

    /// Wait before closing an order's WeChat Pay order again after a close
    /// failed (WeChat Pay unreachable), in milliseconds; it doubles with
    /// every failure. Meanwhile the order stays held.
    #[arg(long, env = "FLASHSALE_WECHATPAY_CLOSE_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub wechatpay_close_backoff_ms: u64,

    /// Longest wait between two closes of one WeChat Pay order, in
    /// milliseconds.
    #[arg(long, env = "FLASHSALE_WECHATPAY_CLOSE_BACKOFF_MAX_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub wechatpay_close_backoff_max_ms: u64,

    /// Most WeChat Pay closes of held orders (unpaid past their deadline)
    /// in flight at once on this node; they run beside the order service's
    /// passes, and an order past the bound waits for a place, up to a
    /// quarter of its hold (one WeChat Pay timeout), then for a later pass.
    #[arg(long, env = "FLASHSALE_WECHATPAY_CLOSE_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub wechatpay_close_concurrency: u64,

    /// Wait before asking WeChat Pay again about a refund it holds as
    /// `PROCESSING`, in milliseconds; it doubles with every attempt of the
    /// refund's outbox entry. Meanwhile the order stays `refunding` (or
    /// `refund_required`) unless the refund's notification settles it.
    #[arg(long, env = "FLASHSALE_WECHATPAY_REFUND_QUERY_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub wechatpay_refund_query_ms: u64,

    /// Longest wait between two queries of one processing refund, in
    /// milliseconds.
    #[arg(long, env = "FLASHSALE_WECHATPAY_REFUND_QUERY_MAX_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub wechatpay_refund_query_max_ms: u64,

    /// The merchant's WeChat Pay APIv3 key (32 characters), which decrypts
    /// notifications.
    #[arg(long, env = "FLASHSALE_WECHATPAY_APIV3_KEY", hide_env_values = true)]
    pub wechatpay_apiv3_key: Option<String>,

    /// Shortest payment_timeout_secs a merchant may set. Lower it only for
    /// demos, load suites and tests that need orders to expire quickly.
    #[arg(long, env = "FLASHSALE_PAYMENT_TIMEOUT_MIN_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub payment_timeout_min_secs: u64,

    /// The merchant's webhook: every order is POSTed there (signed) when the
    /// order service takes it, and again when it is paid. Unset: no hand-off.
    /// Logs show it without user-info and query (which may carry a token).
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_URL", hide_env_values = true)]
    pub order_webhook_url: Option<String>,

    /// HMAC-SHA256 secret that signs webhook bodies (X-Flashsale-Signature);
    /// required with FLASHSALE_ORDER_WEBHOOK_URL.
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_SECRET", hide_env_values = true)]
    pub order_webhook_secret: Option<String>,

    /// Longest one webhook call may take, in milliseconds.
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub order_webhook_timeout_ms: u64,

    /// Wait before the first retry of a failed webhook call, in
    /// milliseconds; it doubles with every failure.
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_BACKOFF_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub order_webhook_backoff_ms: u64,

    /// Longest wait between two webhook attempts, in milliseconds.
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_BACKOFF_MAX_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub order_webhook_backoff_max_ms: u64,

    /// How often the order service looks for new reservations, expired
    /// payment deadlines and due webhook calls when idle, in milliseconds.
    #[arg(long, env = "FLASHSALE_ORDER_SWEEP_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub order_sweep_ms: u64,

    /// Most stream entries (each the orders of one reserve call), expiries
    /// and webhook calls the order service takes per sale in one pass;
    /// orders are accepted about this many at a time (whole entries).
    #[arg(long, env = "FLASHSALE_ORDER_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub order_batch: u64,

    /// Reservations read by an order-service consumer that has not
    /// acknowledged them for this long (it died) are taken over by another,
    /// in milliseconds.
    #[arg(long, env = "FLASHSALE_ORDER_CLAIM_IDLE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub order_claim_idle_ms: u64,

    /// How long a settled sale's records (its orders, counts, dead letters)
    /// are kept after its payment window closed, in seconds; then the order
    /// service deletes every key of it. Export them before with
    /// `GET /admin/v1/sales/{id}/orders`. Default 30 days.
    #[arg(long, env = "FLASHSALE_RETENTION_SECS", default_value_t = 2_592_000,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub retention_secs: u64,

    /// Log format.
    #[arg(long, env = "FLASHSALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most webhook calls in flight at once in this process; due hand-offs
    /// beyond it wait in the outbox (unleased) for a free slot.
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub order_webhook_concurrency: u64,

    /// Attempts of one webhook hand-off before it moves to its sale's dead
    /// letters (a 4xx answer other than 408 and 429 moves it at once).
    #[arg(long, env = "FLASHSALE_ORDER_WEBHOOK_ATTEMPTS_MAX", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub order_webhook_attempts_max: u32,

    /// The most orders one shopper may cancel in one sale; past it the
    /// shopper's cancels are refused (409 conflict) and so are their
    /// reservations in that sale (409 limit_exceeded).
    #[arg(long, env = "FLASHSALE_CANCELS_PER_SHOPPER_MAX",
          default_value_t = crate::store::CANCELS_PER_SHOPPER_DEFAULT,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub cancels_per_shopper_max: i64,

    /// The most orders one shopper may let expire unpaid in one sale; past
    /// it their reservations in that sale are refused (409 limit_exceeded).
    #[arg(long, env = "FLASHSALE_EXPIRIES_PER_SHOPPER_MAX",
          default_value_t = crate::store::EXPIRIES_PER_SHOPPER_DEFAULT,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub expiries_per_shopper_max: i64,

    /// Finished sales (ended, cancelled) one node remembers, to answer
    /// their orders `ended` without an actor or a store read.
    #[arg(long, env = "FLASHSALE_FINISHED_SALES_MAX",
          default_value_t = crate::inventory::FINISHED_SALES_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub finished_sales_max: u64,

    /// What the engine asks of Redis's persistence before it serves.
    /// `always`: refuse to start unless every Redis node (each Cluster
    /// primary) writes and fsyncs every change to its AOF before answering
    /// (`appendonly yes`, `appendfsync always`). `warn`: start on any
    /// setting, warning what a crash would lose of what was acknowledged.
    #[arg(long, env = "FLASHSALE_REDIS_DURABILITY", value_enum,
          default_value_t = RedisDurability::Always)]
    pub redis_durability: RedisDurability,
}

impl Config {
    /// The Redis to use, or `None` for the embedded store.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        let url = self.redis_url.as_deref()?.trim();
        if url.is_empty() {
            return None;
        }
        Some(if self.redis_cluster {
            RedisTarget::Cluster(
                url.split(',')
                    .map(|node| node.trim().to_owned())
                    .filter(|node| !node.is_empty())
                    .collect(),
            )
        } else {
            RedisTarget::Standalone(url.to_owned())
        })
    }

    /// What one shopper may leave unpaid in one sale.
    pub fn shopper_bounds(&self) -> ShopperBounds {
        ShopperBounds {
            cancels: self.cancels_per_shopper_max,
            expiries: self.expiries_per_shopper_max,
        }
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    /// The payment mode, with its default for the store in use.
    pub fn payment_mode(&self) -> PaymentMode {
        self.payments.unwrap_or(if self.redis_target().is_some() {
            PaymentMode::Wechatpay
        } else {
            PaymentMode::Simulated
        })
    }

    /// The defaults, listening on a free port of 127.0.0.1 with the embedded
    /// store: a starting point for tests and benches.
    pub fn for_tests() -> Self {
        let mut config = Cli::parse_from(["flashsale"]).config;
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The shopper's id (the token's `sub`).
    #[arg(long)]
    pub sub: String,
    /// Lifetime of the token, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: i64,
    /// The secret the engine verifies with.
    #[arg(long, env = "FLASHSALE_USER_TOKEN_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_flags_parse() {
        let cli = Cli::parse_from(["flashsale", "--listen", "127.0.0.1:9000"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.config.listen.port(), 9000);
        let cli = Cli::parse_from(["flashsale", "serve", "--redis-url", "redis://127.0.0.1:1/"]);
        let Some(Command::Serve(config)) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(
            config.redis_target(),
            Some(RedisTarget::Standalone("redis://127.0.0.1:1/".into()))
        );
    }

    #[test]
    fn cluster_urls_split_on_commas() {
        let cli = Cli::parse_from([
            "flashsale",
            "--redis-cluster",
            "--redis-url",
            "redis://a:1, redis://b:2",
        ]);
        assert_eq!(
            cli.config.redis_target(),
            Some(RedisTarget::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
    }

    #[test]
    fn the_redis_target_shows_no_password() {
        let standalone = RedisTarget::Standalone("redis://:hunter2@redis.internal:6379/0".into());
        assert_eq!(
            format!("{standalone:?}"),
            r#"Standalone("redis://***@redis.internal:6379/0")"#
        );
        let cluster =
            RedisTarget::Cluster(vec!["redis://u:hunter2@a:1".into(), "redis://b:2".into()]);
        assert_eq!(
            format!("{cluster:?}"),
            r#"Cluster(["redis://***@a:1", "redis://b:2"])"#
        );
    }

    #[test]
    fn payments_default_to_simulated_only_on_the_embedded_store() {
        let embedded = Cli::parse_from(["flashsale"]).config;
        assert_eq!(embedded.payment_mode(), PaymentMode::Simulated);
        let redis = Cli::parse_from(["flashsale", "--redis-url", "redis://127.0.0.1:1/"]).config;
        assert_eq!(redis.payment_mode(), PaymentMode::Wechatpay);
        let chosen = Cli::parse_from([
            "flashsale",
            "--redis-url",
            "redis://127.0.0.1:1/",
            "--payments",
            "simulated",
        ])
        .config;
        assert_eq!(chosen.payment_mode(), PaymentMode::Simulated);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(Cli::try_parse_from(["flashsale", "--actor-arbiters", "0"]).is_err());
        assert!(Cli::try_parse_from(["flashsale", "--listen", "nowhere"]).is_err());
    }
}

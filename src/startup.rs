//! Builds the application from its settings: the store, the inventory
//! actors, the router and the bound socket; runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;

use crate::admission::{WaitingRoomSettings, WaitingRooms};
use crate::campaigns::Campaigns;
use crate::clock::SystemClock;
use crate::config::{Config, PaymentMode};
use crate::domain::SaleRules;
use crate::http::{
    self, server, AppContext, AppState, AuthKeys, Rate, RateLimitSettings, RateLimits, Shedding,
    Sheddings, ShopperTokenRules, ADMIN_TOKEN_MIN_BYTES,
};
use crate::inventory::{ActorSettings, Inventory};
use crate::orders::webhook::{Backoff, Webhook, WebhookSettings};
use crate::orders::{CloseSettings, OrderService, OrderSettings, Orders, RefundSettings};
use crate::payments::wechatpay::{
    Account, MerchantKey, PlatformKeys, WeChatPay, WeChatPayClient, WeChatPayVerifier,
};
use crate::payments::{PaymentMethod, Payments};
use crate::sales::live::{self, LiveFeeds, LiveSettings};
use crate::sales::Sales;
use crate::store::{EmbeddedStore, QueueRules, RedisStore, Store};
use crate::telemetry::{self, Sheds};

const GENERATED_SECRET_LEN: usize = 32;

/// Most refund calls to WeChat Pay in flight at once when no webhook is
/// configured (with one, they share `FLASHSALE_ORDER_WEBHOOK_CONCURRENCY`).
const REFUND_CONCURRENCY: usize = 8;

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    order_service: OrderService,
    limits: Arc<RateLimits>,
    live: Arc<LiveFeeds>,
    waiting_rooms: Arc<WaitingRooms>,
    /// The handlers' state: its sales' and campaigns' pages are pruned
    /// with the limiters.
    state: AppState,
    limits_prune: Duration,
    connection_rules: server::ConnectionRules,
}

/// How long past an admission's expiry its place is freed: covers the
/// difference between an engine node's clock, which checks the purchase
/// token's `exp`, and the store's, which frees the place.
const QUEUE_EXPIRY_GRACE_MS: i64 = 5_000;

impl Application {
    /// Connects the store, starts the actor threads and binds the listener.
    /// Fails (with the reason) if Redis is unreachable or unsafe to use.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = build_store(&config).await?;
        let settings = ActorSettings {
            mailbox: usize_of(config.actor_mailbox),
            in_flight_max: usize_of(config.actor_in_flight_max),
            batch_max: usize_of(config.actor_batch_max),
            store_calls: usize_of(config.actor_store_calls),
            known_shoppers_max: usize_of(config.actor_known_shoppers_max),
            refresh: Duration::from_millis(config.sale_refresh_ms),
            clock_margin_ms: i64::try_from(config.clock_margin_ms).unwrap_or(i64::MAX),
            idle_stop: Duration::from_secs(config.actor_idle_stop_secs),
            clock: Arc::new(SystemClock),
        };
        let inventory = Arc::new(
            Inventory::start(
                Arc::clone(&store),
                usize_of(config.actor_arbiters),
                settings,
                Duration::from_millis(config.reserve_timeout_ms),
            )?
            .with_finished_sales_max(usize_of(config.finished_sales_max)),
        );
        let admin_token = secret_or_generated(config.admin_token.clone(), "FLASHSALE_ADMIN_TOKEN");
        if admin_token.len() < ADMIN_TOKEN_MIN_BYTES {
            bail!(
                "FLASHSALE_ADMIN_TOKEN is {} bytes long; it must be at least {ADMIN_TOKEN_MIN_BYTES} \
                 (a random value, e.g. from `openssl rand -hex 32`)",
                admin_token.len()
            );
        }
        let shopper_secret = secret_or_generated(
            config.user_token_secret.clone(),
            "FLASHSALE_USER_TOKEN_SECRET",
        );
        let shopper_tokens = ShopperTokenRules {
            audience: config
                .user_token_audience
                .clone()
                .filter(|audience| !audience.is_empty()),
            lifetime_max_secs: config.user_token_lifetime_max_secs,
            verified_cache_max: usize_of(config.user_token_cache),
        };
        let auth = AuthKeys::new(&admin_token, shopper_secret.as_bytes(), &shopper_tokens)?;
        let listener = server::bind(config.listen, config.listen_backlog)
            .with_context(|| format!("failed to bind {}", config.listen))?;
        let address = listener
            .local_addr()
            .context("failed to read the bound address")?;
        let orders = Orders::new(Arc::clone(&store), Arc::clone(&inventory));
        let webhook = build_webhook(&config)?;
        let webhook_configured = webhook.is_some();
        // Payments queue hand-offs only when there is a webhook to send them.
        let payments = Arc::new(Payments::new(
            Arc::clone(&store),
            build_payment_method(&config)?,
            orders.work_notices(),
            webhook_configured,
        ));
        let wechatpay_timeout = Duration::from_millis(config.wechatpay_timeout_ms);
        // Closes and refund calls to WeChat Pay back off alike.
        let close_backoff = Backoff {
            first: Duration::from_millis(config.wechatpay_close_backoff_ms),
            longest: Duration::from_millis(config.wechatpay_close_backoff_max_ms),
        };
        let orders = Arc::new(orders.with_payments(
            Arc::clone(&payments),
            CloseSettings {
                // A close, and a query when it was paid: each within the
                // timeout.
                hold: wechatpay_timeout * 4,
                backoff: close_backoff,
                in_flight_max: usize_of(config.wechatpay_close_concurrency),
            },
        ));
        let mut order_service = OrderService::new(
            Arc::clone(&store),
            Arc::clone(&orders),
            webhook,
            OrderSettings {
                sweep: Duration::from_millis(config.order_sweep_ms),
                batch: usize_of(config.order_batch),
                claim_idle: Duration::from_millis(config.order_claim_idle_ms),
                consumer: consumer_name(address),
                clock: Arc::new(SystemClock),
                retention: Duration::from_secs(config.retention_secs),
            },
        );
        if matches!(payments.method(), PaymentMethod::WeChatPay(_)) {
            order_service = order_service.with_refunds(
                Arc::clone(&payments),
                RefundSettings {
                    // An attempt may query, then call: two calls.
                    lease: wechatpay_timeout * 3,
                    backoff: close_backoff,
                    query_backoff: Backoff {
                        first: Duration::from_millis(config.wechatpay_refund_query_ms),
                        longest: Duration::from_millis(config.wechatpay_refund_query_max_ms),
                    },
                    concurrency: REFUND_CONCURRENCY,
                },
            );
        }
        let limits = Arc::new(RateLimits::new(&RateLimitSettings {
            global: Rate {
                per_sec: config.rate_global_per_sec,
                burst: config.rate_global_burst,
            },
            shopper: Rate {
                per_sec: config.rate_user_per_sec,
                burst: config.rate_user_burst,
            },
            ip: Rate {
                per_sec: config.rate_ip_per_sec,
                burst: config.rate_ip_burst,
            },
            trust_forwarded_for: config.rate_trust_forwarded_for,
            admin_failures_per_min: NonZeroU32::new(config.admin_auth_failures_per_min)
                .unwrap_or(NonZeroU32::MIN),
        }));
        let sale_rules = SaleRules {
            payment_timeout_secs_min: i64::try_from(config.payment_timeout_min_secs)
                .unwrap_or(i64::MAX),
        };
        let sheds = Arc::new(Sheds::default());
        let live = Arc::new(LiveFeeds::new(
            live::read_from(&store),
            Arc::clone(&sheds),
            LiveSettings {
                interval: Duration::from_millis(config.console_events_ms),
                watchers_max: usize_of(config.console_watchers_max),
            },
        ));
        let waiting_rooms = Arc::new(WaitingRooms::new(
            Arc::clone(&store),
            WaitingRoomSettings {
                rules: QueueRules {
                    size_max: config.queue_size_max,
                    headroom_pct: config.queue_headroom_pct,
                    expiry_grace_ms: QUEUE_EXPIRY_GRACE_MS,
                },
                poll_ms_min: config.queue_poll_ms_min,
                poll_ms_max: config.queue_poll_ms_max,
                pollers_max: usize_of(config.queue_pollers_max),
            },
        ));
        let state = AppState::new(AppContext {
            campaigns: Campaigns::new(
                Arc::clone(&store),
                sale_rules,
                Duration::from_millis(config.campaign_page_cache_ms),
            )
            .with_webhook(webhook_configured),
            sales: Sales::new(
                Arc::clone(&store),
                Arc::clone(&inventory),
                sale_rules,
                Duration::from_millis(config.sale_poll_cache_ms),
            ),
            orders,
            payments,
            store: Arc::clone(&store),
            auth: Arc::new(auth),
            metrics: telemetry::metrics_handle(),
            store_timeout: config.store_timeout(),
            body_limit_bytes: usize_of(config.body_limit_bytes),
            limits: Arc::clone(&limits),
            purchase_token_ttl_secs: config.purchase_token_ttl_secs,
            live: Arc::clone(&live),
            sheds,
            waiting_rooms: Arc::clone(&waiting_rooms),
        });
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let sheddings = Sheddings {
            engine: Shedding::new(usize_of(config.max_in_flight), request_timeout),
            notify: Shedding::notify(usize_of(config.notify_max_in_flight), request_timeout),
        };
        let router = http::router(state.clone(), sheddings);
        tracing::info!(%address, "flashsale listening");
        Ok(Self {
            listener,
            address,
            router,
            store,
            inventory,
            order_service,
            limits,
            live,
            waiting_rooms,
            state,
            limits_prune: Duration::from_millis(config.rate_prune_ms),
            connection_rules: server::ConnectionRules {
                header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
                idle_timeout: Duration::from_millis(config.idle_timeout_ms),
                max_open: usize_of(u64::from(config.max_connections)),
            },
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The whole router, to drive in process without a socket (the
    /// front door's benchmark calls it with `oneshot`).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// stops the order service and the actor threads. The order service is
    /// stopped wherever it is: what it had not acknowledged or delivered is
    /// taken up again after a restart (or by another node).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let order_service = tokio::spawn(self.order_service.run());
        let inventory = Arc::clone(&self.inventory);
        let store = Arc::clone(&self.store);
        let stock_returns = tokio::spawn(async move {
            store
                .watch_stock_returns(Box::new(move |stock_return| {
                    inventory.stock_returned_elsewhere(stock_return);
                }))
                .await;
        });
        let (limits, every) = (Arc::clone(&self.limits), self.limits_prune);
        let waiting_rooms = Arc::clone(&self.waiting_rooms);
        let state = self.state.clone();
        let pruning = tokio::spawn(async move {
            let mut timer = tokio::time::interval(every);
            loop {
                timer.tick().await;
                limits.prune();
                waiting_rooms.prune();
                state.sales.prune_polled();
                state.campaigns.prune_pages();
            }
        });
        // Open consoles' live feeds end first: they would hold the drain.
        let live = Arc::clone(&self.live);
        let shutdown = async move {
            shutdown.await;
            live.close();
        };
        let upkeep = tokio::spawn(telemetry::metrics_upkeep(telemetry::metrics_handle()));
        let served =
            server::serve(self.listener, self.router, self.connection_rules, shutdown).await;
        order_service.abort();
        pruning.abort();
        upkeep.abort();
        stock_returns.abort();
        self.inventory.stop();
        tracing::info!("flashsale stopped");
        served.context("the HTTP server failed")
    }
}

async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.redis_target() {
        Some(target) => {
            let store =
                RedisStore::connect(&target, config.store_timeout(), config.redis_durability)
                    .await?
                    .with_shopper_bounds(config.shopper_bounds());
            tracing::info!(?target, "store: Redis");
            Ok(Arc::new(store))
        }
        None => {
            tracing::warn!(
                "store: embedded, in memory only; every sale and order is lost when the process \
                 stops. Set FLASHSALE_REDIS_URL for production."
            );
            Ok(Arc::new(
                EmbeddedStore::new().with_shopper_bounds(config.shopper_bounds()),
            ))
        }
    }
}

/// This process's name in the order service's consumer groups: the same
/// after a restart on the same host and address, so groups do not collect
/// the names of dead processes; unique among running engine nodes.
fn consumer_name(address: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "flashsale".to_owned());
    format!("{host}-{address}")
}

fn build_payment_method(config: &Config) -> anyhow::Result<PaymentMethod> {
    match config.payment_mode() {
        PaymentMode::Simulated => {
            tracing::warn!(
                "payments: simulated; any shopper can pay their orders with \
                 POST /api/v1/orders/{{id}}/pay. Set FLASHSALE_PAYMENTS=wechatpay for production."
            );
            Ok(PaymentMethod::Simulated)
        }
        PaymentMode::Wechatpay => {
            let wechatpay = build_wechatpay(config)?;
            tracing::info!(mchid = %wechatpay.client.account().mchid,
                base_url = %wechatpay.client.account().base_url,
                "payments: WeChat Pay (prepay, notifications)");
            Ok(PaymentMethod::WeChatPay(Box::new(wechatpay)))
        }
    }
}

/// WeChat Pay from its settings; names every one missing, so the engine
/// refuses to start rather than fail at the first payment.
fn build_wechatpay(config: &Config) -> anyhow::Result<WeChatPay> {
    let settings = [
        (
            "FLASHSALE_WECHATPAY_PLATFORM_KEY",
            config
                .wechatpay_platform_key
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned()),
        ),
        (
            "FLASHSALE_WECHATPAY_APIV3_KEY",
            config.wechatpay_apiv3_key.clone(),
        ),
        ("FLASHSALE_WECHATPAY_MCHID", config.wechatpay_mchid.clone()),
        ("FLASHSALE_WECHATPAY_APPID", config.wechatpay_appid.clone()),
        (
            "FLASHSALE_WECHATPAY_MERCHANT_KEY",
            config
                .wechatpay_merchant_key
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned()),
        ),
        (
            "FLASHSALE_WECHATPAY_MERCHANT_SERIAL",
            config.wechatpay_merchant_serial.clone(),
        ),
        (
            "FLASHSALE_WECHATPAY_NOTIFY_URL",
            config.wechatpay_notify_url.clone(),
        ),
    ];
    let missing: Vec<&str> = settings
        .iter()
        .filter(|(_, value)| value.as_deref().is_none_or(|value| value.trim().is_empty()))
        .map(|(name, _)| *name)
        .collect();
    let [Some(platform_key), Some(apiv3_key), Some(mchid), Some(appid), Some(merchant_key), Some(merchant_serial), Some(notify_url)] =
        settings.map(|(_, value)| value.filter(|value| !value.trim().is_empty()))
    else {
        bail!(
            "FLASHSALE_PAYMENTS is wechatpay (the default with Redis), which needs {}; set \
             them, or set FLASHSALE_PAYMENTS=simulated for demos and load tests",
            missing.join(", ")
        );
    };
    let platform_keys = Arc::new(
        PlatformKeys::load(std::path::Path::new(&platform_key))
            .context("invalid FLASHSALE_WECHATPAY_PLATFORM_KEY")?,
    );
    let verifier = WeChatPayVerifier::new(Arc::clone(&platform_keys), &apiv3_key)
        .context("invalid FLASHSALE_WECHATPAY_APIV3_KEY")?;
    let merchant_pem = std::fs::read_to_string(&merchant_key)
        .with_context(|| format!("cannot read FLASHSALE_WECHATPAY_MERCHANT_KEY {merchant_key}"))?;
    let merchant = MerchantKey::new(&merchant_pem, &merchant_serial)
        .context("invalid FLASHSALE_WECHATPAY_MERCHANT_KEY")?;
    reqwest::Url::parse(&notify_url).context("FLASHSALE_WECHATPAY_NOTIFY_URL is not a URL")?;
    let base_url = reqwest::Url::parse(&config.wechatpay_base_url)
        .context("FLASHSALE_WECHATPAY_BASE_URL is not a URL")?;
    let account = Account {
        mchid,
        appid,
        notify_url,
        base_url,
        timeout: Duration::from_millis(config.wechatpay_timeout_ms),
    };
    let client = WeChatPayClient::new(account, merchant, platform_keys)
        .context("cannot build the WeChat Pay client")?;
    Ok(WeChatPay { verifier, client })
}

fn build_webhook(config: &Config) -> anyhow::Result<Option<Webhook>> {
    let Some(url) = config
        .order_webhook_url
        .as_deref()
        .filter(|url| !url.is_empty())
    else {
        return Ok(None);
    };
    let url = reqwest::Url::parse(url).with_context(|| {
        format!(
            "FLASHSALE_ORDER_WEBHOOK_URL is not a URL: {}",
            telemetry::redact_url(url)
        )
    })?;
    let Some(secret) = config
        .order_webhook_secret
        .clone()
        .filter(|secret| !secret.is_empty())
    else {
        bail!("FLASHSALE_ORDER_WEBHOOK_URL needs FLASHSALE_ORDER_WEBHOOK_SECRET to sign the calls");
    };
    tracing::info!(
        url = telemetry::redact_url(url.as_str()),
        "orders are handed to the merchant's webhook"
    );
    let webhook = Webhook::new(WebhookSettings {
        url,
        secret,
        timeout: Duration::from_millis(config.order_webhook_timeout_ms),
        backoff: Backoff {
            first: Duration::from_millis(config.order_webhook_backoff_ms),
            longest: Duration::from_millis(config.order_webhook_backoff_max_ms),
        },
        attempts_max: config.order_webhook_attempts_max,
        concurrency: usize_of(config.order_webhook_concurrency),
    })?;
    Ok(Some(webhook))
}

fn secret_or_generated(value: Option<String>, name: &str) -> String {
    match value.filter(|value| !value.is_empty()) {
        Some(value) => value,
        None => {
            let value = Alphanumeric.sample_string(&mut rand::rng(), GENERATED_SECRET_LEN);
            tracing::warn!(setting = name, value = %value, "not set: generated a random one for this run");
            value
        }
    }
}

/// Settings are range-checked by clap, so they fit a `usize`.
fn usize_of(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

//! Builds the application from its settings: the store, the inventory
//! actors, the router and the bound socket; runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, AppState, AuthKeys};
use crate::inventory::{ActorSettings, Inventory};
use crate::store::{EmbeddedStore, RedisStore, Store};
use crate::telemetry;

const GENERATED_SECRET_LEN: usize = 32;

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    inventory: Arc<Inventory>,
}

impl Application {
    /// Connects the store, starts the actor threads and binds the listener.
    /// Fails (with the reason) if Redis is unreachable or unsafe to use.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = build_store(&config).await?;
        let settings = ActorSettings {
            mailbox: usize_of(config.actor_mailbox),
            in_flight_max: usize_of(config.actor_in_flight_max),
            known_shoppers_max: usize_of(config.actor_known_shoppers_max),
            refresh: Duration::from_millis(config.sale_refresh_ms),
            clock_margin_ms: i64::try_from(config.clock_margin_ms).unwrap_or(i64::MAX),
            idle_stop: Duration::from_secs(config.actor_idle_stop_secs),
        };
        let inventory = Arc::new(Inventory::start(
            Arc::clone(&store),
            usize_of(config.actor_arbiters),
            settings,
            Duration::from_millis(config.reserve_timeout_ms),
        )?);
        let admin_token = secret_or_generated(config.admin_token.clone(), "FLASHSALE_ADMIN_TOKEN");
        let shopper_secret = secret_or_generated(
            config.user_token_secret.clone(),
            "FLASHSALE_USER_TOKEN_SECRET",
        );
        let auth = AuthKeys::new(&admin_token, shopper_secret.as_bytes())
            .context("invalid shopper token secret")?;
        let state = AppState {
            store,
            inventory: Arc::clone(&inventory),
            auth: Arc::new(auth),
            metrics: telemetry::metrics_handle(),
            store_timeout: config.store_timeout(),
        };
        let router = http::router(state, usize_of(config.body_limit_bytes));
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to bind {}", config.listen))?;
        let address = listener
            .local_addr()
            .context("failed to read the bound address")?;
        tracing::info!(%address, "flashsale listening");
        Ok(Self {
            listener,
            address,
            router,
            inventory,
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// stops the actor threads.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        self.inventory.stop();
        tracing::info!("flashsale stopped");
        served.context("the HTTP server failed")
    }
}

async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.redis_target() {
        Some(target) => {
            let store = RedisStore::connect(&target, config.store_timeout()).await?;
            tracing::info!(?target, "store: Redis");
            Ok(Arc::new(store))
        }
        None => {
            tracing::warn!(
                "store: embedded, in memory only; every sale and order is lost when the process \
                 stops. Set FLASHSALE_REDIS_URL for production."
            );
            Ok(Arc::new(EmbeddedStore::new()))
        }
    }
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

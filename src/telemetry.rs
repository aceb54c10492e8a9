//! Logs and metrics: the tracing subscriber, every metric name the engine
//! exports on `/metrics` (Prometheus text format), and the process-wide
//! recorder with its upkeep (which bounds what its histograms hold).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// HTTP requests by `route` (the matched pattern, or `unmatched`), `method`
/// (a standard method, or `other`) and `status`.
pub const HTTP_REQUESTS: &str = "flashsale_http_requests_total";
/// Reservation attempts by `outcome`: `reserved`, `replayed`, or the error code.
pub const RESERVATIONS: &str = "flashsale_reservations_total";
/// Store call latency by `op` (script or command), seconds.
pub const STORE_CALL_SECONDS: &str = "flashsale_store_call_seconds";
/// Reservations refused because a sale actor's mailbox or in-flight bound was full.
pub const ACTOR_MAILBOX_REJECTIONS: &str = "flashsale_actor_mailbox_rejections_total";
/// Sale actors running.
pub const SALE_ACTORS: &str = "flashsale_sale_actors";
/// Reservations answered by a sale actor from memory, without a store call, by `outcome`.
pub const ACTOR_LOCAL_ANSWERS: &str = "flashsale_actor_local_answers_total";

/// Reservations the order service took from the streams (first time only).
pub const ORDERS_ACCEPTED: &str = "flashsale_orders_accepted_total";
/// Reservations the order service dropped from the streams, not taken: no
/// such order, or an entry it cannot read (each also logged).
pub const ORDERS_DROPPED: &str = "flashsale_orders_dropped_total";
/// Time from an order's payment deadline to its stock back on sale, seconds.
pub const EXPIRY_LAG_SECONDS: &str = "flashsale_order_expiry_lag_seconds";
/// Calls to the merchant's webhook by `result`: `delivered` or `failed`.
pub const WEBHOOK_CALLS: &str = "flashsale_webhook_calls_total";
/// Outbox entries moved to a sale's dead letters, by `reason`: `refused`
/// (the merchant answered a 4xx other than 408 and 429, or WeChat Pay
/// refused a refund for good), `exhausted` (the last allowed attempt
/// failed) or `unsendable` (no sender for it is configured).
pub const WEBHOOK_DEAD_LETTERS: &str = "flashsale_webhook_dead_letters_total";
/// Settled sales whose records retention deleted.
pub const SALES_FORGOTTEN: &str = "flashsale_sales_forgotten_total";
/// Payments by `outcome`: `paid`, `unchanged`, `refund_required`,
/// `amount_mismatch`, or `rejected` (a notification that failed checks).
pub const PAYMENTS: &str = "flashsale_payments_total";
/// Verified payments that could not be applied and were recorded for the
/// merchant, by `kind`: `amount_mismatch`, `unknown_order`,
/// `refund_abnormal`, `refund_closed`.
pub const PAYMENT_EXCEPTIONS: &str = "flashsale_payment_exceptions_total";
/// Closes of a WeChat Pay order that failed (WeChat Pay unreachable or
/// refusing); the order stays held and the close is retried.
pub const WECHATPAY_CLOSE_FAILURES: &str = "flashsale_wechatpay_close_failures_total";
/// Refunds by `outcome` (see [`count_refund`]).
pub const REFUNDS: &str = "flashsale_refunds_total";

/// Requests refused by a rate limit, by `limiter`: `ip`, `user` (per shopper),
/// `global`, `admin` (an address past its failed admin authentications).
pub const RATE_LIMITED: &str = "flashsale_rate_limited_total";
/// Keys held by a keyed rate limiter (`limiter`: `user` (per shopper), `ip`,
/// `admin`).
pub const RATE_LIMITER_KEYS: &str = "flashsale_rate_limiter_keys";
/// Requests shed, by `reason`: `in_flight`, `notify_in_flight`,
/// `timeout`, `connections` (on a connection past the bound on open ones).
pub const SHED: &str = "flashsale_shed_total";
/// Handler panics turned into 500 answers.
pub const PANICS: &str = "flashsale_http_panics_total";
/// TCP connections the HTTP server accepted.
pub const CONNECTIONS_ACCEPTED: &str = "flashsale_http_connections_accepted_total";
/// TCP connections open now.
pub const CONNECTIONS_OPEN: &str = "flashsale_http_connections_open";
/// TCP connections closed, by `reason`: `ended` (by the client, or after
/// an answer), `header_timeout` (a request's headers not complete within
/// `FLASHSALE_HEADER_READ_TIMEOUT_MS` of its first byte), `idle` (no next
/// request within `FLASHSALE_IDLE_TIMEOUT_MS`), `silent` (nothing sent that
/// long after connecting), `shutdown`, `failed`, `over_capacity` (past the
/// bound on open connections).
pub const CONNECTIONS_CLOSED: &str = "flashsale_http_connections_closed_total";

/// The engine's own count of requests it shed: every 429 and 503 answer of
/// the engine's routes (the ops routes aside), kept in process (the
/// Prometheus counters above cannot be read back) so the console's live
/// feed can chart the sheds of each second.
#[derive(Debug, Default)]
pub struct Sheds {
    status_429: AtomicU64,
    status_503: AtomicU64,
}

/// [`Sheds`] since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShedTotals {
    pub status_429: u64,
    pub status_503: u64,
}

impl Sheds {
    /// Counts an answer with `status` if it is a shed (429 or 503).
    pub fn count(&self, status: u16) {
        match status {
            429 => self.status_429.fetch_add(1, Ordering::Relaxed),
            503 => self.status_503.fetch_add(1, Ordering::Relaxed),
            _ => return,
        };
    }

    pub fn totals(&self) -> ShedTotals {
        ShedTotals {
            status_429: self.status_429.load(Ordering::Relaxed),
            status_503: self.status_503.load(Ordering::Relaxed),
        }
    }
}

const EXPIRY_LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Installs the log subscriber. `RUST_LOG` filters (default `info`). A second
/// call (tests build many applications in one process) changes nothing.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// How often the recorder's upkeep runs (see [`metrics_upkeep`]); the
/// exporter crate's own default.
pub const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every [`METRICS_UPKEEP_EVERY`], until the task
/// is dropped. A histogram keeps every recorded sample until it is drained
/// into its buckets, which only upkeep and a `/metrics` scrape do: an engine
/// nobody scrapes would otherwise grow by 8 bytes per store call and per
/// request, without end.
pub async fn metrics_upkeep(handle: PrometheusHandle) {
    let mut timer = tokio::time::interval(METRICS_UPKEEP_EVERY);
    loop {
        timer.tick().await;
        handle.run_upkeep();
    }
}

/// The process-wide metrics recorder, installed on first use. Its upkeep is
/// the caller's to run ([`metrics_upkeep`]).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(EXPIRY_LAG_SECONDS.into()),
                    EXPIRY_LAG_BUCKETS,
                )
                .and_then(|builder| {
                    builder
                        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// `url` fit for a log line or an error message: its user-info (a Redis
/// password) becomes `***@`, and its query and fragment (a webhook's
/// token) `?***` or `#***`. Works on any string, a URL that does not parse
/// included; everything after the last `@` of the user-info part counts as
/// the host, so a password with a raw `@`, `/` or `?` is hidden whole.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url
        .find("://")
        .map_or(("", url), |at| url.split_at(at + "://".len()));
    let (user_info, rest) = match rest.rfind('@') {
        Some(at) => ("***@", &rest[at + 1..]),
        None => ("", rest),
    };
    match rest.find(['?', '#']) {
        Some(at) => format!("{scheme}{user_info}{}{}***", &rest[..at], &rest[at..=at]),
        None => format!("{scheme}{user_info}{rest}"),
    }
}

pub fn observe_store_call(op: &'static str, elapsed: Duration) {
    metrics::histogram!(STORE_CALL_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

pub fn count_reservation(outcome: &'static str) {
    static BY_OUTCOME: OutcomeCounters = OutcomeCounters::new(RESERVATIONS);
    BY_OUTCOME.count(outcome);
}

pub fn count_mailbox_rejection() {
    metrics::counter!(ACTOR_MAILBOX_REJECTIONS).increment(1);
}

pub fn set_sale_actors(count: usize) {
    metrics::gauge!(SALE_ACTORS).set(count as f64);
}

pub fn count_local_answer(outcome: &'static str) {
    static BY_OUTCOME: OutcomeCounters = OutcomeCounters::new(ACTOR_LOCAL_ANSWERS);
    BY_OUTCOME.count(outcome);
}

/// The series of one counter labelled `outcome`, each resolved from the
/// recorder on first use and then held, for the counters every order
/// request moves: counting is a map read and an atomic add, not a label
/// set built (an allocation) and looked up in the recorder. Bounded: the
/// outcomes are `&'static str`s from fixed sets (the error codes).
struct OutcomeCounters {
    name: &'static str,
    by_outcome: LazyLock<RwLock<FixedKeyMap<&'static str, Counter>>>,
}

impl OutcomeCounters {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            by_outcome: LazyLock::new(RwLock::default),
        }
    }

    fn count(&self, outcome: &'static str) {
        if let Some(counter) = self.by_outcome.read().get(outcome) {
            counter.increment(1);
            return;
        }
        // A series resolved before the engine's recorder is installed
        // would stay a no-op for good.
        metrics_handle();
        let counter = metrics::counter!(self.name, "outcome" => outcome);
        counter.increment(1);
        self.by_outcome.write().insert(outcome, counter);
    }
}

/// The series of [`HTTP_REQUESTS`], each resolved from the recorder once
/// and then held: counting a request is a map read and an atomic add, not
/// a label set built (a route string, a status string) and looked up.
/// Bounded: routes are the router's patterns (or `unmatched`), methods a
/// fixed set, statuses the ones the engine answers with.
#[derive(Default)]
pub struct HttpRequestCounters {
    by_route: RwLock<FixedKeyMap<String, RouteCounters>>,
}

/// One route's request counters, by method and status.
type RouteCounters = FixedKeyMap<(&'static str, u16), Counter>;

/// The held series' maps, hashed with foldhash rather than SipHash: their
/// keys come from the engine's fixed sets, never from a client.
type FixedKeyMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl HttpRequestCounters {
    pub fn count(&self, route: &str, method: &'static str, status: u16) {
        if let Some(counter) = self
            .by_route
            .read()
            .get(route)
            .and_then(|series| series.get(&(method, status)))
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(),
            "method" => method, "status" => status.to_string());
        counter.increment(1);
        self.by_route
            .write()
            .entry(route.to_owned())
            .or_default()
            .insert((method, status), counter);
    }
}

pub fn count_orders_accepted(count: usize) {
    metrics::counter!(ORDERS_ACCEPTED).increment(count as u64);
}

pub fn count_orders_dropped(count: usize) {
    metrics::counter!(ORDERS_DROPPED).increment(count as u64);
}

pub fn observe_expiry_lag(lag_ms: i64) {
    metrics::histogram!(EXPIRY_LAG_SECONDS).record(lag_ms.max(0) as f64 / 1000.0);
}

pub fn count_webhook_call(delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    metrics::counter!(WEBHOOK_CALLS, "result" => result).increment(1);
}

pub fn count_webhook_dead_letter(reason: &'static str) {
    metrics::counter!(WEBHOOK_DEAD_LETTERS, "reason" => reason).increment(1);
}

pub fn count_sales_forgotten() {
    metrics::counter!(SALES_FORGOTTEN).increment(1);
}

pub fn count_payment(outcome: &'static str) {
    metrics::counter!(PAYMENTS, "outcome" => outcome).increment(1);
}

/// Refunds by `outcome`: `asked` (by the merchant), `refunded`,
/// `settled_by_hand`, `refund_abnormal`, `refund_closed`, `call_failed`,
/// `processing`.
pub fn count_refund(outcome: &'static str) {
    metrics::counter!(REFUNDS, "outcome" => outcome).increment(1);
}

pub fn count_wechatpay_close_failure() {
    metrics::counter!(WECHATPAY_CLOSE_FAILURES).increment(1);
}

pub fn count_payment_exception(kind: &'static str) {
    metrics::counter!(PAYMENT_EXCEPTIONS, "kind" => kind).increment(1);
}

pub fn count_rate_limited(limiter: &'static str) {
    metrics::counter!(RATE_LIMITED, "limiter" => limiter).increment(1);
}

pub fn set_rate_limiter_keys(limiter: &'static str, keys: usize) {
    metrics::gauge!(RATE_LIMITER_KEYS, "limiter" => limiter).set(keys as f64);
}

pub fn count_shed(reason: &'static str) {
    metrics::counter!(SHED, "reason" => reason).increment(1);
}

pub fn connection_accepted() {
    metrics::counter!(CONNECTIONS_ACCEPTED).increment(1);
    metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
}

pub fn connection_closed(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// An accepted connection is gone (closed, or its task dropped).
pub fn connection_dropped() {
    metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
}

pub fn count_panic() {
    metrics::counter!(PANICS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_user_info_query_and_fragment() {
        for (url, redacted) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:hunter2@redis.internal:6379/0",
                "redis://***@redis.internal:6379/0",
            ),
            (
                "rediss://app:p@ss/w?rd@redis.internal/",
                "rediss://***@redis.internal/",
            ),
            (
                "https://shop.example/hooks/orders?token=abc&x=1",
                "https://shop.example/hooks/orders?***",
            ),
            (
                "https://u:p@shop.example/hooks#token=abc",
                "https://***@shop.example/hooks#***",
            ),
            ("not a url?token=abc", "not a url?***"),
            (":hunter2@host:1", "***@host:1"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }
}

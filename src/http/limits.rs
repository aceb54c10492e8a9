//! What the front door refuses before the engine does any work:
//! - rate limits on the order routes (governor): per client address, per
//!   shopper, and overall, each answering 429 `rate_limited` with
//!   `Retry-After`;
//! - a limit on failed admin authentications per client address: past it
//!   the address gets 429 on the admin API whatever token it sends, until
//!   its wait is over;
//! - load shedding: a bound on requests in flight (503 `overloaded` at
//!   once) and a timeout on every request (503 `unavailable`).
//!
//! The keyed limiters forget keys that are back to a full burst on a timer
//! ([`RateLimits::prune`]), so their memory stays bounded whatever the
//! number of distinct shoppers or addresses.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::AppState;
use crate::domain::ShopperId;
use crate::telemetry;

/// One limit: a rate per second and a burst (`0`: the rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// The governor quota, or `None` when the rate is 0 (no limit).
    fn quota(self) -> Option<Quota> {
        let per_sec = NonZeroU32::new(self.per_sec)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_sec);
        Some(Quota::per_second(per_sec).allow_burst(burst))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub global: Rate,
    pub shopper: Rate,
    pub ip: Rate,
    /// Take the client address from the last X-Forwarded-For entry.
    pub trust_forwarded_for: bool,
    /// Failed admin authentications one client address may make per
    /// minute (all of them at once, then one every 60 s / this).
    pub admin_failures_per_min: NonZeroU32,
}

const ADMIN_LOCKED: &str = "too many failed admin authentications from this address";

pub struct RateLimits {
    global: Option<DefaultDirectRateLimiter>,
    shopper: Option<DefaultKeyedRateLimiter<ShopperId>>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    admin_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses past their admin failures, and until when: they are
    /// refused before their token is compared, so a right guess looks like
    /// a wrong one until the wait is over.
    admin_locked: DashMap<IpAddr, Instant>,
    trust_forwarded_for: bool,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            global: settings.global.quota().map(RateLimiter::direct),
            shopper: settings.shopper.quota().map(RateLimiter::keyed),
            ip: settings.ip.quota().map(RateLimiter::keyed),
            admin_failures: RateLimiter::keyed(Quota::per_minute(settings.admin_failures_per_min)),
            admin_locked: DashMap::new(),
            trust_forwarded_for: settings.trust_forwarded_for,
            clock: DefaultClock::default(),
        }
    }

    /// 429 while `ip` waits after too many failed admin authentications.
    pub fn check_admin_address(&self, ip: IpAddr) -> Result<(), ApiError> {
        let until = self.admin_locked.get(&ip).map(|until| *until);
        match until.and_then(|until| until.checked_duration_since(Instant::now())) {
            Some(wait) if !wait.is_zero() => Err(Self::refused(wait, ADMIN_LOCKED)),
            _ => Ok(()),
        }
    }

    /// Counts a failed admin authentication from `ip`: `refusal` as it is
    /// while within the limit; past it, 429, and the address waits.
    pub fn admin_failed(&self, ip: IpAddr, refusal: ApiError) -> ApiError {
        match self.admin_failures.check_key(&ip) {
            Ok(()) => refusal,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.admin_locked.insert(ip, Instant::now() + wait);
                telemetry::count_rate_limited("admin");
                Self::refused(wait, ADMIN_LOCKED)
            }
        }
    }

    /// Counts one order request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.ip {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| {
                self.limited("ip", "too many requests from this address", &not_until)
            }),
            None => Ok(()),
        }
    }

    /// Counts one order request from the shopper, then against the overall
    /// limit (so one shopper over their share uses none of it).
    pub fn check_shopper(&self, shopper: &ShopperId) -> Result<(), ApiError> {
        if let Some(limiter) = &self.shopper {
            limiter.check_key(shopper).map_err(|not_until| {
                self.limited("user", "too many requests from this shopper", &not_until)
            })?;
        }
        match &self.global {
            Some(limiter) => limiter.check().map_err(|not_until| {
                self.limited("global", "the engine is at its order rate", &not_until)
            }),
            None => Ok(()),
        }
    }

    /// Forgets keys back to a full burst and reports the limiters' sizes.
    pub fn prune(&self) {
        if let Some(limiter) = &self.shopper {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            telemetry::set_rate_limiter_keys("user", limiter.len());
        }
        if let Some(limiter) = &self.ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            telemetry::set_rate_limiter_keys("ip", limiter.len());
        }
        self.admin_failures.retain_recent();
        self.admin_failures.shrink_to_fit();
        let now = Instant::now();
        self.admin_locked.retain(|_, until| *until > now);
        self.admin_locked.shrink_to_fit();
        telemetry::set_rate_limiter_keys("admin", self.admin_failures.len());
    }

    /// Keys the per-shopper and per-address limiters hold.
    pub fn keys(&self) -> (usize, usize) {
        (
            self.shopper.as_ref().map_or(0, |limiter| limiter.len()),
            self.ip.as_ref().map_or(0, |limiter| limiter.len()),
        )
    }

    /// The client's address as the per-address limit keys it: the peer,
    /// or the last X-Forwarded-For entry when trusted (what our own proxy
    /// appended). An IPv6 client is keyed by its /64, which one subscriber
    /// usually holds whole; an IPv4 address written as IPv6 as IPv4.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let client = if self.trust_forwarded_for {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .next_back()
                .and_then(|last| last.trim().parse().ok())
                .unwrap_or(peer)
        } else {
            peer
        };
        match client.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
            v4 => v4,
        }
    }

    fn limited(
        &self,
        limiter: &'static str,
        message: &'static str,
        not_until: &NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> ApiError {
        telemetry::count_rate_limited(limiter);
        Self::refused(not_until.wait_time_from(self.clock.now()), message)
    }

    /// 429 with `Retry-After`: `wait` rounded up to whole seconds.
    fn refused(wait: Duration, message: &'static str) -> ApiError {
        ApiError::RateLimited {
            message,
            retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    }
}

/// The per-address limit of the order and waiting-room routes, as their
/// handlers' first extractor: checked before the request is authenticated
/// or its body read, with no layer of its own (a `from_fn` layer costs a
/// boxed future and a clone of the route's service per request). A request
/// without a peer address (only in-process callers: tests, benches) is not
/// limited by address.
pub struct WithinAddressLimit;

impl FromRequestParts<AppState> for WithinAddressLimit {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            let ip = state.limits.client_ip(peer.ip(), &parts.headers);
            state.limits.check_ip(ip)?;
        }
        Ok(Self)
    }
}

/// The in-flight bounds of the router: the engine routes' (every route
/// but the ops routes and WeChat Pay's notify route), and the notify
/// route's own.
pub struct Sheddings {
    pub engine: Shedding,
    pub notify: Shedding,
}

/// Bounds requests in flight and the time each may take.
#[derive(Clone)]
pub struct Shedding {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    /// The `reason` its in-flight sheds are counted under.
    shed_reason: &'static str,
}

impl Shedding {
    /// The engine routes' bounds (sheds counted as `in_flight`).
    pub fn new(in_flight_max: usize, timeout: Duration) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(in_flight_max)),
            timeout,
            shed_reason: "in_flight",
        }
    }

    /// WeChat Pay's notify route's bounds (sheds counted as
    /// `notify_in_flight`).
    pub fn notify(in_flight_max: usize, timeout: Duration) -> Self {
        Self {
            shed_reason: "notify_in_flight",
            ..Self::new(in_flight_max, timeout)
        }
    }
}

impl Shedding {
    /// A place among the requests in flight, held until the answer is
    /// made; `None` past the bound (answer [`Shedding::overloaded`]).
    pub(super) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// How long a request may take before [`Shedding::timed_out`].
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// 503 `overloaded`: past the in-flight bound, answered at once.
    pub(super) fn overloaded(&self) -> Response {
        telemetry::count_shed(self.shed_reason);
        ApiError::Overloaded("the server is at capacity; retry shortly".into()).into_response()
    }

    /// 503 `unavailable`: no answer within the request timeout.
    pub(super) fn timed_out(&self) -> Response {
        telemetry::count_shed("timeout");
        ApiError::Unavailable(format!(
            "no answer within {} ms; a change may still have been made: retry with the \
             same Idempotency-Key, or read it back",
            self.timeout.as_millis()
        ))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(shopper: Rate, ip: Rate, global: Rate) -> RateLimits {
        RateLimits::new(&RateLimitSettings {
            global,
            shopper,
            ip,
            trust_forwarded_for: false,
            admin_failures_per_min: NonZeroU32::MIN,
        })
    }

    const OFF: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    #[test]
    fn a_shopper_gets_the_burst_then_429_with_retry_after() {
        let limits = limits(
            Rate {
                per_sec: 1,
                burst: 3,
            },
            OFF,
            OFF,
        );
        let shopper = ShopperId::parse("bursty").expect("user");
        for _ in 0..3 {
            limits.check_shopper(&shopper).expect("within the burst");
        }
        match limits.check_shopper(&shopper) {
            Err(ApiError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        let other = ShopperId::parse("calm").expect("user");
        limits
            .check_shopper(&other)
            .expect("another shopper has their own share");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = limits(OFF, OFF, OFF);
        let shopper = ShopperId::parse("anyone").expect("user");
        for _ in 0..10_000 {
            limits.check_shopper(&shopper).expect("no limit");
            limits
                .check_ip(IpAddr::from([127, 0, 0, 1]))
                .expect("no limit");
        }
    }

    #[test]
    fn keyed_limiters_forget_idle_keys() {
        // A thousand requests a second, one at a time: a key is back to a
        // full burst a millisecond after its request.
        let fast = Rate {
            per_sec: 1_000,
            burst: 1,
        };
        let limits = limits(fast, fast, OFF);
        for i in 0..100_000u32 {
            let shopper = ShopperId::parse(&format!("u{i}")).expect("user");
            limits.check_shopper(&shopper).expect("first request");
            limits
                .check_ip(IpAddr::from(i.to_be_bytes()))
                .expect("first request");
        }
        assert_eq!(limits.keys(), (100_000, 100_000));
        std::thread::sleep(Duration::from_millis(20));
        limits.prune();
        assert_eq!(limits.keys(), (0, 0), "pruned back to nothing");
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 10.0.0.7".parse().expect("header"),
        );
        let peer = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(limits(OFF, OFF, OFF).client_ip(peer, &headers), peer);
        let trusting = RateLimits::new(&RateLimitSettings {
            global: OFF,
            shopper: OFF,
            ip: OFF,
            trust_forwarded_for: true,
            admin_failures_per_min: NonZeroU32::MIN,
        });
        assert_eq!(
            trusting.client_ip(peer, &headers),
            IpAddr::from([10, 0, 0, 7]),
            "the entry our own proxy appended"
        );
        let limits = limits(OFF, OFF, OFF);
        let v6 = |text: &str| text.parse::<IpAddr>().expect("address");
        assert_eq!(
            limits.client_ip(v6("2001:db8:1:2:aaaa::1"), &HeaderMap::new()),
            limits.client_ip(v6("2001:db8:1:2:bbbb::9"), &HeaderMap::new()),
            "one /64, one key"
        );
        assert_eq!(
            limits.client_ip(v6("::ffff:192.0.2.1"), &HeaderMap::new()),
            IpAddr::from([192, 0, 2, 1])
        );
    }
}

//! The hand-off to the merchant: an order event POSTed as JSON to the
//! merchant's webhook, signed with HMAC-SHA256. Delivery is at least once:
//! the outbox in the store keeps every hand-off until the merchant answers
//! 2xx, and the order service retries with jittered exponential backoff
//! (equal jitter: see [`Webhook::backoff`]). A hand-off the merchant
//! refuses for good (any 4xx but 408 and 429), or whose last allowed
//! attempt fails, goes to the sale's dead letters instead (see
//! [`Webhook::gives_up`]), where an operator can re-drive it.
//!
//! At most [`WebhookSettings::concurrency`] calls of the process are in
//! flight at once: each send holds a permit of one semaphore, taken before
//! its hand-off is leased (see [`Webhook::free_sends`]).
//!
//! The request:
//! - body `{"type": "order.reserved" | "order.paid" | "order.refund_required"
//!   | "order.refunded", "order": {..the order object..}}` (the order object
//!   carries `transaction_id` and `prepay_id` once known), or a campaign
//!   round's reminder `{"type": "campaign.round_starting", "campaign",
//!   "round", "items"}` (see `campaigns::reminders`);
//! - `X-Flashsale-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//!   "<t>.<body>">` with `FLASHSALE_ORDER_WEBHOOK_SECRET`;
//! - `X-Flashsale-Event: <type>` and `Idempotency-Key: <order id>:<type>`
//!   (a reminder: `<campaign id>:<round number>:<type>`): one hand-off,
//!   which may arrive more than once. Hand-offs of one order
//!   may arrive out of order; each body carries the order as it is when sent.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::{Order, OrderEvent};
use crate::http::views::OrderBody;
use crate::store::DeliveryFailure;

pub const SIGNATURE_HEADER: &str = "x-flashsale-signature";
pub const EVENT_HEADER: &str = "x-flashsale-event";
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Where and how hand-offs are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Url,
    pub secret: String,
    /// Longest one call may take.
    pub timeout: Duration,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Attempts of one hand-off before it goes to the dead letters.
    pub attempts_max: u32,
    /// Most calls in flight at once in this process.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook call failed: {0}")]
    Call(#[from] reqwest::Error),
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the webhook secret cannot key HMAC-SHA256")]
    Secret,
}

impl From<&WebhookError> for DeliveryFailure {
    fn from(err: &WebhookError) -> Self {
        Self {
            status: match err {
                WebhookError::Status(status) => Some(status.as_u16()),
                _ => None,
            },
            error: err.to_string(),
        }
    }
}

pub struct Webhook {
    client: reqwest::Client,
    settings: WebhookSettings,
    /// One permit per call in flight.
    sends: Arc<Semaphore>,
}

impl Webhook {
    pub fn new(settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        let sends = Arc::new(Semaphore::new(settings.concurrency));
        Ok(Self {
            client,
            settings,
            sends,
        })
    }

    /// Permits for up to `most` sends that can start now without passing
    /// the cap on calls in flight, held together (split one off per send;
    /// dropping them frees them); `None` when every permit is taken. Only
    /// the order service takes permits, one pass at a time, so what it
    /// counts free stays free until it takes them.
    pub fn free_sends(&self, most: usize) -> Option<OwnedSemaphorePermit> {
        let free = u32::try_from(self.sends.available_permits().min(most)).ok()?;
        if free == 0 {
            return None;
        }
        Arc::clone(&self.sends).try_acquire_many_owned(free).ok()
    }

    /// Sends one order's hand-off; `Ok` once the merchant answered 2xx.
    pub async fn send(&self, event: OrderEvent, order: &Order) -> Result<(), WebhookError> {
        let body = json!({ "type": event.as_str(), "order": OrderBody::from(order) });
        let key = format!("{}:{}", order.id, event.as_str());
        self.post(event.as_str(), &key, &body).await
    }

    /// Sends one hand-off of `event`: `body` (which names its `type`),
    /// signed, under `idempotency_key`; `Ok` once the merchant answered
    /// 2xx.
    pub async fn post(
        &self,
        event: &str,
        idempotency_key: &str,
        body: &Value,
    ) -> Result<(), WebhookError> {
        let body = body.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                sign(&self.settings.secret, timestamp, &body)?,
            )
            .header(EVENT_HEADER, event)
            .header(IDEMPOTENCY_KEY_HEADER, idempotency_key)
            .body(body)
            .send()
            .await
            // Its URL may carry a token; the start log shows it redacted.
            .map_err(reqwest::Error::without_url)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(response.status()))
        }
    }

    /// How long a hand-off is leased for one attempt: longer than the call
    /// may take, so no other engine node sends it meanwhile.
    pub fn lease(&self) -> Duration {
        self.settings.timeout * 2
    }

    /// Wait after failed attempt number `attempt` (from 1), with equal
    /// jitter (see [`Backoff::after`]). Hand-offs that failed
    /// together (a merchant down for a moment) do not all come back at
    /// once, and none is retried sooner than half its step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.settings.backoff.after(attempt)
    }

    /// Whether, and why, a hand-off whose attempt number `attempt` failed
    /// with `failure` goes to the dead letters rather than being retried:
    /// the merchant refused it for good (a 4xx other than 408 Request
    /// Timeout and 429 Too Many Requests), or it was the last attempt
    /// allowed.
    pub fn gives_up(&self, attempt: u32, failure: &DeliveryFailure) -> Option<GiveUp> {
        if failure.status.is_some_and(refused_for_good) {
            Some(GiveUp::Refused)
        } else if attempt >= self.settings.attempts_max {
            Some(GiveUp::Exhausted)
        } else {
            None
        }
    }
}

/// Exponential backoff with equal jitter, for every retried call to the
/// outside (webhook hand-offs, WeChat Pay closes).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait before the first retry; doubles with each failure (before
    /// jitter).
    pub first: Duration,
    /// Longest wait between two attempts.
    pub longest: Duration,
}

impl Backoff {
    /// Wait after failed attempt number `attempt` (from 1): the step
    /// `first * 2^(attempt - 1)`, at most `longest`, of which the first
    /// half is always waited and the second half drawn at random.
    pub fn after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let step = self.first.saturating_mul(1 << doublings).min(self.longest);
        let half = step / 2;
        half + (step - half).mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// Why a hand-off went to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The merchant refused it for good.
    Refused,
    /// Its last allowed attempt failed.
    Exhausted,
    /// Nothing here can send it: the engine's settings changed since it
    /// was queued.
    Unsendable,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Exhausted => "exhausted",
            Self::Unsendable => "unsendable",
        }
    }
}

/// A 4xx answer that a retry would get again.
fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status)
        && status != StatusCode::REQUEST_TIMEOUT.as_u16()
        && status != StatusCode::TOO_MANY_REQUESTS.as_u16()
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> Result<String, WebhookError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::Secret)?;
    mac.update(format!("{timestamp}.{body}").as_bytes());
    Ok(format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        Webhook::new(WebhookSettings {
            url: Url::parse("http://127.0.0.1:9/hook").expect("url"),
            secret: "s".into(),
            timeout: Duration::from_secs(1),
            backoff: Backoff {
                first: Duration::from_millis(100),
                longest: Duration::from_secs(1),
            },
            attempts_max: 5,
            concurrency: 3,
        })
        .expect("client")
    }

    #[test]
    fn backoff_is_half_its_doubling_step_and_up_to_all_of_it() {
        let webhook = webhook();
        for (attempt, step_ms) in [(1, 100), (2, 200), (4, 800), (5, 1000), (u32::MAX, 1000)] {
            let step = Duration::from_millis(step_ms);
            let waits: Vec<Duration> = (0..200).map(|_| webhook.backoff(attempt)).collect();
            for wait in &waits {
                assert!(
                    step / 2 <= *wait && *wait <= step,
                    "attempt {attempt}: {wait:?} outside [{:?}, {step:?}]",
                    step / 2
                );
            }
            let (least, most) = (waits.iter().min(), waits.iter().max());
            assert!(
                least < most,
                "attempt {attempt}: no jitter in 200 draws ({least:?})"
            );
        }
    }

    #[test]
    fn permanent_refusals_and_the_last_attempt_give_up() {
        let webhook = webhook();
        let answered = |status: u16| DeliveryFailure {
            status: Some(status),
            error: format!("the webhook answered {status}"),
        };
        let unanswered = DeliveryFailure {
            status: None,
            error: "connection refused".into(),
        };
        for status in [400, 401, 403, 404, 410, 422] {
            assert_eq!(
                webhook.gives_up(1, &answered(status)),
                Some(GiveUp::Refused),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert_eq!(webhook.gives_up(4, &answered(status)), None, "{status}");
            assert_eq!(
                webhook.gives_up(5, &answered(status)),
                Some(GiveUp::Exhausted),
                "{status}"
            );
        }
        assert_eq!(webhook.gives_up(4, &unanswered), None);
        assert_eq!(webhook.gives_up(5, &unanswered), Some(GiveUp::Exhausted));
    }

    #[test]
    fn free_sends_never_pass_the_cap() {
        let webhook = webhook();
        let mut first = webhook.free_sends(2).expect("all free");
        assert_eq!(first.num_permits(), 2);
        let second = webhook.free_sends(10).expect("one left");
        assert_eq!(second.num_permits(), 1);
        assert!(webhook.free_sends(1).is_none(), "all taken");
        drop(first.split(1));
        assert_eq!(webhook.free_sends(10).map(|p| p.num_permits()), Some(1));
    }

    #[tokio::test]
    async fn a_failed_call_does_not_tell_the_url_token() {
        let webhook = Webhook::new(WebhookSettings {
            url: Url::parse("http://merchant:pw-secret@127.0.0.1:9/hook?token=tok-secret")
                .expect("url"),
            ..webhook().settings
        })
        .expect("client");
        let sale = crate::domain::SaleId::generate();
        let order = Order {
            id: crate::domain::OrderId::generate(&sale),
            sale_id: sale,
            shopper_id: crate::domain::ShopperId::parse("shopper").expect("shopper id"),
            quantity: 1,
            amount_cents: 100,
            currency: "CNY".into(),
            status: crate::domain::OrderStatus::PendingPayment,
            created_at: 0,
            expires_at: 1,
            paid_at: None,
            prepay_id: None,
            transaction_id: None,
            refund: None,
            refund_settled_by_hand_at: None,
        };
        let err = webhook
            .send(OrderEvent::Reserved, &order)
            .await
            .expect_err("nothing listens on port 9");
        let told = format!("{err} {err:?}");
        assert!(!told.contains("secret"), "{told}");
    }

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        // Computed independently:
        // python3: hmac.new(b"key", b"1700000000.{}", "sha256").hexdigest()
        assert_eq!(
            sign("key", 1_700_000_000, "{}").expect("any key length"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}

//! The hand-off to the merchant: an order event POSTed as JSON to the
//! merchant's webhook, signed with HMAC-SHA256. Delivery is at least once:
//! the outbox in the store keeps every hand-off until the merchant answers
//! 2xx, and the order service retries with exponential backoff.
//!
//! The request:
//! - body `{"type": "order.reserved" | "order.paid" | "order.refund_required",
//!   "order": {..the order object..}}`;
//! - `X-Flashsale-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//!   "<t>.<body>">` with `FLASHSALE_ORDER_WEBHOOK_SECRET`;
//! - `X-Flashsale-Event: <type>` and `Idempotency-Key: <order id>:<type>`:
//!   one hand-off, which may arrive more than once. Hand-offs of one order
//!   may arrive out of order; each body carries the order as it is when sent.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Url;
use serde_json::json;
use sha2::Sha256;

use crate::domain::{Order, OrderEvent};
use crate::http::views::OrderBody;

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
    /// Wait before the first retry; doubles with each failure.
    pub backoff_first: Duration,
    /// Longest wait between two attempts.
    pub backoff_longest: Duration,
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

pub struct Webhook {
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl Webhook {
    pub fn new(settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        Ok(Self { client, settings })
    }

    /// Sends one hand-off; `Ok` once the merchant answered 2xx.
    pub async fn send(&self, event: OrderEvent, order: &Order) -> Result<(), WebhookError> {
        let body = json!({ "type": event.as_str(), "order": OrderBody::from(order) }).to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                sign(&self.settings.secret, timestamp, &body)?,
            )
            .header(EVENT_HEADER, event.as_str())
            .header(
                IDEMPOTENCY_KEY_HEADER,
                format!("{}:{}", order.id, event.as_str()),
            )
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

    /// Wait after failed attempt number `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.settings
            .backoff_first
            .saturating_mul(1 << doublings)
            .min(self.settings.backoff_longest)
    }
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
            backoff_first: Duration::from_millis(100),
            backoff_longest: Duration::from_secs(1),
        })
        .expect("client")
    }

    #[test]
    fn backoff_doubles_up_to_the_longest() {
        let webhook = webhook();
        assert_eq!(webhook.backoff(1), Duration::from_millis(100));
        assert_eq!(webhook.backoff(2), Duration::from_millis(200));
        assert_eq!(webhook.backoff(4), Duration::from_millis(800));
        assert_eq!(webhook.backoff(5), Duration::from_secs(1));
        assert_eq!(webhook.backoff(u32::MAX), Duration::from_secs(1));
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

//! Payments: WeChat Pay v3 notifications, and the simulated pay route for
//! demos and load suites. Both pay through `orders::Payments`, so an order
//! is paid (or marked for refund) exactly once whichever way money arrives.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use super::auth::Shopper;
use super::error::{read_body, ApiError, ApiPath};
use super::{parse_order_id, AppState};
use crate::domain::{system_now, OrderBody, OrderId};
use crate::orders::wechatpay::{NotifyError, NotifyHeaders};
use crate::orders::PaymentMethod;
use crate::store::{Payment, PaymentOutcome};
use crate::telemetry;

/// The notify route always; the pay route only with simulated payments
/// (absent otherwise: 404).
pub fn router(method: &PaymentMethod) -> Router<AppState> {
    let router = Router::new().route("/api/v1/payments/wechatpay/notify", post(wechatpay_notify));
    match method {
        PaymentMethod::Simulated => router.route("/api/v1/orders/{id}/pay", post(simulated_pay)),
        PaymentMethod::WeChatPay(_) => router,
    }
}

/// A WeChat Pay payment notification. Answers 200 `{"code": "SUCCESS"}`
/// once the payment is recorded (or was already), so WeChat Pay stops
/// retrying; any other answer makes it retry later.
async fn wechatpay_notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let PaymentMethod::WeChatPay(verifier) = state.payments.method() else {
        return Err(ApiError::NotFound(
            "WeChat Pay is not enabled (FLASHSALE_PAYMENTS=simulated)".into(),
        ));
    };
    let body = read_body(request, &state).await?;
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let notify_headers = NotifyHeaders {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    let now_secs = system_now() / 1000;
    let transaction = verifier
        .open(&notify_headers, &body, now_secs)
        .inspect_err(|err| {
            tracing::warn!(error = %err, "WeChat Pay notification refused");
            telemetry::count_payment("rejected");
        })?;
    if !transaction.succeeded() {
        tracing::info!(order = %transaction.out_trade_no, state = %transaction.trade_state,
            "WeChat Pay notification of an unsuccessful transaction; nothing to do");
        return Ok(acknowledged());
    }
    let order_id = OrderId::parse(&transaction.out_trade_no).map_err(|_| {
        tracing::error!(out_trade_no = %transaction.out_trade_no, "payment for an unknown order");
        ApiError::NotFound("order not found".into())
    })?;
    let payment = Payment {
        amount: Some((transaction.amount_total, transaction.currency)),
        transaction_id: transaction.transaction_id,
    };
    match state.payments.pay(&order_id, &payment).await? {
        PaymentOutcome::AmountMismatch(_) => Err(ApiError::Conflict(
            "the amount paid differs from the order's".into(),
        )),
        PaymentOutcome::Paid(_)
        | PaymentOutcome::Unchanged(_)
        | PaymentOutcome::RefundRequired(_) => Ok(acknowledged()),
    }
}

/// The answer WeChat Pay takes as "received".
fn acknowledged() -> Json<Value> {
    Json(json!({"code": "SUCCESS", "message": "OK"}))
}

/// Pays the shopper's own order at once (`FLASHSALE_PAYMENTS=simulated`).
async fn simulated_pay(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order_id = parse_order_id(&id)?;
    state
        .store
        .order(&order_id)
        .await?
        .filter(|order| order.user_id == user_id)
        .ok_or_else(|| ApiError::NotFound("order not found".into()))?;
    let payment = Payment {
        amount: None,
        transaction_id: format!("sim_{}", Alphanumeric.sample_string(&mut rand::rng(), 24)),
    };
    match state.payments.pay(&order_id, &payment).await? {
        PaymentOutcome::Paid(order)
        | PaymentOutcome::Unchanged(order)
        | PaymentOutcome::RefundRequired(order) => Ok(Json((&order).into())),
        PaymentOutcome::AmountMismatch(_) => Err(ApiError::Conflict(
            "the amount paid differs from the order's".into(),
        )),
    }
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::MissingHeader(_) => {
                Self::Unauthorized("a Wechatpay-Timestamp, -Nonce or -Signature header is missing")
            }
            NotifyError::StaleTimestamp => {
                Self::Unauthorized("Wechatpay-Timestamp is more than 5 minutes off")
            }
            NotifyError::BadSignature => Self::Unauthorized("Wechatpay-Signature does not verify"),
            NotifyError::Undecryptable => {
                Self::Unauthorized("the resource does not decrypt with the APIv3 key")
            }
            NotifyError::Malformed(reason) => Self::MalformedBody(reason),
        }
    }
}

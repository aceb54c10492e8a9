//! The payment routes: WeChat Pay notifications and the shopper's WeChat
//! Pay prepay, and the simulated pay route for demos and load suites. Each
//! calls `payments::Payments`.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Shopper;
use super::error::{read_body, ApiError, ApiPath};
use super::openapi::error_responses;
use super::views::OrderBody;
use super::{parse_order_id, AppState};
use crate::payments::wechatpay::{NotifyError, SignedHeaders};
use crate::payments::PaymentMethod;

/// WeChat Pay's notify route, always served. Apart from the shoppers'
/// routes (see [`notify_router`]'s use in [`super::router`]): its body is
/// read before anything can check it.
pub fn notify_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(wechatpay_notify))
}

/// The prepay route only with WeChat Pay and the pay route only with
/// simulated payments (each absent otherwise: 404). Both are documented in
/// both modes (their descriptions say when they exist), so the document
/// does not depend on the deployment.
pub fn router(method: &PaymentMethod) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new();
    let (mut router, not_served) = match method {
        PaymentMethod::Simulated => (
            router.routes(routes!(simulated_pay)),
            OpenApiRouter::<AppState>::default().routes(routes!(wechatpay_prepay)),
        ),
        PaymentMethod::WeChatPay(_) => (
            router.routes(routes!(wechatpay_prepay)),
            OpenApiRouter::<AppState>::default().routes(routes!(simulated_pay)),
        ),
    };
    let (_not_served, documented) = not_served.split_for_parts();
    router.get_openapi_mut().merge(documented);
    router
}

/// What WeChat Pay posts (APIv3): only `resource` is read; other fields
/// are ignored. Documentation only: the handler verifies the raw bytes.
#[derive(ToSchema)]
#[allow(dead_code)]
struct WeChatPayNotification {
    #[schema(example = "EV-2018022511223320873")]
    id: Option<String>,
    #[schema(example = "TRANSACTION.SUCCESS")]
    event_type: Option<String>,
    #[schema(example = "encrypt-resource")]
    resource_type: Option<String>,
    resource: WeChatPayResource,
}

/// The encrypted transaction. Its plaintext carries `out_trade_no` (the
/// order id), `transaction_id`, `trade_state` and `amount.total` /
/// `amount.currency`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct WeChatPayResource {
    #[schema(example = "AEAD_AES_256_GCM")]
    algorithm: String,
    /// Base64.
    ciphertext: String,
    associated_data: Option<String>,
    nonce: String,
}

/// The answer WeChat Pay takes as "received".
#[derive(Debug, Serialize, ToSchema)]
pub struct NotifyAck {
    #[schema(example = "SUCCESS")]
    code: &'static str,
    #[schema(example = "OK")]
    message: &'static str,
}

error_responses!(
    NotifyErrors = [
        MalformedBody, Unauthorized, NotFound, PayloadTooLarge, Overloaded, Unavailable,
    ];
    PayErrors = [Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable];
    PrepayErrors = [
        Unauthorized, Forbidden, NotFound, Conflict, WechatpayRefused, Overloaded, Unavailable,
    ];
);

/// Exactly what `wx.requestPayment` takes (field names as it spells them).
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPaymentBody {
    /// The Mini Program's AppID.
    #[serde(rename = "appId")]
    #[schema(example = "wxd678efh567hg6787")]
    app_id: String,
    /// Unix seconds, as a string.
    #[serde(rename = "timeStamp")]
    #[schema(example = "1700000000")]
    time_stamp: String,
    #[serde(rename = "nonceStr")]
    #[schema(example = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS")]
    nonce_str: String,
    /// `prepay_id=` and the WeChat Pay order's prepay id.
    #[schema(example = "prepay_id=wx201410272009395522657a690389285100")]
    package: String,
    #[serde(rename = "signType")]
    #[schema(example = "RSA")]
    sign_type: &'static str,
    /// Base64 RSA-SHA256 signature, with the merchant API key, over
    /// `appId\ntimeStamp\nnonceStr\npackage\n`.
    #[serde(rename = "paySign")]
    pay_sign: String,
}

/// Starts paying the shopper's own unpaid order with WeChat Pay.
///
/// Only when the engine runs with `FLASHSALE_PAYMENTS=wechatpay`; absent
/// (404) with `simulated`. Creates the WeChat Pay order (JSAPI / Mini
/// Program: `out_trade_no` the order id, `time_expire` its `expires_at`,
/// the payer the token's `sub`) and answers the parameters of
/// `wx.requestPayment`. Calling it again for the same order reuses the
/// WeChat Pay order (its prepay id is kept on the order), with a fresh
/// signature. Another shopper's order is 404; an order no longer
/// `pending_payment` is 409 `conflict`; WeChat Pay unreachable (or
/// answering 5xx) is 503 `unavailable`; WeChat Pay refusing the order is
/// 502 `wechatpay_refused`, its error code in the message.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/wechatpay",
    tag = "payments",
    security(("shopper" = [])),
    extensions(("x-flashsale-only-when" = json!({"FLASHSALE_PAYMENTS": "wechatpay"}))),
    params(("id" = String, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "What `wx.requestPayment` takes.", body = RequestPaymentBody),
        PrepayErrors,
    )
)]
async fn wechatpay_prepay(
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RequestPaymentBody>, ApiError> {
    let params = state
        .payments
        .wechatpay_prepay(&parse_order_id(&id)?, &shopper_id)
        .await?;
    Ok(Json(RequestPaymentBody {
        app_id: params.app_id,
        time_stamp: params.time_stamp,
        nonce_str: params.nonce_str,
        package: params.package,
        sign_type: params.sign_type,
        pay_sign: params.pay_sign,
    }))
}

/// A WeChat Pay v3 payment notification.
///
/// The `Wechatpay-*` headers are verified (RSA-SHA256 over
/// `timestamp\nnonce\nbody\n` with the platform public key), the `resource`
/// is decrypted (AEAD_AES_256_GCM with the APIv3 key), and a `SUCCESS`
/// transaction whose `out_trade_no` is the order id marks the order paid.
/// Answers 200 `{"code": "SUCCESS"}` once the payment is recorded (or was
/// already), so WeChat Pay stops retrying; any other answer makes it retry
/// later. A payment after the order expired or was cancelled marks it
/// `refund_required`. A verified payment that cannot be applied (a wrong
/// amount, an unknown order) changes no order: it is recorded as a payment
/// exception (`GET /admin/v1/payment-exceptions`) and acknowledged. A
/// refund's result (`resource.original_type` `refund`: `REFUND.SUCCESS`,
/// `REFUND.ABNORMAL`, `REFUND.CLOSED`) is verified the same way: `SUCCESS`
/// makes the order `refunded`, the others are kept as payment exceptions.
/// 404 `not_found` when the engine runs with `FLASHSALE_PAYMENTS=simulated`.
#[utoipa::path(
    post,
    path = "/api/v1/payments/wechatpay/notify",
    tag = "payments",
    params(
        ("Wechatpay-Signature" = String, Header, description = "Base64 RSA-SHA256 signature."),
        ("Wechatpay-Timestamp" = String, Header, description = "Unix seconds; at most 5 minutes off."),
        ("Wechatpay-Nonce" = String, Header, description = "The signed nonce."),
        ("Wechatpay-Serial" = Option<String>, Header, description = "The platform certificate's serial."),
    ),
    request_body(
        content = WeChatPayNotification,
        description = "The notification, verified over its raw bytes.",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "Received (also for a repeat).", body = NotifyAck),
        NotifyErrors,
    )
)]
async fn wechatpay_notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<NotifyAck>, ApiError> {
    let body = read_body(request, &state).await?;
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let notify_headers = SignedHeaders {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    state
        .payments
        .wechatpay_notified(&notify_headers, &body)
        .await?;
    Ok(acknowledged())
}

fn acknowledged() -> Json<NotifyAck> {
    Json(NotifyAck {
        code: "SUCCESS",
        message: "OK",
    })
}

/// Pays the shopper's own order at once (simulated payments only).
///
/// Only when the engine runs with `FLASHSALE_PAYMENTS=simulated` (demos,
/// load suites); absent (404) with `wechatpay`. Paying an order that
/// expired or was cancelled marks it `refund_required`; paying twice
/// changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/pay",
    tag = "payments",
    security(("shopper" = [])),
    extensions(("x-flashsale-only-when" = json!({"FLASHSALE_PAYMENTS": "simulated"}))),
    params(("id" = String, Path, description = "The order's id.")),
    responses((status = 200, description = "The order, paid.", body = OrderBody), PayErrors)
)]
async fn simulated_pay(
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state
        .payments
        .pay_simulated(&parse_order_id(&id)?, &shopper_id)
        .await?;
    Ok(Json((&order).into()))
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

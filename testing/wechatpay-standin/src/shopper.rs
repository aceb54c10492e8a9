//! The stand-in's own routes, outside WeChat Pay's API: what the shopper's
//! WeChat app does when the Mini Program calls `wx.requestPayment`, and
//! the ledger for a verdict.
//!
//! - `POST /standin/pay` takes exactly what `wx.requestPayment` takes
//!   (`appId`, `timeStamp`, `nonceStr`, `package` = `prepay_id=...`,
//!   `signType` = `RSA`, `paySign`), checks `paySign` with the merchant's
//!   public key over `appId\ntimeStamp\nnonceStr\npackage\n` as WeChat
//!   does, marks the WeChat Pay order paid and answers 200
//!   `{"out_trade_no", "transaction_id"}`; then posts the signed,
//!   encrypted `TRANSACTION.SUCCESS` notification to the order's
//!   `notify_url`, again until it is acknowledged (200 or 204) as WeChat
//!   Pay does, on a schedule compressed from WeChat Pay's day to under a
//!   minute. Refusals are `{"error": {"code", "message"}}`: 400
//!   `invalid_request` (not what `wx.requestPayment` takes), 401
//!   `unauthorized` (`paySign` does not verify, or another app's
//!   `appId`), 404 `not_found` (no such prepay), 409 `ORDER_CLOSED` (the
//!   merchant closed it first: the shopper was too late) or `ORDERPAID`.
//! - `GET /standin/ledger`: [`LedgerView`], every WeChat Pay order and
//!   refund with what happened to it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ledger::LedgerView;
use crate::server::{NotPayable, StandIn};
use crate::sim::{signed_by_merchant, Notification};

/// Deliveries of one payment notification at most (WeChat Pay's count).
pub const NOTIFY_ATTEMPTS_MAX: u32 = 15;
/// The pause after the first failed delivery; it doubles after each
/// failure, up to [`NOTIFY_PAUSE_MAX`].
const NOTIFY_PAUSE_FIRST: Duration = Duration::from_millis(100);
const NOTIFY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Longest one delivery may take before it counts as failed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// What `wx.requestPayment` takes, as the engine's `/wechatpay` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestPayment {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

/// The answer of `POST /standin/pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    pub out_trade_no: String,
    pub transaction_id: String,
}

/// The HTTP client that posts notifications.
pub(crate) fn notify_client() -> std::io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(NOTIFY_TIMEOUT)
        .build()
        .map_err(std::io::Error::other)
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

/// `POST /standin/pay` (see the module docs).
pub(crate) async fn pay(State(state): State<StandIn>, body: Bytes) -> Response {
    let params: RequestPayment = match serde_json::from_slice(&body) {
        Ok(params) => params,
        Err(err) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("not what wx.requestPayment takes: {err}"),
            )
        }
    };
    let Some(prepay_id) = params.package.strip_prefix("prepay_id=") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "package is not prepay_id=...",
        );
    };
    if params.sign_type != "RSA" {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "signType is not RSA",
        );
    }
    let order = {
        let ledger = state.ledger.lock();
        ledger.prepays.get(prepay_id).and_then(|no| {
            let appid = ledger.orders.get(no)?.request["appid"].as_str()?.to_owned();
            Some((no.clone(), appid))
        })
    };
    let Some((out_trade_no, appid)) = order else {
        return refusal(StatusCode::NOT_FOUND, "not_found", "no such prepay_id");
    };
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params.app_id, params.time_stamp, params.nonce_str, params.package
    );
    if params.app_id != appid || !signed_by_merchant(&message, &params.pay_sign) {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "paySign does not verify with the merchant's key for this app",
        );
    }
    let (transaction, notify_url) = match state.pay(&out_trade_no, false) {
        Ok(paid) => paid,
        Err(NotPayable::Closed) => {
            return refusal(
                StatusCode::CONFLICT,
                "ORDER_CLOSED",
                "the merchant closed this order",
            )
        }
        Err(NotPayable::AlreadyPaid) => {
            return refusal(StatusCode::CONFLICT, "ORDERPAID", "already paid")
        }
        Err(NotPayable::Unknown) => {
            return refusal(StatusCode::NOT_FOUND, "not_found", "no such order")
        }
    };
    let paid = Paid {
        out_trade_no: out_trade_no.clone(),
        transaction_id: transaction["transaction_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    if let Some(notify_url) = notify_url {
        let notification = state.sim.notification_for(transaction);
        tokio::spawn(deliver(state, out_trade_no, notify_url, notification));
    }
    (StatusCode::OK, Json(paid)).into_response()
}

/// Posts `notification` to `notify_url` until it is acknowledged (200 or
/// 204), at most [`NOTIFY_ATTEMPTS_MAX`] times, recording each attempt on
/// the order.
async fn deliver(state: StandIn, out_trade_no: String, notify_url: String, n: Notification) {
    let mut pause = NOTIFY_PAUSE_FIRST;
    for _ in 0..NOTIFY_ATTEMPTS_MAX {
        let mut request = state
            .client
            .post(&notify_url)
            .header("content-type", "application/json")
            .body(n.body.clone());
        for (name, value) in n.headers() {
            request = request.header(name, value);
        }
        let acknowledged = request.send().await.is_ok_and(|response| {
            matches!(
                response.status(),
                reqwest::StatusCode::OK | reqwest::StatusCode::NO_CONTENT
            )
        });
        if let Some(order) = state.ledger.lock().orders.get_mut(&out_trade_no) {
            order.notify_attempts += 1;
            order.notified |= acknowledged;
        }
        if acknowledged {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(NOTIFY_PAUSE_MAX);
    }
}

/// `GET /standin/ledger`.
pub(crate) async fn ledger(State(state): State<StandIn>) -> Json<LedgerView> {
    Json(state.ledger.lock().view())
}

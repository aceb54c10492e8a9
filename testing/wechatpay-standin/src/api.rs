//! WeChat Pay's API as the engine calls it (`/v3/...`): every request's
//! `Authorization` checked with the merchant's public key and recorded;
//! prepay, close, query, refund and refund query answered as WeChat Pay
//! documents them, every answer signed with the platform key (or, as
//! told, not as it should be).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use crate::ledger::{WxCall, WxOrder, WxRefund, WxState, ORDERS_MAX};
use crate::server::StandIn;
use crate::sim::{beijing_now, digits, signed_by_merchant, unix_now};
use crate::{MCHID, MERCHANT_SERIAL};

/// How the stand-in answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As WeChat Pay documents.
    Normal,
    /// 500 `SYSTEM_ERROR` to every call.
    ServerError,
    /// Never answers (past any client's timeout).
    Stall,
    /// Answers as `Normal`, this long after the call.
    Slow(Duration),
    /// 400 with this error code to every call (404 for
    /// `RESOURCE_NOT_EXISTS`).
    Refuse(&'static str),
    /// The same, unsigned (as a proxy or an attacker on the path could
    /// answer): never to be believed by itself.
    RefuseUnsigned(&'static str),
    /// Answers signed with a key WeChat Pay does not hold.
    ForgedAnswers,
    /// Answers signed 10 minutes ago.
    StaleAnswers,
    /// Takes a refund as asked, then never answers (the answer is lost):
    /// the engine must send it again, and WeChat Pay refunds once.
    TakeRefundThenStall,
    /// Takes a refund as asked, then a proxy on the way back answers an
    /// unsigned 400 with this code: the engine sees a refusal, though
    /// WeChat Pay holds the refund.
    TakeRefundThenRefuseUnsigned(&'static str),
}

/// The transaction of a WeChat Pay order, as query answers and payment
/// notifications carry it.
pub(crate) fn transaction_json(out_trade_no: &str, order: &WxOrder) -> Value {
    let state = order.state.trade_state();
    let amount = &order.request["amount"];
    let mut transaction = json!({
        "appid": order.request["appid"],
        "mchid": order.request["mchid"],
        "out_trade_no": out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": state,
        "trade_state_desc": state,
        "payer": order.request["payer"],
        "amount": {
            "total": amount["total"],
            "payer_total": amount["total"],
            "currency": amount["currency"],
            "payer_currency": amount["currency"],
        },
    });
    if let WxState::Paid(id) = &order.state {
        transaction["transaction_id"] = json!(id);
        transaction["success_time"] = json!(beijing_now());
        transaction["bank_type"] = json!("CMC");
    }
    transaction
}

/// A refund as WeChat Pay writes it: in the refund call's answer (its
/// state in `status`) and in a refund notification's resource (in
/// `refund_status`).
pub(crate) fn refund_json(out_refund_no: &str, refund: &WxRefund, status_field: &str) -> Value {
    let amount = &refund.request["amount"];
    let mut json = json!({
        "mchid": MCHID,
        "out_trade_no": refund.out_trade_no,
        "transaction_id": refund.transaction_id,
        "out_refund_no": out_refund_no,
        "refund_id": refund.refund_id,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": beijing_now(),
        "amount": {
            "total": amount["total"],
            "refund": amount["refund"],
            "payer_total": amount["total"],
            "payer_refund": amount["refund"],
            "currency": amount["currency"],
        },
    });
    json[status_field] = json!(refund.status);
    if refund.status == "SUCCESS" {
        json["success_time"] = json!(beijing_now());
    }
    json
}

/// `POST /v3/refund/domestic/refunds`: one refund per `out_refund_no`; a
/// repeat is answered with the first (WeChat Pay's idempotency). Only a
/// paid order can be refunded.
fn take_refund(state: &StandIn, body: &str) -> (StatusCode, String) {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let (Some(out_refund_no), Some(out_trade_no)) = (
        request["out_refund_no"].as_str(),
        request["out_trade_no"].as_str(),
    ) else {
        return (StatusCode::BAD_REQUEST, error_body("PARAM_ERROR"));
    };
    let mut ledger = state.ledger.lock();
    let paid = match ledger.orders.get(out_trade_no).map(|order| &order.state) {
        Some(WxState::Paid(transaction_id)) => Some(transaction_id.clone()),
        _ => None,
    };
    if paid.is_none() && !ledger.refunds.contains_key(out_refund_no) {
        return (StatusCode::BAD_REQUEST, error_body("INVALID_REQUEST"));
    }
    let refund = ledger
        .refunds
        .entry(out_refund_no.to_owned())
        .or_insert_with(|| WxRefund {
            out_trade_no: out_trade_no.to_owned(),
            transaction_id: paid.unwrap_or_default(),
            refund_id: format!("5030{}", digits(25)),
            status: "PROCESSING".into(),
            request: request.clone(),
            calls: 0,
        });
    refund.calls += 1;
    (
        StatusCode::OK,
        refund_json(out_refund_no, refund, "status").to_string(),
    )
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`: the refund as it is
/// now, or `RESOURCE_NOT_EXISTS`.
fn query_refund(state: &StandIn, out_refund_no: &str) -> (StatusCode, String) {
    let ledger = state.ledger.lock();
    match ledger.refunds.get(out_refund_no) {
        Some(refund) => (
            StatusCode::OK,
            refund_json(out_refund_no, refund, "status").to_string(),
        ),
        None => (StatusCode::NOT_FOUND, error_body("RESOURCE_NOT_EXISTS")),
    }
}

/// `POST /v3/pay/transactions/jsapi`: one WeChat Pay order per
/// `out_trade_no`; a repeat gets its prepay id again.
fn take_prepay(state: &StandIn, body: &str) -> (StatusCode, String) {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(out_trade_no) = request["out_trade_no"].as_str() else {
        return (StatusCode::BAD_REQUEST, error_body("PARAM_ERROR"));
    };
    let mut ledger = state.ledger.lock();
    if !ledger.orders.contains_key(out_trade_no) && ledger.orders.len() >= ORDERS_MAX {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            error_body("FREQUENCY_LIMITED"),
        );
    }
    let order = ledger
        .orders
        .entry(out_trade_no.to_owned())
        .or_insert_with(|| WxOrder {
            prepay_id: format!("wx{}", digits(34)),
            request: request.clone(),
            state: WxState::NotPay,
            prepay_calls: 0,
            close_calls: 0,
            payments: 0,
            notify_attempts: 0,
            notified: false,
        });
    order.prepay_calls += 1;
    let prepay_id = order.prepay_id.clone();
    ledger
        .prepays
        .insert(prepay_id.clone(), out_trade_no.to_owned());
    (
        StatusCode::OK,
        json!({ "prepay_id": prepay_id }).to_string(),
    )
}

/// `POST /v3/pay/transactions/out-trade-no/{no}/close`: 204, or
/// `ORDERPAID` for a paid order.
fn close(state: &StandIn, no: &str) -> (StatusCode, String) {
    let mut ledger = state.ledger.lock();
    let Some(order) = ledger.orders.get_mut(no) else {
        return (StatusCode::NOT_FOUND, error_body("ORDER_NOT_EXIST"));
    };
    order.close_calls += 1;
    if matches!(order.state, WxState::Paid(_)) {
        return (StatusCode::BAD_REQUEST, error_body("ORDERPAID"));
    }
    order.state = WxState::Closed;
    (StatusCode::NO_CONTENT, String::new())
}

/// `GET /v3/pay/transactions/out-trade-no/{no}`: the transaction.
fn query(state: &StandIn, no: &str) -> (StatusCode, String) {
    let ledger = state.ledger.lock();
    match ledger.orders.get(no) {
        Some(order) => (StatusCode::OK, transaction_json(no, order).to_string()),
        None => (StatusCode::NOT_FOUND, error_body("ORDER_NOT_EXIST")),
    }
}

/// Every call under `/v3/`: checks its signature, records it, and answers
/// as told.
pub(crate) async fn answer(
    State(state): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorized = authorized(&method, &path, &headers, &body);
    state.ledger.lock().record(WxCall {
        method: method.to_string(),
        path: path.clone(),
        authorized,
    });
    if !authorized {
        return signed(&state, StatusCode::UNAUTHORIZED, error_body("SIGN_ERROR"));
    }
    let behaviour = *state.behaviour.lock();
    match behaviour {
        Behaviour::ServerError => {
            return signed(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body("SYSTEM_ERROR"),
            )
        }
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Behaviour::Refuse(code) => {
            return signed(&state, refusal_status(code), error_body(code));
        }
        Behaviour::RefuseUnsigned(code) => {
            return (refusal_status(code), error_body(code)).into_response();
        }
        Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (status, answer) = match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "refund", "domestic", "refunds"]) => {
            let taken = take_refund(&state, &body);
            match behaviour {
                Behaviour::TakeRefundThenStall => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return StatusCode::GATEWAY_TIMEOUT.into_response();
                }
                Behaviour::TakeRefundThenRefuseUnsigned(code) => {
                    return (StatusCode::BAD_REQUEST, error_body(code)).into_response();
                }
                _ => taken,
            }
        }
        ("GET", ["v3", "refund", "domestic", "refunds", no]) => query_refund(&state, no),
        ("POST", ["v3", "pay", "transactions", "jsapi"]) => take_prepay(&state, &body),
        ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => close(&state, no),
        ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => query(&state, no),
        _ => (StatusCode::NOT_FOUND, error_body("NOT_FOUND")),
    };
    signed(&state, status, answer)
}

/// The status WeChat Pay refuses with `code`: 404 for what it does not
/// hold, 400 otherwise.
fn refusal_status(code: &str) -> StatusCode {
    if code == "RESOURCE_NOT_EXISTS" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// WeChat Pay's error body.
pub(crate) fn error_body(code: &str) -> String {
    json!({"code": code, "message": format!("stand-in says {code}")}).to_string()
}

/// An answer with its `Wechatpay-*` signature headers, genuine or (as
/// told) forged or stale.
fn signed(state: &StandIn, status: StatusCode, body: String) -> Response {
    let behaviour = *state.behaviour.lock();
    let signer = if behaviour == Behaviour::ForgedAnswers {
        &state.stranger
    } else {
        &state.sim
    };
    let timestamp = if behaviour == Behaviour::StaleAnswers {
        unix_now() - 600
    } else {
        unix_now()
    };
    let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let signature = signer.sign(&format!("{timestamp}\n{nonce}\n{body}\n"));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json".to_owned());
    set("wechatpay-timestamp", timestamp.to_string());
    set("wechatpay-nonce", nonce);
    set("wechatpay-signature", signature);
    set("wechatpay-serial", state.sim.serial());
    response
}

/// Whether the request's `Authorization` is the merchant's APIv3
/// signature of it, for our merchant id and the merchant key's serial.
fn authorized(method: &Method, path: &str, headers: &HeaderMap, body: &str) -> bool {
    let Some(value) = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some(params) = value.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let fields: HashMap<&str, &str> = params
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.strip_prefix('"')?.strip_suffix('"')?))
        })
        .collect();
    let field = |name: &str| fields.get(name).copied().unwrap_or_default();
    field("mchid") == MCHID
        && field("serial_no") == MERCHANT_SERIAL
        && signed_by_merchant(
            &format!(
                "{method}\n{path}\n{}\n{}\n{body}\n",
                field("timestamp"),
                field("nonce_str")
            ),
            field("signature"),
        )
}

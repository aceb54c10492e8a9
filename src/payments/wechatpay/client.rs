//! The engine's calls to WeChat Pay API v3 (direct merchant mode): JSAPI /
//! Mini Program prepay, close and query by our order id, each signed and
//! each answer verified; and the `wx.requestPayment` parameters for a
//! prepay.
//!
//! - Every request carries `Authorization: WECHATPAY2-SHA256-RSA2048
//!   mchid="..",nonce_str="..",signature="..",timestamp="..",serial_no=".."`,
//!   the signature (merchant API key, RSA-SHA256) over
//!   `"{METHOD}\n{path and query}\n{timestamp}\n{nonce}\n{body}\n"`.
//! - A 2xx answer is believed only once its `Wechatpay-Signature` verifies
//!   with the platform key its `Wechatpay-Serial` names, within 5 minutes
//!   (see [`super::keys`]). A 4xx answer that carries a signature must
//!   verify too; an unsigned one is read as a refusal, which never changes
//!   an order by itself (a close refused as already paid or already closed
//!   is confirmed by a verified query).
//! - 5xx, 429, a timeout or no connection are [`CallError::Unavailable`]:
//!   the caller retries.
//!
//! Spec: <https://pay.weixin.qq.com/doc/v3/merchant/4012791897> (JSAPI
//! prepay), `4012556398` (close), `4013070356` (query by out_trade_no);
//! refunds: <https://pay.weixin.qq.com/wiki/doc/apiv3/apis/chapter3_5_9.shtml>
//! (`POST /v3/refund/domestic/refunds`), `chapter3_5_10` (`GET
//! /v3/refund/domestic/refunds/{out_refund_no}`, the refund as it is now)
//! and `chapter3_5_11` (the refund result notification).

use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, SecondsFormat, TimeZone, Utc};
use rand::distr::{Alphanumeric, SampleString};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;

use super::keys::{MerchantKey, PlatformKeys, SignedHeaders};
use super::notify::{refund_result, transaction, NotifyError, RefundResult, Transaction};
use crate::domain::Millis;

/// WeChat Pay's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// The largest answer read from WeChat Pay, in bytes.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// The longest `description` WeChat Pay takes, in characters.
const DESCRIPTION_CHARS_MAX: usize = 127;

/// The longest prepay id accepted (WeChat Pay's are 36 characters).
const PREPAY_ID_LEN_MAX: usize = 64;

/// The merchant account the calls are made for.
#[derive(Debug, Clone)]
pub struct Account {
    /// The merchant id (`mchid`).
    pub mchid: String,
    /// The Mini Program's AppID, bound to the merchant id.
    pub appid: String,
    /// The public URL of the engine's notify route.
    pub notify_url: String,
    /// WeChat Pay's API host (a test's stand-in in the tests).
    pub base_url: Url,
    /// Longest one call may take.
    pub timeout: Duration,
}

/// Why a call to WeChat Pay did not give an answer to act on.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer in time, no connection, a 5xx or a 429: try again later.
    #[error("WeChat Pay is unavailable: {0}")]
    Unavailable(String),
    /// WeChat Pay refused the call (a 4xx with its error code).
    #[error("WeChat Pay refused the call: {code} ({status}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// The refusal carried WeChat Pay's signature, and it verified
        /// (WeChat Pay signs every answer to a request it verified; an
        /// unsigned refusal may come from anything on the way).
        signed: bool,
    },
    /// The answer's signature does not verify, or it is stale.
    #[error("WeChat Pay's answer does not verify: {0}")]
    Unverified(#[from] NotifyError),
    /// A verified answer that is not what the API documents.
    #[error("WeChat Pay's answer is malformed: {0}")]
    Malformed(String),
}

/// What a close did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// WeChat Pay closed it (a verified answer): it can no longer be paid.
    Closed,
    /// WeChat Pay refused to close it as paid (`ORDERPAID`) or as closed
    /// already (`ORDER_CLOSED`). A refusal may come unsigned, so only a
    /// verified query says which.
    Refused,
}

/// One of our orders, as the prepay call describes it.
#[derive(Debug, Clone)]
pub struct PrepayOrder<'a> {
    /// `out_trade_no`: our order id.
    pub out_trade_no: &'a str,
    /// The sale's title (cut to 127 characters).
    pub description: &'a str,
    /// The order's `expires_at`: WeChat Pay takes no payment after it.
    pub expires_at: Millis,
    pub amount_cents: i64,
    pub currency: &'a str,
    /// The payer's OpenID (the shopper's id).
    pub openid: &'a str,
}

/// Exactly what `wx.requestPayment` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPayment {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: &'static str,
    pub pay_sign: String,
}

pub struct WeChatPayClient {
    http: reqwest::Client,
    account: Account,
    merchant: MerchantKey,
    platform_keys: Arc<PlatformKeys>,
}

impl std::fmt::Debug for WeChatPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatPayClient")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A verified 2xx answer's body.
struct Answer {
    body: Vec<u8>,
}

impl WeChatPayClient {
    pub fn new(
        account: Account,
        merchant: MerchantKey,
        platform_keys: Arc<PlatformKeys>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(account.timeout)
            .build()?;
        Ok(Self {
            http,
            account,
            merchant,
            platform_keys,
        })
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    /// `POST /v3/pay/transactions/jsapi`: creates the WeChat Pay order for
    /// one of ours; answers its prepay id.
    pub async fn prepay(&self, order: &PrepayOrder<'_>) -> Result<String, CallError> {
        let description: String = order
            .description
            .chars()
            .take(DESCRIPTION_CHARS_MAX)
            .collect();
        let body = json!({
            "appid": self.account.appid,
            "mchid": self.account.mchid,
            "description": description,
            "out_trade_no": order.out_trade_no,
            "time_expire": beijing_time(order.expires_at),
            "notify_url": self.account.notify_url,
            "amount": {"total": order.amount_cents, "currency": order.currency},
            "payer": {"openid": order.openid},
        });
        let answer = self
            .call(
                Method::POST,
                "/v3/pay/transactions/jsapi",
                Some(body.to_string()),
            )
            .await?;
        #[derive(Deserialize)]
        struct Prepaid {
            prepay_id: String,
        }
        let prepaid: Prepaid = serde_json::from_slice(&answer.body)
            .map_err(|err| CallError::Malformed(format!("prepay answer: {err}")))?;
        let id = prepaid.prepay_id;
        let valid = !id.is_empty()
            && id.len() <= PREPAY_ID_LEN_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(CallError::Malformed(format!("prepay_id {id:?}")));
        }
        Ok(id)
    }

    /// `POST /v3/pay/transactions/out-trade-no/{no}/close`: no payment of
    /// our order is possible after a [`Closed::Closed`].
    pub async fn close(&self, out_trade_no: &str) -> Result<Closed, CallError> {
        let body = json!({ "mchid": self.account.mchid }).to_string();
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        match self.call(Method::POST, &path, Some(body)).await {
            Ok(_) => Ok(Closed::Closed),
            Err(CallError::Refused { code, .. })
                if ["ORDERPAID", "ORDER_CLOSED", "ORDERCLOSED"].contains(&code.as_str()) =>
            {
                Ok(Closed::Refused)
            }
            Err(err) => Err(err),
        }
    }

    /// `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`: the WeChat Pay
    /// order of ours, as it is now.
    pub async fn query(&self, out_trade_no: &str) -> Result<Transaction, CallError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.account.mchid
        );
        let answer = self.call(Method::GET, &path, None).await?;
        Ok(transaction(&answer.body)?)
    }

    /// `POST /v3/refund/domestic/refunds`: refunds all of one paid order of
    /// ours (`amount` its total), as the refund [`out_refund_no`] names.
    /// WeChat Pay keeps one refund per `out_refund_no`: sending it again
    /// (a retry after a lost answer) answers the same refund, never a
    /// second one.
    pub async fn refund(
        &self,
        out_trade_no: &str,
        amount_cents: i64,
        currency: &str,
    ) -> Result<RefundResult, CallError> {
        let out_refund_no = out_refund_no(out_trade_no);
        let body = json!({
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "notify_url": self.account.notify_url,
            "amount": {"refund": amount_cents, "total": amount_cents, "currency": currency},
        });
        let answer = self
            .call(
                Method::POST,
                "/v3/refund/domestic/refunds",
                Some(body.to_string()),
            )
            .await?;
        refund_of(&answer, out_trade_no, &out_refund_no)
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`: the one refund of
    /// our order `out_trade_no` as it is now, or `None` when WeChat Pay
    /// holds none (`RESOURCE_NOT_EXISTS`: it never took the refund call).
    /// A `None` followed by the refund call cannot refund twice, so an
    /// unsigned 404 is believed there; one the merchant's settle by hand
    /// relies on must be signed (`require_signed_absence`), else the query
    /// fails as WeChat Pay unavailable.
    pub async fn query_refund(
        &self,
        out_trade_no: &str,
        require_signed_absence: bool,
    ) -> Result<Option<RefundResult>, CallError> {
        let out_refund_no = out_refund_no(out_trade_no);
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        match self.call(Method::GET, &path, None).await {
            Ok(answer) => refund_of(&answer, out_trade_no, &out_refund_no).map(Some),
            Err(CallError::Refused {
                status: 404,
                code,
                signed,
                ..
            }) if code == "RESOURCE_NOT_EXISTS" => {
                if require_signed_absence && !signed {
                    return Err(CallError::Unavailable(format!(
                        "WeChat Pay's answer that it holds no refund {out_refund_no} is unsigned"
                    )));
                }
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The parameters of `wx.requestPayment` for `prepay_id`, signed now:
    /// `paySign` is the merchant key's RSA-SHA256 signature over
    /// `"{appId}\n{timeStamp}\n{nonceStr}\n{package}\n"`.
    pub fn request_payment(&self, prepay_id: &str, now_secs: i64) -> RequestPayment {
        let time_stamp = now_secs.to_string();
        let nonce_str = nonce();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self.merchant.sign(&format!(
            "{}\n{time_stamp}\n{nonce_str}\n{package}\n",
            self.account.appid
        ));
        RequestPayment {
            app_id: self.account.appid.clone(),
            time_stamp,
            nonce_str,
            package,
            sign_type: "RSA",
            pay_sign,
        }
    }

    /// One signed call; the answer once verified (2xx), or why not.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<Answer, CallError> {
        let url = self
            .account
            .base_url
            .join(path_and_query)
            .map_err(|err| CallError::Malformed(format!("URL {path_and_query}: {err}")))?;
        let signed_path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let body = body.unwrap_or_default();
        let timestamp = Utc::now().timestamp();
        let nonce = nonce();
        let signature = self.merchant.sign(&format!(
            "{method}\n{signed_path}\n{timestamp}\n{nonce}\n{body}\n"
        ));
        let authorization = format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{signature}\",\
             timestamp=\"{timestamp}\",serial_no=\"{}\"",
            self.account.mchid,
            self.merchant.serial()
        );
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "flashsale");
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| CallError::Unavailable(err.without_url().to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_bounded(response).await?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(CallError::Unavailable(format!("it answered {status}")));
        }
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let signed = SignedHeaders {
            timestamp: header("wechatpay-timestamp"),
            nonce: header("wechatpay-nonce"),
            signature: header("wechatpay-signature"),
            serial: header("wechatpay-serial"),
        };
        let carries_signature = status.is_success() || signed.signature.is_some();
        if carries_signature {
            self.platform_keys
                .verify(&signed, &body, Utc::now().timestamp())
                .inspect_err(|err| {
                    tracing::warn!(error = %err, %status, "WeChat Pay answer refused");
                })?;
        }
        if status.is_success() {
            return Ok(Answer { body });
        }
        #[derive(Deserialize)]
        struct Refusal {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let refusal: Refusal = serde_json::from_slice(&body).unwrap_or(Refusal {
            code: String::new(),
            message: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
        Err(CallError::Refused {
            status: status.as_u16(),
            code: refusal.code,
            message: refusal.message,
            signed: carries_signature,
        })
    }
}

/// The refund an answer holds, checked to be `out_refund_no` of
/// `out_trade_no`.
fn refund_of(
    answer: &Answer,
    out_trade_no: &str,
    out_refund_no: &str,
) -> Result<RefundResult, CallError> {
    let refund = refund_result(&answer.body)?;
    if refund.out_refund_no != out_refund_no || refund.out_trade_no != out_trade_no {
        return Err(CallError::Malformed(format!(
            "the refund {out_refund_no} of {out_trade_no} was answered for {} of {}",
            refund.out_refund_no, refund.out_trade_no
        )));
    }
    Ok(refund)
}

/// The refund number (`out_refund_no`) of the one refund of our order
/// `out_trade_no`: derived from it, so every attempt of one refund carries
/// the same number and WeChat Pay refunds the order once.
pub fn out_refund_no(out_trade_no: &str) -> String {
    format!("{out_trade_no}-refund")
}

/// Reads an answer's body, at most [`ANSWER_BYTES_MAX`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| CallError::Unavailable(err.without_url().to_string()))?
    {
        if body.len() + chunk.len() > ANSWER_BYTES_MAX {
            return Err(CallError::Malformed(format!(
                "the answer is over {ANSWER_BYTES_MAX} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A fresh 32-character nonce.
fn nonce() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// `at` in RFC 3339 at UTC+8, to the second, as WeChat Pay writes times.
fn beijing_time(at: Millis) -> String {
    FixedOffset::east_opt(8 * 3600)
        .and_then(|cst| cst.timestamp_millis_opt(at).single())
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Secs, false))
        .unwrap_or_default()
}

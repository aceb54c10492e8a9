//! The one place where errors become responses. Every error body is
//! `{"error": {"code": "...", "message": "..."}}` with a stable code from the
//! contract; 503s carry `Retry-After`.

use std::sync::LazyLock;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::JsonAnswer;
use super::AppState;
use crate::domain::{InvalidField, Rejection};
use crate::inventory::InventoryError;
use crate::json::{self, JsonProblem};
use crate::orders::CancelError;
use crate::payments::wechatpay::CallError;
use crate::payments::PaymentError;
use crate::sales::live::WatchError;
use crate::sales::SaleError;
use crate::store::StoreError;

/// Seconds a shed or failed client should wait before retrying.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: the body is not JSON.
    #[error("{0}")]
    MalformedBody(String),
    /// 422 `invalid_request`: well-formed but wrong types, unknown fields or
    /// out-of-range values.
    #[error("{0}")]
    Invalid(String),
    /// 401 `unauthorized`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 `forbidden`.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `invalid_request`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 with the rejection's own code.
    #[error(transparent)]
    Rejected(Rejection),
    /// 409 `conflict`.
    #[error("{0}")]
    Conflict(String),
    /// 413 `payload_too_large`.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after_secs: u64,
    },
    /// 503 `overloaded`.
    #[error("{0}")]
    Overloaded(String),
    /// 503 `unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `unavailable`, with a `Retry-After` of its own (a failure
    /// remembered for that long).
    #[error("{message}")]
    UnavailableFor {
        message: &'static str,
        retry_after_secs: u64,
    },
    /// 502 `wechatpay_refused`.
    #[error("{0}")]
    WechatpayRefused(String),
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: clients branch on it.
    pub code: ErrorCode,
    /// For humans; names the field when a value is refused.
    pub message: String,
}

/// The contract's error codes, one row each: the code clients branch on,
/// the HTTP statuses it comes with, and when. [`ErrorCode`] (and so the
/// OpenAPI schema of that name), [`ApiError::code`], [`ApiError::status`]
/// and the fuzz test's expectations all read this one table.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, [$($status:literal),+];)+) => {
        /// A stable error code (see the table in `http::error`).
        ///
        /// Serialized snake_case (the schema generator does not read a
        /// rename given through a macro); a test checks it is the table's
        /// code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// The statuses an answer with this code may have; the first is
            /// the usual one.
            pub fn statuses(self) -> &'static [u16] {
                match self {
                    $(Self::$variant => &[$($status),+],)+
                }
            }
        }
    };
}

error_codes! {
    /// Malformed JSON (400), a method the route does not take (405), wrong
    /// types, unknown fields or out-of-range values (422).
    InvalidRequest = "invalid_request", [422, 400, 405];
    /// Missing, malformed, expired or badly signed token.
    Unauthorized = "unauthorized", [401];
    /// A valid token that may not do this.
    Forbidden = "forbidden", [403];
    /// Unknown sale, order or route.
    NotFound = "not_found", [404];
    /// The sale has not opened yet.
    NotStarted = "not_started", [409];
    /// The sale has closed (time over, or ended by the merchant).
    Ended = "ended", [409];
    /// No stock left.
    SoldOut = "sold_out", [409];
    /// The shopper would pass the sale's per-user limit.
    LimitExceeded = "limit_exceeded", [409];
    /// Not allowed in the current state.
    Conflict = "conflict", [409];
    /// The body is over the limit.
    PayloadTooLarge = "payload_too_large", [413];
    /// Over a rate limit; `Retry-After` set.
    RateLimited = "rate_limited", [429];
    /// Shedding load; `Retry-After` set.
    Overloaded = "overloaded", [503];
    /// The store, or WeChat Pay, is unreachable; `Retry-After` set.
    Unavailable = "unavailable", [503];
    /// WeChat Pay refused the call; the message carries its error code.
    WechatpayRefused = "wechatpay_refused", [502];
}

/// The code a refused reservation answers with.
fn rejection_code(rejection: Rejection) -> ErrorCode {
    match rejection {
        Rejection::NotStarted => ErrorCode::NotStarted,
        Rejection::Ended => ErrorCode::Ended,
        Rejection::SoldOut => ErrorCode::SoldOut,
        Rejection::LimitExceeded
        | Rejection::UnpaidLimitExceeded
        | Rejection::RoundLimitExceeded
        | Rejection::CampaignLimitExceeded => ErrorCode::LimitExceeded,
        Rejection::IdempotencyMismatch => ErrorCode::Conflict,
        Rejection::PurchaseTokenRequired
        | Rejection::PurchaseTokenUsed
        | Rejection::PurchaseTokenLapsed => ErrorCode::Forbidden,
    }
}

impl ApiError {
    /// The code's usual status, but for `invalid_request`, whose status
    /// says which kind of bad request it was.
    pub fn status(&self) -> StatusCode {
        let status = match self {
            Self::MalformedBody(_) => 400,
            Self::MethodNotAllowed => 405,
            other => other.code().statuses()[0],
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedBody(_) | Self::Invalid(_) | Self::MethodNotAllowed => {
                ErrorCode::InvalidRequest
            }
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Rejected(rejection) => rejection_code(*rejection),
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Overloaded(_) => ErrorCode::Overloaded,
            Self::Unavailable(_) | Self::UnavailableFor { .. } => ErrorCode::Unavailable,
            Self::WechatpayRefused(_) => ErrorCode::WechatpayRefused,
        }
    }

    /// The body of the answer.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        }
    }
}

/// The body of a refused reservation, serialized once per rejection: the
/// answers a sale's opening sends most (`sold_out` above all), each the
/// same bytes every time.
fn rejection_body(rejection: Rejection) -> &'static [u8] {
    static BODIES: LazyLock<Vec<(Rejection, Vec<u8>)>> = LazyLock::new(|| {
        Rejection::all()
            .map(|rejection| {
                let body = serde_json::to_vec(&ApiError::Rejected(rejection).body());
                (rejection, body.unwrap_or_default())
            })
            .collect()
    });
    BODIES
        .iter()
        .find(|(each, _)| *each == rejection)
        .map_or(&[], |(_, body)| body.as_slice())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::UnavailableFor {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(HeaderValue::from_static(RETRY_AFTER_SECS))
            }
            _ => None,
        };
        let mut response = match &self {
            Self::Rejected(rejection) => {
                let mut response =
                    Response::new(Body::from(Bytes::from_static(rejection_body(*rejection))));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            _ => (status, JsonAnswer(self.body())).into_response(),
        };
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        if matches!(self, Self::PayloadTooLarge) {
            // The rest of the body is never read: the connection cannot
            // carry another request, so say it will close, or a client
            // would send its next request into a reset.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<InvalidField> for ApiError {
    fn from(err: InvalidField) -> Self {
        Self::Invalid(err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(reason) => Self::Conflict(reason),
            StoreError::Rejected(rejection) => Self::Rejected(rejection),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "store unavailable");
                Self::Unavailable("the store is unavailable; retry shortly".into())
            }
            StoreError::QueueFull => Self::Overloaded(
                "the sale's waiting room is full (FLASHSALE_QUEUE_SIZE_MAX); retry shortly".into(),
            ),
            StoreError::BadCursor => super::paging::bad_cursor(),
            StoreError::Corrupt(reason) => {
                tracing::error!(%reason, "unreadable store data");
                Self::Unavailable("the store returned unreadable data".into())
            }
        }
    }
}

impl From<SaleError> for ApiError {
    fn from(err: SaleError) -> Self {
        match err {
            SaleError::Invalid(err) => err.into(),
            SaleError::Store(err) => err.into(),
        }
    }
}

impl From<WatchError> for ApiError {
    fn from(err: WatchError) -> Self {
        match err {
            WatchError::Full(_) => Self::Overloaded(err.to_string()),
            WatchError::Closed => Self::Unavailable(err.to_string()),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::Store(err) => err.into(),
            PaymentError::Notify(err) => err.into(),
            PaymentError::NotEnabled(reason) => Self::NotFound(reason.into()),
            PaymentError::AmountMismatch => Self::Conflict(err.to_string()),
            PaymentError::WeChatPay(CallError::Refused {
                status,
                code,
                message,
                ..
            }) => Self::WechatpayRefused(format!(
                "WeChat Pay refused the payment ({status} {code}): {message}"
            )),
            PaymentError::WeChatPay(err) => {
                tracing::warn!(error = %err, "WeChat Pay unavailable");
                Self::Unavailable("WeChat Pay is unavailable; retry shortly".into())
            }
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(err: CancelError) -> Self {
        match err {
            CancelError::Store(err) => err.into(),
            CancelError::Payment(err) => err.into(),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(err: InventoryError) -> Self {
        match err {
            InventoryError::Store(err) => err.into(),
            InventoryError::Overloaded => {
                Self::Overloaded("too many requests for this sale right now; retry shortly".into())
            }
            InventoryError::TimedOut(after) => Self::Unavailable(format!(
                "no answer within {} ms; the order may still have been made: retry with the \
                 same Idempotency-Key, or look in GET /api/v1/orders",
                after.as_millis()
            )),
        }
    }
}

/// Parses a JSON object body: syntax errors are 400, type and field errors
/// 422. The message names the field (`quantity: invalid type: ...`). Every
/// body of the API is an object; serde would also accept a struct written
/// as an array, so anything else is refused first.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') && serde_json::from_slice::<IgnoredAny>(body).is_ok() {
        return Err(ApiError::Invalid("the body must be a JSON object".into()));
    }
    json::from_slice(body).map_err(|problem| match problem {
        JsonProblem::Syntax(_) => ApiError::MalformedBody(format!("body is {problem}")),
        JsonProblem::Data { .. } => ApiError::Invalid(problem.to_string()),
    })
}

/// Reads the whole body within the engine's body limit
/// (`FLASHSALE_BODY_LIMIT_BYTES`; past it 413). Every route that reads a
/// body reads it here, so the limit needs no layer of its own (a layer
/// costs every request a boxed service clone and future). A body that
/// comes in one frame (an order's few bytes, as a rule) is that frame, as
/// hyper read it, with nothing collected; the frames of a longer body are
/// collected and joined.
pub async fn read_body(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    read_limited(request.into_body(), state.body_limit_bytes).await
}

/// See [`read_body`]: the whole of `body` if it holds at most `limit`
/// bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = Limited::new(body, limit);
    let first = match body.frame().await {
        None => return Ok(Bytes::new()),
        Some(frame) => frame.map_err(body_error)?,
    };
    // A first frame of trailers ends a body without data.
    let first = first.into_data().unwrap_or_default();
    if body.is_end_stream() {
        return Ok(first);
    }
    // A chunked body does not tell its end with its last data frame.
    let rest = body.collect().await.map_err(body_error)?.to_bytes();
    if rest.is_empty() {
        return Ok(first);
    }
    if first.is_empty() {
        return Ok(rest);
    }
    let mut whole = Vec::with_capacity(first.len() + rest.len());
    whole.extend_from_slice(&first);
    whole.extend_from_slice(&rest);
    Ok(whole.into())
}

/// Why a body could not be read: past the limit (413) or broken.
fn body_error(err: Box<dyn std::error::Error + Send + Sync>) -> ApiError {
    if err.is::<LengthLimitError>() {
        ApiError::PayloadTooLarge
    } else {
        ApiError::MalformedBody(format!("Failed to buffer the request body: {err}"))
    }
}

/// A JSON body extractor whose rejections use the contract's error format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let body = read_body(request, state).await?;
        parse_json(&body).map(ApiJson)
    }
}

/// A path extractor whose rejection (say, an id that is not valid UTF-8)
/// uses the contract's error format: such a path names nothing, so 404.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| {
                ApiError::NotFound(format!("no such resource: {}", rejection.body_text()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_table_entry() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).expect("json"), code.as_str());
        }
    }

    /// A body that comes as these frames, as a chunked request's does.
    fn in_frames(chunks: &[&'static str]) -> Body {
        let frames = chunks
            .iter()
            .map(|chunk| Ok::<_, std::io::Error>(Bytes::from_static(chunk.as_bytes())));
        Body::from_stream(futures::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_frame_or_several_and_refused_past_the_limit() {
        // Goal: one frame (its end told or not), several frames (the first
        // empty or not) and no body read the same, and the limit holds
        // across frames.
        let read = |body: Body, limit| read_limited(body, limit);
        assert_eq!(read(Body::empty(), 8).await.expect("empty"), "");
        assert_eq!(
            read(Body::from("{\"q\":1}"), 8).await.expect("one"),
            "{\"q\":1}"
        );
        for chunks in [
            &["{\"q\":1}"][..],
            &["{\"q\"", ":1}"],
            &["", "{\"q\":1}"],
            &["{", "\"q\"", ":1}"],
        ] {
            assert_eq!(
                read(in_frames(chunks), 7).await.expect("several"),
                "{\"q\":1}"
            );
        }
        for body in [Body::from("12345678"), in_frames(&["1234", "5678"])] {
            assert!(matches!(
                read(body, 7).await,
                Err(ApiError::PayloadTooLarge)
            ));
        }
    }

    #[tokio::test]
    async fn a_rejection_answers_its_serialized_body() {
        for rejection in Rejection::all() {
            let error = ApiError::Rejected(rejection);
            let expected = serde_json::to_vec(&error.body()).expect("json");
            let status = error.status();
            let response = error.into_response();
            assert_eq!(response.status(), status, "{rejection:?}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/json",
                "{rejection:?}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(body, expected, "{rejection:?}");
        }
    }

    #[test]
    fn syntax_is_400_and_data_is_422() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[allow(dead_code)]
            quantity: i64,
        }
        let syntax = parse_json::<Body>(b"{").unwrap_err();
        assert_eq!(syntax.status(), StatusCode::BAD_REQUEST);
        let data = parse_json::<Body>(br#"{"quantity": "one"}"#).unwrap_err();
        assert_eq!(data.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let unknown = parse_json::<Body>(br#"{"quantity": 1, "x": 2}"#).unwrap_err();
        assert_eq!(unknown.code(), ErrorCode::InvalidRequest);
        assert!(unknown.to_string().contains('x'));
    }
}

//! The OpenAPI 3 document of the whole API, served at `GET /openapi.json`.
//!
//! It is generated from the code, not written beside it:
//! - every handler carries `#[utoipa::path(...)]`, and the route modules
//!   register handlers with utoipa-axum's `OpenApiRouter::routes(routes!(..))`,
//!   so one call adds both the axum route and its documented operation (the
//!   method filter of the route is the method of the annotation);
//! - request and response bodies are the types the handlers read and
//!   serialize, deriving `ToSchema`;
//! - the error answers an operation lists ([`error_responses!`]) are built
//!   from real [`ApiError`] values: their status, code and message come from
//!   the same code that answers requests.

use std::collections::BTreeMap;

use axum::body::Bytes;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDocument, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::{parse_json, ApiError, ErrorBody, ErrorCode, ErrorDetail};
use crate::domain::{Quantity, Rejection};

/// Security scheme of shoppers' bearer JWTs.
pub const SHOPPER_AUTH: &str = "shopper";
/// Security scheme of the merchants' admin token.
pub const ADMIN_AUTH: &str = "admin";

/// What every document starts from: the description, the tags, the security
/// schemes and the error schema. The paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "flashsale",
        description = "A flash-sale and seckill engine: merchants schedule timed sales of one SKU \
                       in limited stock; shoppers race for it.\n\n\
                       Times are RFC 3339 UTC strings; money is integer minor units \
                       (`price_cents`, `amount_cents`) with an ISO 4217 `currency`. Ids are \
                       opaque strings. Every error is `{\"error\": {\"code\", \"message\"}}` \
                       with a stable `code`; 429 and 503 answers carry `Retry-After`. Every \
                       route but the `ops` ones may answer 503 `overloaded` or `unavailable` \
                       when the engine sheds load."
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "sales", description = "Shoppers: browse sales and race for stock."),
        (name = "orders", description = "Shoppers: their own orders."),
        (name = "payments", description = "WeChat Pay notifications, and simulated payments."),
        (name = "admin", description = "Merchants: schedule, inspect, change and cancel sales."),
        (name = "console", description = "The merchant console's page and files (no admin \
                                          data: the page signs in and calls the admin API)."),
        (name = "ops", description = "Liveness, readiness, metrics and this document; never \
                                      shed, no token."),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SHOPPER_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A shopper's token: a JWT signed with HS256 \
                         (`FLASHSALE_USER_TOKEN_SECRET`); claim `sub` is the shopper's id (a \
                         WeChat OpenID, 1 to 128 characters) and `exp` is required. The \
                         merchant's login service issues it; the admin token is refused here.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The merchants' admin token (`FLASHSALE_ADMIN_TOKEN`), on every \
                         `/admin/` route; shopper tokens are refused (403).",
                    ))
                    .build(),
            ),
        );
    }
}

/// One kind of error answer an operation may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCase {
    /// 400: the body is not JSON.
    MalformedBody,
    /// 422: wrong types, unknown fields, out-of-range values.
    Invalid,
    Unauthorized,
    Forbidden,
    NotFound,
    NotStarted,
    Ended,
    SoldOut,
    LimitExceeded,
    /// 409 `conflict`: not allowed in the current state.
    Conflict,
    /// 409 `conflict`: an `Idempotency-Key` reused with another request.
    IdempotencyMismatch,
    PayloadTooLarge,
    RateLimited,
    Overloaded,
    Unavailable,
    WechatpayRefused,
}

impl ErrorCase {
    /// A real error of this kind (its status, code and message are what the
    /// API answers), and when it happens.
    pub fn sample(self) -> (ApiError, &'static str) {
        match self {
            Self::MalformedBody => (
                parse_json::<serde_json::Value>(b"{\"quantity\": ").expect_err("not JSON"),
                "the body is not JSON",
            ),
            Self::Invalid => (
                Quantity::parse(0).expect_err("out of range").into(),
                "wrong types, unknown fields, out-of-range values or a malformed header; the \
                 message names the field",
            ),
            Self::Unauthorized => (
                ApiError::Unauthorized("missing Authorization: Bearer token"),
                "missing, malformed, expired or badly signed token",
            ),
            Self::Forbidden => (
                ApiError::Forbidden("the admin token cannot act as a shopper"),
                "a valid token that may not do this",
            ),
            Self::NotFound => (
                ApiError::NotFound("sale not found".into()),
                "unknown (or another shopper's) sale or order",
            ),
            Self::NotStarted => (
                ApiError::Rejected(Rejection::NotStarted),
                "the sale has not opened yet",
            ),
            Self::Ended => (
                ApiError::Rejected(Rejection::Ended),
                "the sale has closed (time over, or ended by the merchant)",
            ),
            Self::SoldOut => (ApiError::Rejected(Rejection::SoldOut), "no stock left"),
            Self::LimitExceeded => (
                ApiError::Rejected(Rejection::LimitExceeded),
                "this shopper would pass a per-user limit (the sale's, a campaign's per round or in total), or cancelled or left unpaid the most orders of the sale allowed",
            ),
            Self::Conflict => (
                ApiError::Conflict(
                    "stock_total cannot go below the 12 units reserved, paid or refunded without restock".into(),
                ),
                "the change is not allowed in the current state",
            ),
            Self::IdempotencyMismatch => (
                ApiError::Rejected(Rejection::IdempotencyMismatch),
                "the `Idempotency-Key` was already used with a different request",
            ),
            Self::PayloadTooLarge => (ApiError::PayloadTooLarge, "the body is over the limit"),
            Self::RateLimited => (
                ApiError::RateLimited {
                    message: "too many requests from this shopper",
                    retry_after_secs: 1,
                },
                "over a rate limit; retry after `Retry-After` seconds",
            ),
            Self::Overloaded => (
                ApiError::Overloaded("the server is at capacity; retry shortly".into()),
                "the engine is shedding load; retry after `Retry-After` seconds",
            ),
            Self::Unavailable => (
                ApiError::Unavailable("the store is unavailable; retry shortly".into()),
                "the store (or WeChat Pay) is unreachable or did not answer in time; retry after \
                 `Retry-After` seconds",
            ),
            Self::WechatpayRefused => (
                ApiError::WechatpayRefused(
                    "WeChat Pay refused the payment (400 APPID_MCHID_NOT_MATCH): appid and mchid \
                     do not match"
                        .into(),
                ),
                "WeChat Pay refused the call; the message carries WeChat Pay's status and error \
                 code",
            ),
        }
    }
}

/// The documented error answers of one operation: one response per HTTP
/// status, listing its codes, with one example body per code and the
/// `Retry-After` header on 429 and 503.
pub fn responses_for(cases: &[ErrorCase]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<(ApiError, &'static str)>> = BTreeMap::new();
    for case in cases {
        let (error, when) = case.sample();
        by_status
            .entry(error.status().as_u16())
            .or_default()
            .push((error, when));
    }
    by_status
        .into_iter()
        .map(|(status, errors)| {
            let description = errors
                .iter()
                .map(|(error, when)| format!("`{}`: {when}", error.code().as_str()))
                .collect::<Vec<_>>()
                .join("; ");
            // Named by code; a second case with the same code gets a suffix.
            let mut examples = BTreeMap::new();
            for (error, _) in &errors {
                let body = serde_json::to_value(error.body()).unwrap_or_default();
                let example = ExampleBuilder::new().value(Some(body)).build();
                let mut name = error.code().as_str().to_owned();
                for n in 2.. {
                    if !examples.contains_key(&name) {
                        break;
                    }
                    name = format!("{}_{n}", error.code().as_str());
                }
                examples.insert(name, example);
            }
            let content = ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    ErrorBody::name(),
                ))))
                .examples_from_iter(examples)
                .build();
            let mut response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content);
            if status == 429 || status == 503 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        ))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// Declares marker types for `responses(...)` of `#[utoipa::path]`, each
/// listing the errors one operation may answer:
/// `error_responses!(GetSaleErrors = [NotFound, Overloaded, Unavailable]);`
macro_rules! error_responses {
    ($($name:ident = [$($case:ident),+ $(,)?];)+) => {$(
        struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::http::openapi::responses_for(&[
                    $($crate::http::openapi::ErrorCase::$case),+
                ])
            }
        }
    )+};
}
pub(crate) use error_responses;

/// The finished document, serialized once, for the `/openapi.json` handler.
#[derive(Clone)]
pub struct OpenApiJson(pub Bytes);

impl OpenApiJson {
    pub fn new(document: &OpenApiDocument) -> Self {
        // Serializing plain maps and strings cannot fail.
        Self(Bytes::from(
            serde_json::to_vec(document).unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_CASE: [ErrorCase; 16] = [
        ErrorCase::MalformedBody,
        ErrorCase::Invalid,
        ErrorCase::Unauthorized,
        ErrorCase::Forbidden,
        ErrorCase::NotFound,
        ErrorCase::NotStarted,
        ErrorCase::Ended,
        ErrorCase::SoldOut,
        ErrorCase::LimitExceeded,
        ErrorCase::Conflict,
        ErrorCase::IdempotencyMismatch,
        ErrorCase::PayloadTooLarge,
        ErrorCase::RateLimited,
        ErrorCase::Overloaded,
        ErrorCase::Unavailable,
        ErrorCase::WechatpayRefused,
    ];

    #[test]
    fn every_code_of_the_table_has_a_documented_case() {
        let documented: Vec<ErrorCode> = EVERY_CASE
            .iter()
            .map(|case| case.sample().0.code())
            .collect();
        for code in ErrorCode::ALL {
            assert!(
                documented.contains(code),
                "{} has no ErrorCase",
                code.as_str()
            );
        }
        for case in EVERY_CASE {
            let error = case.sample().0;
            assert!(
                error.code().statuses().contains(&error.status().as_u16()),
                "{case:?} answers {} with {}",
                error.status(),
                error.code().as_str()
            );
        }
    }

    #[test]
    fn error_responses_group_codes_by_status_with_retry_after() {
        let responses = responses_for(&EVERY_CASE);
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(
            statuses,
            ["400", "401", "403", "404", "409", "413", "422", "429", "502", "503"]
        );
        let json = serde_json::to_value(&responses).expect("json");
        let conflict_codes: Vec<&String> = json["409"]["content"]["application/json"]["examples"]
            .as_object()
            .expect("examples")
            .keys()
            .collect();
        assert_eq!(
            conflict_codes,
            [
                "conflict",
                "conflict_2",
                "ended",
                "limit_exceeded",
                "not_started",
                "sold_out"
            ]
        );
        assert_eq!(
            json["409"]["content"]["application/json"]["examples"]["sold_out"]["value"],
            serde_json::json!({"error": {"code": "sold_out", "message": "not enough stock left"}})
        );
        for status in ["429", "503"] {
            assert!(
                json[status]["headers"]["Retry-After"].is_object(),
                "{status}"
            );
        }
        assert!(json["409"]["headers"].is_null());
    }
}

//! Who is calling: shoppers with HS256 JWTs (`sub` = shopper id, `exp`
//! required) and merchants with the admin bearer token (compared in
//! constant time).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::domain::{format_ms, system_now, SaleId, UserId};

/// Clock skew tolerated on `exp`, in seconds.
const TOKEN_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

pub struct AuthKeys {
    admin_token: String,
    shopper_key: DecodingKey,
    validation: Validation,
}

impl AuthKeys {
    /// Fails on an empty shopper secret.
    pub fn new(
        admin_token: &str,
        shopper_secret: &[u8],
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = TOKEN_LEEWAY_SECS;
        Ok(Self {
            admin_token: admin_token.to_owned(),
            shopper_key: DecodingKey::from_secret(shopper_secret)?,
            validation,
        })
    }

    fn shopper(&self, token: &str) -> Result<UserId, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.shopper_key, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                ApiError::Unauthorized(match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    _ => "the token is malformed",
                })
            })?;
        UserId::parse(&data.claims.sub)
            .map_err(|_| ApiError::Unauthorized("the token's sub is not a valid shopper id"))
    }

    fn is_admin(&self, token: &str) -> bool {
        token.as_bytes().ct_eq(self.admin_token.as_bytes()).into()
    }
}

/// Signs a shopper token (the `flashsale token` command, tests, load suites).
pub fn mint_shopper_token(
    secret: &[u8],
    sub: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: system_now() / 1000 + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret)?,
    )
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer token",
        ))?;
    value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))
}

/// The shopper making the request.
pub struct Shopper(pub UserId);

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.auth.is_admin(token) {
            return Err(ApiError::Forbidden(
                "the admin token cannot act as a shopper",
            ));
        }
        state.auth.shopper(token).map(Shopper)
    }
}

/// A merchant with the admin token, and where the request came from.
pub struct Admin {
    pub from: Option<std::net::SocketAddr>,
}

impl Admin {
    /// Writes the audit line of an admin change: who (the admin token,
    /// from this address), what, on which sale; the log line carries when.
    pub fn audit(&self, action: &'static str, sale: &SaleId, detail: &str) {
        tracing::info!(
            target: "flashsale::audit",
            who = "admin",
            from = %self.from.map_or_else(|| "unknown".to_owned(), |from| from.to_string()),
            action,
            %sale,
            detail,
            at = %format_ms(system_now()),
            "admin change"
        );
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.auth.is_admin(token) {
            let from = parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(from)| *from);
            Ok(Admin { from })
        } else if state.auth.shopper(token).is_ok() {
            Err(ApiError::Forbidden(
                "shopper tokens cannot use the admin API",
            ))
        } else {
            Err(ApiError::Unauthorized("invalid admin token"))
        }
    }
}

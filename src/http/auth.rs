//! Who is calling: shoppers with HS256 JWTs (`sub` = shopper id, `exp`
//! required) and merchants with the admin bearer token (compared in
//! constant time).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::domain::{format_ms, system_now, SaleId, ShopperId};

/// Clock skew tolerated on `exp`, in seconds.
const TOKEN_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

/// A purchase token: the right of one shopper to buy once in one live
/// sale, for a short time.
#[derive(Debug, Serialize, Deserialize)]
struct PurchaseClaims {
    sub: String,
    sale: String,
    /// The token's id: a sale that requires tokens takes each id once.
    jti: String,
    exp: i64,
}

/// Why a purchase token is refused (403 `forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PurchaseTokenError {
    #[error("the purchase token is not valid")]
    Invalid,
    #[error("the purchase token has expired")]
    Expired,
    #[error("the purchase token is another shopper's")]
    OtherShopper,
    #[error("the purchase token is for another sale")]
    OtherSale,
}

impl From<PurchaseTokenError> for ApiError {
    fn from(err: PurchaseTokenError) -> Self {
        Self::Forbidden(match err {
            PurchaseTokenError::Invalid => "the purchase token is not valid",
            PurchaseTokenError::Expired => "the purchase token has expired",
            PurchaseTokenError::OtherShopper => "the purchase token is another shopper's",
            PurchaseTokenError::OtherSale => "the purchase token is for another sale",
        })
    }
}

pub struct AuthKeys {
    admin_token: String,
    shopper_key: DecodingKey,
    validation: Validation,
    /// Signs purchase tokens: derived from the shopper secret (so every
    /// engine node sharing it accepts them) but not equal to it, so neither
    /// kind of token passes for the other.
    purchase_signing: EncodingKey,
    purchase_key: DecodingKey,
    purchase_validation: Validation,
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
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(shopper_secret)
            .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        mac.update(b"flashsale purchase tokens");
        let purchase_secret = mac.finalize().into_bytes();
        let mut purchase_validation = Validation::new(Algorithm::HS256);
        purchase_validation.set_required_spec_claims(&["exp", "sub", "jti"]);
        purchase_validation.leeway = 0;
        Ok(Self {
            admin_token: admin_token.to_owned(),
            shopper_key: DecodingKey::from_secret(shopper_secret)?,
            validation,
            purchase_signing: EncodingKey::from_secret(&purchase_secret)?,
            purchase_key: DecodingKey::from_secret(&purchase_secret)?,
            purchase_validation,
        })
    }

    /// A purchase token for `shopper` in `sale`, valid until `expires_at`
    /// (Unix milliseconds, rounded down to a second).
    pub fn mint_purchase_token(
        &self,
        shopper: &ShopperId,
        sale: &SaleId,
        ttl_secs: i64,
    ) -> Result<(String, i64), ApiError> {
        let exp = system_now() / 1000 + ttl_secs;
        let claims = PurchaseClaims {
            sub: shopper.to_string(),
            sale: sale.to_string(),
            jti: Alphanumeric.sample_string(&mut rand::rng(), 22),
            exp,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.purchase_signing,
        )
        .map_err(|err| ApiError::Unavailable(format!("cannot sign a purchase token: {err}")))?;
        Ok((token, exp * 1000))
    }

    /// The id of a purchase token that is genuine, unexpired, and was
    /// issued to `shopper` for `sale`.
    pub fn purchase_token(
        &self,
        token: &str,
        shopper: &ShopperId,
        sale: &SaleId,
    ) -> Result<String, PurchaseTokenError> {
        let data = jsonwebtoken::decode::<PurchaseClaims>(
            token,
            &self.purchase_key,
            &self.purchase_validation,
        )
        .map_err(|err| match err.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => PurchaseTokenError::Expired,
            _ => PurchaseTokenError::Invalid,
        })?;
        let claims = data.claims;
        if claims.sub != shopper.as_str() {
            return Err(PurchaseTokenError::OtherShopper);
        }
        if claims.sale != sale.as_str() {
            return Err(PurchaseTokenError::OtherSale);
        }
        Ok(claims.jti)
    }

    /// The shopper a bearer token names, if it is genuine and unexpired.
    pub fn shopper_of(&self, token: &str) -> Result<ShopperId, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.shopper_key, &self.validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                ApiError::Unauthorized(match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    _ => "the token is malformed",
                })
            })?;
        ShopperId::parse(&data.claims.sub)
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
pub struct Shopper(pub ShopperId);

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.auth.is_admin(token) {
            return Err(ApiError::Forbidden(
                "the admin token cannot act as a shopper",
            ));
        }
        state.auth.shopper_of(token).map(Shopper)
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
        } else if state.auth.shopper_of(token).is_ok() {
            Err(ApiError::Forbidden(
                "shopper tokens cannot use the admin API",
            ))
        } else {
            Err(ApiError::Unauthorized("invalid admin token"))
        }
    }
}

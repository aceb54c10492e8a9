//! Who is calling: shoppers with HS256 JWTs (`sub` = shopper id, `exp`
//! required; `nbf` checked; `aud` checked when an audience is configured;
//! the lifetime optionally capped) and merchants with the admin bearer
//! token (compared in constant time).
//!
//! Shopper tokens are checked here, not by `jsonwebtoken` (which still
//! signs every token and checks purchase tokens): the HMAC is keyed once
//! and cloned per token, the header and claims read once into small
//! structs, with the checks and refusals `jsonwebtoken`'s `Validation`
//! made ([`Hs256Key`], [`ShopperClaims::check`]). The login service signs
//! every token with the same header: the first one whose signature
//! verifies is remembered, and a later token whose header segment is the
//! very same text is not decoded and parsed again.
//!
//! A shopper's verified token is kept in a small bounded cache keyed by
//! the whole token ([`VerifiedTokens`]): a shopper retrying at a sale's
//! opening sends the same token many times, and its signature, JSON and
//! the admin-token comparison are then checked once, not per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use rand::distr::{Alphanumeric, SampleString};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::domain::{system_now, SaleId, ShopperId, Timestamp};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const TOKEN_LEEWAY_SECS: u64 = 5;

#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: i64,
    /// Issued at: where the lifetime cap counts from (now, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

const MALFORMED: &str = "the token is malformed";
const OTHER_AUDIENCE: &str = "the token is not for this engine's audience";

/// The claims of a shopper token as its checks read them, parsed once:
/// `nbf` and `aud` kept raw and read only when their check comes, in the
/// order `jsonwebtoken` checks them (so each refusal names the same
/// cause).
#[derive(Deserialize)]
struct ShopperClaims<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    /// Present even when `null` (which is malformed, like any non-number).
    #[serde(default, borrow, deserialize_with = "nbf")]
    nbf: Option<&'a RawValue>,
    #[serde(default, borrow)]
    aud: Option<&'a RawValue>,
}

/// An `nbf` kept raw; an object or an array makes the whole claims
/// malformed at once, as `jsonwebtoken` fails to read them past one.
fn nbf<'de, D: Deserializer<'de>>(value: D) -> Result<Option<&'de RawValue>, D::Error> {
    let raw = <&RawValue>::deserialize(value)?;
    if raw.get().starts_with(['{', '[']) {
        return Err(serde::de::Error::custom("nbf is not a NumericDate"));
    }
    Ok(Some(raw))
}

/// An `aud` claim: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl ShopperClaims<'_> {
    /// Every check of the claims at `now` (Unix seconds), in this order:
    /// required claims, `nbf`'s format, `exp` and `nbf` (with
    /// [`TOKEN_LEEWAY_SECS`]), the audience when one is configured, the
    /// lifetime cap.
    fn check(&self, rules: &ShopperTokenRules, now: i64) -> Result<(), ApiError> {
        let refuse = |message| Err(ApiError::Unauthorized(message));
        // A NumericDate is never negative: such an `exp` counts as absent.
        if self.exp < 0 {
            return refuse(MALFORMED);
        }
        // An `aud` that is not a string or an array of strings counts as
        // absent, as it does for `jsonwebtoken`.
        let aud = match &rules.audience {
            Some(_) => match self
                .aud
                .map(|aud| serde_json::from_str::<Audience>(aud.get()))
            {
                Some(Ok(aud)) => Some(aud),
                _ => return refuse(OTHER_AUDIENCE),
            },
            None => None,
        };
        let nbf = match self.nbf {
            Some(raw) => Some(numeric_date(raw).ok_or(ApiError::Unauthorized(MALFORMED))?),
            None => None,
        };
        let leeway = TOKEN_LEEWAY_SECS as i64;
        if self.exp < now - leeway {
            return refuse("the token has expired");
        }
        if nbf.is_some_and(|nbf| nbf > (now + leeway) as u64) {
            return refuse("the token is not valid yet (nbf)");
        }
        if let (Some(audience), Some(aud)) = (&rules.audience, aud) {
            let named = match aud {
                Audience::One(aud) => aud == *audience,
                Audience::Many(auds) => auds.contains(audience),
            };
            if !named {
                return refuse(OTHER_AUDIENCE);
            }
        }
        if let Some(max) = rules.lifetime_max_secs {
            if self.exp.saturating_sub(self.iat.unwrap_or(now)) > max {
                return refuse("the token's lifetime is longer than this engine accepts");
            }
        }
        Ok(())
    }
}

/// A JWT NumericDate read as `jsonwebtoken` reads one: a non-negative
/// integer, or a finite non-negative number rounded to a second.
fn numeric_date(raw: &RawValue) -> Option<u64> {
    let number: serde_json::Number = serde_json::from_str(raw.get()).ok()?;
    number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < u64::MAX as f64)
            .map(|secs| secs.round() as u64)
    })
}

/// The header of a token checked here: `alg` must be `HS256`; an
/// unencoded payload (`b64: false`) and any `crit` but `["b64"]` are
/// refused, as `jsonwebtoken` refuses them.
#[derive(Deserialize)]
struct TokenHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    /// Read only so that a `typ` that is not a string is refused.
    #[serde(default, borrow, rename = "typ")]
    _typ: Option<Cow<'a, str>>,
    #[serde(default)]
    b64: Option<bool>,
    #[serde(default, borrow)]
    crit: Option<Vec<Cow<'a, str>>>,
}

impl TokenHeader<'_> {
    fn is_hs256(&self) -> bool {
        let crit_understood = match &self.crit {
            None => true,
            Some(crit) => self.b64.is_some() && matches!(crit.as_slice(), [only] if only == "b64"),
        };
        self.alg == "HS256" && self.b64 != Some(false) && crit_understood
    }
}

/// An HS256 key: the HMAC keyed with the secret once (keying hashes the
/// secret's padded blocks), cloned for each token.
struct Hs256Key {
    mac: Hmac<Sha256>,
    /// The header segment (base64url text) of the first token whose header
    /// and signature passed: the login service signs every token with the
    /// same header, so a token whose segment is these very bytes passes
    /// the header check without being decoded and parsed again. Any other
    /// segment is checked in full.
    accepted_header: OnceLock<Box<str>>,
}

impl Hs256Key {
    /// Fails on an empty secret.
    fn new(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let invalid =
            || jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat);
        if secret.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| invalid())?,
            accepted_header: OnceLock::new(),
        })
    }

    /// Whether a token's header segment is an HS256 header this key
    /// accepts (see [`TokenHeader`]): the remembered segment at once, any
    /// other decoded and parsed.
    fn accepts_header(&self, segment: &str) -> bool {
        if self.remembers_header(segment) {
            return true;
        }
        URL_SAFE_NO_PAD.decode(segment).is_ok_and(|header| {
            serde_json::from_slice::<TokenHeader>(&header).is_ok_and(|header| header.is_hs256())
        })
    }

    fn remembers_header(&self, segment: &str) -> bool {
        self.accepted_header
            .get()
            .is_some_and(|accepted| **accepted == *segment)
    }

    /// The decoded payload of `token` if it is a compact JWT with an HS256
    /// header (see [`TokenHeader`]) signed with this key; its signature is
    /// compared in constant time. The header of the first token that passes
    /// is remembered: a token with a forged signature cannot choose it.
    fn payload(&self, token: &str) -> Result<Vec<u8>, ApiError> {
        let malformed = || ApiError::Unauthorized(MALFORMED);
        let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (header, payload) = message.rsplit_once('.').ok_or_else(malformed)?;
        if !self.accepts_header(header) {
            return Err(malformed());
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
        let mut mac = self.mac.clone();
        mac.update(message.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| ApiError::Unauthorized("the token's signature is invalid"))?;
        if self.accepted_header.get().is_none() {
            let _ = self.accepted_header.set(header.into());
        }
        URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())
    }

    /// Whether `token` is an HS256 JWT signed with this key, whatever its
    /// claims (as long as they are JSON).
    fn signed(&self, token: &str) -> bool {
        self.payload(token)
            .is_ok_and(|claims| serde_json::from_slice::<IgnoredAny>(&claims).is_ok())
    }
}

/// What a shopper token must satisfy beyond its signature, `sub` and `exp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShopperTokenRules {
    /// The `aud` the login service puts in its tokens: when set, a token
    /// must name it; when unset, any `aud` (or none) is accepted.
    pub audience: Option<String>,
    /// Longest lifetime accepted, in seconds: `exp - iat` (or `exp - now`
    /// without `iat`). `None`: no cap.
    pub lifetime_max_secs: Option<i64>,
    /// Verified tokens kept per cache generation (`0`: no cache).
    pub verified_cache_max: usize,
}

/// A shopper token that passed every check, and until when it stays
/// valid.
#[derive(Debug, Clone)]
struct Verified {
    shopper: ShopperId,
    exp: i64,
}

/// Shopper tokens already verified, keyed by the whole token, so a token
/// sent again is trusted without its signature check. What makes that
/// safe: the key is the whole token, so a hit is the very token that was
/// checked; only tokens that passed every check go in, none of which can
/// fail later but `exp` (`nbf` and the lifetime cap only get easier to
/// pass as time goes on), and `exp` is checked on every hit, with the same
/// leeway. The admin token never goes in.
///
/// Bounded by two generations of at most `max` tokens: new tokens go in
/// the current one; when it is full, it becomes the previous one and the
/// oldest is dropped whole. A hit in the previous generation moves the
/// token to the current one, so tokens in use stay.
struct VerifiedTokens {
    max: usize,
    generations: RwLock<Generations>,
}

/// Tokens hashed with foldhash, not SipHash: only tokens signed with the
/// shopper secret go in, so no client can choose keys that collide.
type TokenMap = HashMap<Box<str>, Verified, foldhash::fast::RandomState>;

#[derive(Default)]
struct Generations {
    current: TokenMap,
    previous: TokenMap,
}

impl VerifiedTokens {
    fn new(max: usize) -> Self {
        Self {
            max,
            generations: RwLock::new(Generations::default()),
        }
    }

    /// The shopper of `token` if it was verified and is not expired at
    /// `now` (Unix seconds).
    fn get(&self, token: &str, now: i64) -> Option<ShopperId> {
        if self.max == 0 {
            return None;
        }
        let unexpired = |verified: &Verified| {
            (verified.exp >= now - TOKEN_LEEWAY_SECS as i64).then(|| verified.shopper.clone())
        };
        let previous = {
            let generations = self.generations.read();
            if let Some(verified) = generations.current.get(token) {
                return unexpired(verified);
            }
            generations.previous.get(token)?.clone()
        };
        let shopper = unexpired(&previous)?;
        self.insert(token, previous);
        Some(shopper)
    }

    fn insert(&self, token: &str, verified: Verified) {
        if self.max == 0 {
            return;
        }
        let mut generations = self.generations.write();
        if generations.current.len() >= self.max {
            // A cache that filled once fills again: the new generation is
            // sized for it, so it never grows (and rehashes) on the way.
            let sized = TokenMap::with_capacity_and_hasher(self.max, Default::default());
            generations.previous = std::mem::replace(&mut generations.current, sized);
        }
        generations.current.insert(token.into(), verified);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.generations.read();
        generations.current.len() + generations.previous.len()
    }
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

/// Why the keys cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum AuthKeysError {
    #[error("invalid shopper token secret: {0}")]
    ShopperSecret(#[from] jsonwebtoken::errors::Error),
    #[error("the admin token is a JWT signed with the shopper token secret: choose another")]
    AdminTokenIsShopperToken,
}

/// Shortest admin token the engine accepts, in bytes.
pub const ADMIN_TOKEN_MIN_BYTES: usize = 32;

pub struct AuthKeys {
    /// SHA-256 of the admin token: tokens are compared by their digests,
    /// which have one length whatever a client sends.
    admin_digest: [u8; 32],
    shopper_key: Hs256Key,
    shopper_rules: ShopperTokenRules,
    verified: VerifiedTokens,
    /// Signs purchase tokens: derived from the shopper secret (so every
    /// engine node sharing it accepts them) but not equal to it, so neither
    /// kind of token passes for the other.
    purchase_signing: EncodingKey,
    purchase_key: DecodingKey,
    purchase_validation: Validation,
}

impl AuthKeys {
    /// Fails on an empty shopper secret, and on an admin token that is
    /// itself signed with the shopper secret (a JWT whose signature would
    /// pass as a shopper token's), so that no token is both.
    pub fn new(
        admin_token: &str,
        shopper_secret: &[u8],
        shopper_tokens: &ShopperTokenRules,
    ) -> Result<Self, AuthKeysError> {
        let shopper_key = Hs256Key::new(shopper_secret)?;
        if shopper_key.signed(admin_token) {
            return Err(AuthKeysError::AdminTokenIsShopperToken);
        }
        let mut mac = shopper_key.mac.clone();
        mac.update(b"flashsale purchase tokens");
        let purchase_secret = mac.finalize().into_bytes();
        let mut purchase_validation = Validation::new(Algorithm::HS256);
        purchase_validation.set_required_spec_claims(&["exp", "sub", "jti"]);
        purchase_validation.leeway = 0;
        Ok(Self {
            admin_digest: Sha256::digest(admin_token.as_bytes()).into(),
            shopper_key,
            shopper_rules: shopper_tokens.clone(),
            verified: VerifiedTokens::new(shopper_tokens.verified_cache_max),
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
        let id = Alphanumeric.sample_string(&mut rand::rng(), 22);
        Ok((self.sign_purchase(shopper, sale, id, exp)?, exp * 1000))
    }

    /// The purchase token of an admission: its id and expiry are the
    /// store's, so every poll (on any node sharing the secret) signs the
    /// very same token.
    pub fn admission_token(
        &self,
        shopper: &ShopperId,
        sale: &SaleId,
        token_id: &str,
        expires_at: i64,
    ) -> Result<String, ApiError> {
        self.sign_purchase(shopper, sale, token_id.to_owned(), expires_at / 1000)
    }

    fn sign_purchase(
        &self,
        shopper: &ShopperId,
        sale: &SaleId,
        jti: String,
        exp: i64,
    ) -> Result<String, ApiError> {
        let claims = PurchaseClaims {
            sub: shopper.to_string(),
            sale: sale.to_string(),
            jti,
            exp,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.purchase_signing,
        )
        .map_err(|err| ApiError::Unavailable(format!("cannot sign a purchase token: {err}")))
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

    /// The shopper a bearer token names, if it is genuine, valid now, for
    /// this engine's audience, and not longer-lived than allowed.
    pub fn shopper_of(&self, token: &str) -> Result<ShopperId, ApiError> {
        self.verify_shopper(token).map(|verified| verified.shopper)
    }

    /// The shopper a request's bearer token names: [`Self::shopper_of`],
    /// refusing the admin token, with verified tokens kept (see
    /// `VerifiedTokens`).
    ///
    /// The admin token is compared only when the token does not verify:
    /// it is never a shopper token (see [`Self::new`]), so a token that
    /// verifies is not it, and a shopper's request skips its digest.
    pub fn shopper(&self, token: &str) -> Result<ShopperId, ApiError> {
        if let Some(shopper) = self.verified.get(token, system_now() / 1000) {
            return Ok(shopper);
        }
        match self.verify_shopper(token) {
            Ok(verified) => {
                let shopper = verified.shopper.clone();
                self.verified.insert(token, verified);
                Ok(shopper)
            }
            Err(_) if self.is_admin(token) => Err(ApiError::Forbidden(
                "the admin token cannot act as a shopper",
            )),
            Err(err) => Err(err),
        }
    }

    fn verify_shopper(&self, token: &str) -> Result<Verified, ApiError> {
        let payload = self.shopper_key.payload(token)?;
        let claims: ShopperClaims =
            serde_json::from_slice(&payload).map_err(|_| ApiError::Unauthorized(MALFORMED))?;
        claims.check(&self.shopper_rules, system_now() / 1000)?;
        let shopper = ShopperId::parse(&claims.sub)
            .map_err(|_| ApiError::Unauthorized("the token's sub is not a valid shopper id"))?;
        Ok(Verified {
            shopper,
            exp: claims.exp,
        })
    }

    /// Whether `token` is the admin token: the SHA-256 digests compared in
    /// constant time, so neither the token's length nor how much of it
    /// matches changes the time taken.
    fn is_admin(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest.ct_eq(&self.admin_digest).into()
    }
}

/// Signs a shopper token (the `flashsale token` command, tests, load suites).
pub fn mint_shopper_token(
    secret: &[u8],
    sub: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = system_now() / 1000;
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now + ttl_secs,
        iat: Some(now),
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
        state.auth.shopper(bearer(parts)?).map(Shopper)
    }
}

/// A shopper when the request carries a token (no `Authorization`: none);
/// a token that is there must be valid.
impl OptionalFromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// A merchant with the admin token, and where the request came from.
pub struct Admin {
    pub from: Option<std::net::SocketAddr>,
}

impl Admin {
    /// Writes the audit line of an admin change: who (the admin token,
    /// from this address), what, on what (a sale, a campaign, or a settled
    /// payment exception's `out_trade_no`); the log line carries when.
    pub fn audit(&self, action: &'static str, subject: &impl std::fmt::Display, detail: &str) {
        tracing::info!(
            target: "flashsale::audit",
            who = "admin",
            from = %self.from.map_or_else(|| "unknown".to_owned(), |from| from.to_string()),
            action,
            %subject,
            detail,
            at = %Timestamp(system_now()),
            "admin change"
        );
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    /// The admin token, from an address not waiting after too many failed
    /// admin authentications (each 401 here counts as one).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let from = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(from)| *from);
        let client = from.map(|from| state.limits.client_ip(from.ip(), &parts.headers));
        if let Some(client) = client {
            state.limits.check_admin_address(client)?;
        }
        let refusal = match bearer(parts) {
            Ok(token) if state.auth.is_admin(token) => return Ok(Admin { from }),
            Ok(token) if state.auth.shopper_of(token).is_ok() => {
                return Err(ApiError::Forbidden(
                    "shopper tokens cannot use the admin API",
                ))
            }
            Ok(_) => ApiError::Unauthorized("invalid admin token"),
            Err(err) => err,
        };
        Err(match client {
            Some(client) => state.limits.admin_failed(client, refusal),
            None => refusal,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"unit-test-shopper-secret";
    const ADMIN: &str = "unit-test-admin-token-of-32-bytes-or-more";

    fn auth_keys(rules: ShopperTokenRules) -> AuthKeys {
        AuthKeys::new(ADMIN, SECRET, &rules).expect("keys")
    }

    /// A token with these claims besides `sub`.
    fn token(claims: serde_json::Value) -> String {
        let mut claims = claims;
        claims["sub"] = json!("shopper-1");
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).expect("key"),
        )
        .expect("token")
    }

    fn now() -> i64 {
        system_now() / 1000
    }

    fn refusal(keys: &AuthKeys, token: &str) -> &'static str {
        match keys.shopper_of(token) {
            Err(ApiError::Unauthorized(message)) => message,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn only_the_admin_token_itself_is_admin() {
        let keys = auth_keys(ShopperTokenRules::default());
        assert!(keys.is_admin(ADMIN));
        for other in [
            "",
            &ADMIN[..ADMIN.len() - 1],
            &format!("{ADMIN}x"),
            &ADMIN.to_uppercase(),
        ] {
            assert!(!keys.is_admin(other), "{other}");
        }
    }

    #[test]
    fn a_token_with_an_audience_passes_when_none_is_configured() {
        let keys = auth_keys(ShopperTokenRules::default());
        for aud in [
            json!("mini-program"),
            json!(["a", "b"]),
            json!(7),
            json!(null),
        ] {
            let token = token(json!({"exp": now() + 60, "aud": aud}));
            assert_eq!(
                keys.shopper_of(&token).expect("accepted").as_str(),
                "shopper-1"
            );
        }
    }

    #[test]
    fn a_configured_audience_must_be_named() {
        let keys = auth_keys(ShopperTokenRules {
            audience: Some("flashsale".into()),
            ..ShopperTokenRules::default()
        });
        for aud in [json!("flashsale"), json!(["login", "flashsale"])] {
            let token = token(json!({"exp": now() + 60, "aud": aud}));
            assert!(keys.shopper_of(&token).is_ok(), "{aud}");
        }
        for claims in [
            json!({"exp": now() + 60, "aud": "another-app"}),
            json!({"exp": now() + 60, "aud": []}),
            json!({"exp": now() + 60, "aud": null}),
            json!({"exp": now() + 60}),
        ] {
            assert_eq!(
                refusal(&keys, &token(claims.clone())),
                "the token is not for this engine's audience",
                "{claims}"
            );
        }
        let malformed = token(json!({"exp": now() + 60, "aud": 7}));
        assert_eq!(refusal(&keys, &malformed), OTHER_AUDIENCE);
    }

    #[test]
    fn a_token_is_refused_before_its_nbf() {
        let keys = auth_keys(ShopperTokenRules::default());
        let early = token(json!({"exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(refusal(&keys, &early), "the token is not valid yet (nbf)");
        let due = token(json!({"exp": now() + 600, "nbf": now() - 1}));
        assert!(keys.shopper_of(&due).is_ok());
    }

    #[test]
    fn a_kept_token_answers_until_its_exp_and_no_longer() {
        // Goal: a verified token's cache entry never outlives the token.
        // Method: the cache asked at times around `exp` and its leeway.
        let cache = VerifiedTokens::new(8);
        let shopper = ShopperId::parse("shopper-1").expect("id");
        let exp = 1_000_000;
        cache.insert(
            "token",
            Verified {
                shopper: shopper.clone(),
                exp,
            },
        );
        let leeway = TOKEN_LEEWAY_SECS as i64;
        assert_eq!(cache.get("token", exp - 100), Some(shopper.clone()));
        assert_eq!(cache.get("token", exp + leeway), Some(shopper));
        assert_eq!(cache.get("token", exp + leeway + 1), None, "expired");
        assert_eq!(cache.get("another", exp - 100), None);
        assert_eq!(VerifiedTokens::new(0).get("token", exp - 100), None);
    }

    #[test]
    fn the_cache_holds_at_most_two_generations_and_keeps_tokens_in_use() {
        // Goal: whatever the number of distinct tokens, the cache stays
        // within twice its bound, and a token in use is not dropped.
        let cache = VerifiedTokens::new(3);
        let verified = |i: usize| Verified {
            shopper: ShopperId::parse(&format!("shopper-{i}")).expect("id"),
            exp: i64::MAX / 2,
        };
        cache.insert("token-0", verified(0));
        for i in 1..1_000 {
            cache.insert(&format!("token-{i}"), verified(i));
            // Token 0 is in use all along: moved up as its generation ages.
            assert!(cache.get("token-0", 0).is_some(), "dropped at {i}");
            assert!(cache.len() <= 6, "{} tokens held", cache.len());
        }
        assert!(cache.get("token-5", 0).is_none(), "long gone");
    }

    #[test]
    fn a_repeated_token_is_the_same_shopper_and_the_admin_token_never_one() {
        let keys = auth_keys(ShopperTokenRules {
            verified_cache_max: 16,
            ..ShopperTokenRules::default()
        });
        let token = token(json!({"exp": now() + 60}));
        for _ in 0..3 {
            assert_eq!(keys.shopper(&token).expect("valid").as_str(), "shopper-1");
        }
        assert_eq!(keys.verified.len(), 1);
        for _ in 0..2 {
            assert!(matches!(keys.shopper(ADMIN), Err(ApiError::Forbidden(_))));
        }
        let expired = self::token(json!({"exp": now() - 60}));
        assert!(matches!(
            keys.shopper(&expired),
            Err(ApiError::Unauthorized(_))
        ));
        assert_eq!(keys.verified.len(), 1, "only verified shopper tokens kept");
    }

    #[test]
    fn an_admin_token_signed_with_the_shopper_secret_is_refused() {
        // Goal: no token is both the admin token and a shopper token, which
        // lets a shopper's request skip the admin-token digest.
        let admin = token(json!({"exp": 1}));
        assert!(matches!(
            AuthKeys::new(&admin, SECRET, &ShopperTokenRules::default()),
            Err(AuthKeysError::AdminTokenIsShopperToken)
        ));
        let other_secret = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "shopper-1", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret").expect("key"),
        )
        .expect("token");
        let keys = AuthKeys::new(&other_secret, SECRET, &ShopperTokenRules::default())
            .expect("a JWT of another secret may be the admin token");
        assert!(matches!(
            keys.shopper(&other_secret),
            Err(ApiError::Forbidden(_))
        ));
    }

    /// A token of these header and claims, signed with `secret`.
    fn signed(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        let part = |json: serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
        let message = format!("{}.{}", part(header), part(claims));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("key");
        mac.update(message.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{message}.{signature}")
    }

    #[test]
    fn a_valid_token_is_accepted_whatever_its_hs256_header_holds() {
        let keys = auth_keys(ShopperTokenRules::default());
        let claims = json!({"sub": "shopper-1", "exp": now() + 60});
        for header in [
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"alg": "HS256"}),
            json!({"typ": "JWT", "alg": "HS256", "kid": "key-1"}),
            json!({"alg": "HS256", "b64": true, "crit": ["b64"]}),
        ] {
            let token = signed(header.clone(), claims.clone(), SECRET);
            assert_eq!(
                keys.shopper_of(&token).expect("accepted").as_str(),
                "shopper-1",
                "{header}"
            );
        }
    }

    #[test]
    fn a_token_of_another_algorithm_or_header_is_refused() {
        // Goal: only HS256 passes, as `Validation::new(HS256)` allowed;
        // method: headers of other algorithms, each token signed with the
        // right secret (or unsigned for `none`).
        let keys = auth_keys(ShopperTokenRules::default());
        let claims = json!({"sub": "shopper-1", "exp": now() + 60});
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "RS256", "typ": "JWT"}),
            json!({"alg": "HS512", "typ": "JWT"}),
            json!({"alg": "hs256"}),
            json!({"typ": "JWT"}),
            json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
            json!({"alg": "HS256", "crit": ["exp"]}),
        ] {
            let token = signed(header.clone(), claims.clone(), SECRET);
            assert_eq!(refusal(&keys, &token), MALFORMED, "{header}");
        }
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        for unsigned in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(keys.shopper_of(&unsigned).is_err(), "{unsigned}");
        }
    }

    #[test]
    fn a_remembered_header_lets_only_its_own_bytes_skip_the_check() {
        // Goal: only a token that passed (its signature too) chooses the
        // remembered header, and that header spares only tokens with that
        // very segment; any other header is checked in full. Method: a
        // forged token, an accepted one, then refused headers, then an
        // accepted header of other bytes.
        let keys = auth_keys(ShopperTokenRules::default());
        let claims = json!({"sub": "shopper-1", "exp": now() + 60});
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let forged = signed(header.clone(), claims.clone(), b"another secret");
        assert_eq!(refusal(&keys, &forged), "the token's signature is invalid");
        assert!(
            keys.shopper_key.accepted_header.get().is_none(),
            "a token whose signature failed chose the remembered header"
        );
        let first = signed(header, claims.clone(), SECRET);
        assert!(keys.shopper_of(&first).is_ok());
        let segment = first.split('.').next().expect("a header segment");
        assert!(keys.shopper_key.remembers_header(segment));
        assert!(
            keys.shopper_of(&first).is_ok(),
            "the remembered header again"
        );
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "HS512", "typ": "JWT"}),
            json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
        ] {
            let token = signed(header.clone(), claims.clone(), SECRET);
            assert_eq!(refusal(&keys, &token), MALFORMED, "{header}");
        }
        let other = signed(json!({"typ": "JWT", "alg": "HS256"}), claims, SECRET);
        assert!(keys.shopper_of(&other).is_ok(), "another accepted header");
    }

    #[test]
    fn a_token_of_another_secret_or_tampered_is_refused() {
        let keys = auth_keys(ShopperTokenRules::default());
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let claims = json!({"sub": "shopper-1", "exp": now() + 60});
        let other = signed(header.clone(), claims.clone(), b"another secret");
        assert_eq!(refusal(&keys, &other), "the token's signature is invalid");
        let genuine = signed(header, claims, SECRET);
        let (_, signature) = genuine.rsplit_once('.').expect("signed");
        let (head, _) = genuine.split_once('.').expect("header");
        let forged =
            URL_SAFE_NO_PAD.encode(json!({"sub": "shopper-2", "exp": now() + 60}).to_string());
        let tampered = format!("{head}.{forged}.{signature}");
        assert_eq!(
            refusal(&keys, &tampered),
            "the token's signature is invalid"
        );
        for malformed in ["", "a.b", "a.b.c.d", &format!("{genuine}=")] {
            assert_eq!(refusal(&keys, malformed), MALFORMED, "{malformed}");
        }
    }

    #[test]
    fn a_token_expired_beyond_the_leeway_is_refused() {
        let keys = auth_keys(ShopperTokenRules::default());
        let leeway = TOKEN_LEEWAY_SECS as i64;
        let expired = token(json!({"exp": now() - leeway - 60}));
        assert_eq!(refusal(&keys, &expired), "the token has expired");
        let within_leeway = token(json!({"exp": now() - 1}));
        assert!(keys.shopper_of(&within_leeway).is_ok());
    }

    #[test]
    fn malformed_claims_are_refused() {
        let keys = auth_keys(ShopperTokenRules::default());
        for claims in [
            json!({"exp": now() + 60, "nbf": "soon"}),
            json!({"exp": now() + 60, "nbf": null}),
            json!({"exp": now() + 60, "nbf": -1}),
            json!({"exp": now() + 60, "nbf": [1]}),
            json!({"exp": -1}),
            json!({"exp": "later"}),
            json!({}),
        ] {
            assert_eq!(
                refusal(&keys, &token(claims.clone())),
                MALFORMED,
                "{claims}"
            );
        }
        let no_sub = signed(json!({"alg": "HS256"}), json!({"exp": now() + 60}), SECRET);
        assert_eq!(refusal(&keys, &no_sub), MALFORMED);
        let fractional_nbf = token(json!({"exp": now() + 60, "nbf": (now() - 10) as f64 + 0.5}));
        assert!(keys.shopper_of(&fractional_nbf).is_ok());
    }

    #[test]
    fn the_lifetime_cap_counts_from_iat_or_now() {
        let keys = auth_keys(ShopperTokenRules {
            lifetime_max_secs: Some(3600),
            ..ShopperTokenRules::default()
        });
        let too_long = "the token's lifetime is longer than this engine accepts";
        let issued = now() - 100;
        for (claims, accepted) in [
            (json!({"iat": issued, "exp": issued + 3600}), true),
            (json!({"iat": issued, "exp": issued + 3601}), false),
            (json!({"exp": now() + 3000}), true),
            (json!({"exp": now() + 7200}), false),
        ] {
            let token = token(claims.clone());
            if accepted {
                assert!(keys.shopper_of(&token).is_ok(), "{claims}");
            } else {
                assert_eq!(refusal(&keys, &token), too_long, "{claims}");
            }
        }
        let uncapped = auth_keys(ShopperTokenRules::default());
        assert!(uncapped
            .shopper_of(&token(json!({"exp": now() + 10 * 365 * 86_400})))
            .is_ok());
    }
}

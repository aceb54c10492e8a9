//! Shoppers: which shopper each goose user is, and their bearer tokens,
//! minted as the engine verifies them (HS256 with
//! `FLASHSALE_USER_TOKEN_SECRET`; claims `sub` = shopper id, `exp`).

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Tokens outlive any run; the verdict reads orders with them after the attack.
const TOKEN_TTL_SECS: i64 = 24 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
}

pub struct Shoppers {
    key: EncodingKey,
    users_per_shopper: usize,
    /// Tells this run's shoppers from other runs' on the same engine.
    run: String,
}

impl Shoppers {
    pub fn new(secret: &str, users_per_shopper: u32, run: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!secret.is_empty(), "FLASHSALE_USER_TOKEN_SECRET is empty");
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes())
                .context("the shopper-token secret is not a usable HS256 key")?,
            users_per_shopper: usize::try_from(users_per_shopper)
                .context("users per shopper out of range")?
                .max(1),
            run: run.to_owned(),
        })
    }

    /// The shopper goose user `user_index` (0-based) plays: consecutive
    /// users share one when `users_per_shopper` > 1.
    pub fn shopper_of(&self, user_index: usize) -> String {
        format!("lt-{}-{}", self.run, user_index / self.users_per_shopper)
    }

    /// A bearer token for `shopper`.
    pub fn token(&self, shopper: &str) -> anyhow::Result<String> {
        let claims = Claims {
            sub: shopper,
            exp: chrono::Utc::now().timestamp() + TOKEN_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("Failed to sign a shopper token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_share_shoppers_in_consecutive_groups() {
        // Goal: with 3 users per shopper, users 0..3 are one shopper, 3 the next.
        let shoppers = Shoppers::new("s", 3, "r").expect("a secret");
        assert_eq!(shoppers.shopper_of(0), shoppers.shopper_of(2));
        assert_ne!(shoppers.shopper_of(2), shoppers.shopper_of(3));
    }

    #[test]
    fn tokens_verify_as_the_engine_verifies_them() {
        // Goal: the claims and algorithm are the engine's (HS256, sub, exp required).
        let shoppers = Shoppers::new("secret", 1, "r").expect("a secret");
        let token = shoppers.token("lt-r-0").expect("a token");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret").expect("a key"),
            &validation,
        )
        .expect("valid");
        assert_eq!(data.claims["sub"], "lt-r-0");
    }
}

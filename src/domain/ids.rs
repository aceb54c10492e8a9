//! Identifiers. Sale and order ids are opaque to clients, but an order id
//! carries its sale's id so the store can find the order's keys (which share
//! the sale's Redis Cluster hash tag) from the id alone.

use std::fmt;

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use super::InvalidField;

const SALE_PREFIX: &str = "s_";
const ORDER_PREFIX: &str = "o_";
const SALE_TAIL_LEN: usize = 12;
const ORDER_TAIL_LEN: usize = 16;
const USER_ID_LEN_MAX: usize = 128;

fn random_tail(len: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_ascii_lowercase()
}

fn is_tail(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `s_` followed by 12 lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SaleId(String);

impl TryFrom<String> for SaleId {
    type Error = InvalidField;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<SaleId> for String {
    fn from(id: SaleId) -> Self {
        id.0
    }
}

impl SaleId {
    pub fn generate() -> Self {
        Self(format!("{SALE_PREFIX}{}", random_tail(SALE_TAIL_LEN)))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        match text.strip_prefix(SALE_PREFIX) {
            Some(tail) if is_tail(tail, SALE_TAIL_LEN) => Ok(Self(text.to_owned())),
            _ => Err(InvalidField::new("sale_id", "is not a sale id")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn tail(&self) -> &str {
        &self.0[SALE_PREFIX.len()..]
    }
}

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `o_<sale tail>_<16 random>`: unique, unguessable, and names its sale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    pub fn generate(sale: &SaleId) -> Self {
        Self(format!(
            "{ORDER_PREFIX}{}_{}",
            sale.tail(),
            random_tail(ORDER_TAIL_LEN)
        ))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        let valid = text
            .strip_prefix(ORDER_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .is_some_and(|(sale, own)| {
                is_tail(sale, SALE_TAIL_LEN) && is_tail(own, ORDER_TAIL_LEN)
            });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidField::new("order_id", "is not an order id"))
        }
    }

    /// The sale this order belongs to.
    pub fn sale_id(&self) -> SaleId {
        let tail = &self.0[ORDER_PREFIX.len()..ORDER_PREFIX.len() + SALE_TAIL_LEN];
        SaleId(format!("{SALE_PREFIX}{tail}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shopper: the `sub` claim of their token (a WeChat OpenID), 1 to 128
/// printable ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShopperId(String);

impl TryFrom<String> for ShopperId {
    type Error = InvalidField;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<ShopperId> for String {
    fn from(id: ShopperId) -> Self {
        id.0
    }
}

impl ShopperId {
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        if text.is_empty() || text.len() > USER_ID_LEN_MAX || !printable {
            return Err(InvalidField::new(
                "sub",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShopperId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_orders_name_their_sale() {
        let sale = SaleId::generate();
        assert_eq!(SaleId::parse(sale.as_str()), Ok(sale.clone()));
        let order = OrderId::generate(&sale);
        assert_eq!(OrderId::parse(order.as_str()), Ok(order.clone()));
        assert_eq!(order.sale_id(), sale);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "s_",
            "s_ABCDEFGHIJKL",
            "x_abcdefghijkl",
            "s_abc",
            "s_abcdefghijkl/",
        ] {
            assert!(SaleId::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "o_",
            "o_abcdefghijkl",
            "o_abcdefghijkl_short",
            "s_abcdefghijkl_abcdefghijklmnop",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shopper_ids_are_bounded_and_printable() {
        assert!(ShopperId::parse("oX3f-_abc").is_ok());
        assert!(ShopperId::parse("").is_err());
        assert!(ShopperId::parse("has space").is_err());
        assert!(ShopperId::parse(&"a".repeat(129)).is_err());
        assert!(ShopperId::parse(&"a".repeat(128)).is_ok());
    }
}

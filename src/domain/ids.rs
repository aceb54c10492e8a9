//! Identifiers. Sale and order ids are opaque to clients, but an order id
//! carries its sale's id so the store can find the order's keys (which share
//! the sale's Redis Cluster hash tag) from the id alone.
//!
//! A sale of a campaign (one round × item) has an id that names its
//! campaign, round and item: `s_<campaign tail>-<round><item>` (the round
//! one base-36 digit, the item two), still 12 characters after `s_`. An
//! ordinary sale's tail never holds a `-`, so the store tells the two apart
//! from the id alone and keys a campaign's sales by the campaign's hash tag.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::InvalidField;

const SALE_PREFIX: &str = "s_";
const ORDER_PREFIX: &str = "o_";
const CAMPAIGN_PREFIX: &str = "c_";
const SALE_TAIL_LEN: usize = 12;
const CAMPAIGN_TAIL_LEN: usize = 8;
/// The most rounds a campaign can number (one base-36 digit in its sales' ids).
pub const CAMPAIGN_ROUNDS_MAX: u32 = 36;
/// The most items a campaign can number (two base-36 digits).
pub const CAMPAIGN_ITEMS_MAX: u32 = 36 * 36;
const ORDER_TAIL_LEN: usize = 16;
const USER_ID_LEN_MAX: usize = 128;

/// The symbols of an id's random tail.
const TAIL_SYMBOLS: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Tail symbols taken from one random `u64`, as its base-36 digits: 36^10
/// is about 2^51.7, so each of the 36^10 combinations comes within 1/5,000
/// of equally often. Sampling a symbol at a time costs about 40
/// instructions per symbol, and an order id is made for every order
/// request.
const SYMBOLS_PER_DRAW: usize = 10;

/// The longest id [`generated`] makes: an order's.
const GENERATED_LEN_MAX: usize = ORDER_PREFIX.len() + SALE_TAIL_LEN + "_".len() + ORDER_TAIL_LEN;

/// A new id: `parts` one after the other, then `tail_len` random
/// lowercase letters and digits (at most [`GENERATED_LEN_MAX`] in all),
/// built on the stack: a sale's id is then held inline, an order's in one
/// allocation.
fn generated(parts: &[&str], tail_len: usize) -> SmolStr {
    let mut id = [0u8; GENERATED_LEN_MAX];
    let mut len = 0;
    for part in parts {
        id[len..len + part.len()].copy_from_slice(part.as_bytes());
        len += part.len();
    }
    let mut rng = rand::rng();
    let (mut draw, mut left) = (0u64, 0);
    for symbol in &mut id[len..len + tail_len] {
        if left == 0 {
            (draw, left) = (rng.random(), SYMBOLS_PER_DRAW);
        }
        *symbol = TAIL_SYMBOLS[(draw % 36) as usize];
        draw /= 36;
        left -= 1;
    }
    // ASCII throughout: the parts are prefixes and tails of valid ids.
    SmolStr::new(std::str::from_utf8(&id[..len + tail_len]).unwrap_or_default())
}

fn is_tail(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A sale's tail: 12 lowercase letters or digits, or a campaign sale's
/// `<campaign tail>-<round><item>`.
fn is_sale_tail(text: &str) -> bool {
    is_tail(text, SALE_TAIL_LEN) || campaign_part(text).is_some()
}

/// The campaign, round and item a campaign sale's tail names.
fn campaign_part(tail: &str) -> Option<(&str, u32, u32)> {
    let (campaign, rest) = tail.split_once('-')?;
    if !is_tail(campaign, CAMPAIGN_TAIL_LEN) || !is_tail(rest, 3) {
        return None;
    }
    let round = u32::from_str_radix(&rest[..1], 36).ok()?;
    let item = u32::from_str_radix(&rest[1..], 36).ok()?;
    Some((campaign, round, item))
}

fn base36(mut n: u32, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = char::from_digit(n % 36, 36).map_or(b'0', |c| c as u8);
        n /= 36;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// What every id type shares: its text (`as_str`, `Display`), and serde
/// as a string, read through the type's `parse`. The text is a
/// [`SmolStr`], so cloning an id (an order's ids go into its record, its
/// reply and its events) allocates nothing: a sale's id (14 bytes) and a
/// campaign's (10) are held inline, a longer one (an order's, most
/// shoppers') shared behind a reference count.
macro_rules! id_text {
    ($id:ident) => {
        impl $id {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $id {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $id {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor(Self::parse))
            }
        }
    };
}

/// Reads an id from a string in place (no owned copy first) with its
/// type's `parse`.
struct IdVisitor<T>(fn(&str) -> Result<T, InvalidField>);

impl<T> serde::de::Visitor<'_> for IdVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

/// `s_` followed by 12 lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaleId(SmolStr);

id_text!(SaleId);

impl SaleId {
    pub fn generate() -> Self {
        Self(generated(&[SALE_PREFIX], SALE_TAIL_LEN))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        match text.strip_prefix(SALE_PREFIX) {
            Some(tail) if is_sale_tail(tail) => Ok(Self(SmolStr::new(text))),
            _ => Err(InvalidField::new("sale_id", "is not a sale id")),
        }
    }

    /// The sale of round `round` × item `item` of a campaign (each below
    /// `CAMPAIGN_ROUNDS_MAX` and `CAMPAIGN_ITEMS_MAX`: checked by the
    /// campaign's validation).
    pub fn of_campaign(campaign: &CampaignId, round: u32, item: u32) -> Self {
        debug_assert!(round < CAMPAIGN_ROUNDS_MAX && item < CAMPAIGN_ITEMS_MAX);
        Self(smol_str::format_smolstr!(
            "{SALE_PREFIX}{}-{}{}",
            campaign.tail(),
            base36(round, 1),
            base36(item, 2)
        ))
    }

    /// The campaign, round and item of a campaign's sale; `None` for an
    /// ordinary sale.
    pub fn campaign(&self) -> Option<CampaignSlot> {
        campaign_part(self.tail()).map(|(campaign, round, item)| CampaignSlot {
            campaign: CampaignId(smol_str::format_smolstr!("{CAMPAIGN_PREFIX}{campaign}")),
            round,
            item,
        })
    }

    fn tail(&self) -> &str {
        &self.0[SALE_PREFIX.len()..]
    }
}

/// `o_<sale tail>_<16 random>`: unique, unguessable, and names its sale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(SmolStr);

id_text!(OrderId);

impl OrderId {
    pub fn generate(sale: &SaleId) -> Self {
        Self(generated(&[ORDER_PREFIX, sale.tail(), "_"], ORDER_TAIL_LEN))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        let valid = text
            .strip_prefix(ORDER_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .is_some_and(|(sale, own)| is_sale_tail(sale) && is_tail(own, ORDER_TAIL_LEN));
        if valid {
            Ok(Self(SmolStr::new(text)))
        } else {
            Err(InvalidField::new("order_id", "is not an order id"))
        }
    }

    /// The sale this order belongs to.
    pub fn sale_id(&self) -> SaleId {
        let tail = &self.0[ORDER_PREFIX.len()..ORDER_PREFIX.len() + SALE_TAIL_LEN];
        SaleId(smol_str::format_smolstr!("{SALE_PREFIX}{tail}"))
    }
}

/// Where a campaign's sale sits: its campaign, round and item numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CampaignSlot {
    pub campaign: CampaignId,
    pub round: u32,
    pub item: u32,
}

/// `c_` followed by 8 lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(SmolStr);

id_text!(CampaignId);

impl CampaignId {
    pub fn generate() -> Self {
        Self(generated(&[CAMPAIGN_PREFIX], CAMPAIGN_TAIL_LEN))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        match text.strip_prefix(CAMPAIGN_PREFIX) {
            Some(tail) if is_tail(tail, CAMPAIGN_TAIL_LEN) => Ok(Self(SmolStr::new(text))),
            _ => Err(InvalidField::new("campaign_id", "is not a campaign id")),
        }
    }

    fn tail(&self) -> &str {
        &self.0[CAMPAIGN_PREFIX.len()..]
    }
}

/// A shopper: the `sub` claim of their token (a WeChat OpenID), 1 to 128
/// printable ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShopperId(SmolStr);

id_text!(ShopperId);

impl ShopperId {
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        if text.is_empty() || text.len() > USER_ID_LEN_MAX || !printable {
            return Err(InvalidField::new(
                "sub",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(Self(SmolStr::new(text)))
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
    fn tails_draw_every_symbol_and_no_other() {
        let sale = SaleId::generate();
        let mut seen = std::collections::HashMap::new();
        for _ in 0..2_000 {
            let order = OrderId::generate(&sale);
            let tail = &order.as_str()[order.as_str().len() - ORDER_TAIL_LEN..];
            assert!(is_tail(tail, ORDER_TAIL_LEN), "{order:?}");
            for symbol in tail.bytes() {
                *seen.entry(symbol).or_insert(0u32) += 1;
            }
        }
        assert_eq!(seen.len(), TAIL_SYMBOLS.len(), "every symbol drawn");
        // 32,000 symbols: about 889 each; far off means a skewed draw.
        assert!(
            seen.values().all(|&count| (600..1_200).contains(&count)),
            "{seen:?}"
        );
    }

    #[test]
    fn campaign_sales_name_their_campaign_round_and_item() {
        let campaign = CampaignId::generate();
        assert_eq!(CampaignId::parse(campaign.as_str()), Ok(campaign.clone()));
        let sale = SaleId::of_campaign(&campaign, 35, 1295);
        assert_eq!(sale.as_str().len(), "s_".len() + SALE_TAIL_LEN);
        assert_eq!(SaleId::parse(sale.as_str()), Ok(sale.clone()));
        let slot = sale.campaign().expect("a campaign's sale");
        assert_eq!((slot.campaign, slot.round, slot.item), (campaign, 35, 1295));
        let order = OrderId::generate(&sale);
        assert_eq!(OrderId::parse(order.as_str()), Ok(order.clone()));
        assert_eq!(order.sale_id(), sale);
        assert_eq!(SaleId::generate().campaign(), None);
        assert!(SaleId::parse("s_abcdefgh-0a").is_err());
        assert!(SaleId::parse("s_abcdefg-0a1").is_err());
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
    fn ids_are_json_strings_read_through_their_parse() {
        let sale = SaleId::generate();
        let order = OrderId::generate(&sale);
        let campaign = CampaignId::generate();
        let shopper = ShopperId::parse("oX3a9Yb2_long_enough_to_be_shared").unwrap();
        let json = serde_json::to_string(&(&sale, &order, &campaign, &shopper)).unwrap();
        assert_eq!(
            json,
            format!(r#"["{sale}","{order}","{campaign}","{shopper}"]"#)
        );
        let read: (SaleId, OrderId, CampaignId, ShopperId) = serde_json::from_str(&json).unwrap();
        assert_eq!(read, (sale, order, campaign, shopper));
        // A malformed id is the field's own error; not a string, serde's.
        let bad = serde_json::from_str::<SaleId>(r#""s_ABC""#).unwrap_err();
        assert!(bad.to_string().contains("is not a sale id"), "{bad}");
        let bad = serde_json::from_str::<ShopperId>(r#""has space""#).unwrap_err();
        assert!(bad.to_string().contains("printable ASCII"), "{bad}");
        let bad = serde_json::from_str::<CampaignId>("7").unwrap_err();
        assert!(bad.to_string().contains("expected a string"), "{bad}");
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

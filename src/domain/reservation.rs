//! The reservation rule: may this shopper take `quantity` units of this sale
//! now? The embedded store decides with it, and `lua/reserve.lua`
//! implements the same checks in the same order inside Redis.
//!
//! The inventory actors answer from memory with it only when it refuses
//! alike at both ends of the range the store's clock may be in (widened by
//! the clock margin), for the most the store may still allow. They know no
//! purchase tokens and check as if the token were fresh, so on a sale that
//! requires one they may answer `sold_out` or `limit_exceeded` where the
//! store answers `purchase_token_required`, `purchase_token_used` or
//! `purchase_token_lapsed`; and a
//! request with an `Idempotency-Key` is answered from memory only
//! `not_started`. See `inventory::memory`, and `inventory::board` for the
//! front door's copy of `sold_out`.

use super::{InvalidField, Millis, Order, OrderId, Sale, SaleId, SaleState, ShopperId};

/// The most units one order may ask for (and the largest per-user limit).
pub const QUANTITY_MAX: i64 = 10_000;

/// A number of units in one order: 1 to [`QUANTITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(value: i64) -> Result<Self, InvalidField> {
        if (1..=QUANTITY_MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidField::new(
                "quantity",
                format!("must be between 1 and {QUANTITY_MAX}"),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// What a shopper asks of a sale: units, and the keys the request came
/// with. It becomes a [`ReserveRequest`], with an order id, only when it
/// goes on to the store: an ask answered at once (sold out, ended) draws
/// no id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderAsk {
    pub sale_id: SaleId,
    pub shopper_id: ShopperId,
    pub quantity: Quantity,
    /// `Idempotency-Key`: a retry with the same key and quantity returns the
    /// first order; the same key with another quantity is refused.
    pub idempotency_key: Option<String>,
    /// The id of the verified purchase token the request carries: a sale
    /// that requires one takes each id for one order only.
    pub purchase_token: Option<String>,
}

/// A shopper's attempt to take stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    pub sale_id: SaleId,
    pub shopper_id: ShopperId,
    pub quantity: Quantity,
    /// The id the order gets if this request creates one.
    pub order_id: OrderId,
    /// See [`OrderAsk::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// See [`OrderAsk::purchase_token`].
    pub purchase_token: Option<String>,
}

impl ReserveRequest {
    /// The ask as a request that creates a new order (with a new id) if it
    /// succeeds.
    pub fn new(ask: OrderAsk) -> Self {
        let OrderAsk {
            sale_id,
            shopper_id,
            quantity,
            idempotency_key,
            purchase_token,
        } = ask;
        Self {
            order_id: OrderId::generate(&sale_id),
            sale_id,
            shopper_id,
            quantity,
            idempotency_key,
            purchase_token,
        }
    }
}

/// A successful reservation (or the replay of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order: Order,
    /// Units left in the sale right after this reservation (`None` on a
    /// replay, which reads no stock).
    pub remaining: Option<i64>,
    /// Units the shopper holds after it.
    pub held: Option<i64>,
    /// The order already existed under this idempotency key.
    pub replayed: bool,
}

/// Why a reservation was refused. Each maps to one contract error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the sale has not started yet")]
    NotStarted,
    #[error("the sale has ended")]
    Ended,
    #[error("not enough stock left")]
    SoldOut,
    #[error("this order would pass the sale's per-user limit")]
    LimitExceeded,
    /// The shopper cancelled, or let expire, the most orders of the sale
    /// allowed (`FLASHSALE_CANCELS_PER_SHOPPER_MAX`,
    /// `FLASHSALE_EXPIRIES_PER_SHOPPER_MAX`): they reserve no more in it.
    #[error("you have cancelled, or left unpaid, the most orders this sale allows")]
    UnpaidLimitExceeded,
    /// A campaign's sale: the shopper's units across the round's items.
    #[error(
        "this order would pass the campaign's per-user limit per round (per_user_limit_per_round)"
    )]
    RoundLimitExceeded,
    /// A campaign's sale: the shopper's units across the whole campaign.
    #[error("this order would pass the campaign's per-user limit in total (per_user_limit_total)")]
    CampaignLimitExceeded,
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error("this sale needs a purchase token (POST /api/v1/sales/{{id}}/purchase-token)")]
    PurchaseTokenRequired,
    #[error("this purchase token has already bought")]
    PurchaseTokenUsed,
    /// A waiting room's admission that expired unused and whose place was
    /// given to the next shopper (freed by a poll of the line from 5 s
    /// after its expiry):
    /// its token no longer buys, whatever a node's clock says of the
    /// token's own expiry.
    #[error(
        "this admission expired unused and its place went to the next shopper: join the line again"
    )]
    PurchaseTokenLapsed,
}

/// Every rejection with its word: what `lua/reserve.lua` answers, the
/// metrics' label, and how a rejection is named anywhere outside the
/// engine's types. [`Rejection::as_str`] and [`Rejection::from_code`] both
/// read this one table.
const REJECTION_WORDS: [(Rejection, &str); 11] = [
    (Rejection::NotStarted, "not_started"),
    (Rejection::Ended, "ended"),
    (Rejection::SoldOut, "sold_out"),
    (Rejection::LimitExceeded, "limit_exceeded"),
    (Rejection::UnpaidLimitExceeded, "unpaid_limit_exceeded"),
    (Rejection::RoundLimitExceeded, "round_limit_exceeded"),
    (Rejection::CampaignLimitExceeded, "campaign_limit_exceeded"),
    (Rejection::IdempotencyMismatch, "idempotency_mismatch"),
    (Rejection::PurchaseTokenRequired, "purchase_token_required"),
    (Rejection::PurchaseTokenUsed, "purchase_token_used"),
    (Rejection::PurchaseTokenLapsed, "purchase_token_lapsed"),
];

impl Rejection {
    /// Every rejection, in the table's order.
    pub fn all() -> impl Iterator<Item = Self> {
        REJECTION_WORDS.iter().map(|(rejection, _)| *rejection)
    }

    /// The rejection's word (see `REJECTION_WORDS`).
    pub fn as_str(self) -> &'static str {
        REJECTION_WORDS
            .iter()
            .find(|(rejection, _)| *rejection == self)
            .map_or("", |(_, word)| word)
    }

    /// The rejection a script answered with its word; `None` for any other
    /// word.
    pub fn from_code(word: &str) -> Option<Self> {
        REJECTION_WORDS
            .iter()
            .find(|(_, known)| *known == word)
            .map(|(rejection, _)| *rejection)
    }
}

/// The purchase token a request carries, as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedToken {
    Missing,
    /// Never used to buy before.
    Fresh,
    /// Already bought once.
    Used,
    /// A waiting room's admission whose place was freed unused (see
    /// [`Rejection::PurchaseTokenLapsed`]).
    Lapsed,
}

/// Checks a reservation against the sale at instant `now`, given the units
/// still `remaining`, the units this shopper already `held`, and the
/// purchase token the request carries.
pub fn check_reservation(
    sale: &Sale,
    now: Millis,
    remaining: i64,
    held: i64,
    quantity: Quantity,
    token: PresentedToken,
) -> Result<(), Rejection> {
    if sale.state != SaleState::Scheduled {
        return Err(Rejection::Ended);
    }
    if now < sale.starts_at {
        return Err(Rejection::NotStarted);
    }
    if now >= sale.ends_at {
        return Err(Rejection::Ended);
    }
    if sale.require_purchase_token {
        match token {
            PresentedToken::Missing => return Err(Rejection::PurchaseTokenRequired),
            PresentedToken::Used => return Err(Rejection::PurchaseTokenUsed),
            PresentedToken::Lapsed => return Err(Rejection::PurchaseTokenLapsed),
            PresentedToken::Fresh => {}
        }
    }
    if held + quantity.get() > sale.per_user_limit {
        return Err(Rejection::LimitExceeded);
    }
    if remaining < quantity.get() {
        return Err(Rejection::SoldOut);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SaleId;

    fn sale() -> Sale {
        Sale {
            id: SaleId::generate(),
            sku: "sku".into(),
            title: "title".into(),
            price_cents: 100,
            currency: "CNY".into(),
            stock_total: 10,
            per_user_limit: 2,
            starts_at: 1_000,
            ends_at: 2_000,
            payment_timeout_secs: 900,
            require_purchase_token: false,
            admission: Default::default(),
            state: SaleState::Scheduled,
            created_at: 0,
        }
    }

    const NO_TOKEN: PresentedToken = PresentedToken::Missing;

    fn q(n: i64) -> Quantity {
        Quantity::parse(n).expect("valid quantity")
    }

    #[test]
    fn window_is_half_open() {
        let sale = sale();
        assert_eq!(
            check_reservation(&sale, 999, 10, 0, q(1), NO_TOKEN),
            Err(Rejection::NotStarted)
        );
        assert_eq!(
            check_reservation(&sale, 1_000, 10, 0, q(1), NO_TOKEN),
            Ok(())
        );
        assert_eq!(
            check_reservation(&sale, 1_999, 10, 0, q(1), NO_TOKEN),
            Ok(())
        );
        assert_eq!(
            check_reservation(&sale, 2_000, 10, 0, q(1), NO_TOKEN),
            Err(Rejection::Ended)
        );
    }

    #[test]
    fn limit_counts_units_already_held() {
        let sale = sale();
        assert_eq!(
            check_reservation(&sale, 1_500, 10, 0, q(2), NO_TOKEN),
            Ok(())
        );
        assert_eq!(
            check_reservation(&sale, 1_500, 10, 1, q(2), NO_TOKEN),
            Err(Rejection::LimitExceeded)
        );
        assert_eq!(
            check_reservation(&sale, 1_500, 10, 2, q(1), NO_TOKEN),
            Err(Rejection::LimitExceeded)
        );
    }

    #[test]
    fn stock_must_cover_the_whole_quantity() {
        let sale = sale();
        assert_eq!(
            check_reservation(&sale, 1_500, 1, 0, q(2), NO_TOKEN),
            Err(Rejection::SoldOut)
        );
        assert_eq!(
            check_reservation(&sale, 1_500, 0, 0, q(1), NO_TOKEN),
            Err(Rejection::SoldOut)
        );
    }

    #[test]
    fn merchant_decisions_close_the_sale() {
        for state in [SaleState::Ended, SaleState::Cancelled] {
            let sale = Sale { state, ..sale() };
            assert_eq!(
                check_reservation(&sale, 1_500, 10, 0, q(1), NO_TOKEN),
                Err(Rejection::Ended)
            );
        }
    }

    #[test]
    fn a_sale_that_requires_it_takes_each_purchase_token_once() {
        let sale = Sale {
            require_purchase_token: true,
            ..sale()
        };
        let check = |token| check_reservation(&sale, 1_500, 10, 0, q(1), token);
        assert_eq!(check(NO_TOKEN), Err(Rejection::PurchaseTokenRequired));
        assert_eq!(
            check(PresentedToken::Used),
            Err(Rejection::PurchaseTokenUsed)
        );
        assert_eq!(check(PresentedToken::Fresh), Ok(()));
        assert_eq!(
            check_reservation(&sale, 999, 10, 0, q(1), PresentedToken::Fresh),
            Err(Rejection::NotStarted),
            "the window is checked first"
        );
    }

    #[test]
    fn every_rejection_has_one_word_that_parses_back() {
        let words: std::collections::HashSet<&str> =
            Rejection::all().map(Rejection::as_str).collect();
        assert_eq!(words.len(), REJECTION_WORDS.len(), "distinct words");
        for rejection in Rejection::all() {
            assert_eq!(Rejection::from_code(rejection.as_str()), Some(rejection));
        }
        assert_eq!(Rejection::from_code("reserved"), None);
    }

    #[test]
    fn quantity_is_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(QUANTITY_MAX + 1).is_err());
        assert_eq!(q(QUANTITY_MAX).get(), QUANTITY_MAX);
    }
}

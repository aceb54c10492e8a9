//! A sale: one SKU offered in limited stock during a time window. Holds the
//! validation of what a merchant may schedule and change, and the status a
//! sale shows at a given instant.

use serde::{Deserialize, Serialize};

use super::{
    parse_rfc3339_ms, Admission, AdmissionSettings, InvalidField, Millis, Rejection, SaleId,
    QUANTITY_MAX,
};

const SKU_LEN_MAX: usize = 64;
pub(super) const TITLE_LEN_MAX: usize = 200;
/// 100 million in major units: keeps `price × quantity` exact in a Lua number.
const PRICE_CENTS_MAX: i64 = 10_000_000_000;
const STOCK_TOTAL_MAX: i64 = 1_000_000_000;
const PAYMENT_TIMEOUT_SECS_MIN: i64 = 60;
const PAYMENT_TIMEOUT_SECS_MAX: i64 = 7200;
pub(super) const PAYMENT_TIMEOUT_SECS_DEFAULT: i64 = 900;
pub(super) const CURRENCY_DEFAULT: &str = "CNY";

/// What a merchant decided about a sale; the time window decides the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    Scheduled,
    /// Stopped early by the merchant.
    Ended,
    /// Called off before it started.
    Cancelled,
}

impl SaleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "scheduled" => Some(Self::Scheduled),
            "ended" => Some(Self::Ended),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What shoppers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleStatus {
    Upcoming,
    Live,
    SoldOut,
    Ended,
    Cancelled,
}

impl SaleStatus {
    pub const ALL: [Self; 5] = [
        Self::Upcoming,
        Self::Live,
        Self::SoldOut,
        Self::Ended,
        Self::Cancelled,
    ];

    /// The status as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upcoming => "upcoming",
            Self::Live => "live",
            Self::SoldOut => "sold_out",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether shoppers see the sale in the public listing.
    pub fn is_listed(self) -> bool {
        matches!(self, Self::Upcoming | Self::Live | Self::SoldOut)
    }

    /// Why an order cannot be taken now (`None`: the sale is live).
    pub fn closed_because(self) -> Option<Rejection> {
        match self {
            Self::Live => None,
            Self::Upcoming => Some(Rejection::NotStarted),
            Self::SoldOut => Some(Rejection::SoldOut),
            Self::Ended | Self::Cancelled => Some(Rejection::Ended),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub id: SaleId,
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock_total: i64,
    pub per_user_limit: i64,
    pub starts_at: Millis,
    pub ends_at: Millis,
    pub payment_timeout_secs: i64,
    /// Orders need a purchase token, issued only once the sale is live
    /// (always set on a queued sale: admission issues its tokens).
    pub require_purchase_token: bool,
    /// How shoppers get in: the race, or the waiting room.
    pub admission: Admission,
    pub state: SaleState,
    pub created_at: Millis,
}

impl Sale {
    /// When its payment window closes: the last moment an order of it can
    /// still be unpaid (the end plus one payment timeout).
    pub fn payment_window_closes_at(&self) -> Millis {
        self.ends_at
            .saturating_add(self.payment_timeout_secs.saturating_mul(1000))
    }

    /// True once `now` has reached the start (whatever the state).
    pub fn has_started(&self, now: Millis) -> bool {
        now >= self.starts_at
    }

    pub fn status(&self, now: Millis, remaining: i64) -> SaleStatus {
        match self.state {
            SaleState::Cancelled => SaleStatus::Cancelled,
            SaleState::Ended => SaleStatus::Ended,
            SaleState::Scheduled if now >= self.ends_at => SaleStatus::Ended,
            SaleState::Scheduled if now < self.starts_at => SaleStatus::Upcoming,
            SaleState::Scheduled if remaining <= 0 => SaleStatus::SoldOut,
            SaleState::Scheduled => SaleStatus::Live,
        }
    }

    /// A queued sale sells only to admitted shoppers: to orders carrying
    /// the purchase token admission gave them.
    fn require_tokens_when_queued(&mut self) {
        if self.admission.is_queue() {
            self.require_purchase_token = true;
        }
    }

    pub(super) fn validate(&self, rules: &SaleRules) -> Result<(), InvalidField> {
        check_text("sku", &self.sku, SKU_LEN_MAX)?;
        check_text("title", &self.title, TITLE_LEN_MAX)?;
        if !(0..=PRICE_CENTS_MAX).contains(&self.price_cents) {
            return Err(InvalidField::new(
                "price_cents",
                format!("must be between 0 and {PRICE_CENTS_MAX}"),
            ));
        }
        let currency_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return Err(InvalidField::new(
                "currency",
                "must be an ISO 4217 code such as CNY",
            ));
        }
        if !(1..=STOCK_TOTAL_MAX).contains(&self.stock_total) {
            return Err(InvalidField::new(
                "stock_total",
                format!("must be between 1 and {STOCK_TOTAL_MAX}"),
            ));
        }
        if !(1..=QUANTITY_MAX).contains(&self.per_user_limit) {
            return Err(InvalidField::new(
                "per_user_limit",
                format!("must be between 1 and {QUANTITY_MAX}"),
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(InvalidField::new("ends_at", "must be after starts_at"));
        }
        let timeouts = rules.payment_timeout_secs_min..=PAYMENT_TIMEOUT_SECS_MAX;
        if !timeouts.contains(&self.payment_timeout_secs) {
            return Err(InvalidField::new(
                "payment_timeout_secs",
                format!(
                    "must be between {} and {}",
                    timeouts.start(),
                    timeouts.end()
                ),
            ));
        }
        Ok(())
    }

    /// Applies a merchant's patch and says what kind of change it is. Field
    /// rules are checked here; whether the change is allowed at this moment
    /// (before start, while live) is decided atomically by the store against
    /// its own clock.
    pub fn patched(&self, patch: SalePatch, rules: &SaleRules) -> Result<SaleChange, InvalidField> {
        let mut sale = self.clone();
        if let Some(sku) = patch.sku {
            sale.sku = sku;
        }
        if let Some(title) = patch.title {
            sale.title = title;
        }
        if let Some(price) = patch.price_cents {
            sale.price_cents = price;
        }
        if let Some(currency) = patch.currency {
            sale.currency = currency;
        }
        if let Some(limit) = patch.per_user_limit {
            sale.per_user_limit = limit;
        }
        if let Some(starts_at) = patch.starts_at {
            sale.starts_at = parse_rfc3339_ms("starts_at", &starts_at)?;
        }
        if let Some(timeout) = patch.payment_timeout_secs {
            sale.payment_timeout_secs = timeout;
        }
        if let Some(required) = patch.require_purchase_token {
            sale.require_purchase_token = required;
        }
        if let Some(settings) = patch.admission {
            sale.admission = sale.admission.apply(&settings)?;
        }
        sale.require_tokens_when_queued();
        if let Some(stock_total) = patch.stock_total {
            sale.stock_total = stock_total;
        }
        if let Some(ends_at) = patch.ends_at {
            sale.ends_at = parse_rfc3339_ms("ends_at", &ends_at)?;
        }
        sale.validate(rules)?;
        Ok(SaleChange::between(
            self,
            sale,
            patch.status == Some(PatchStatus::Ended),
        ))
    }
}

/// The fields a merchant may change once a sale is live.
pub const LIVE_CHANGEABLE_FIELDS: &str = "stock_total, ends_at and status";

/// A validated change to a sale, ready for the store to apply atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleChange {
    /// The sale as it will be.
    pub sale: Sale,
    /// A field other than `stock_total`/`ends_at` changed: only allowed
    /// before the sale starts.
    pub restricted: bool,
    /// The merchant stops the sale now.
    pub end_now: bool,
}

impl SaleChange {
    /// The change that makes `current` into `sale` (and, with `end_now`,
    /// stops it now).
    pub fn between(current: &Sale, sale: Sale, end_now: bool) -> Self {
        let mut kept = current.clone();
        kept.stock_total = sale.stock_total;
        kept.ends_at = sale.ends_at;
        Self {
            restricted: kept != sale,
            sale,
            end_now,
        }
    }
}

pub(super) fn check_text(
    field: &'static str,
    text: &str,
    len_max: usize,
) -> Result<(), InvalidField> {
    let len = text.chars().count();
    if text.trim().is_empty() || len > len_max {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {len_max} characters and not blank"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// What a merchant asks for when scheduling a sale (the body of `POST
/// /admin/v1/sales`): times as RFC 3339 text (a bad one is refused naming
/// its field), defaults not yet applied. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub stock_total: i64,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub per_user_limit: Option<i64>,
    #[serde(default)]
    pub payment_timeout_secs: Option<i64>,
    #[serde(default)]
    pub require_purchase_token: Option<bool>,
    #[serde(default)]
    pub admission: Option<AdmissionSettings>,
}

impl NewSale {
    /// Validates the new sale scheduled at `now`: it must end in the future.
    pub fn into_sale(
        self,
        id: SaleId,
        now: Millis,
        rules: &SaleRules,
    ) -> Result<Sale, InvalidField> {
        let admission = match &self.admission {
            Some(settings) => Admission::default().apply(settings)?,
            None => Admission::default(),
        };
        let mut sale = Sale {
            id,
            starts_at: parse_rfc3339_ms("starts_at", &self.starts_at)?,
            ends_at: parse_rfc3339_ms("ends_at", &self.ends_at)?,
            sku: self.sku,
            title: self.title,
            price_cents: self.price_cents,
            currency: self.currency.unwrap_or_else(|| CURRENCY_DEFAULT.to_owned()),
            stock_total: self.stock_total,
            per_user_limit: self.per_user_limit.unwrap_or(1),
            payment_timeout_secs: self
                .payment_timeout_secs
                .unwrap_or(PAYMENT_TIMEOUT_SECS_DEFAULT),
            require_purchase_token: self.require_purchase_token.unwrap_or(false),
            admission,
            state: SaleState::Scheduled,
            created_at: now,
        };
        sale.require_tokens_when_queued();
        sale.validate(rules)?;
        if sale.ends_at <= now {
            return Err(InvalidField::new("ends_at", "must be in the future"));
        }
        Ok(sale)
    }
}

/// A merchant's change to a sale (the body of `PATCH
/// /admin/v1/sales/{id}`): every field optional, times as RFC 3339 text.
/// Before the start any field may change; while live only `stock_total`,
/// `ends_at` and `status` (the store decides which phase the sale is in).
/// Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalePatch {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub stock_total: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub payment_timeout_secs: Option<i64>,
    pub require_purchase_token: Option<bool>,
    pub admission: Option<AdmissionSettings>,
    pub status: Option<PatchStatus>,
}

/// The only status a merchant can set by hand: stop the sale now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchStatus {
    Ended,
}

/// Deployment-wide limits on what merchants may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleRules {
    /// Shortest `payment_timeout_secs` accepted: 60 in production; demos,
    /// load suites and tests lower it to see orders expire quickly.
    pub payment_timeout_secs_min: i64,
}

impl Default for SaleRules {
    fn default() -> Self {
        Self {
            payment_timeout_secs_min: PAYMENT_TIMEOUT_SECS_MIN,
        }
    }
}

/// Exact counts of a sale's units. `remaining + reserved + paid +
/// refunded - restocked == stock_total` always: cancelled and expired
/// units are back in `remaining`, and so are the refunded units the
/// merchant put back on sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SaleStats {
    pub stock_total: i64,
    pub remaining: i64,
    pub reserved: i64,
    pub paid: i64,
    pub cancelled: i64,
    pub expired: i64,
    /// Units paid after their order had expired or been cancelled: the money
    /// goes back, the stock stays sold to someone else.
    pub refund_required: i64,
    /// Units of paid orders the merchant refunds (refunding or refunded).
    pub refunded: i64,
    /// Of `refunded`, the units put back on sale.
    pub restocked: i64,
    /// Units of orders the order service has taken from the sale's stream.
    pub queued: i64,
    /// Distinct shoppers holding reserved or paid units.
    pub buyers: i64,
}

/// A sale with its exact counts, read in one atomic step at the store's
/// instant `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleView {
    pub sale: Sale,
    pub stats: SaleStats,
    pub now: Millis,
    /// Bumped by every merchant change: a change computed from this view
    /// applies only if the sale is still at this version.
    pub version: i64,
}

impl SaleStats {
    /// The units off sale: reserved, paid, and refunded without restock
    /// (the merchant keeps those off sale). A change never takes
    /// `stock_total` below them, and leaves `remaining` at the rest.
    pub fn taken(&self) -> i64 {
        self.reserved + self.paid + self.refunded - self.restocked
    }
}

impl SaleView {
    pub fn status(&self) -> SaleStatus {
        self.sale.status(self.now, self.stats.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "2026-11-11T00:00:00Z";
    const END: &str = "2026-11-11T01:00:00Z";

    fn new_sale() -> NewSale {
        NewSale {
            sku: "LC-POUCH-RED".into(),
            title: "Le Pliage pouch, red".into(),
            price_cents: 19_900,
            stock_total: 500,
            starts_at: START.into(),
            ends_at: END.into(),
            currency: None,
            per_user_limit: None,
            payment_timeout_secs: None,
            require_purchase_token: None,
            admission: None,
        }
    }

    fn sale() -> Sale {
        new_sale()
            .into_sale(SaleId::generate(), 0, &SaleRules::default())
            .expect("valid sale")
    }

    #[test]
    fn defaults_apply() {
        let sale = sale();
        assert_eq!(sale.currency, "CNY");
        assert_eq!(sale.per_user_limit, 1);
        assert_eq!(sale.payment_timeout_secs, 900);
        assert_eq!(sale.state, SaleState::Scheduled);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Breaks = Box<dyn Fn(&mut NewSale)>;
        let cases: Vec<(&str, Breaks)> = vec![
            ("stock_total", Box::new(|s| s.stock_total = 0)),
            ("ends_at", Box::new(|s| s.ends_at = START.into())),
            ("per_user_limit", Box::new(|s| s.per_user_limit = Some(0))),
            (
                "payment_timeout_secs",
                Box::new(|s| s.payment_timeout_secs = Some(59)),
            ),
            (
                "payment_timeout_secs",
                Box::new(|s| s.payment_timeout_secs = Some(7201)),
            ),
            ("sku", Box::new(|s| s.sku = " ".into())),
            ("sku", Box::new(|s| s.sku = "x".repeat(65))),
            ("title", Box::new(|s| s.title = String::new())),
            ("price_cents", Box::new(|s| s.price_cents = -1)),
            ("currency", Box::new(|s| s.currency = Some("yuan".into()))),
            ("starts_at", Box::new(|s| s.starts_at = "soon".into())),
            (
                "ends_at",
                Box::new(|s| s.ends_at = "2026-11-11T00:30:00Z".into()),
            ),
        ];
        for (field, breaks) in cases {
            let mut body = new_sale();
            breaks(&mut body);
            let scheduled_at = parse_rfc3339_ms("now", "2026-11-11T00:45:00Z").expect("valid");
            let err = body
                .into_sale(SaleId::generate(), scheduled_at, &SaleRules::default())
                .unwrap_err();
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn status_follows_state_window_and_stock() {
        let sale = sale();
        assert_eq!(sale.status(sale.starts_at - 1, 10), SaleStatus::Upcoming);
        assert_eq!(sale.status(sale.starts_at, 10), SaleStatus::Live);
        assert_eq!(sale.status(sale.starts_at, 0), SaleStatus::SoldOut);
        assert_eq!(sale.status(sale.ends_at, 10), SaleStatus::Ended);
        let ended = Sale {
            state: SaleState::Ended,
            ..sale.clone()
        };
        assert_eq!(ended.status(sale.starts_at, 10), SaleStatus::Ended);
        let cancelled = Sale {
            state: SaleState::Cancelled,
            ..sale
        };
        assert_eq!(cancelled.status(0, 10), SaleStatus::Cancelled);
    }

    #[test]
    fn patch_marks_restricted_changes_only() {
        let sale = sale();
        let live_change = sale
            .patched(
                SalePatch {
                    stock_total: Some(900),
                    ends_at: Some("2026-11-11T02:00:00Z".into()),
                    ..SalePatch::default()
                },
                &SaleRules::default(),
            )
            .expect("valid");
        assert!(!live_change.restricted);
        assert_eq!(live_change.sale.stock_total, 900);

        let same_title = sale
            .patched(
                SalePatch {
                    title: Some(sale.title.clone()),
                    ..SalePatch::default()
                },
                &SaleRules::default(),
            )
            .expect("valid");
        assert!(!same_title.restricted, "an unchanged value is no change");

        let title = sale
            .patched(
                SalePatch {
                    title: Some("new".into()),
                    ..SalePatch::default()
                },
                &SaleRules::default(),
            )
            .expect("valid");
        assert!(title.restricted);

        let end = sale
            .patched(
                SalePatch {
                    status: Some(PatchStatus::Ended),
                    ..SalePatch::default()
                },
                &SaleRules::default(),
            )
            .expect("valid");
        assert!(end.end_now && !end.restricted);
    }

    #[test]
    fn patch_validates_the_merged_sale() {
        let err = sale()
            .patched(
                SalePatch {
                    ends_at: Some("2026-11-10T00:00:00Z".into()),
                    ..SalePatch::default()
                },
                &SaleRules::default(),
            )
            .unwrap_err();
        assert_eq!(err.field, "ends_at");
    }
}

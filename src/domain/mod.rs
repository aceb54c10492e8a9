//! Pure types and rules of a flash sale: sales, orders, shoppers, the
//! reservation rule. No I/O here: nothing in `domain` knows HTTP, Redis or
//! actors, so every rule is unit-tested in isolation and shared by the
//! embedded store and the inventory actors.

mod admission;
mod audit;
mod campaign;
mod campaign_change;
mod ids;
mod order;
mod payment;
mod reservation;
mod sale;
mod time;

pub use admission::{
    admission_position, admission_token_id, shuffle_key, shuffled, Admission, AdmissionMode,
    AdmissionSettings, Admitted, PollAdvice, QueuePlace, QueueStats, QueueStatus,
};
pub use audit::{Audit, Difference, RecordedOrder, RecountedUnits, SaleRecords};
pub use campaign::{
    Allowance, Campaign, CampaignLimits, Item, NewCampaign, NewItem, NewRound, Round,
    CAMPAIGN_ITEMS_LEN_MAX, CAMPAIGN_ROUNDS_LEN_MAX,
};
pub use campaign_change::{
    AddedRound, CampaignChange, CampaignPatch, ItemPatch, RoundPatch, SaleStep,
};
pub use ids::{CampaignId, CampaignSlot, OrderId, SaleId, ShopperId};
pub use order::{Order, OrderEvent, OrderStatus, RefundKind, RefundSettledBy, StockReturn};
pub use payment::{Payment, PaymentException, PaymentExceptionKind, PaymentOutcome};
pub use reservation::{
    check_reservation, OrderAsk, PresentedToken, Quantity, Rejection, Reservation, ReserveRequest,
    QUANTITY_MAX,
};
pub use sale::{
    NewSale, PatchStatus, Sale, SaleChange, SalePatch, SaleRules, SaleState, SaleStats, SaleStatus,
    SaleView, LIVE_CHANGEABLE_FIELDS,
};
pub use time::{parse_rfc3339_ms, system_now, Millis, Timestamp};

/// A value a client sent that breaks a rule. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

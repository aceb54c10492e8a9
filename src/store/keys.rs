//! Redis key names. Every key of one sale carries the sale id as its hash tag
//! (`fs:{s_abc}:stock`), so one sale lives in one Redis Cluster slot and each
//! script touches one slot. The sales of a campaign carry the campaign's id
//! as their tag instead (`fs:{c_abc}:s_abc-0a1:stock`), beside the
//! campaign's own keys (its record, the shoppers' units per round and in
//! all), so one reserve script sees the item's stock and the shopper's
//! units across the campaign: a campaign lives in one slot. Scripts never
//! build key names: Rust passes every key in `KEYS`.

use crate::domain::{CampaignId, SaleId, ShopperId};

/// Sorted set of every campaign id, scored by creation time. Not tagged
/// (no one campaign's).
pub const CAMPAIGN_INDEX: &str = "fs:campaigns";

/// Sorted set of every sale id, scored by creation time. Not tagged (it is
/// no one sale's): written by its own script, `lua/index_sale.lua`, before
/// the sale's keys are; read a page at a time, newest first.
pub const SALE_INDEX: &str = "fs:sales";

/// Sorted set of the sales not yet settled, scored by the end of the
/// payment window (`ends_at` + payment timeout, an upper bound: only ever
/// raised). Hashes on `fs:sales`, so `lua/index_sale.lua` writes both
/// indexes in one slot; `lua/open_sales.lua` reads the sales whose window
/// may not be over, a shopper's order list reads all of it, and a sale
/// leaves it when the order service settles it. What shoppers see listed
/// and what the order service looks for, without reading every sale ever
/// made.
pub const OPEN_SALE_INDEX: &str = "{fs:sales}:open";

/// Sorted set of the settled sales a shopper has orders in (the order
/// service lists a sale for each of its shoppers when it settles the
/// sale), scored by when it did; a sale leaves it when retention deletes
/// the sale.
pub fn shopper_sales(shopper: &ShopperId) -> String {
    shopper_sales_key(shopper.as_str())
}

/// [`shopper_sales`] of a shopper id as a store reply names it.
pub fn shopper_sales_key(shopper: &str) -> String {
    format!("fs:shopper_sales:{shopper}")
}

/// Hash of the verified payments the engine could not apply: transaction
/// id → the exception's record (see `store::redis::codec`). Not tagged (an
/// unknown order names no sale): written by its own one-key script,
/// `lua/record_payment_exception.lua`.
pub const PAYMENT_EXCEPTIONS: &str = "fs:payment_exceptions";

/// Pub/sub channel on which engine nodes announce stock returned to a sale
/// (an order cancelled or expired), so every node's actor learns it.
pub const STOCK_RETURNS_CHANNEL: &str = "fs:stock_returns";

/// The consumer group of the order service on every sale's stream.
pub const ORDER_SERVICE_GROUP: &str = "orders";

/// The keys of one sale.
pub struct SaleKeys {
    tag: String,
}

impl SaleKeys {
    pub fn new(sale: &SaleId) -> Self {
        let tag = match sale.campaign() {
            Some(slot) => format!("fs:{{{}}}:{sale}", slot.campaign),
            None => format!("fs:{{{sale}}}"),
        };
        Self { tag }
    }

    /// Hash: the sale's fields.
    pub fn sale(&self) -> String {
        format!("{}:sale", self.tag)
    }

    /// String: units remaining.
    pub fn stock(&self) -> String {
        format!("{}:stock", self.tag)
    }

    /// Hash: `reserved`, `paid`, `cancelled`, `expired` (units), ...;
    /// `batches`: the number of the last batch of orders `reserve.lua` made.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.tag)
    }

    /// Hash: shopper -> `units order_id order_id ...`: the units they hold
    /// (reserved or paid), then every order they had in the sale (one
    /// field, so the reserve script finds both in one lookup; see
    /// `lua/common.lua`).
    pub fn shoppers(&self) -> String {
        format!("{}:shoppers", self.tag)
    }

    /// Hash: shopper + idempotency key -> `order_id quantity`.
    pub fn idempotency(&self) -> String {
        format!("{}:idem", self.tag)
    }

    /// Hash: shopper -> orders they cancelled (at most the store's
    /// cancels-per-shopper bound).
    pub fn cancels(&self) -> String {
        format!("{}:cancels", self.tag)
    }

    /// Hash: shopper -> their orders that expired unpaid (at most the
    /// store's expiries-per-shopper bound before they reserve no more).
    pub fn expiries(&self) -> String {
        format!("{}:expiries", self.tag)
    }

    /// Stream: reservations queued for the order service.
    pub fn stream(&self) -> String {
        format!("{}:stream", self.tag)
    }

    /// Hash: purchase token id -> the order it bought.
    pub fn purchase_tokens(&self) -> String {
        format!("{}:ptokens", self.tag)
    }

    /// String: the lease of the engine node settling the sale
    /// (`lua/settle_sale.lua`), while it does.
    pub fn settling(&self) -> String {
        format!("{}:settling", self.tag)
    }

    /// Set: the numbers of the batches of orders the order service has
    /// taken (`lua/accept_orders.lua`).
    pub fn accepted(&self) -> String {
        format!("{}:accepted", self.tag)
    }

    /// Sorted set: payment deadlines, one member per reserve call (the ids
    /// of the orders it made, space-separated) scored by their
    /// `expires_at`, and one per held order (see `lua/expire_orders.lua`).
    pub fn deadlines(&self) -> String {
        format!("{}:deadlines", self.tag)
    }

    /// Sorted set: outbox entries (`event order_id`; a campaign round's
    /// reminder: `campaign.round_starting` alone) scored by when the next
    /// attempt is due.
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }

    /// Hash: hand-off -> attempts so far.
    pub fn attempts(&self) -> String {
        format!("{}:attempts", self.tag)
    }

    /// Hash: hand-off taken out of the outbox (`event order_id`) ->
    /// `attempts at_ms status failure` (status 0: no answer).
    pub fn dead_letters(&self) -> String {
        format!("{}:dead_letters", self.tag)
    }

    /// Hash: order id -> the order's record (`name=value` pairs; see
    /// `lua/common.lua` and `store::redis::codec`).
    pub fn orders(&self) -> String {
        format!("{}:orders", self.tag)
    }

    /// Sorted set: the waiting room's line (`lua/queue_join.lua`).
    pub fn queue_line(&self) -> String {
        format!("{}:q:line", self.tag)
    }

    /// Hash: shopper -> their member of the line.
    pub fn queue_members(&self) -> String {
        format!("{}:q:who", self.tag)
    }

    /// Hash: admitted shopper -> when the admission expires (ms).
    pub fn queue_admitted(&self) -> String {
        format!("{}:q:adm", self.tag)
    }

    /// Sorted set: admitted members by expiry, until their place is freed
    /// or kept.
    pub fn queue_expiries(&self) -> String {
        format!("{}:q:exp", self.tag)
    }

    /// Hash: the waiting room's counters (`seq`, `cursor`, `granted`,
    /// `expired`, `tick`).
    pub fn queue_meta(&self) -> String {
        format!("{}:q:meta", self.tag)
    }

    /// Every key of the sale: what retention deletes.
    pub fn all(&self) -> [String; 23] {
        [
            self.sale(),
            self.stock(),
            self.stats(),
            self.shoppers(),
            self.idempotency(),
            self.cancels(),
            self.expiries(),
            self.stream(),
            self.accepted(),
            self.settling(),
            self.purchase_tokens(),
            self.deadlines(),
            self.outbox(),
            self.attempts(),
            self.dead_letters(),
            self.orders(),
            self.queue_line(),
            self.queue_members(),
            self.queue_admitted(),
            self.queue_expiries(),
            self.queue_meta(),
            // What builds before the shoppers hash kept per shopper: a sale
            // they began still has them.
            format!("{}:buyers", self.tag),
            format!("{}:uorders", self.tag),
        ]
    }
}

/// The keys of a campaign, in its slot: what `lua/forget_campaign.lua`
/// deletes once every sale of the campaign is forgotten.
pub struct CampaignKeys {
    tag: String,
}

impl CampaignKeys {
    pub fn new(campaign: &CampaignId) -> Self {
        Self {
            tag: format!("fs:{{{campaign}}}"),
        }
    }

    /// Hash: `record` (the campaign as JSON), `version`, and the limits
    /// `reserve.lua` reads: `round_limit`, `total_limit` (0: none).
    pub fn campaign(&self) -> String {
        format!("{}:campaign", self.tag)
    }

    /// Hash: shopper -> units held (reserved or paid) in round `round`.
    pub fn round_holds(&self, round: u32) -> String {
        format!("{}:round:{round}:holds", self.tag)
    }

    /// Hash: shopper -> units held in the whole campaign.
    pub fn holds(&self) -> String {
        format!("{}:holds", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sale_key_shares_the_hash_tag() {
        let sale = SaleId::generate();
        let tag = format!("{{{sale}}}");
        let keys = SaleKeys::new(&sale).all();
        for key in &keys {
            assert!(key.starts_with(&format!("fs:{tag}:")), "{key}");
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "no key listed twice");
    }

    #[test]
    fn a_campaigns_sales_share_the_campaigns_hash_tag() {
        let campaign = CampaignId::generate();
        let sale = SaleId::of_campaign(&campaign, 3, 7);
        let tag = format!("fs:{{{campaign}}}:");
        for key in SaleKeys::new(&sale).all() {
            assert!(key.starts_with(&format!("{tag}{sale}:")), "{key}");
        }
        let keys = CampaignKeys::new(&campaign);
        for key in [keys.campaign(), keys.round_holds(3), keys.holds()] {
            assert!(key.starts_with(&tag), "{key}");
        }
    }

    #[test]
    fn both_indexes_of_sales_share_a_slot() {
        // A key hashes on its `{...}` tag when it has one, on the whole
        // name otherwise.
        assert_eq!(OPEN_SALE_INDEX, format!("{{{SALE_INDEX}}}:open"));
    }
}

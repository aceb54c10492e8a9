//! Reads that several calls of the [`Store`](crate::store::Store) impl
//! share: a request's outcome from its answer in `reserve.lua`'s reply (a
//! replay reads the order it names), and a shopper's order ids in one sale.

use super::codec::{corrupt, order_ids, shopper_entry, ReserveReply};
use super::RedisStore;
use crate::domain::{OrderId, Reservation, ReserveRequest, SaleId, ShopperId};
use crate::store::keys::SaleKeys;
use crate::store::{Store, StoreError};

impl RedisStore {
    /// One request's outcome from its answer in `reserve.lua`'s reply. A
    /// replay fetches the order it names. Every error here is this
    /// request's own: the batch was decided, so the other requests keep
    /// their outcomes.
    pub(super) async fn reservation_outcome(
        &self,
        request: &ReserveRequest,
        answer: Result<ReserveReply, StoreError>,
    ) -> Result<Reservation, StoreError> {
        let id = match answer? {
            ReserveReply::Reserved(reservation) => return Ok(*reservation),
            ReserveReply::Replay(id) => id,
        };
        let order = self
            .order(&id)
            .await?
            .ok_or_else(|| corrupt(format!("idempotency key names missing order {id}")))?;
        // This very call, resent by the client library, is no replay.
        let replayed = order.id != request.order_id;
        Ok(Reservation {
            order,
            remaining: None,
            held: None,
            replayed,
        })
    }

    pub(super) async fn order_ids_of(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
    ) -> Result<Vec<OrderId>, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(keys.shoppers()).arg(shopper.as_str());
        let entry: Option<String> = self.query("shopper_orders", &cmd).await?;
        let ids = entry.as_deref().map(shopper_entry).transpose()?;
        order_ids(ids.map(|(_, ids)| ids))
    }
}

//! The [`Store`] impl of the Redis store: for each call, the script (or
//! the one plain command) it sends, with the sale's keys and the arguments
//! in the order the script's header lists them, and how its reply becomes
//! the answer (through `codec`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::Value;
use smol_str::SmolStr;

use super::codec::{
    admin_outcome, corrupt, dead_letter, delivery_member, exception_from_record, exception_record,
    flag, millis, open_exception_from_record, order_from_fields, order_from_record, order_ids,
    parse_errand, record_fields, sale_fields, shopper_entry, stream_entries, view_from_snapshot,
    Announcement, OrderTerms, Reply,
};
use super::connection::{timed, unavailable};
use super::RedisStore;
use crate::domain::{
    admission_token_id, Admitted, Campaign, CampaignChange, CampaignId, Millis, Order, OrderId,
    Payment, PaymentException, PaymentOutcome, QueuePlace, QueueStats, QueueStatus, RecordedOrder,
    RefundSettledBy, Rejection, Reservation, ReserveRequest, Sale, SaleChange, SaleId, SaleRecords,
    SaleStep, SaleView, ShopperId, StockReturn,
};
use crate::store::keys::{
    self, CampaignKeys, SaleKeys, CAMPAIGN_INDEX, OPEN_SALE_INDEX, ORDER_SERVICE_GROUP,
    PAYMENT_EXCEPTIONS, STOCK_RETURNS_CHANNEL,
};
use crate::store::scripts::Invocation;
use crate::store::{
    batch_sale, campaign_changed_meanwhile, campaign_sale_refused, campaign_started,
    cancels_exhausted, changed_meanwhile, no_refund_asked, not_paid, not_pending, not_queued,
    refund_call_queued, restock_not_live, sort_exceptions_newest_first, sort_newest_first,
    sort_oldest_first, Acceptance, DeadLetter, Delivery, DeliveryFailure, Expiry, FollowUps,
    Forgetting, IndexedCampaign, IndexedSale, OrderBacklog, QueueRules, RefundSettlement,
    StockReturnHandler, Store, StoreError, StoredCampaign, StreamEntry, StreamRead, PREPAY_CHANGED,
    QUEUE_FREED_PER_POLL_MAX,
};

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.ensure_scripts().await.map_err(unavailable)
    }

    async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError> {
        let keys = SaleKeys::new(&sale.id);
        let mut invocation = self.scripts.create_sale.key(keys.sale());
        invocation.key(keys.stock()).arg(sale.stock_total);
        for (field, value) in sale_fields(sale) {
            invocation.arg(field).arg(value);
        }
        self.index(sale, true).await?;
        let created: i64 = redis::from_redis_value(self.run("create_sale", &invocation).await?)
            .map_err(corrupt)?;
        if created != 1 {
            return Err(StoreError::Conflict(format!(
                "sale {} already exists",
                sale.id
            )));
        }
        Ok(())
    }

    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        // The sales and the campaign are indexed first (see `index`): a
        // failure before the script leaves only entries that name nothing,
        // which readers skip and retention takes off (`unindex_campaign`);
        // a campaign created is never missing from the index.
        let sales = campaign.sales();
        try_join_all(sales.iter().map(|sale| self.index(sale, true))).await?;
        let indexed = self.index_campaign(campaign, true).await?;
        let reminders: HashMap<SaleId, Millis> = campaign.reminders().into_iter().collect();
        let mut invocation = self
            .scripts
            .create_campaign
            .key(CampaignKeys::new(&campaign.id).campaign());
        invocation
            .arg(serde_json::to_string(campaign).map_err(corrupt)?)
            .arg(campaign.limits.per_round)
            .arg(campaign.limits.total.unwrap_or(0));
        for sale in &sales {
            let keys = SaleKeys::new(&sale.id);
            invocation
                .key(keys.sale())
                .key(keys.stock())
                .key(keys.outbox())
                .key(keys.attempts());
            let fields = sale_fields(sale);
            invocation
                .arg(sale.stock_total)
                .arg(
                    reminders
                        .get(&sale.id)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )
                .arg(fields.len() * 2);
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
        }
        let created: i64 = redis::from_redis_value(self.run("create_campaign", &invocation).await?)
            .map_err(corrupt)?;
        if created != 1 {
            if indexed {
                // This call's own entry, of a campaign that was not made.
                if let Err(err) = self.unindex_campaign(&campaign.id).await {
                    tracing::warn!(campaign = %campaign.id, error = %err,
                        "a refused campaign stays indexed until retention takes it off");
                }
            }
            return Err(StoreError::Conflict(format!(
                "campaign {} or one of its sales already exists",
                campaign.id
            )));
        }
        // Indexed again, should retention have taken the entry off while
        // the script ran (a node whose clock is a minute behind Redis's
        // would see it past the grace): a no-op otherwise, so a failure
        // here leaves the campaign made and, but for that race, listed.
        if let Err(err) = self.index_campaign(campaign, false).await {
            tracing::warn!(campaign = %campaign.id, error = %err,
                "campaign made; its index entry could not be written again");
        }
        Ok(())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<StoredCampaign>, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(CampaignKeys::new(id).campaign())
            .arg("record")
            .arg("version");
        let (record, version): (Option<String>, Option<i64>) = self.query("campaign", &cmd).await?;
        let (Some(record), Some(version)) = (record, version) else {
            return Ok(None);
        };
        Ok(Some(StoredCampaign {
            campaign: serde_json::from_str(&record).map_err(corrupt)?,
            version,
        }))
    }

    async fn update_campaign(
        &self,
        change: &CampaignChange,
        version: i64,
    ) -> Result<(), StoreError> {
        // New sales and moved windows are indexed first (see `index`): a
        // failure before the script leaves only entries a retry writes
        // again, and which name no sale or a window that closes later.
        let indexed = change.steps.iter().filter_map(|step| match step {
            SaleStep::Create(sale) => Some((sale, true)),
            SaleStep::Change { change, .. } => Some((&change.sale, false)),
            SaleStep::Cancel(_) => None,
        });
        try_join_all(indexed.map(|(sale, new)| self.index(sale, new))).await?;
        let campaign = &change.campaign;
        let mut invocation = self
            .scripts
            .update_campaign
            .key(CampaignKeys::new(&campaign.id).campaign());
        invocation
            .arg(version)
            .arg(change.before_start.as_deref().unwrap_or(""))
            .arg(change.starts_at)
            .arg(serde_json::to_string(campaign).map_err(corrupt)?)
            .arg(campaign.limits.per_round)
            .arg(campaign.limits.total.unwrap_or(0))
            .arg(change.reminders.len());
        for step in &change.steps {
            let keys = SaleKeys::new(step.sale_id());
            invocation
                .key(keys.sale())
                .key(keys.stock())
                .key(keys.stats())
                .key(keys.outbox())
                .key(keys.attempts());
            let mut args: Vec<String> = Vec::new();
            let kind = match step {
                SaleStep::Create(sale) => {
                    args.push(sale.stock_total.to_string());
                    for (field, value) in sale_fields(sale) {
                        args.extend([field.to_owned(), value]);
                    }
                    "create"
                }
                SaleStep::Cancel(_) => "cancel",
                SaleStep::Change { change, version } => {
                    args.extend([
                        version.to_string(),
                        flag(change.restricted).to_owned(),
                        flag(change.end_now).to_owned(),
                        change.sale.stock_total.to_string(),
                        change.sale.ends_at.to_string(),
                    ]);
                    for (field, value) in changeable_fields(&change.sale) {
                        args.extend([field.to_owned(), value]);
                    }
                    "change"
                }
            };
            invocation
                .arg(kind)
                .arg(step.sale_id().as_str())
                .arg(args.len())
                .arg(args);
        }
        for (sale, due) in &change.reminders {
            let keys = SaleKeys::new(sale);
            invocation
                .key(keys.sale())
                .key(keys.outbox())
                .key(keys.attempts())
                .arg(*due);
        }
        let (outcome, mut reply) = Reply::new(self.run("update_campaign", &invocation).await?)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "not_found" => Err(StoreError::NotFound("campaign")),
            "changed" => Err(campaign_changed_meanwhile()),
            "started" => Err(campaign_started(
                change.before_start.as_deref().unwrap_or_default(),
            )),
            "sale" => {
                let sale: String = reply.next()?;
                let refusal: String = reply.next()?;
                let reason: String = reply.next()?;
                let sale = SaleId::parse(&sale).map_err(corrupt)?;
                Err(match refusal.as_str() {
                    "changed" => campaign_changed_meanwhile(),
                    "not_found" => campaign_sale_refused(&sale, "the sale does not exist"),
                    _ => campaign_sale_refused(&sale, &reason),
                })
            }
            other => Err(corrupt(format!("unknown outcome {other}"))),
        }
    }

    async fn campaign_ids(&self) -> Result<Vec<CampaignId>, StoreError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(CAMPAIGN_INDEX).arg(0).arg(-1).arg("REV");
        let ids: Vec<String> = self.query("campaign_ids", &cmd).await?;
        ids.iter()
            .map(|id| CampaignId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn forget_campaign(&self, id: &CampaignId) -> Result<Forgetting, StoreError> {
        let forgetting = match self.campaign(id).await? {
            None => Forgetting::Gone,
            Some(StoredCampaign { campaign, version }) => {
                let keys = CampaignKeys::new(id);
                let mut invocation = self.scripts.forget_campaign.key(keys.campaign());
                invocation.key(keys.holds());
                for round in &campaign.rounds {
                    invocation.key(keys.round_holds(round.number));
                }
                for sale in campaign.sales() {
                    invocation.key(SaleKeys::new(&sale.id).sale());
                }
                invocation.arg(version).arg(campaign.rounds.len());
                let outcome: String =
                    redis::from_redis_value(self.run("forget_campaign", &invocation).await?)
                        .map_err(corrupt)?;
                match outcome.as_str() {
                    "kept" => return Ok(Forgetting::Kept),
                    "gone" => Forgetting::Gone,
                    "forgotten" => Forgetting::Forgotten,
                    other => return Err(corrupt(format!("unknown forget outcome {other}"))),
                }
            }
        };
        if forgetting == Forgetting::Forgotten {
            self.unindex_campaign(id).await?;
            return Ok(forgetting);
        }
        // No such campaign: its id, if indexed, is one whose creation was
        // refused or crashed, or is under way.
        self.unindex_unmade_campaign(id).await
    }

    async fn campaign_index(
        &self,
        after: Option<&IndexedCampaign>,
        limit: usize,
    ) -> Result<Vec<IndexedCampaign>, StoreError> {
        self.campaign_index_page(after, limit).await
    }

    async fn campaign_holds(
        &self,
        id: &CampaignId,
        round: u32,
        shopper: &ShopperId,
    ) -> Result<(i64, i64), StoreError> {
        let keys = CampaignKeys::new(id);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("HGET")
            .arg(keys.round_holds(round))
            .arg(shopper.as_str())
            .cmd("HGET")
            .arg(keys.holds())
            .arg(shopper.as_str());
        let (in_round, in_all): (Option<i64>, Option<i64>) = timed(
            "campaign_holds",
            pipeline.query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok((in_round.unwrap_or(0), in_all.unwrap_or(0)))
    }

    async fn sale_index(
        &self,
        after: Option<&IndexedSale>,
        limit: usize,
    ) -> Result<Vec<IndexedSale>, StoreError> {
        self.sale_index_page(after, limit).await
    }

    async fn open_sale_ids(&self) -> Result<Vec<SaleId>, StoreError> {
        let invocation = self.scripts.open_sales.key(OPEN_SALE_INDEX);
        let ids: Vec<String> =
            redis::from_redis_value(self.run("open_sales", &invocation).await?).map_err(corrupt)?;
        ids.iter()
            .map(|id| SaleId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn settle_sale(&self, sale: &SaleId) -> Result<(), StoreError> {
        self.settle(sale).await
    }

    async fn view_sale(&self, id: &SaleId) -> Result<Option<SaleView>, StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.sale_snapshot.key(keys.sale());
        invocation.key(keys.stock()).key(keys.stats());
        let snapshot = self.run("sale_snapshot", &invocation).await?;
        view_from_snapshot(redis::from_redis_value(snapshot).map_err(corrupt)?)
    }

    async fn sale_records(&self, id: &SaleId) -> Result<Option<SaleRecords>, StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.audit_sale.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.shoppers())
            .key(keys.stream())
            .key(keys.deadlines())
            .key(keys.orders())
            .key(keys.accepted());
        let mut reply = Reply::array(self.run("audit_sale", &invocation).await?, "audit")?;
        if !reply.has_more() {
            return Ok(None);
        }
        let Some(view) = view_from_snapshot(reply.next()?)? else {
            return Ok(None);
        };
        let shoppers: HashMap<String, String> = reply.next()?;
        let stream: Vec<String> = reply.next()?;
        let deadlines: Vec<String> = reply.next()?;
        let records: BTreeMap<String, String> = reply.next()?;
        let accepted: HashSet<String> = reply.next()?;
        let orders = records
            .iter()
            .map(|(id, record)| {
                let id = OrderId::parse(id).map_err(corrupt)?;
                let fields = record_fields(record);
                // Taken with its batch, or marked in its own record by a
                // build before batches.
                let queued = fields
                    .get("batch")
                    .is_some_and(|batch| accepted.contains(batch))
                    || fields.contains_key("queued_at");
                Ok(RecordedOrder {
                    order: order_from_fields(&id, &fields)?,
                    queued,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let mut held = BTreeMap::new();
        let mut listed = Vec::with_capacity(shoppers.len());
        for (shopper, entry) in &shoppers {
            let (units, ids) = shopper_entry(entry)?;
            held.insert(ShopperId::parse(shopper).map_err(corrupt)?, units);
            listed.push(ids);
        }
        let indexed = order_ids(listed)?;
        Ok(Some(SaleRecords {
            view,
            held,
            indexed,
            orders,
            deadlines: deadlines
                .iter()
                .map(|entry| order_ids([entry.as_str()]))
                .collect::<Result<_, _>>()?,
            stream: order_ids(stream.iter().map(String::as_str))?,
        }))
    }

    async fn update_sale(
        &self,
        id: &SaleId,
        change: &SaleChange,
        version: i64,
    ) -> Result<(), StoreError> {
        // A window that moves later is indexed first (see `index`).
        self.index(&change.sale, false).await?;
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.update_sale.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.queue_line())
            .key(keys.queue_members())
            .key(keys.queue_admitted())
            .key(keys.queue_expiries())
            .key(keys.queue_meta())
            .arg(version)
            .arg(if change.restricted { "1" } else { "0" })
            .arg(if change.end_now { "1" } else { "0" })
            .arg(change.sale.stock_total)
            .arg(change.sale.ends_at);
        for (field, value) in changeable_fields(&change.sale) {
            invocation.arg(field).arg(value);
        }
        let (outcome, reply) = Reply::new(self.run("update_sale", &invocation).await?)?;
        if outcome == "changed" {
            return Err(changed_meanwhile());
        }
        admin_outcome(&outcome, reply)
    }

    async fn queue_join(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        shuffle_key: &str,
        rules: &QueueRules,
    ) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.queue_join.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.queue_line())
            .key(keys.queue_members())
            .key(keys.queue_meta())
            .key(keys.stats())
            .arg(shopper.as_str())
            .arg(shuffle_key)
            .arg(rules.size_max);
        let (outcome, _) = Reply::new(self.run("queue_join", &invocation).await?)?;
        match outcome.as_str() {
            "joined" => Ok(()),
            "not_found" => Err(StoreError::NotFound("sale")),
            "not_queued" => Err(not_queued()),
            "not_started" => Err(Rejection::NotStarted.into()),
            "ended" => Err(Rejection::Ended.into()),
            "sold_out" => Err(Rejection::SoldOut.into()),
            "full" => Err(StoreError::QueueFull),
            other => Err(corrupt(format!("unknown outcome {other}"))),
        }
    }

    async fn queue_poll(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        rules: &QueueRules,
    ) -> Result<Option<QueuePlace>, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.queue_poll.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.purchase_tokens())
            .key(keys.queue_line())
            .key(keys.queue_members())
            .key(keys.queue_admitted())
            .key(keys.queue_expiries())
            .key(keys.queue_meta())
            .arg(shopper.as_str())
            .arg(rules.headroom_pct)
            .arg(rules.expiry_grace_ms)
            .arg(QUEUE_FREED_PER_POLL_MAX);
        let (outcome, mut reply) = Reply::new(self.run("queue_poll", &invocation).await?)?;
        let status = match outcome.as_str() {
            "absent" => return Ok(None),
            "not_found" => return Err(StoreError::NotFound("sale")),
            "not_queued" => return Err(not_queued()),
            other => {
                QueueStatus::parse(other).ok_or_else(|| corrupt(format!("queue status {other}")))?
            }
        };
        let now: i64 = reply.next()?;
        let starts_at: i64 = reply.next()?;
        let admit_per_sec: i64 = reply.next()?;
        let position: i64 = reply.next()?;
        let ahead: i64 = reply.next()?;
        let expires_at: i64 = reply.next()?;
        let position = u64::try_from(position).ok();
        Ok(Some(QueuePlace {
            status,
            position,
            ahead: u64::try_from(ahead).ok(),
            admitted: match (status, position) {
                (QueueStatus::Admitted, Some(position)) => Some(Admitted {
                    token_id: admission_token_id(position),
                    expires_at,
                }),
                _ => None,
            },
            now,
            starts_at,
            admit_per_sec,
        }))
    }

    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.cancel_sale.key(keys.sale());
        invocation.key(keys.outbox()).key(keys.attempts());
        let (outcome, reply) = Reply::new(self.run("cancel_sale", &invocation).await?)?;
        admin_outcome(&outcome, reply)
    }

    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<Result<Reservation, StoreError>>, StoreError> {
        let sale = batch_sale(requests)?;
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.reserve.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.shoppers())
            .key(keys.idempotency())
            .key(keys.stream())
            .key(keys.deadlines())
            .key(keys.purchase_tokens())
            .key(keys.orders())
            .key(keys.cancels())
            .key(keys.expiries())
            .key(keys.queue_line())
            .key(keys.queue_expiries());
        if let Some((campaign, round)) = campaign_holds_keys(sale) {
            invocation
                .key(campaign.campaign())
                .key(campaign.round_holds(round))
                .key(campaign.holds());
        }
        // reserve.lua's arguments: three per request, then three more for
        // each request with an idempotency key or a purchase token.
        invocation
            .arg(self.shopper_bounds.cancels)
            .arg(self.shopper_bounds.expiries)
            .arg(requests.len());
        for request in requests {
            invocation
                .arg(request.shopper_id.as_str())
                .arg(request.quantity.get())
                .arg(request.order_id.as_str());
        }
        for (index, request) in requests.iter().enumerate() {
            if request.idempotency_key.is_none() && request.purchase_token.is_none() {
                continue;
            }
            let idempotency_field = request
                .idempotency_key
                .as_ref()
                .map(|key| format!("{}\n{key}", request.shopper_id))
                .unwrap_or_default();
            invocation
                .arg(index + 1)
                .arg(idempotency_field)
                .arg(request.purchase_token.as_deref().unwrap_or(""));
        }
        let mut reply = Reply::array(self.run("reserve", &invocation).await?, "reserve")?;
        let answers = OrderTerms::from_reply(&mut reply)?.read_answers(requests, &mut reply)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for (request, answer) in requests.iter().zip(answers) {
            outcomes.push(self.reservation_outcome(request, answer).await);
        }
        Ok(outcomes)
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(SaleKeys::new(&id.sale_id()).orders())
            .arg(id.as_str());
        let record: Option<String> = self.query("order", &cmd).await?;
        record
            .map(|record| order_from_record(id, &record))
            .transpose()
    }

    async fn shopper_orders(&self, shopper: &ShopperId) -> Result<Vec<Order>, StoreError> {
        // The unsettled sales first: settling lists a sale in the
        // shopper's index before it leaves them, so a sale settled between
        // the two reads is in the second.
        let mut sales: BTreeSet<SaleId> = self.unsettled_sale_ids().await?.into_iter().collect();
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys::shopper_sales(shopper)).arg(0).arg(-1);
        let listed: Vec<String> = self.query("shopper_sales", &cmd).await?;
        for id in &listed {
            sales.insert(SaleId::parse(id).map_err(corrupt)?);
        }
        let ids = try_join_all(sales.iter().map(|sale| self.order_ids_of(sale, shopper))).await?;
        let orders = try_join_all(ids.iter().flatten().map(|id| self.order(id))).await?;
        let mut orders: Vec<Order> = orders.into_iter().flatten().collect();
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn sale_orders(
        &self,
        sale: &SaleId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<String>), StoreError> {
        let cursor = match cursor {
            None => 0,
            Some(cursor) => cursor.parse::<u64>().map_err(|_| StoreError::BadCursor)?,
        };
        let mut cmd = redis::cmd("HSCAN");
        cmd.arg(SaleKeys::new(sale).orders())
            .arg(cursor)
            .arg("COUNT")
            .arg(limit);
        let (next, records): (String, Vec<(String, String)>) =
            self.query("sale_orders", &cmd).await?;
        let orders = records
            .iter()
            .map(|(id, record)| {
                let id = OrderId::parse(id).map_err(corrupt)?;
                order_from_record(&id, record)
            })
            .collect::<Result<_, _>>()?;
        Ok((orders, (next != "0").then_some(next)))
    }

    async fn forget_sale(
        &self,
        sale: &SaleId,
        retention: Duration,
    ) -> Result<Forgetting, StoreError> {
        let keys = SaleKeys::new(sale);
        let shoppers = keys.shoppers();
        let mut invocation = self.scripts.forget_sale.key(keys.sale());
        invocation
            .key(keys.deadlines())
            .key(keys.stream())
            .key(keys.outbox())
            .key(&shoppers)
            .key(keys.dead_letters());
        let rest = keys.all();
        let named = [
            keys.sale(),
            keys.deadlines(),
            keys.stream(),
            keys.outbox(),
            keys.dead_letters(),
        ];
        for key in rest
            .iter()
            .filter(|key| **key != shoppers && !named.contains(key))
        {
            invocation.key(key);
        }
        invocation.arg(millis(retention));
        let (outcome, mut reply) = Reply::new(self.run("forget_sale", &invocation).await?)?;
        let forgetting = match outcome.as_str() {
            "kept" => return Ok(Forgetting::Kept),
            "owed" => return Ok(Forgetting::Owed),
            "gone" => Forgetting::Gone,
            "forgotten" => {
                // Each shopper's sales first, then the list of them: a
                // failure in between is finished by the next call.
                let listed: Vec<String> = reply.next()?;
                self.unindex_for_shoppers(sale, &listed).await?;
                let mut cmd = redis::cmd("UNLINK");
                cmd.arg(&shoppers);
                self.query::<()>("forget_sale", &cmd).await?;
                Forgetting::Forgotten
            }
            other => return Err(corrupt(format!("unknown forget outcome {other}"))),
        };
        self.unindex(sale).await?;
        Ok(forgetting)
    }

    async fn cancel_order(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError> {
        self.cancel(id, shopper, None).await
    }

    async fn take_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError> {
        let mut invocation = self.scripts.take_cancel.key(SaleKeys::new(sale).cancels());
        invocation
            .arg(shopper.as_str())
            .arg(self.shopper_bounds.cancels);
        let (outcome, mut reply) = Reply::new(self.run("take_cancel", &invocation).await?)?;
        match outcome.as_str() {
            "taken" => Ok(()),
            "cancels_exhausted" => Err(cancels_exhausted(reply.next::<i64>()?)),
            other => Err(corrupt(format!("unknown take_cancel outcome {other}"))),
        }
    }

    async fn give_back_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError> {
        let mut invocation = self
            .scripts
            .give_back_cancel
            .key(SaleKeys::new(sale).cancels());
        invocation.arg(shopper.as_str());
        let _given_back: i64 =
            redis::from_redis_value(self.run("give_back_cancel", &invocation).await?)
                .map_err(corrupt)?;
        Ok(())
    }

    async fn cancel_taken_order(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
        closed: Option<&str>,
    ) -> Result<Order, StoreError> {
        self.cancel(id, shopper, Some(closed)).await
    }

    async fn pay_order(
        &self,
        id: &OrderId,
        payment: &Payment,
        follow_ups: FollowUps,
    ) -> Result<PaymentOutcome, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let (amount, currency) = payment
            .amount
            .as_ref()
            .map(|(amount, currency)| (amount.to_string(), currency.as_str()))
            .unwrap_or_default();
        let mut invocation = self.scripts.pay_order.key(keys.orders());
        invocation
            .key(keys.stats())
            .key(keys.deadlines())
            .key(keys.outbox())
            .arg(id.as_str())
            .arg(amount)
            .arg(currency)
            .arg(flag(follow_ups.hand_off))
            .arg(payment.transaction_id.as_str())
            .arg(flag(follow_ups.refund));
        let (outcome, mut reply) = Reply::new(self.run("pay_order", &invocation).await?)?;
        if outcome == "not_found" {
            return Err(StoreError::NotFound("order"));
        }
        let order = order_from_record(id, &reply.next::<String>()?)?;
        match outcome.as_str() {
            "paid" => Ok(PaymentOutcome::Paid(order)),
            "unchanged" => Ok(PaymentOutcome::Unchanged(order)),
            "refund_required" => Ok(PaymentOutcome::RefundRequired(order)),
            "amount_mismatch" => Ok(PaymentOutcome::AmountMismatch(order)),
            other => Err(corrupt(format!("unknown payment outcome {other}"))),
        }
    }

    async fn refund_order(
        &self,
        id: &OrderId,
        restock: bool,
        follow_ups: FollowUps,
    ) -> Result<Order, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.refund_order.key(keys.orders());
        invocation
            .key(keys.stats())
            .key(keys.outbox())
            .key(keys.sale())
            .key(keys.stock())
            .key(keys.shoppers());
        add_holds(&mut invocation, &id.sale_id());
        invocation
            .arg(id.as_str())
            .arg(flag(restock))
            .arg(flag(follow_ups.refund))
            .arg(flag(follow_ups.hand_off));
        let (outcome, mut reply) = Reply::new(self.run("refund_order", &invocation).await?)?;
        match outcome.as_str() {
            "refunding" | "refunded" => order_from_record(id, &reply.next::<String>()?),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(not_paid(&reply.next::<String>()?)),
            "not_live" => Err(restock_not_live()),
            other => Err(corrupt(format!("unknown refund outcome {other}"))),
        }
    }

    async fn settle_refund(
        &self,
        id: &OrderId,
        by: RefundSettledBy,
        hand_off: bool,
    ) -> Result<RefundSettlement, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.settle_refund.key(keys.orders());
        invocation
            .key(keys.outbox())
            .key(keys.dead_letters())
            .arg(id.as_str())
            .arg(flag(hand_off))
            .arg(flag(by == RefundSettledBy::Merchant));
        let (outcome, mut reply) = Reply::new(self.run("settle_refund", &invocation).await?)?;
        match outcome.as_str() {
            "refunded" => Ok(RefundSettlement::Refunded(order_from_record(
                id,
                &reply.next::<String>()?,
            )?)),
            "unchanged" => Ok(RefundSettlement::Unchanged(order_from_record(
                id,
                &reply.next::<String>()?,
            )?)),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(no_refund_asked(&reply.next::<String>()?)),
            "call_queued" => Err(refund_call_queued()),
            other => Err(corrupt(format!("unknown refund settlement {other}"))),
        }
    }

    async fn end_refund_call(&self, id: &OrderId) -> Result<(), StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.end_refund_call.key(keys.outbox());
        invocation.key(keys.attempts()).arg(id.as_str());
        self.run("end_refund_call", &invocation).await?;
        Ok(())
    }

    async fn record_prepay(&self, id: &OrderId, prepay_id: &str) -> Result<Order, StoreError> {
        let mut invocation = self
            .scripts
            .record_prepay
            .key(SaleKeys::new(&id.sale_id()).orders());
        invocation.arg(id.as_str()).arg(prepay_id);
        let (outcome, mut reply) = Reply::new(self.run("record_prepay", &invocation).await?)?;
        match outcome.as_str() {
            "ok" => order_from_record(id, &reply.next::<String>()?),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(not_pending(&reply.next::<String>()?)),
            other => Err(corrupt(format!("unknown prepay outcome {other}"))),
        }
    }

    async fn expire_due(
        &self,
        sale: &SaleId,
        limit: usize,
        hold: Duration,
    ) -> Result<Expiry, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.expire_orders.key(keys.stock());
        invocation
            .key(keys.stats())
            .key(keys.shoppers())
            .key(keys.deadlines())
            .key(keys.orders())
            .key(keys.expiries());
        add_holds(&mut invocation, sale);
        invocation.arg(limit).arg(millis(hold));
        let mut reply = Reply::array(self.run("expire_orders", &invocation).await?, "expire")?;
        let mut orders = || -> Result<Vec<Order>, StoreError> {
            let mut list = Reply::array(reply.next::<Value>()?, "expire")?;
            let mut orders = Vec::new();
            while list.has_more() {
                let id = OrderId::parse(&list.next::<String>()?).map_err(corrupt)?;
                orders.push(order_from_record(&id, &list.next::<String>()?)?);
            }
            Ok(orders)
        };
        let (expired, held) = (orders()?, orders()?);
        Ok(Expiry {
            expired,
            held,
            passed_over: reply.next()?,
        })
    }

    async fn expire_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.expire_order.key(keys.stock());
        invocation
            .key(keys.stats())
            .key(keys.shoppers())
            .key(keys.deadlines())
            .key(keys.orders())
            .key(keys.expiries());
        add_holds(&mut invocation, &id.sale_id());
        invocation.arg(id.as_str());
        let (outcome, mut reply) = Reply::new(self.run("expire_order", &invocation).await?)?;
        match outcome.as_str() {
            "expired" => Ok(Some(order_from_record(id, &reply.next::<String>()?)?)),
            "unchanged" => Ok(None),
            "not_found" => Err(StoreError::NotFound("order")),
            other => Err(corrupt(format!("unknown expiry outcome {other}"))),
        }
    }

    async fn postpone_expiry(&self, id: &OrderId, after: Duration) -> Result<(), StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.postpone_expiry.key(keys.orders());
        invocation
            .key(keys.deadlines())
            .arg(id.as_str())
            .arg(millis(after));
        self.run("postpone_expiry", &invocation).await?;
        Ok(())
    }

    async fn join_reservations(&self, sale: &SaleId) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.join_reservations.key(keys.stream());
        invocation.key(keys.sale()).arg(ORDER_SERVICE_GROUP);
        let joined: i64 =
            redis::from_redis_value(self.run("join_reservations", &invocation).await?)
                .map_err(corrupt)?;
        match joined {
            -1 => Err(StoreError::NotFound("sale")),
            _ => Ok(()),
        }
    }

    async fn read_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        which: StreamRead,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(ORDER_SERVICE_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(SaleKeys::new(sale).stream())
            .arg(match which {
                StreamRead::New => ">",
                StreamRead::OwnPending => "0",
            });
        let reply: Option<StreamReadReply> = self
            .query_rejoining(sale, "read_reservations", &cmd)
            .await?;
        let ids = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        Ok(stream_entries(ids))
    }

    async fn claim_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        idle_min: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(SaleKeys::new(sale).stream())
            .arg(ORDER_SERVICE_GROUP)
            .arg(consumer)
            .arg(millis(idle_min))
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let reply: StreamAutoClaimReply = self
            .query_rejoining(sale, "claim_reservations", &cmd)
            .await?;
        Ok(stream_entries(reply.claimed))
    }

    async fn accept_orders(
        &self,
        sale: &SaleId,
        entries: &[StreamEntry],
        hand_off: bool,
    ) -> Result<Vec<Acceptance>, StoreError> {
        // An entry is read as one `StreamEntry` per order: the script
        // takes each entry once. One whose orders cannot be read is not
        // the script's to take.
        let mut listed = HashSet::new();
        let entry_ids: Vec<&str> = entries
            .iter()
            .filter(|entry| entry.order_id.is_some())
            .map(|entry| entry.id.as_str())
            .filter(|id| listed.insert(*id))
            .collect();
        if entry_ids.is_empty() {
            return Ok(vec![Acceptance::NotFound; entries.len()]);
        }
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.accept_orders.key(keys.stats());
        invocation
            .key(keys.outbox())
            .key(keys.stream())
            .key(keys.accepted())
            .arg(flag(hand_off));
        for id in &entry_ids {
            invocation.arg(*id);
        }
        let outcomes: String =
            redis::from_redis_value(self.run("accept_orders", &invocation).await?)
                .map_err(corrupt)?;
        if outcomes.len() != entry_ids.len() {
            return Err(corrupt(
                "accept_orders answered a different number of entries",
            ));
        }
        let by_entry: HashMap<&str, Acceptance> = entry_ids
            .iter()
            .zip(outcomes.bytes())
            .map(|(id, outcome)| match outcome {
                b'q' => Ok((*id, Acceptance::Queued)),
                b'u' => Ok((*id, Acceptance::Unchanged)),
                b'n' => Ok((*id, Acceptance::NotFound)),
                other => Err(corrupt(format!("unknown accept outcome {}", other as char))),
            })
            .collect::<Result<_, _>>()?;
        Ok(entries
            .iter()
            .map(|entry| match entry.order_id {
                Some(_) => by_entry[entry.id.as_str()],
                None => Acceptance::NotFound,
            })
            .collect())
    }

    async fn order_backlog(&self, sale: &SaleId) -> Result<OrderBacklog, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("XLEN")
            .arg(keys.stream())
            .cmd("ZCARD")
            .arg(keys.deadlines())
            .cmd("ZCARD")
            .arg(keys.outbox());
        let (reservations, deadlines, hand_offs) = timed(
            "order_backlog",
            pipeline.query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(OrderBacklog {
            reservations,
            deadlines,
            hand_offs,
        })
    }

    async fn ack_reservations(
        &self,
        sale: &SaleId,
        entry_ids: &[SmolStr],
    ) -> Result<(), StoreError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self
            .scripts
            .ack_reservations
            .key(SaleKeys::new(sale).stream());
        invocation.arg(ORDER_SERVICE_GROUP);
        for id in entry_ids {
            invocation.arg(id.as_str());
        }
        self.run("ack_reservations", &invocation).await?;
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        sale: &SaleId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.claim_deliveries.key(keys.outbox());
        invocation
            .key(keys.attempts())
            .arg(limit)
            .arg(millis(lease));
        let mut reply = Reply::array(self.run("claim_deliveries", &invocation).await?, "claim")?;
        let mut deliveries = Vec::new();
        while reply.has_more() {
            let member: String = reply.next()?;
            deliveries.push(Delivery {
                errand: parse_errand(&member)?,
                attempt: reply.next()?,
            });
        }
        Ok(deliveries)
    }

    async fn delivered(&self, sale: &SaleId, delivery: &Delivery) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.delivered.key(keys.outbox());
        invocation
            .key(keys.attempts())
            .arg(delivery_member(delivery))
            .arg(delivery.attempt);
        self.run("delivered", &invocation).await?;
        Ok(())
    }

    async fn postpone_delivery(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.postpone_delivery.key(keys.outbox());
        invocation
            .key(keys.attempts())
            .arg(delivery_member(delivery))
            .arg(millis(after))
            .arg(delivery.attempt);
        self.run("postpone_delivery", &invocation).await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        failure: &DeliveryFailure,
    ) -> Result<bool, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.dead_letter.key(keys.outbox());
        invocation
            .key(keys.attempts())
            .key(keys.dead_letters())
            .arg(delivery_member(delivery))
            .arg(failure.status.unwrap_or(0))
            .arg(failure.error.as_str())
            .arg(delivery.attempt);
        let moved: i64 = redis::from_redis_value(self.run("dead_letter", &invocation).await?)
            .map_err(corrupt)?;
        Ok(moved == 1)
    }

    async fn dead_letters(&self, sale: &SaleId) -> Result<Vec<DeadLetter>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(SaleKeys::new(sale).dead_letters());
        let records: HashMap<String, String> = self.query("dead_letters", &cmd).await?;
        let mut letters = records
            .iter()
            .map(|(member, record)| dead_letter(member, record))
            .collect::<Result<Vec<_>, _>>()?;
        sort_oldest_first(&mut letters);
        Ok(letters)
    }

    async fn redrive_dead_letters(&self, sale: &SaleId) -> Result<u64, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.redrive_dead_letters.key(keys.outbox());
        invocation.key(keys.attempts()).key(keys.dead_letters());
        redis::from_redis_value(self.run("redrive_dead_letters", &invocation).await?)
            .map_err(corrupt)
    }

    async fn queue_stats(&self, sale: &SaleId) -> Result<QueueStats, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut read = redis::pipe();
        read.atomic()
            .cmd("HMGET")
            .arg(keys.sale())
            .arg("state")
            .arg("admission_mode")
            .cmd("ZCARD")
            .arg(keys.queue_line())
            .cmd("HMGET")
            .arg(keys.queue_meta())
            .arg("granted")
            .arg("expired")
            .cmd("HLEN")
            .arg(keys.purchase_tokens());
        type SaleFields = (Option<String>, Option<String>);
        type Counters = (SaleFields, u64, (Option<u64>, Option<u64>), u64);
        let ((state, mode), joined, (granted, expired), bought): Counters =
            timed("queue_stats", read.query_async(&mut self.conn.clone())).await?;
        match (state, mode.as_deref()) {
            (None, _) => Err(StoreError::NotFound("sale")),
            (Some(_), Some("queue")) => Ok(QueueStats::from_counters(
                joined,
                granted.unwrap_or(0),
                bought,
                expired.unwrap_or(0),
            )),
            (Some(_), _) => Err(not_queued()),
        }
    }

    async fn announce_stock_returns(&self, returns: &[StockReturn]) -> Result<(), StoreError> {
        let message = serde_json::to_string(&Announcement {
            node: self.node.clone(),
            returns: returns.to_vec(),
        })
        .map_err(corrupt)?;
        self.publish("announce_stock_returns", STOCK_RETURNS_CHANNEL, message)
            .await
    }

    async fn watch_stock_returns(&self, handler: StockReturnHandler) {
        loop {
            if let Err(err) = self.listen_for_returns(&handler).await {
                tracing::warn!(error = %err, "stock-return subscription lost; reconnecting");
            }
            tokio::time::sleep(self.timeout).await;
        }
    }

    async fn record_payment_exception(
        &self,
        exception: &PaymentException,
    ) -> Result<bool, StoreError> {
        let mut invocation = self
            .scripts
            .record_payment_exception
            .key(PAYMENT_EXCEPTIONS);
        invocation
            .arg(&exception.transaction_id)
            .arg(exception_record(exception));
        let recorded: i64 =
            redis::from_redis_value(self.run("record_payment_exception", &invocation).await?)
                .map_err(corrupt)?;
        Ok(recorded == 1)
    }

    async fn payment_exceptions(&self) -> Result<Vec<PaymentException>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(PAYMENT_EXCEPTIONS);
        let records: HashMap<String, String> = self.query("payment_exceptions", &cmd).await?;
        let mut exceptions = records
            .into_iter()
            .filter_map(|(transaction, record)| {
                open_exception_from_record(transaction, &record).transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sort_exceptions_newest_first(&mut exceptions);
        Ok(exceptions)
    }

    async fn payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(PAYMENT_EXCEPTIONS).arg(transaction_id);
        let record: Option<String> = self.query("payment_exception", &cmd).await?;
        record.map_or(Ok(None), |record| {
            open_exception_from_record(transaction_id.to_owned(), &record)
        })
    }

    async fn settle_payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError> {
        let mut invocation = self
            .scripts
            .settle_payment_exception
            .key(PAYMENT_EXCEPTIONS);
        invocation.arg(transaction_id);
        let record: Option<String> =
            redis::from_redis_value(self.run("settle_payment_exception", &invocation).await?)
                .map_err(corrupt)?;
        record
            .map(|record| exception_from_record(transaction_id.to_owned(), &record))
            .transpose()
    }
}

impl RedisStore {
    /// `lua/cancel_order.lua`: counted in its step (`taken` is `None`), or
    /// under a cancel taken already, once the WeChat Pay order of `taken`'s
    /// prepay id was closed.
    async fn cancel(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
        taken: Option<Option<&str>>,
    ) -> Result<Order, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.cancel_order.key(keys.orders());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.shoppers())
            .key(keys.deadlines())
            .key(keys.cancels());
        add_holds(&mut invocation, &id.sale_id());
        invocation
            .arg(shopper.as_str())
            .arg(id.as_str())
            .arg(self.shopper_bounds.cancels);
        if let Some(closed) = taken {
            invocation.arg("taken").arg(closed.unwrap_or(""));
        }
        let (outcome, mut reply) = Reply::new(self.run("cancel_order", &invocation).await?)?;
        match outcome.as_str() {
            "cancelled" => order_from_record(id, &reply.next::<String>()?),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                reply.next::<String>()?
            ))),
            "cancels_exhausted" => Err(cancels_exhausted(reply.next::<i64>()?)),
            "prepay_changed" => Err(StoreError::Conflict(PREPAY_CHANGED.into())),
            other => Err(corrupt(format!("unknown cancel outcome {other}"))),
        }
    }
}

/// The fields of a sale a merchant's change writes as given (the scripts
/// write its state, stock and end themselves; its id and creation never
/// change).
fn changeable_fields(sale: &Sale) -> impl Iterator<Item = (&'static str, String)> {
    sale_fields(sale).into_iter().filter(|(field, _)| {
        !matches!(
            *field,
            "state" | "stock_total" | "ends_at" | "id" | "created_at"
        )
    })
}

/// A campaign's sale: its campaign's keys and its round; `None` for an
/// ordinary sale.
fn campaign_holds_keys(sale: &SaleId) -> Option<(CampaignKeys, u32)> {
    sale.campaign()
        .map(|slot| (CampaignKeys::new(&slot.campaign), slot.round))
}

/// Adds the shopper's counts in the round and the campaign to a script that
/// gives units back (cancel, expire, a refund with restock), for a
/// campaign's sale.
fn add_holds(invocation: &mut Invocation<'_>, sale: &SaleId) {
    if let Some((campaign, round)) = campaign_holds_keys(sale) {
        invocation
            .key(campaign.round_holds(round))
            .key(campaign.holds());
    }
}

//! The Redis store: standalone or Cluster. Each state change is one script
//! from `lua/` (see [`super::scripts`]).
//! Reads that must be consistent (a sale with its counts) are scripts too.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use futures::future::try_join_all;
use futures::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, ServerErrorKind, Value};

use super::keys::{SaleKeys, ORDER_SERVICE_GROUP, SALE_INDEX, STOCK_RETURNS_CHANNEL};
use super::scripts::{Invocation, Scripts};
use super::{
    batch_sale, changed_meanwhile, sort_newest_first, Acceptance, Delivery, OrderBacklog,
    StockReturnHandler, Store, StoreError, StreamEntry,
};
use crate::domain::{
    system_now, Millis, Order, OrderEvent, OrderId, OrderStatus, Payment, PaymentOutcome,
    RecordedOrder, Rejection, Reservation, ReserveRequest, Sale, SaleChange, SaleId, SaleRecords,
    SaleState, SaleStats, SaleView, ShopperId, StockReturn,
};
use crate::telemetry;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

/// One multiplexed connection: requests from every task are pipelined on it.
#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

pub struct RedisStore {
    conn: Connection,
    scripts: Scripts,
    /// A plain client of the first node, for the pub/sub subscription
    /// (Redis Cluster forwards PUBLISH to every node).
    pubsub_client: redis::Client,
    /// This process's name in announcements, to skip its own.
    node: String,
    timeout: Duration,
}

/// Stock returns as published on [`STOCK_RETURNS_CHANNEL`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    node: String,
    returns: Vec<StockReturn>,
}

impl RedisStore {
    /// Connects, checks that Redis will never evict a key (an evicted stock
    /// key would oversell) and loads the scripts. `timeout` bounds every
    /// connect and every command.
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> anyhow::Result<Self> {
        let conn = match target {
            RedisTarget::Standalone(url) => {
                let client = redis::Client::open(url.as_str())
                    .with_context(|| format!("invalid Redis URL {url}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // A Redis that is down fails a call in tens of
                    // milliseconds, not after the default 100 ms, 200 ms...
                    // back-off: shoppers get their 503 at once.
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100));
                Connection::Standalone(
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .with_context(|| format!("failed to connect to Redis at {url}"))?,
                )
            }
            RedisTarget::Cluster(urls) => {
                let client = redis::cluster::ClusterClient::builder(urls.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .context("invalid Redis Cluster URLs")?;
                Connection::Cluster(
                    client
                        .get_async_connection()
                        .await
                        .context("failed to connect to Redis Cluster")?,
                )
            }
        };
        let first_url = match target {
            RedisTarget::Standalone(url) => url,
            RedisTarget::Cluster(urls) => urls.first().context("no Redis Cluster URL")?,
        };
        let store = Self {
            conn,
            scripts: Scripts::new(),
            pubsub_client: redis::Client::open(first_url.as_str())
                .with_context(|| format!("invalid Redis URL {first_url}"))?,
            node: Alphanumeric.sample_string(&mut rand::rng(), 16),
            timeout,
        };
        store.check_server_settings().await?;
        store
            .load_scripts_once_loaded()
            .await
            .context("failed to load the Lua scripts")?;
        Ok(store)
    }

    /// Loads the scripts, waiting (at most [`LOADING_WAIT`]) while Redis is
    /// still loading its data: after a crash of the machine, Redis and the
    /// engine start together, and Redis answers LOADING until its AOF is in.
    async fn load_scripts_once_loaded(&self) -> redis::RedisResult<()> {
        let deadline = Instant::now() + LOADING_WAIT;
        let mut told = false;
        loop {
            match self.load_scripts().await {
                Err(err)
                    if err.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading)
                        && Instant::now() < deadline =>
                {
                    if !told {
                        tracing::warn!("Redis is still loading its data; waiting for it");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                loaded => return loaded,
            }
        }
    }

    /// Refuses a Redis that may evict keys; warns when it does not log
    /// every write. On a Cluster every primary is checked.
    async fn check_server_settings(&self) -> anyhow::Result<()> {
        let policies = self.config_values("maxmemory-policy").await?;
        if let Some(policy) = policies.iter().find(|policy| *policy != "noeviction") {
            bail!(
                "Redis maxmemory-policy is {policy:?}: flashsale needs `noeviction`, since an \
                 evicted stock key would oversell. Run `CONFIG SET maxmemory-policy noeviction` \
                 (on every primary) and set it in redis.conf."
            );
        }
        if self
            .config_values("appendonly")
            .await?
            .iter()
            .any(|aof| aof != "yes")
        {
            tracing::warn!(
                "Redis runs without AOF (appendonly no): a Redis crash loses the reservations \
                 since the last snapshot; use `appendonly yes` in production"
            );
        }
        Ok(())
    }

    /// `CONFIG GET name` on the server, or on every primary of a Cluster.
    async fn config_values(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let replies: Vec<HashMap<String, String>> = match &self.conn {
            Connection::Standalone(conn) => vec![cmd.query_async(&mut conn.clone()).await?],
            Connection::Cluster(conn) => {
                let every_primary =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let by_node = conn.clone().route_command(cmd, every_primary).await?;
                let by_node: HashMap<String, HashMap<String, String>> =
                    redis::from_redis_value(by_node)?;
                by_node.into_values().collect()
            }
        };
        replies
            .into_iter()
            .map(|reply| {
                reply
                    .get(name)
                    .cloned()
                    .with_context(|| format!("Redis did not report {name}"))
            })
            .collect()
    }

    async fn load_scripts(&self) -> redis::RedisResult<()> {
        self.scripts.load(&mut self.conn.clone()).await
    }

    /// Runs a script and returns its reply, timing the call.
    async fn run(
        &self,
        op: &'static str,
        invocation: &Invocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply = invocation.invoke(&mut conn).await;
        telemetry::observe_store_call(op, started.elapsed());
        reply.map_err(unavailable)
    }

    /// Runs a plain command, timing the call.
    async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply = cmd.query_async(&mut conn).await;
        telemetry::observe_store_call(op, started.elapsed());
        reply.map_err(unavailable)
    }

    /// Runs a consumer-group command; if the group is gone (a Redis that
    /// restarted without it, a stream key lost and recreated by a
    /// reservation), creates it again from the stream's start and retries:
    /// redelivered entries change nothing.
    async fn query_rejoining<T: FromRedisValue>(
        &self,
        sale: &SaleId,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        match self.query(op, cmd).await {
            Err(StoreError::Unavailable(err)) if err.contains("NOGROUP") => {
                tracing::warn!(%sale, "the order service's consumer group was gone; recreating it");
                self.join_reservations(sale).await?;
                self.query(op, cmd).await
            }
            other => other,
        }
    }

    /// Runs a pipeline whose replies are ignored, timing the call.
    async fn pipeline(&self, op: &'static str, pipeline: &Pipeline) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply = pipeline.query_async::<()>(&mut conn).await;
        telemetry::observe_store_call(op, started.elapsed());
        reply.map_err(unavailable)
    }

    /// Subscribes to the stock-return channel and hands every other node's
    /// announcement to `handler` until the connection fails.
    async fn listen_for_returns(&self, handler: &StockReturnHandler) -> anyhow::Result<()> {
        let mut pubsub = tokio::time::timeout(self.timeout, self.pubsub_client.get_async_pubsub())
            .await
            .context("connecting timed out")??;
        pubsub.subscribe(STOCK_RETURNS_CHANNEL).await?;
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            match serde_json::from_slice::<Announcement>(message.get_payload_bytes()) {
                Ok(announcement) if announcement.node != self.node => {
                    announcement.returns.into_iter().for_each(&handler);
                }
                Ok(_own) => {}
                Err(err) => tracing::warn!(error = %err, "unreadable stock-return announcement"),
            }
        }
        bail!("the subscription ended")
    }

    /// Reads one request's reply from `reserve.lua`. A replay fetches the
    /// order it names. Every error here is this request's own: the batch
    /// was decided, so the other requests keep their outcomes.
    async fn reservation_outcome(
        &self,
        request: &ReserveRequest,
        terms: &OrderTerms,
        reply: Value,
    ) -> Result<Reservation, StoreError> {
        let (outcome, mut reply) = Reply::new(reply)?;
        match outcome.as_str() {
            "reserved" => {
                let remaining = reply.next()?;
                let held = reply.next()?;
                let quantity = request.quantity.get();
                Ok(Reservation {
                    order: Order {
                        id: request.order_id.clone(),
                        sale_id: request.sale_id.clone(),
                        shopper_id: request.shopper_id.clone(),
                        quantity,
                        amount_cents: terms
                            .price_cents
                            .checked_mul(quantity)
                            .ok_or_else(|| corrupt("order amount overflows"))?,
                        currency: terms.currency.clone(),
                        status: OrderStatus::PendingPayment,
                        created_at: terms.created_at,
                        expires_at: terms.expires_at,
                        paid_at: None,
                    },
                    remaining: Some(remaining),
                    held: Some(held),
                    replayed: false,
                })
            }
            "replay" => {
                let id = OrderId::parse(&reply.next::<String>()?).map_err(corrupt)?;
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
            "not_found" => Err(StoreError::NotFound("sale")),
            other => Err(Rejection::from_code(other).map_or_else(
                || corrupt(format!("unknown reserve outcome {other}")),
                StoreError::Rejected,
            )),
        }
    }

    async fn order_ids_of(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
    ) -> Result<Vec<OrderId>, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(keys.shopper_orders()).arg(shopper.as_str());
        let ids: Option<String> = self.query("shopper_orders", &cmd).await?;
        order_ids(ids.as_deref())
    }
}

/// Order ids as Redis keeps them: each item one id, or several separated by
/// spaces (a shopper's entry in the shopper index).
fn order_ids<'a, C: FromIterator<OrderId>>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<C, StoreError> {
    items
        .into_iter()
        .flat_map(|ids| ids.split(' '))
        .filter(|id| !id.is_empty())
        .map(|id| OrderId::parse(id).map_err(corrupt))
        .collect()
}

/// Reads stream entries: each names the orders of one reserve call, read
/// as one [`StreamEntry`] per order.
fn stream_entries(ids: Vec<StreamId>) -> Result<Vec<StreamEntry>, StoreError> {
    let mut entries = Vec::new();
    for entry in ids {
        let listed = entry
            .get::<String>("order_ids")
            .ok_or_else(|| corrupt(format!("stream entry {} has no order_ids", entry.id)))?;
        let orders: Vec<OrderId> = order_ids([listed.as_str()])?;
        entries.extend(orders.into_iter().map(|order_id| StreamEntry {
            order_id,
            id: entry.id.clone(),
        }));
    }
    Ok(entries)
}

/// A script's `'1'`/`'0'` flag.
fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// An outbox member: `event order_id`.
fn delivery_member(delivery: &Delivery) -> String {
    format!("{} {}", delivery.event.as_str(), delivery.order_id)
}

fn parse_delivery(member: &str) -> Result<(OrderEvent, OrderId), StoreError> {
    member
        .split_once(' ')
        .and_then(|(event, order)| Some((OrderEvent::parse(event)?, OrderId::parse(order).ok()?)))
        .ok_or_else(|| corrupt(format!("outbox member {member:?}")))
}

fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A script reply: an array whose first item names the outcome.
struct Reply {
    items: std::vec::IntoIter<Value>,
}

/// What every order one reserve call made shares (the head of its reply).
struct OrderTerms {
    created_at: Millis,
    expires_at: Millis,
    price_cents: i64,
    currency: String,
}

impl OrderTerms {
    fn from_reply(value: Value) -> Result<Self, StoreError> {
        let (created_at, expires_at, price_cents, currency) =
            redis::from_redis_value(value).map_err(corrupt)?;
        Ok(Self {
            created_at,
            expires_at,
            price_cents,
            currency,
        })
    }
}

impl Reply {
    fn new(value: Value) -> Result<(String, Self), StoreError> {
        let Value::Array(items) = value else {
            return Err(corrupt(format!("script reply is not an array: {value:?}")));
        };
        let mut reply = Self {
            items: items.into_iter(),
        };
        let outcome = reply.next()?;
        Ok((outcome, reply))
    }

    fn next<T: FromRedisValue>(&mut self) -> Result<T, StoreError> {
        let value = self
            .items
            .next()
            .ok_or_else(|| corrupt("script reply is too short"))?;
        redis::from_redis_value(value).map_err(corrupt)
    }
}

fn text_field(fields: &HashMap<String, String>, name: &str) -> Result<String, StoreError> {
    fields
        .get(name)
        .cloned()
        .ok_or_else(|| corrupt(format!("missing field {name}")))
}

fn int_field(fields: &HashMap<String, String>, name: &str) -> Result<i64, StoreError> {
    text_field(fields, name)?
        .parse()
        .map_err(|_| corrupt(format!("field {name} is not an integer")))
}

fn sale_fields(sale: &Sale) -> Vec<(&'static str, String)> {
    vec![
        ("id", sale.id.to_string()),
        ("sku", sale.sku.clone()),
        ("title", sale.title.clone()),
        ("price_cents", sale.price_cents.to_string()),
        ("currency", sale.currency.clone()),
        ("stock_total", sale.stock_total.to_string()),
        ("per_user_limit", sale.per_user_limit.to_string()),
        ("starts_at", sale.starts_at.to_string()),
        ("ends_at", sale.ends_at.to_string()),
        (
            "payment_timeout_secs",
            sale.payment_timeout_secs.to_string(),
        ),
        (
            "require_purchase_token",
            flag(sale.require_purchase_token).to_owned(),
        ),
        ("state", sale.state.as_str().to_owned()),
        ("created_at", sale.created_at.to_string()),
    ]
}

fn sale_from_fields(fields: &HashMap<String, String>) -> Result<Sale, StoreError> {
    let state = text_field(fields, "state")?;
    Ok(Sale {
        id: SaleId::parse(&text_field(fields, "id")?).map_err(corrupt)?,
        sku: text_field(fields, "sku")?,
        title: text_field(fields, "title")?,
        price_cents: int_field(fields, "price_cents")?,
        currency: text_field(fields, "currency")?,
        stock_total: int_field(fields, "stock_total")?,
        per_user_limit: int_field(fields, "per_user_limit")?,
        starts_at: int_field(fields, "starts_at")?,
        ends_at: int_field(fields, "ends_at")?,
        payment_timeout_secs: int_field(fields, "payment_timeout_secs")?,
        require_purchase_token: fields.get("require_purchase_token").map(String::as_str)
            == Some("1"),
        state: SaleState::parse(&state).ok_or_else(|| corrupt(format!("sale state {state}")))?,
        created_at: int_field(fields, "created_at")?,
    })
}

/// An order's record as the scripts keep it (`lua/common.lua`): `name=value`
/// pairs joined by single spaces.
fn record_fields(record: &str) -> HashMap<String, String> {
    record
        .split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn order_from_record(id: &OrderId, record: &str) -> Result<Order, StoreError> {
    order_from_fields(id, &record_fields(record))
}

fn order_from_fields(id: &OrderId, fields: &HashMap<String, String>) -> Result<Order, StoreError> {
    let status = text_field(fields, "status")?;
    Ok(Order {
        id: id.clone(),
        sale_id: id.sale_id(),
        shopper_id: ShopperId::parse(&text_field(fields, "user_id")?).map_err(corrupt)?,
        quantity: int_field(fields, "quantity")?,
        amount_cents: int_field(fields, "amount_cents")?,
        currency: text_field(fields, "currency")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("order status {status}")))?,
        created_at: int_field(fields, "created_at")?,
        expires_at: int_field(fields, "expires_at")?,
        paid_at: fields.get("paid_at").and_then(|v| v.parse().ok()),
    })
}

/// Reads a `snapshot` reply (lua/common.lua): `None` for a missing sale.
fn view_from_snapshot(items: Vec<Value>) -> Result<Option<SaleView>, StoreError> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut reply = Reply {
        items: items.into_iter(),
    };
    let now = reply.next()?;
    let fields: HashMap<String, String> = reply.next()?;
    let sale = sale_from_fields(&fields)?;
    let stats = SaleStats {
        stock_total: sale.stock_total,
        remaining: reply.next()?,
        reserved: reply.next()?,
        paid: reply.next()?,
        cancelled: reply.next()?,
        expired: reply.next()?,
        refund_required: reply.next()?,
        queued: reply.next()?,
        buyers: reply.next()?,
    };
    let version = int_field(&fields, "version")?;
    Ok(Some(SaleView {
        sale,
        stats,
        now,
        version,
    }))
}

/// Longest the engine waits at start for a Redis that is loading its data.
const LOADING_WAIT: Duration = Duration::from_secs(60);

/// Maps the `{'not_found'}` / `{'conflict', reason}` replies shared by the
/// admin scripts.
fn admin_outcome(outcome: &str, mut reply: Reply) -> Result<(), StoreError> {
    match outcome {
        "ok" => Ok(()),
        "not_found" => Err(StoreError::NotFound("sale")),
        "conflict" => Err(StoreError::Conflict(reply.next()?)),
        other => Err(corrupt(format!("unknown outcome {other}"))),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.load_scripts().await.map_err(unavailable)
    }

    async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError> {
        let keys = SaleKeys::new(&sale.id);
        let mut invocation = self.scripts.create_sale.key(keys.sale());
        invocation.key(keys.stock()).arg(sale.stock_total);
        for (field, value) in sale_fields(sale) {
            invocation.arg(field).arg(value);
        }
        // Index first: an indexed id without a sale is skipped by listings,
        // while a sale missing from the index would never be listed.
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(SALE_INDEX)
            .arg(sale.created_at)
            .arg(sale.id.as_str());
        self.query::<i64>("index_sale", &cmd).await?;
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

    async fn sale_ids(&self) -> Result<Vec<SaleId>, StoreError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(SALE_INDEX).arg(0).arg(-1).arg("REV");
        let ids: Vec<String> = self.query("sale_ids", &cmd).await?;
        ids.iter()
            .map(|id| SaleId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn view_sale(&self, id: &SaleId) -> Result<Option<SaleView>, StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.sale_snapshot.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers());
        let snapshot = self.run("sale_snapshot", &invocation).await?;
        view_from_snapshot(redis::from_redis_value(snapshot).map_err(corrupt)?)
    }

    async fn sale_records(&self, id: &SaleId) -> Result<Option<SaleRecords>, StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.audit_sale.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers())
            .key(keys.shopper_orders())
            .key(keys.stream())
            .key(keys.deadlines())
            .key(keys.orders());
        let Value::Array(items) = self.run("audit_sale", &invocation).await? else {
            return Err(corrupt("audit reply is not an array"));
        };
        if items.is_empty() {
            return Ok(None);
        }
        let mut reply = Reply {
            items: items.into_iter(),
        };
        let Some(view) = view_from_snapshot(reply.next()?)? else {
            return Ok(None);
        };
        let held: BTreeMap<String, i64> = reply.next()?;
        let index: HashMap<String, String> = reply.next()?;
        let stream: Vec<String> = reply.next()?;
        let deadlines: Vec<String> = reply.next()?;
        let records: BTreeMap<String, String> = reply.next()?;
        let orders = records
            .iter()
            .map(|(id, record)| {
                let id = OrderId::parse(id).map_err(corrupt)?;
                let fields = record_fields(record);
                Ok(RecordedOrder {
                    order: order_from_fields(&id, &fields)?,
                    queued: fields.contains_key("queued_at"),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(SaleRecords {
            view,
            held: held
                .into_iter()
                .map(|(shopper, units)| Ok((ShopperId::parse(&shopper).map_err(corrupt)?, units)))
                .collect::<Result<_, StoreError>>()?,
            indexed: order_ids(index.values().map(String::as_str))?,
            orders,
            deadlines: order_ids(deadlines.iter().map(String::as_str))?,
            stream: order_ids(stream.iter().map(String::as_str))?,
        }))
    }

    async fn update_sale(
        &self,
        id: &SaleId,
        change: &SaleChange,
        version: i64,
    ) -> Result<(), StoreError> {
        let keys = SaleKeys::new(id);
        let mut invocation = self.scripts.update_sale.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .arg(version)
            .arg(if change.restricted { "1" } else { "0" })
            .arg(if change.end_now { "1" } else { "0" })
            .arg(change.sale.stock_total)
            .arg(change.sale.ends_at);
        for (field, value) in sale_fields(&change.sale) {
            // The script writes state, stock and the end itself.
            if !matches!(
                field,
                "state" | "stock_total" | "ends_at" | "id" | "created_at"
            ) {
                invocation.arg(field).arg(value);
            }
        }
        let (outcome, reply) = Reply::new(self.run("update_sale", &invocation).await?)?;
        if outcome == "changed" {
            return Err(changed_meanwhile());
        }
        admin_outcome(&outcome, reply)
    }

    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError> {
        let keys = SaleKeys::new(id);
        let invocation = self.scripts.cancel_sale.key(keys.sale());
        let (outcome, reply) = Reply::new(self.run("cancel_sale", &invocation).await?)?;
        admin_outcome(&outcome, reply)
    }

    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<Result<Reservation, StoreError>>, StoreError> {
        let keys = SaleKeys::new(batch_sale(requests)?);
        let mut invocation = self.scripts.reserve.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers())
            .key(keys.idempotency())
            .key(keys.shopper_orders())
            .key(keys.stream())
            .key(keys.deadlines())
            .key(keys.purchase_tokens())
            .key(keys.orders());
        for request in requests {
            let idempotency_field = request
                .idempotency_key
                .as_ref()
                .map(|key| format!("{}\n{key}", request.shopper_id))
                .unwrap_or_default();
            invocation
                .arg(request.shopper_id.as_str())
                .arg(request.quantity.get())
                .arg(request.order_id.as_str())
                .arg(idempotency_field)
                .arg(request.purchase_token.as_deref().unwrap_or(""));
        }
        let replies: Vec<Value> =
            redis::from_redis_value(self.run("reserve", &invocation).await?).map_err(corrupt)?;
        if replies.len() != requests.len() + 1 {
            return Err(corrupt("reserve answered a different number of requests"));
        }
        let mut replies = replies.into_iter();
        let terms = OrderTerms::from_reply(replies.next().unwrap_or(Value::Nil))?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for (request, reply) in requests.iter().zip(replies) {
            outcomes.push(self.reservation_outcome(request, &terms, reply).await);
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
        let sales = self.sale_ids().await?;
        let ids = try_join_all(sales.iter().map(|sale| self.order_ids_of(sale, shopper))).await?;
        let orders = try_join_all(ids.iter().flatten().map(|id| self.order(id))).await?;
        let mut orders: Vec<Order> = orders.into_iter().flatten().collect();
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn cancel_order(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.cancel_order.key(keys.orders());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers())
            .key(keys.deadlines())
            .arg(shopper.as_str())
            .arg(id.as_str());
        let (outcome, mut reply) = Reply::new(self.run("cancel_order", &invocation).await?)?;
        match outcome.as_str() {
            "cancelled" => order_from_record(id, &reply.next::<String>()?),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                reply.next::<String>()?
            ))),
            other => Err(corrupt(format!("unknown cancel outcome {other}"))),
        }
    }
    async fn pay_order(
        &self,
        id: &OrderId,
        payment: &Payment,
        hand_off: bool,
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
            .arg(flag(hand_off));
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

    async fn expire_due(&self, sale: &SaleId, limit: usize) -> Result<Vec<Order>, StoreError> {
        let keys = SaleKeys::new(sale);
        // Candidates by this node's clock; the script decides by Redis's.
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys.deadlines())
            .arg("-inf")
            .arg(system_now())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let due: Vec<String> = self.query("due_orders", &cmd).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.expire_orders.key(keys.stock());
        invocation
            .key(keys.stats())
            .key(keys.buyers())
            .key(keys.deadlines())
            .key(keys.orders())
            .arg(&due);
        let Value::Array(items) = self.run("expire_orders", &invocation).await? else {
            return Err(corrupt("expire reply is not an array"));
        };
        let mut reply = Reply {
            items: items.into_iter(),
        };
        let mut expired = Vec::new();
        while reply.items.len() > 0 {
            let id = OrderId::parse(&reply.next::<String>()?).map_err(corrupt)?;
            expired.push(order_from_record(&id, &reply.next::<String>()?)?);
        }
        Ok(expired)
    }

    async fn join_reservations(&self, sale: &SaleId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(SaleKeys::new(sale).stream())
            .arg(ORDER_SERVICE_GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.query::<()>("join_reservations", &cmd).await {
            Err(StoreError::Unavailable(err)) if err.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    async fn read_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
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
            .arg(">");
        let reply: Option<StreamReadReply> = self
            .query_rejoining(sale, "read_reservations", &cmd)
            .await?;
        let ids = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        stream_entries(ids)
    }

    async fn claim_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(SaleKeys::new(sale).stream())
            .arg(ORDER_SERVICE_GROUP)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(count);
        let reply: StreamAutoClaimReply = self
            .query_rejoining(sale, "claim_reservations", &cmd)
            .await?;
        stream_entries(reply.claimed)
    }

    async fn accept_orders(
        &self,
        sale: &SaleId,
        ids: &[OrderId],
        hand_off: bool,
    ) -> Result<Vec<Acceptance>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = SaleKeys::new(sale);
        let mut invocation = self.scripts.accept_orders.key(keys.stats());
        invocation
            .key(keys.outbox())
            .key(keys.orders())
            .arg(flag(hand_off));
        for id in ids {
            invocation.arg(id.as_str());
        }
        let outcomes: Vec<String> =
            redis::from_redis_value(self.run("accept_orders", &invocation).await?)
                .map_err(corrupt)?;
        outcomes
            .iter()
            .map(|outcome| match outcome.as_str() {
                "queued" => Ok(Acceptance::Queued),
                "unchanged" => Ok(Acceptance::Unchanged),
                "not_found" => Ok(Acceptance::NotFound),
                other => Err(corrupt(format!("unknown accept outcome {other}"))),
            })
            .collect()
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
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply = pipeline.query_async::<(u64, u64, u64)>(&mut conn).await;
        telemetry::observe_store_call("order_backlog", started.elapsed());
        let (reservations, unpaid, hand_offs) = reply.map_err(unavailable)?;
        Ok(OrderBacklog {
            reservations,
            unpaid,
            hand_offs,
        })
    }

    async fn ack_reservations(
        &self,
        sale: &SaleId,
        entry_ids: &[String],
    ) -> Result<(), StoreError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut invocation = self
            .scripts
            .ack_reservations
            .key(SaleKeys::new(sale).stream());
        invocation.arg(ORDER_SERVICE_GROUP).arg(entry_ids);
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
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let Value::Array(items) = self.run("claim_deliveries", &invocation).await? else {
            return Err(corrupt("claim reply is not an array"));
        };
        let mut reply = Reply {
            items: items.into_iter(),
        };
        let mut deliveries = Vec::new();
        while reply.items.len() > 0 {
            let member: String = reply.next()?;
            let (event, order_id) = parse_delivery(&member)?;
            deliveries.push(Delivery {
                event,
                order_id,
                attempt: reply.next()?,
            });
        }
        Ok(deliveries)
    }

    async fn delivered(&self, sale: &SaleId, delivery: &Delivery) -> Result<(), StoreError> {
        let keys = SaleKeys::new(sale);
        let member = delivery_member(delivery);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("ZREM")
            .arg(keys.outbox())
            .arg(&member)
            .ignore()
            .cmd("HDEL")
            .arg(keys.attempts())
            .arg(&member)
            .ignore();
        self.pipeline("delivered", &pipeline).await
    }

    async fn postpone_delivery(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), StoreError> {
        let due = system_now().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(SaleKeys::new(sale).outbox())
            .arg("XX")
            .arg(due)
            .arg(delivery_member(delivery));
        self.query("postpone_delivery", &cmd).await
    }

    async fn announce_stock_returns(&self, returns: &[StockReturn]) -> Result<(), StoreError> {
        let message = serde_json::to_string(&Announcement {
            node: self.node.clone(),
            returns: returns.to_vec(),
        })
        .map_err(corrupt)?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(STOCK_RETURNS_CHANNEL).arg(message);
        self.query("announce_stock_returns", &cmd).await
    }

    async fn watch_stock_returns(&self, handler: StockReturnHandler) {
        loop {
            if let Err(err) = self.listen_for_returns(&handler).await {
                tracing::warn!(error = %err, "stock-return subscription lost; reconnecting");
            }
            tokio::time::sleep(self.timeout).await;
        }
    }
}

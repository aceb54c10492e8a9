//! The Redis store: standalone or Cluster. Each state change is one script
//! from `lua/` run with EVALSHA (reloaded on NOSCRIPT by `redis::Script`).
//! Reads that must be consistent (a sale with its counts) are scripts too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, Value};

use super::keys::{SaleKeys, SALE_INDEX};
use super::{changed_meanwhile, sort_newest_first, Reservation, ReserveRequest, Store, StoreError};
use crate::domain::{
    Order, OrderId, OrderStatus, Rejection, Sale, SaleChange, SaleId, SaleState, SaleStats,
    SaleView, UserId,
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

/// The Lua scripts, one per state change plus the consistent read.
struct Scripts {
    create_sale: Script,
    sale_snapshot: Script,
    update_sale: Script,
    cancel_sale: Script,
    reserve: Script,
    cancel_order: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_sale: Script::new(include_str!("../../lua/create_sale.lua")),
            sale_snapshot: Script::new(include_str!("../../lua/sale_snapshot.lua")),
            update_sale: Script::new(include_str!("../../lua/update_sale.lua")),
            cancel_sale: Script::new(include_str!("../../lua/cancel_sale.lua")),
            reserve: Script::new(include_str!("../../lua/reserve.lua")),
            cancel_order: Script::new(include_str!("../../lua/cancel_order.lua")),
        }
    }

    fn all(&self) -> [&Script; 6] {
        [
            &self.create_sale,
            &self.sale_snapshot,
            &self.update_sale,
            &self.cancel_sale,
            &self.reserve,
            &self.cancel_order,
        ]
    }
}

pub struct RedisStore {
    conn: Connection,
    scripts: Scripts,
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
                    .set_number_of_retries(2);
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
        let store = Self {
            conn,
            scripts: Scripts::new(),
        };
        store.check_server_settings().await?;
        store
            .load_scripts()
            .await
            .context("failed to load the Lua scripts")?;
        Ok(store)
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
        let mut conn = self.conn.clone();
        for script in self.scripts.all() {
            script.load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Runs a script and returns its reply, timing the call.
    async fn run(
        &self,
        op: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let reply = invocation.invoke_async(&mut conn).await;
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

    async fn order_ids_of(&self, sale: &SaleId, user: &UserId) -> Result<Vec<OrderId>, StoreError> {
        let keys = SaleKeys::new(sale);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(keys.user_orders()).arg(user.as_str());
        let ids: Option<String> = self.query("user_orders", &cmd).await?;
        ids.unwrap_or_default()
            .split(' ')
            .filter(|id| !id.is_empty())
            .map(|id| OrderId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }
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
        state: SaleState::parse(&state).ok_or_else(|| corrupt(format!("sale state {state}")))?,
        created_at: int_field(fields, "created_at")?,
    })
}

fn order_from_fields(id: &OrderId, fields: &HashMap<String, String>) -> Result<Order, StoreError> {
    let status = text_field(fields, "status")?;
    Ok(Order {
        id: id.clone(),
        sale_id: id.sale_id(),
        user_id: UserId::parse(&text_field(fields, "user_id")?).map_err(corrupt)?,
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
        let created: i64 =
            redis::from_redis_value(self.run("create_sale", invocation).await?).map_err(corrupt)?;
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
        let Value::Array(items) = self.run("sale_snapshot", invocation).await? else {
            return Err(corrupt("sale snapshot is not an array"));
        };
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
        let (outcome, reply) = Reply::new(self.run("update_sale", invocation).await?)?;
        if outcome == "changed" {
            return Err(changed_meanwhile());
        }
        admin_outcome(&outcome, reply)
    }

    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError> {
        let keys = SaleKeys::new(id);
        let invocation = self.scripts.cancel_sale.key(keys.sale());
        let (outcome, reply) = Reply::new(self.run("cancel_sale", invocation).await?)?;
        admin_outcome(&outcome, reply)
    }

    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, StoreError> {
        let keys = SaleKeys::new(&request.sale_id);
        let idempotency_field = request
            .idempotency_key
            .as_ref()
            .map(|key| format!("{}\n{key}", request.user_id))
            .unwrap_or_default();
        let mut invocation = self.scripts.reserve.key(keys.sale());
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers())
            .key(keys.idempotency())
            .key(keys.user_orders())
            .key(keys.order(&request.order_id))
            .key(keys.stream())
            .arg(request.user_id.as_str())
            .arg(request.quantity.get())
            .arg(request.order_id.as_str())
            .arg(idempotency_field);
        let (outcome, mut reply) = Reply::new(self.run("reserve", invocation).await?)?;
        match outcome.as_str() {
            "reserved" => {
                let created_at = reply.next()?;
                let expires_at = reply.next()?;
                let remaining = reply.next()?;
                let held = reply.next()?;
                let amount_cents = reply.next()?;
                let currency = reply.next()?;
                Ok(Reservation {
                    order: Order {
                        id: request.order_id.clone(),
                        sale_id: request.sale_id.clone(),
                        user_id: request.user_id.clone(),
                        quantity: request.quantity.get(),
                        amount_cents,
                        currency,
                        status: OrderStatus::PendingPayment,
                        created_at,
                        expires_at,
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
            "not_started" => Err(Rejection::NotStarted.into()),
            "ended" => Err(Rejection::Ended.into()),
            "limit_exceeded" => Err(Rejection::LimitExceeded.into()),
            "sold_out" => Err(Rejection::SoldOut.into()),
            "idempotency_mismatch" => Err(Rejection::IdempotencyMismatch.into()),
            other => Err(corrupt(format!("unknown reserve outcome {other}"))),
        }
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let key = SaleKeys::new(&id.sale_id()).order(id);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        let fields: HashMap<String, String> = self.query("order", &cmd).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        order_from_fields(id, &fields).map(Some)
    }

    async fn user_orders(&self, user: &UserId) -> Result<Vec<Order>, StoreError> {
        let sales = self.sale_ids().await?;
        let ids = try_join_all(sales.iter().map(|sale| self.order_ids_of(sale, user))).await?;
        let orders = try_join_all(ids.iter().flatten().map(|id| self.order(id))).await?;
        let mut orders: Vec<Order> = orders.into_iter().flatten().collect();
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn cancel_order(&self, id: &OrderId, user: &UserId) -> Result<Order, StoreError> {
        let keys = SaleKeys::new(&id.sale_id());
        let mut invocation = self.scripts.cancel_order.key(keys.order(id));
        invocation
            .key(keys.stock())
            .key(keys.stats())
            .key(keys.buyers())
            .arg(user.as_str());
        let (outcome, mut reply) = Reply::new(self.run("cancel_order", invocation).await?)?;
        match outcome.as_str() {
            "cancelled" => order_from_fields(id, &reply.next()?),
            "not_found" => Err(StoreError::NotFound("order")),
            "conflict" => Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                reply.next::<String>()?
            ))),
            other => Err(corrupt(format!("unknown cancel outcome {other}"))),
        }
    }
}

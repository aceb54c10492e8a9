//! Connecting to Redis and talking to it: the connection (standalone or
//! Cluster), the server checks made before serving (no eviction, the AOF
//! durability asked for), the
//! script cache, and the helpers every store call goes through (a script
//! or a command, timed, its error mapped to [`StoreError`]). Also the
//! pub/sub subscription for stock returns, which needs its own connection
//! (see [`Subscriber`]).
//! Nothing here knows a key's layout or a reply's shape (see `codec`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use deadpool_redis::{Manager, Pool};
use rand::distr::{Alphanumeric, SampleString};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, PushKind, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use tokio::sync::{mpsc, Mutex};
use tokio::time::MissedTickBehavior;

use super::codec::Announcement;
use super::RedisStore;
use crate::config::RedisDurability;
use crate::domain::SaleId;
use crate::store::keys::STOCK_RETURNS_CHANNEL;
use crate::store::scripts::{Invocation, Scripts};
use crate::store::{ShopperBounds, StockReturnHandler, Store, StoreError};
use crate::telemetry::{self, redact_url};

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

/// The URLs redacted (no password): the target is logged at start.
impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone(url) => f.debug_tuple("Standalone").field(&redact_url(url)).finish(),
            Self::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|url| redact_url(url)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// One multiplexed connection: requests from every task are pipelined on it.
#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => Box::pin(sent_until_run(conn, cmd)),
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
            Self::Cluster(conn) => Box::pin(async move {
                let part = PipelinePart {
                    pipeline,
                    offset,
                    count,
                };
                sent_until_run(conn, &part).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The connection that sits subscribed to the stock-return channel, on one
/// node at a time: a Cluster forwards every `PUBLISH` to every node, so
/// each subscription made again (after a failure) goes to the next
/// configured node, and a node that is down, or hangs (a PING each store
/// timeout goes unanswered), is passed by. Each node's
/// connection comes from a deadpool-redis pool bounded to one and is taken
/// out of it for the subscription, closed when the subscription ends
/// whichever way, and only one subscription is made at a time: a node
/// holds at most one such connection. A subscribed connection carries
/// nothing but its subscription and PINGs, so it is never the multiplexed connection the hot path
/// pipelines through.
pub(super) struct Subscriber {
    pools: Vec<Pool>,
    /// Held while subscribed, so one subscription at a time.
    turns: Mutex<Turns>,
}

/// Each node's pushes (deadpool-redis pools multiplexed connections, which
/// receive pub/sub messages as RESP3 pushes: each pool's connections speak
/// RESP3 and push to their node's channel), and the node the next
/// subscription goes to (modulo their number).
struct Turns {
    next: usize,
    pushes: Vec<mpsc::UnboundedReceiver<PushInfo>>,
}

impl Subscriber {
    /// A subscriber to the nodes at `urls`, the first one first (not
    /// connected yet); `timeout` bounds each connect and command.
    fn new<'a>(
        urls: impl IntoIterator<Item = &'a String>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (mut pools, mut pushes) = (Vec::new(), Vec::new());
        for url in urls {
            let info = url
                .as_str()
                .into_connection_info()
                .with_context(|| format!("invalid Redis URL {}", redact_url(url)))?;
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let (sender, receiver) = mpsc::unbounded_channel();
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_push_sender(sender);
            let manager = Manager::new_with_config(info.set_redis_settings(resp3), config)?;
            pools.push(Pool::builder(manager).max_size(1).build()?);
            pushes.push(receiver);
        }
        anyhow::ensure!(!pools.is_empty(), "no Redis URL");
        Ok(Self {
            pools,
            turns: Mutex::new(Turns { next: 0, pushes }),
        })
    }
}

impl RedisStore {
    /// The same store with other bounds on what one shopper may leave
    /// unpaid in one sale.
    pub fn with_shopper_bounds(mut self, bounds: ShopperBounds) -> Self {
        self.shopper_bounds = bounds;
        self
    }

    /// Connects, checks that Redis will never evict a key (an evicted stock
    /// key would oversell) and persists what it acknowledges as `durability`
    /// asks, and loads the scripts. `timeout` bounds every connect and every
    /// command.
    pub async fn connect(
        target: &RedisTarget,
        timeout: Duration,
        durability: RedisDurability,
    ) -> anyhow::Result<Self> {
        let conn = match target {
            RedisTarget::Standalone(url) => {
                let client = redis::Client::open(url.as_str())
                    .with_context(|| format!("invalid Redis URL {}", redact_url(url)))?;
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
                        .with_context(|| {
                            format!("failed to connect to Redis at {}", redact_url(url))
                        })?,
                )
            }
            RedisTarget::Cluster(urls) => {
                // No call sent again by the client library: one whose
                // connection dropped or timed out may have run, and most
                // scripts are not safe to run twice (a cancel taken twice,
                // a second cancel answered 409). Such a call fails as the
                // standalone connection's does (503, outcome unknown); one
                // a node refused unrun is sent again here
                // (`sent_until_run`).
                let client = redis::cluster::ClusterClient::builder(urls.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(0)
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
        let urls = match target {
            RedisTarget::Standalone(url) => std::slice::from_ref(url),
            RedisTarget::Cluster(urls) => urls.as_slice(),
        };
        let store = Self {
            conn,
            scripts: Scripts::new(),
            subscriber: Subscriber::new(urls, timeout)?,
            node: Alphanumeric.sample_string(&mut rand::rng(), 16),
            timeout,
            shopper_bounds: ShopperBounds::default(),
        };
        store.check_server_settings(durability).await?;
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

    /// Refuses a Redis that may evict keys; refuses (`always`) or warns
    /// about (`warn`) one that may lose acknowledged writes in a crash. On a
    /// Cluster every primary is checked.
    async fn check_server_settings(&self, durability: RedisDurability) -> anyhow::Result<()> {
        let policies = self.config_values("maxmemory-policy").await?;
        if let Some(policy) = policies.iter().find(|policy| *policy != "noeviction") {
            bail!(
                "Redis maxmemory-policy is {policy:?}: flashsale needs `noeviction`, since an \
                 evicted stock key would oversell. Run `CONFIG SET maxmemory-policy noeviction` \
                 (on every primary) and set it in redis.conf."
            );
        }
        let aof = self.config_values("appendonly").await?;
        let fsync = self.config_values("appendfsync").await?;
        let Some(loss) = loss_window(&aof, &fsync) else {
            return Ok(());
        };
        match durability {
            RedisDurability::Always => bail!(
                "{loss}. FLASHSALE_REDIS_DURABILITY=always refuses this: a payment answered 200 \
                 to WeChat Pay and then lost is never notified again, and its unit sells twice. \
                 Set `appendonly yes` and `appendfsync always` on every Redis node (CONFIG SET \
                 and redis.conf), or start with FLASHSALE_REDIS_DURABILITY=warn to accept the loss."
            ),
            RedisDurability::Warn => tracing::warn!(
                "{loss}; FLASHSALE_REDIS_DURABILITY=warn accepts this. Use `appendonly yes` and \
                 `appendfsync always` in production"
            ),
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

    /// Readiness: Redis answers and every script is in its cache. One
    /// SCRIPT EXISTS per check; the scripts are loaded again only when one
    /// is missing (a restarted or flushed Redis), and a failure to load
    /// them fails the check.
    pub(super) async fn ensure_scripts(&self) -> redis::RedisResult<()> {
        if !self.scripts.all_cached(&mut self.conn.clone()).await? {
            self.load_scripts().await?;
        }
        Ok(())
    }

    /// Runs a script and returns its reply, timing the call.
    pub(super) async fn run(
        &self,
        op: &'static str,
        invocation: &Invocation<'_>,
    ) -> Result<Value, StoreError> {
        timed(op, invocation.invoke(&mut self.conn.clone())).await
    }

    /// Runs a plain command, timing the call.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        timed(op, cmd.query_async(&mut self.conn.clone())).await
    }

    /// Runs a consumer-group command; if the group is gone (a Redis that
    /// restarted without it, a stream key lost and recreated by a
    /// reservation), creates it again from the stream's start and retries:
    /// redelivered entries change nothing.
    pub(super) async fn query_rejoining<T: FromRedisValue>(
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

    /// Subscribes to the stock-return channel on the next node and hands
    /// every other engine node's announcement to `handler` until the
    /// connection fails or its node stops answering.
    pub(super) async fn listen_for_returns(
        &self,
        handler: &StockReturnHandler,
    ) -> anyhow::Result<()> {
        let mut turns = self.subscriber.turns.lock().await;
        let at = turns.next % self.subscriber.pools.len();
        turns.next = turns.next.wrapping_add(1);
        let pushes = &mut turns.pushes[at];
        // What an earlier connection to this node left (its end, messages
        // nobody read) ends no new subscription.
        while pushes.try_recv().is_ok() {}
        // Out of the pool for good: closed when this function returns,
        // whichever way, so no subscribed connection is left unread.
        let mut conn = deadpool_redis::Connection::take(self.subscriber.pools[at].get().await?);
        conn.subscribe(STOCK_RETURNS_CHANNEL).await?;
        // A node that hangs with its connection open sends no
        // disconnection: a PING each `timeout`, answered within the
        // connection's own response timeout, finds it out.
        let mut beats =
            tokio::time::interval_at(tokio::time::Instant::now() + self.timeout, self.timeout);
        beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    match push.kind {
                        PushKind::Message => self.hand_over(&push.data, handler),
                        PushKind::Disconnection => break,
                        _subscribed => {}
                    }
                }
                _ = beats.tick() => {
                    let answered: RedisResult<()> = redis::cmd("PING").query_async(&mut conn).await;
                    if let Err(err) = answered {
                        // What came while the PING waited is still heard.
                        while let Ok(push) = pushes.try_recv() {
                            if push.kind == PushKind::Message {
                                self.hand_over(&push.data, handler);
                            }
                        }
                        return Err(err).context("the subscribed Redis node stopped answering");
                    }
                }
            }
        }
        bail!("the subscription ended")
    }

    /// Publishes `message` on `channel`. A Cluster routes `PUBLISH` to the
    /// node serving the channel's slot, yet any node forwards it to every
    /// other: redis-rs takes another node while that one is disconnected,
    /// and when it fails to answer (it hangs with its connection open) the
    /// message is published once more through a node picked at random.
    pub(super) async fn publish(
        &self,
        op: &'static str,
        channel: &str,
        message: String,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        let routed = self.query(op, &cmd).await;
        match &self.conn {
            Connection::Cluster(conn) if routed.is_err() => {
                let elsewhere = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                timed(op, conn.clone().route_command(cmd, elsewhere))
                    .await
                    .map(drop)
            }
            _ => routed,
        }
    }

    /// Hands the returns of one announcement (a message's `[channel,
    /// payload]`) to `handler`, unless this node made it.
    fn hand_over(&self, message: &[Value], handler: &StockReturnHandler) {
        let Some(Value::BulkString(payload)) = message.get(1) else {
            tracing::warn!("stock-return message without a payload");
            return;
        };
        match serde_json::from_slice::<Announcement>(payload) {
            Ok(announcement) if announcement.node != self.node => {
                announcement.returns.into_iter().for_each(handler);
            }
            Ok(_own) => {}
            Err(err) => tracing::warn!(error = %err, "unreadable stock-return announcement"),
        }
    }
}

/// What a crash may lose of the writes Redis acknowledged, given each
/// node's `appendonly` and `appendfsync` (the worst node speaks), or `None`
/// when every node writes and fsyncs each change before answering.
fn loss_window(appendonly: &[String], appendfsync: &[String]) -> Option<String> {
    if appendonly.iter().any(|aof| aof != "yes") {
        return Some(
            "Redis runs without AOF (appendonly no): a Redis crash loses every reservation and \
             payment acknowledged since the last snapshot"
                .to_owned(),
        );
    }
    match appendfsync
        .iter()
        .find(|fsync| *fsync != "always")?
        .as_str()
    {
        "everysec" => Some(
            "Redis fsyncs its AOF once a second (appendfsync everysec): a crash of its machine \
             loses up to the last second of acknowledged reservations and payments (up to two \
             while the disk lags, when a crash of Redis alone loses them too)"
                .to_owned(),
        ),
        other => Some(format!(
            "Redis leaves fsyncing its AOF to the OS (appendfsync {other}): a crash of its \
             machine loses up to the last 30 seconds or so of acknowledged reservations and \
             payments"
        )),
    }
}

/// Longest the engine waits at start for a Redis that is loading its data.
const LOADING_WAIT: Duration = Duration::from_secs(60);

/// The waits before a Cluster call a node refused without running it is
/// sent again: a `MOVED` or `READONLY` has the client read the slot map
/// again meanwhile.
const UNRUN_RESENDS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(50),
];

/// A call on the Cluster that [`sent_until_run`] may send again: a command,
/// or a part of a pipeline. A node may run the first commands of a plain
/// pipeline before it answers `MOVED` to one, so the store's plain
/// pipelines on a Cluster are reads; a transaction (`MULTI`/`EXEC`) a node
/// aborted answers `EXECABORT`, which is not sent again.
trait ClusterCall {
    type Reply;
    fn send<'a>(&'a self, conn: &'a mut ClusterConnection) -> RedisFuture<'a, Self::Reply>;
}

impl ClusterCall for Cmd {
    type Reply = Value;
    fn send<'a>(&'a self, conn: &'a mut ClusterConnection) -> RedisFuture<'a, Value> {
        conn.req_packed_command(self)
    }
}

struct PipelinePart<'p> {
    pipeline: &'p Pipeline,
    offset: usize,
    count: usize,
}

impl ClusterCall for PipelinePart<'_> {
    type Reply = Vec<Value>;
    fn send<'a>(&'a self, conn: &'a mut ClusterConnection) -> RedisFuture<'a, Vec<Value>> {
        conn.req_packed_commands(self.pipeline, self.offset, self.count)
    }
}

/// Sends a call on the Cluster, and sends it again (at most
/// [`UNRUN_RESENDS`]) while a node refused it without running it: `MOVED`,
/// `TRYAGAIN`, `CLUSTERDOWN` or `READONLY` (a node answers these before it
/// runs anything), or no connection to its node yet. The client library
/// itself sends nothing again (`retries(0)`, see [`RedisStore::connect`]):
/// a call whose connection dropped or timed out may have run, and is not
/// sent twice. Not sent again either: `ASK` (the client does not follow it
/// without its own retries: a slot being migrated answers 503 meanwhile),
/// and `LOADING` or `MASTERDOWN`, which the client may also hand a call
/// already sent when a node it reconnects to answers so.
async fn sent_until_run<C: ClusterCall>(
    conn: &mut ClusterConnection,
    call: &C,
) -> RedisResult<C::Reply> {
    let mut waits = UNRUN_RESENDS.iter();
    loop {
        let reply = call.send(conn).await;
        let unrun = reply.as_ref().is_err_and(|err| {
            matches!(
                err.kind(),
                ErrorKind::Server(
                    ServerErrorKind::Moved
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                ) | ErrorKind::ClusterConnectionNotFound
            )
        });
        match waits.next() {
            Some(wait) if unrun => tokio::time::sleep(*wait).await,
            _ => return reply,
        }
    }
}

/// Awaits one call to Redis, recording its time under `op`.
pub(super) async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let reply = call.await;
    telemetry::observe_store_call(op, started.elapsed());
    reply.map_err(unavailable)
}

pub(super) fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

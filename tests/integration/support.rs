//! Test support: real `redis-server` processes on free ports, and the engine
//! started in-process on 127.0.0.1:0 against the embedded store or a Redis.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use flashsale::config::{Config, PaymentMode};
use flashsale::http::mint_shopper_token;
use flashsale::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-at-least-32-bytes-long";
pub const SHOPPER_SECRET: &str = "test-shopper-secret";

/// A `redis-server` of our own: free port, own data directory (AOF on, so
/// a restart keeps the data), killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    cluster_enabled: bool,
    /// Further `redis-server` arguments of every start from now on.
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_node(false)
    }

    fn start_node(cluster_enabled: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            port: 0,
            dir,
            cluster_enabled,
            extra_args: Vec::new(),
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed and on PATH?)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn node_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Spawns the server and waits until it answers PING.
    fn spawn(&mut self) -> bool {
        self.spawn_until(Self::ping)
    }

    /// Spawns the server and waits until `ready` holds of it.
    fn spawn_until(&mut self, ready: fn(&Self) -> bool) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .args(&self.extra_args)
            .args(if self.cluster_enabled {
                &["--cluster-enabled", "yes"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ready(self) {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_exited)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        self.ping_reply(Duration::from_millis(200)).is_ok()
    }

    /// PING on a fresh connection, waiting at most `timeout` to connect.
    fn ping_reply(&self, timeout: Duration) -> redis::RedisResult<String> {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(timeout))
            .and_then(|mut conn| redis::cmd("PING").query(&mut conn))
    }

    /// A synchronous connection for assertions on raw keys.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to test redis")
    }

    /// Starts the server again on the same port and data directory (after
    /// [`kill`](Self::kill)); the AOF brings the data back.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    /// Starts the server again on the same data with `args` added, and
    /// returns as soon as it answers at all: it may still be loading its
    /// data (answering LOADING).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        self.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        assert!(
            self.spawn_until(|server| server.ping() || server.loading()),
            "redis-server restarts on port {}",
            self.port
        );
    }

    /// Answers PING with LOADING: still reading its data from disk. A
    /// loading server answers only between batches of what it loads,
    /// so this waits up to 2 s for the answer.
    pub fn loading(&self) -> bool {
        matches!(
            self.ping_reply(Duration::from_secs(2)),
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        )
    }

    /// Script calls (EVAL and EVALSHA) this server ran since it started or
    /// since the last `CONFIG RESETSTAT`.
    pub fn script_calls(&self) -> u64 {
        self.command_calls(&["evalsha", "eval"])
    }

    /// Calls of the named commands (as `INFO commandstats` names them,
    /// e.g. `script|load`) since start or the last `CONFIG RESETSTAT`.
    pub fn command_calls(&self, commands: &[&str]) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                commands.contains(&name).then_some(stats)
            })
            .filter_map(|stats| {
                stats
                    .split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// `CONFIG SET name value`.
    pub fn config_set(&self, name: &str, value: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut self.connection())
            .expect("CONFIG SET");
    }

    /// Freezes every client of this server for `millis` (CLIENT PAUSE ALL):
    /// a store that stopped answering.
    pub fn pause(&self, millis: u64) {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(millis)
            .arg("ALL")
            .query(&mut self.connection())
            .expect("CLIENT PAUSE");
    }

    /// Stops the server's process (SIGSTOP) with its connections left
    /// open: a node that hangs. Killed as usual when dropped.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -STOP {pid}");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster of our own (no replicas), torn down on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_node(true)).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(RedisServer::node_address))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ok() {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            let mut conn = node.connection();
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut conn)
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Stops node `at` (its slots go unserved: this cluster has no
    /// replicas).
    pub fn kill_node(&mut self, at: usize) {
        self.nodes[at].kill();
    }

    /// The node URLs, comma-separated, as `FLASHSALE_REDIS_URL` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
    RedisCluster,
}

/// The engine, running in-process on a free port.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(redis_url: Option<String>) -> Self {
        let mut config = test_config();
        config.redis_url = redis_url;
        Self::spawn_with(config).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        let app = Application::build(config).await.expect("build the app");
        let address = format!("http://{}", app.address());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let mut app = Self::attach(address, Duration::from_secs(30));
        app.stop = Some(stop);
        app.server = Some(server);
        app
    }

    /// A client of an engine running elsewhere (a `flashsale` process the
    /// test started) at `address` (`http://host:port`); each request gives
    /// up after `timeout`.
    pub fn attach(address: String, timeout: Duration) -> Self {
        // Straight to 127.0.0.1, whatever proxy the environment names.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .expect("http client");
        Self {
            address,
            client,
            stop: None,
            server: None,
        }
    }

    /// Stops the server (graceful shutdown) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin request")
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await;
        response
            .expect("/metrics")
            .text()
            .await
            .expect("/metrics text")
    }

    /// Schedules a sale and returns its id.
    pub async fn create_sale(&self, body: Value) -> String {
        let response = self
            .admin(reqwest::Method::POST, "/admin/v1/sales", Some(body))
            .await;
        let status = response.status();
        let sale: Value = response.json().await.expect("sale json");
        assert_eq!(status, StatusCode::CREATED, "{sale}");
        sale["id"].as_str().expect("sale id").to_owned()
    }

    /// The admin view of a sale, with exact stats.
    pub async fn sale(&self, id: &str) -> Value {
        let response = self
            .admin(reqwest::Method::GET, &format!("/admin/v1/sales/{id}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("sale json")
    }

    /// The campaign as the admin API shows it (`GET
    /// /admin/v1/campaigns/{id}`).
    pub async fn campaign(&self, id: &str) -> Value {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/campaigns/{id}"),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("campaign json")
    }

    /// The sale's reconciliation (`GET /admin/v1/sales/{id}/audit`).
    pub async fn audit(&self, id: &str) -> Value {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/sales/{id}/audit"),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("audit json")
    }

    /// Asserts that the sale's records agree with every count it keeps.
    pub async fn assert_audit_clean(&self, id: &str) -> Value {
        let audit = self.audit(id).await;
        assert_eq!(audit["ok"], true, "the audit found differences: {audit}");
        assert_eq!(audit["differences"], serde_json::json!([]), "{audit}");
        audit
    }

    /// Polls the admin view of a sale until `done` holds of it, checking the
    /// stock invariant on every view; fails after `within`.
    pub async fn sale_when(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let sale = self.sale(id).await;
            assert_stats_consistent(&sale);
            if done(&sale) {
                return sale;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reached within {within:?}: {sale}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST an order as `shopper`; `body` None sends no body at all.
    pub async fn order(
        &self,
        sale: &str,
        shopper: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/sales/{sale}/orders")))
            .bearer_auth(token(shopper));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("order request")
    }

    /// GET a public route (no token) and read its JSON.
    pub async fn public_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("public request");
        response.json().await.expect("public json")
    }

    /// Orders one unit as `shopper`, expecting 201, and returns the order.
    pub async fn buy(&self, sale: &str, shopper: &str) -> Value {
        let response = self.order(sale, shopper, None, None).await;
        let status = response.status();
        let order: Value = response.json().await.expect("order json");
        assert_eq!(status, StatusCode::CREATED, "{shopper} buys: {order}");
        order
    }

    /// Takes `step` (`pay`: simulated payments; `cancel`) on `shopper`'s
    /// own `order`, expecting 200.
    pub async fn order_step(&self, shopper: &str, order: &Value, step: &str) {
        let id = order["id"].as_str().expect("an order's id");
        let response = self
            .shopper_post(shopper, &format!("/api/v1/orders/{id}/{step}"))
            .await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{shopper}'s {step} of {id}: {body}");
    }

    pub async fn shopper_get(&self, shopper: &str, path: &str) -> Response {
        self.shopper(reqwest::Method::GET, shopper, path).await
    }

    pub async fn shopper_post(&self, shopper: &str, path: &str) -> Response {
        self.shopper(reqwest::Method::POST, shopper, path).await
    }

    /// A shopper's order of one unit of `sale`, with a purchase token
    /// (`X-Purchase-Token`) and an idempotency key when given.
    pub async fn order_with(
        &self,
        sale: &str,
        shopper: &str,
        purchase: Option<&str>,
        key: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/sales/{sale}/orders")))
            .bearer_auth(token(shopper));
        if let Some(purchase) = purchase {
            request = request.header("X-Purchase-Token", purchase);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("order request")
    }

    pub async fn shopper(&self, method: reqwest::Method, shopper: &str, path: &str) -> Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token(shopper))
            .send()
            .await
            .expect("shopper request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The Redis servers a test keeps alive, if any.
pub enum Servers {
    None,
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Servers {
    pub fn start(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self::None,
            Backend::Redis => Self::Standalone(RedisServer::start()),
            Backend::RedisCluster => Self::Cluster(RedisCluster::start()),
        }
    }

    /// The engine settings that point at these servers.
    pub fn configure(&self, config: &mut Config) {
        match self {
            Self::None => {}
            Self::Standalone(redis) => config.redis_url = Some(redis.url()),
            Self::Cluster(cluster) => {
                config.redis_url = Some(cluster.urls().join(","));
                config.redis_cluster = true;
            }
        }
    }

    /// Sets a Redis setting on every server (none on the embedded store).
    pub fn config_set(&self, name: &str, value: &str) {
        match self {
            Self::None => {}
            Self::Standalone(redis) => redis.config_set(name, value),
            Self::Cluster(cluster) => {
                for node in cluster.nodes() {
                    node.config_set(name, value);
                }
            }
        }
    }

    /// Runs a raw command on the server holding its key: the standalone
    /// Redis, or the Cluster node serving the key's slot (the others
    /// answer `MOVED`).
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let nodes = match self {
            Self::None => panic!("the embedded store has no Redis to send {cmd:?} to"),
            Self::Standalone(redis) => std::slice::from_ref(redis),
            Self::Cluster(cluster) => cluster.nodes(),
        };
        nodes
            .iter()
            .find_map(|node| cmd.query(&mut node.connection()).ok())
            .unwrap_or_else(|| panic!("no Redis took {cmd:?}"))
    }

    /// A connection for raw-key assertions, on a standalone Redis.
    pub fn standalone(&self) -> Option<&RedisServer> {
        match self {
            Self::Standalone(redis) => Some(redis),
            _ => None,
        }
    }
}

/// A running engine plus the Redis servers it uses.
pub struct Harness {
    pub app: TestApp,
    pub redis: Servers,
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the test settings changed by `configure`.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let redis = Servers::start(backend);
        let mut config = test_config();
        redis.configure(&mut config);
        configure(&mut config);
        Self {
            app: TestApp::spawn_with(config).await,
            redis,
        }
    }
}

/// The engine's test settings: free port, known tokens, embedded store.
pub fn test_config() -> Config {
    let mut config = Config::for_tests();
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.user_token_secret = Some(SHOPPER_SECRET.into());
    config.payments = Some(PaymentMode::Simulated);
    // Tests race from one address as many shoppers, and send many wrong
    // admin tokens; the limit tests turn limits on themselves.
    config.admin_auth_failures_per_min = 1_000_000;
    config.rate_global_per_sec = 0;
    config.rate_user_per_sec = 0;
    config.rate_ip_per_sec = 0;
    config
}

pub fn token(shopper: &str) -> String {
    mint_shopper_token(SHOPPER_SECRET.as_bytes(), shopper, 3600).expect("mint token")
}

pub fn rfc3339_in(offset: Duration, past: bool) -> String {
    let offset = chrono::Duration::from_std(offset).expect("offset");
    let at = if past {
        Utc::now() - offset
    } else {
        Utc::now() + offset
    };
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A sale body that is live now for an hour.
pub fn live_sale(stock: i64, per_user_limit: i64) -> Value {
    json!({
        "sku": "LC-POUCH-RED",
        "title": "Le Pliage pouch, red",
        "price_cents": 19900,
        "stock_total": stock,
        "per_user_limit": per_user_limit,
        "starts_at": rfc3339_in(Duration::from_secs(1), true),
        "ends_at": rfc3339_in(Duration::from_secs(3600), false),
    })
}

/// Reads an error response and returns (status, code).
pub async fn error_code(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .map_or_else(|| format!("<no error code in {body}>"), str::to_owned);
    (status, code)
}

/// Asserts the contract's stock invariant on an admin sale view.
pub fn assert_stats_consistent(sale: &Value) {
    let stats = &sale["stats"];
    let n = |field: &str| {
        stats[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} in {stats}"))
    };
    assert!(n("remaining") >= 0, "{stats}");
    assert_eq!(
        n("remaining") + n("reserved") + n("paid") + n("refunded") - n("restocked"),
        n("stock_total"),
        "remaining + reserved + paid + refunded - restocked == stock_total: {stats}"
    );
}

/// Generates one test module per body, with one `#[tokio::test]` per
/// backend named in the list: `store_tests!([embedded => Embedded]; body)`.
#[macro_export]
macro_rules! store_tests {
    ($backends:tt; $($name:ident),* $(,)?) => {
        $( $crate::store_test!($backends $name); )*
    };
}

#[macro_export]
macro_rules! store_test {
    ([$($test:ident => $backend:ident),*] $name:ident) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$name($crate::support::Backend::$backend).await;
                }
            )*
        }
    };
}

/// Runs each async test body against the embedded store and a standalone Redis.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $crate::store_tests!([embedded => Embedded, redis => Redis]; $($name),*);
    };
}

/// Runs each async test body against the embedded store, a standalone Redis
/// and a 3-node Redis Cluster.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $crate::store_tests!(
            [embedded => Embedded, redis => Redis, redis_cluster => RedisCluster];
            $($name),*
        );
    };
}

/// Actor settings for tests that drive the inventory directly: roomy bounds,
/// batches as the engine's default, and no background refresh or retirement
/// (a test sets what it exercises).
pub fn actor_settings() -> flashsale::inventory::ActorSettings {
    flashsale::inventory::ActorSettings {
        mailbox: 1_000,
        in_flight_max: 1_000,
        batch_max: 64,
        store_calls: 1,
        known_shoppers_max: 1_000,
        refresh: Duration::from_secs(3_600),
        clock_margin_ms: 50,
        idle_stop: Duration::from_secs(3_600),
        clock: std::sync::Arc::new(flashsale::clock::SystemClock),
    }
}

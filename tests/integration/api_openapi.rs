//! Goal: `GET /openapi.json` describes the whole API: every route the
//! router serves, with its method, bodies and the contract's error codes.
//! Method: build the real router (`flashsale::http::router`, as startup
//! does) in both payment modes, walk it, fetch the document from that same
//! router, and compare the two.
//!
//! How the routes are found, and why this way. In the code, each route and
//! its documentation come from one `routes!(handler)` call (utoipa-axum), so
//! a list of routes built from those calls would agree with the document by
//! construction, and could not catch the mistake this test is for: a route
//! added with plain axum `.route(path, get(handler))`, which utoipa-axum's
//! `OpenApiRouter::route` also passes through, undocumented. So the test
//! asks the router itself, independently of utoipa:
//! - its paths: axum has no API listing routes, but the `Debug` output of a
//!   `Router` prints its route table (`Node { paths: {RouteId(n): "/path"} }`).
//!   Reading it depends on axum's formatting, so the test fails loudly if
//!   that changes: it must find the ops routes, which are served whatever
//!   the document says;
//! - their methods, from behaviour: every path is requested with every
//!   method; anything but 405 means the method is served (axum serves HEAD
//!   with the GET handler).
//!
//! Adding a route without `#[utoipa::path]` + `routes!` therefore fails
//! `every_served_route_is_documented_and_every_documented_route_served`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use flashsale::admission::{WaitingRoomSettings, WaitingRooms};
use flashsale::domain::SaleRules;
use flashsale::http::{
    self, AppContext, AppState, AuthKeys, Rate, RateLimitSettings, RateLimits, Shedding, Sheddings,
    ShopperTokenRules,
};
use flashsale::inventory::{ActorSettings, Inventory};
use flashsale::orders::Orders;
use flashsale::payments::{PaymentMethod, Payments};
use flashsale::sales::live::{LiveFeeds, LiveSettings};
use flashsale::sales::Sales;
use flashsale::store::{EmbeddedStore, QueueRules, Store};
use flashsale::telemetry;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{actor_settings, ADMIN_TOKEN, SHOPPER_SECRET};
use crate::wechat::{EngineSide, WeChatPaySim};

/// Every method a route could be registered for.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

/// The contract's error codes and the statuses each may come with.
const CONTRACT_CODES: [(&str, &[u16]); 14] = [
    ("invalid_request", &[400, 422]),
    ("unauthorized", &[401]),
    ("forbidden", &[403]),
    ("not_found", &[404]),
    ("not_started", &[409]),
    ("ended", &[409]),
    ("sold_out", &[409]),
    ("limit_exceeded", &[409]),
    ("conflict", &[409]),
    ("payload_too_large", &[413]),
    ("rate_limited", &[429]),
    ("overloaded", &[503]),
    ("unavailable", &[503]),
    ("wechatpay_refused", &[502]),
];

/// The errors the contract lists for `POST /api/v1/sales/{id}/orders`.
const ORDER_ERRORS: [&str; 10] = [
    "not_started",
    "ended",
    "sold_out",
    "limit_exceeded",
    "not_found",
    "invalid_request",
    "unauthorized",
    "rate_limited",
    "overloaded",
    "unavailable",
];

/// Routes outside load shedding, served with no token.
const OPS_TAG: &str = "ops";

type Route = (String, String);

/// The application router as `startup` builds it, over the embedded store,
/// with rate limits off (so probes only ever meet routing) and room for
/// `max_in_flight` requests.
struct App {
    router: Router,
    inventory: Arc<Inventory>,
}

impl App {
    fn new(method: PaymentMethod, max_in_flight: usize) -> Self {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let settings = ActorSettings {
            refresh: Duration::from_secs(1),
            clock_margin_ms: 0,
            idle_stop: Duration::from_secs(60),
            ..actor_settings()
        };
        let inventory = Arc::new(
            Inventory::start(Arc::clone(&store), 1, settings, Duration::from_secs(2)).unwrap(),
        );
        let off = Rate {
            per_sec: 0,
            burst: 0,
        };
        let sheds = Arc::new(telemetry::Sheds::default());
        let live = Arc::new(LiveFeeds::new(
            flashsale::sales::live::read_from(&store),
            Arc::clone(&sheds),
            LiveSettings {
                interval: Duration::from_secs(1),
                watchers_max: 4,
            },
        ));
        let state = AppState::new(AppContext {
            campaigns: flashsale::campaigns::Campaigns::new(
                Arc::clone(&store),
                SaleRules::default(),
                Duration::from_secs(1),
            ),
            sales: Sales::new(
                Arc::clone(&store),
                Arc::clone(&inventory),
                SaleRules::default(),
                Duration::from_secs(1),
            ),
            orders: Arc::new(Orders::new(Arc::clone(&store), Arc::clone(&inventory))),
            payments: Arc::new(Payments::new(
                Arc::clone(&store),
                method,
                flashsale::orders::WorkNotices::default(),
                false,
            )),
            store: Arc::clone(&store),
            auth: Arc::new(
                AuthKeys::new(
                    ADMIN_TOKEN,
                    SHOPPER_SECRET.as_bytes(),
                    &ShopperTokenRules::default(),
                )
                .unwrap(),
            ),
            metrics: telemetry::metrics_handle(),
            store_timeout: Duration::from_secs(2),
            body_limit_bytes: 64 * 1024,
            limits: Arc::new(RateLimits::new(&RateLimitSettings {
                global: off,
                shopper: off,
                ip: off,
                trust_forwarded_for: false,
                admin_failures_per_min: std::num::NonZeroU32::MIN,
            })),
            purchase_token_ttl_secs: 60,
            live,
            sheds,
            waiting_rooms: Arc::new(WaitingRooms::new(
                Arc::clone(&store),
                WaitingRoomSettings {
                    rules: QueueRules {
                        size_max: 1_000,
                        headroom_pct: 120,
                        expiry_grace_ms: 5_000,
                    },
                    poll_ms_min: 1_000,
                    poll_ms_max: 10_000,
                    pollers_max: 1_000,
                },
            )),
        });
        let shedding = Shedding::new(max_in_flight, Duration::from_secs(5));
        let sheddings = Sheddings {
            engine: shedding.clone(),
            notify: shedding,
        };
        Self {
            router: http::router(state, sheddings),
            inventory,
        }
    }

    fn simulated() -> Self {
        Self::new(PaymentMethod::Simulated, 64)
    }

    fn wechatpay() -> Self {
        let wechatpay = WeChatPaySim::new().engine_side("http://127.0.0.1:9");
        Self::new(PaymentMethod::WeChatPay(Box::new(wechatpay)), 64)
    }

    /// One request with no token and no body, from a client address.
    async fn call(&self, method: Method, path: &str) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn document(&self) -> Value {
        let (status, document) = self.call(Method::GET, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK, "/openapi.json needs no token");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        document
    }

    /// The paths in the router's route table (its `Debug` output), without
    /// the fallback's.
    fn served_paths(&self) -> BTreeSet<String> {
        let debug = format!("{:?}", self.router);
        let routes = debug
            .split_once("path_router:")
            .and_then(|(_, rest)| rest.split_once("fallback_router:"))
            .map(|(routes, _)| routes)
            .expect("axum's Router Debug output has path_router, then fallback_router");
        let table = routes
            .split_once("node: Node { paths: {")
            .map(|(_, table)| table)
            .expect("the path router's Node lists its paths");
        let paths: BTreeSet<String> = table
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|path| path.starts_with('/'))
            .map(str::to_owned)
            .collect();
        for ops in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(
                paths.contains(ops),
                "the route table read from {debug} has {ops}: has axum's Debug format changed?"
            );
        }
        paths
    }

    /// Every (method, path) the router serves, by probing each path of its
    /// route table with every method. HEAD counts only where GET is not
    /// served (axum answers HEAD with the GET handler).
    async fn served_routes(&self) -> BTreeSet<Route> {
        let mut served = BTreeSet::new();
        for path in self.served_paths() {
            let uri = concrete(&path);
            let mut methods = BTreeSet::new();
            for method in METHODS {
                let (status, _) = self.call(method.clone(), &uri).await;
                if status != StatusCode::METHOD_NOT_ALLOWED {
                    methods.insert(method.as_str().to_owned());
                }
            }
            if methods.contains("GET") {
                methods.remove("HEAD");
            }
            served.extend(methods.into_iter().map(|method| (method, path.clone())));
        }
        served
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.inventory.stop();
    }
}

/// A request path for a route path: every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "probe"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every documented operation: (METHOD, path) → the operation object.
fn operations(document: &Value) -> BTreeMap<Route, &Value> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .filter(|(method, _)| methods.contains(&method.as_str()))
                .map(move |(method, operation)| ((method.to_uppercase(), path.clone()), operation))
        })
        .collect()
}

fn is_ops(operation: &Value) -> bool {
    operation["tags"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|tag| tag == OPS_TAG))
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_served() {
    let app = App::simulated();
    let document = app.document().await;
    let documented: BTreeSet<Route> = operations(&document).into_keys().collect();
    let served = app.served_routes().await;
    assert!(served.len() >= 15, "found only {served:?}");

    let undocumented: Vec<&Route> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from /openapi.json: {undocumented:?}"
    );
    // The WeChat Pay prepay route is served only with WeChat Pay.
    let prepay = (
        "POST".to_owned(),
        "/api/v1/orders/{id}/wechatpay".to_owned(),
    );
    let not_served: Vec<&Route> = documented.difference(&served).collect();
    assert_eq!(
        not_served,
        [&prepay],
        "in /openapi.json but not served: {not_served:?}"
    );
}

#[tokio::test]
async fn with_wechatpay_the_pay_route_is_documented_as_absent_and_not_served() {
    let app = App::wechatpay();
    let document = app.document().await;
    let operations = operations(&document);
    let served = app.served_routes().await;
    let documented: BTreeSet<Route> = operations.keys().cloned().collect();

    assert!(
        served.is_subset(&documented),
        "served but missing from /openapi.json: {:?}",
        served.difference(&documented).collect::<Vec<_>>()
    );
    let pay = ("POST".to_owned(), "/api/v1/orders/{id}/pay".to_owned());
    let absent: Vec<&Route> = documented.difference(&served).collect();
    assert_eq!(absent, [&pay], "only the simulated pay route is absent");
    let operation = operations[&pay];
    assert_eq!(
        operation["x-flashsale-only-when"],
        serde_json::json!({"FLASHSALE_PAYMENTS": "simulated"})
    );
    assert!(operation["description"]
        .as_str()
        .unwrap()
        .contains("FLASHSALE_PAYMENTS=simulated"));
    let (status, body) = app.call(Method::POST, "/api/v1/orders/probe/pay").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    // And the other way round: the prepay route only with WeChat Pay.
    let app = App::simulated();
    let (status, body) = app
        .call(Method::POST, "/api/v1/orders/probe/wechatpay")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let prepay = operations[&(
        "POST".to_owned(),
        "/api/v1/orders/{id}/wechatpay".to_owned(),
    )];
    assert_eq!(
        prepay["x-flashsale-only-when"],
        serde_json::json!({"FLASHSALE_PAYMENTS": "wechatpay"})
    );

    // One document whatever the deployment.
    assert_eq!(document, App::simulated().document().await);
}

#[tokio::test]
async fn ops_routes_are_outside_load_shedding_and_the_rest_inside() {
    let documented = App::simulated().document().await;
    let operations = operations(&documented);
    // No room at all: every shed route answers 503 `overloaded`.
    let app = App::new(PaymentMethod::Simulated, 0);
    for ((method, path), operation) in &operations {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = app.call(method.clone(), &concrete(path)).await;
        if is_ops(operation) {
            assert_eq!(status, StatusCode::OK, "{method} {path} is never shed");
            assert!(
                operation["security"].is_null(),
                "{method} {path} needs no token"
            );
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
            assert_eq!(body["error"]["code"], "overloaded", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn every_operation_lists_its_error_responses_with_contract_codes() {
    let document = App::simulated().document().await;
    let contract: BTreeMap<&str, &[u16]> = CONTRACT_CODES.into_iter().collect();

    let mut operation_ids = BTreeSet::new();
    for ((method, path), operation) in operations(&document) {
        let route = format!("{method} {path}");
        assert!(
            operation_ids.insert(operation["operationId"].as_str().unwrap().to_owned()),
            "{route}: operationId is unique"
        );
        assert!(operation["summary"].is_string(), "{route} has a summary");
        assert_eq!(operation["tags"].as_array().unwrap().len(), 1, "{route}");
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{route} documents its success"
        );

        // code → statuses, from every error response.
        let mut codes: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for (status, response) in responses {
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            let content = &response["content"]["application/json"];
            assert_eq!(
                content["schema"]["$ref"], "#/components/schemas/ErrorBody",
                "{route} {status}"
            );
            let examples = content["examples"].as_object().unwrap();
            assert!(!examples.is_empty(), "{route} {status} shows its codes");
            for example in examples.values() {
                let code = example["value"]["error"]["code"].as_str().unwrap();
                let statuses = contract
                    .get(code)
                    .unwrap_or_else(|| panic!("{route} {status}: `{code}` is not a contract code"));
                assert!(
                    statuses.contains(&status),
                    "{route}: `{code}` comes with {statuses:?}, not {status}"
                );
                assert!(example["value"]["error"]["message"].is_string());
                assert!(
                    response["description"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("`{code}`")),
                    "{route} {status} describes `{code}`"
                );
                codes.entry(code.to_owned()).or_default().insert(status);
            }
            if status == 429 || status == 503 {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{route} {status} has Retry-After"
                );
            }
        }
        let has = |code: &str, status: u16| codes.get(code).is_some_and(|s| s.contains(&status));

        // What every operation of its kind can answer.
        if !is_ops(operation) {
            for code in ["overloaded", "unavailable"] {
                assert!(has(code, 503), "{route} may be shed: `{code}`");
            }
        }
        if let Some(security) = operation["security"].as_array() {
            assert!(has("unauthorized", 401), "{route} needs a token: 401");
            assert!(
                has("forbidden", 403),
                "{route} refuses the other token: 403"
            );
            let scheme = if path.starts_with("/admin/") {
                "admin"
            } else {
                "shopper"
            };
            assert_eq!(
                security,
                &[serde_json::json!({ scheme: [] })],
                "{route} uses the {scheme} token"
            );
        } else {
            assert!(
                !path.starts_with("/admin/"),
                "{route}: every admin route needs the admin token"
            );
        }
        if path.contains('{') {
            assert!(has("not_found", 404), "{route} names a resource: 404");
        }
        if operation["requestBody"].is_object() {
            assert!(has("invalid_request", 400), "{route} reads JSON: 400");
            assert!(has("payload_too_large", 413), "{route} reads a body: 413");
        }
    }

    // The order route lists every error the contract names for it.
    let order = &document["paths"]["/api/v1/sales/{id}/orders"]["post"];
    let order_codes: BTreeSet<&str> = order["responses"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|response| response["content"]["application/json"]["examples"].as_object())
        .flat_map(|examples| examples.values())
        .map(|example| example["value"]["error"]["code"].as_str().unwrap())
        .collect();
    for code in ORDER_ERRORS {
        assert!(order_codes.contains(code), "the order route lists `{code}`");
    }
    let readyz = &document["paths"]["/readyz"]["get"]["responses"]["503"];
    assert!(readyz["content"]["application/json"]["examples"]["unavailable"].is_object());

    // The error code schema is exactly the contract's codes.
    let documented_codes: BTreeSet<&str> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    assert_eq!(documented_codes, contract.keys().copied().collect());
}

#[tokio::test]
async fn the_document_names_bodies_headers_and_security_schemes() {
    let document = App::simulated().document().await;
    let schemas = &document["components"]["schemas"];

    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(refs.len() > 30, "{refs:?}");
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} is a schema reference"));
        assert!(schemas[name].is_object(), "{reference} resolves");
    }

    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["shopper"]["type"], "http");
    assert_eq!(schemes["shopper"]["scheme"], "bearer");
    assert_eq!(schemes["shopper"]["bearerFormat"], "JWT");
    assert_eq!(schemes["admin"]["type"], "http");
    assert_eq!(schemes["admin"]["scheme"], "bearer");

    let body_of = |method: &str, path: &str| {
        document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    let answer_of = |method: &str, path: &str, status: &str| {
        document["paths"][path][method]["responses"][status]["content"]["application/json"]
            ["schema"]["$ref"]
            .clone()
    };
    let schema = |name: &str| Value::from(format!("#/components/schemas/{name}"));
    assert_eq!(body_of("post", "/admin/v1/sales"), schema("NewSale"));
    assert_eq!(
        body_of("patch", "/admin/v1/sales/{id}"),
        schema("SalePatch")
    );
    assert_eq!(
        body_of("post", "/api/v1/sales/{id}/orders"),
        schema("OrderRequest")
    );
    assert_eq!(
        body_of("post", "/api/v1/payments/wechatpay/notify"),
        schema("WeChatPayNotification")
    );
    for (method, path, status, body) in [
        ("get", "/api/v1/sales", "200", "PublicSaleList"),
        ("get", "/api/v1/sales/{id}", "200", "PublicSaleBody"),
        ("post", "/api/v1/sales/{id}/orders", "201", "OrderBody"),
        (
            "post",
            "/api/v1/sales/{id}/purchase-token",
            "201",
            "PurchaseTokenBody",
        ),
        ("get", "/api/v1/orders", "200", "OrderList"),
        ("get", "/api/v1/orders/{id}", "200", "OrderBody"),
        ("post", "/api/v1/orders/{id}/cancel", "200", "OrderBody"),
        ("post", "/api/v1/orders/{id}/pay", "200", "OrderBody"),
        (
            "post",
            "/api/v1/payments/wechatpay/notify",
            "200",
            "NotifyAck",
        ),
        ("post", "/admin/v1/sales", "201", "AdminSaleBody"),
        ("get", "/admin/v1/sales", "200", "AdminSaleList"),
        ("get", "/admin/v1/sales/{id}", "200", "AdminSaleBody"),
        ("get", "/admin/v1/sales/{id}/audit", "200", "SaleAuditBody"),
        (
            "get",
            "/admin/v1/sales/{id}/dead-letters",
            "200",
            "DeadLetterList",
        ),
        (
            "post",
            "/admin/v1/sales/{id}/dead-letters/redrive",
            "200",
            "RedriveBody",
        ),
        ("patch", "/admin/v1/sales/{id}", "200", "AdminSaleBody"),
        ("post", "/admin/v1/orders/{id}/refund", "200", "OrderBody"),
        (
            "post",
            "/admin/v1/orders/{id}/refund/settled-by-hand",
            "200",
            "OrderBody",
        ),
        ("delete", "/admin/v1/sales/{id}", "200", "AdminSaleBody"),
        ("get", "/healthz", "200", "Health"),
        ("get", "/readyz", "200", "Readiness"),
    ] {
        assert_eq!(
            answer_of(method, path, status),
            schema(body),
            "{method} {path}"
        );
    }

    // The order body is optional; the sale bodies are not and refuse
    // unknown fields.
    let order = &document["paths"]["/api/v1/sales/{id}/orders"]["post"];
    assert_ne!(order["requestBody"]["required"], true);
    assert_eq!(
        document["paths"]["/admin/v1/sales"]["post"]["requestBody"]["required"],
        true
    );
    let refund = &document["paths"]["/admin/v1/orders/{id}/refund"]["post"];
    assert_ne!(refund["requestBody"]["required"], true);
    for name in ["NewSale", "SalePatch", "OrderRequest", "RefundRequest"] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    assert_eq!(
        schemas["OrderRequest"]["properties"]["quantity"]["default"],
        1
    );

    // The headers of the contract.
    let header_names = |operation: &Value| -> BTreeSet<String> {
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|parameter| parameter["in"] == "header")
            .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        header_names(order),
        BTreeSet::from(["Idempotency-Key".to_owned(), "X-Purchase-Token".to_owned()])
    );
    assert!(order["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    let notify = &document["paths"]["/api/v1/payments/wechatpay/notify"]["post"];
    for header in [
        "Wechatpay-Signature",
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Serial",
    ] {
        assert!(header_names(notify).contains(header), "{header}");
    }

    // The wire shapes, from the schemas: a sale and an order carry the
    // contract's fields.
    let properties = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for field in [
        "id",
        "sku",
        "title",
        "price_cents",
        "currency",
        "stock_total",
        "per_user_limit",
        "starts_at",
        "ends_at",
        "payment_timeout_secs",
        "status",
        "remaining",
    ] {
        assert!(properties("SaleBody").contains(field), "SaleBody.{field}");
    }
    for field in [
        "id",
        "sale_id",
        "user_id",
        "quantity",
        "amount_cents",
        "currency",
        "status",
        "created_at",
        "expires_at",
        "paid_at",
    ] {
        assert!(properties("OrderBody").contains(field), "OrderBody.{field}");
    }
    assert_eq!(
        schemas["SaleStatus"]["enum"],
        serde_json::json!(["upcoming", "live", "sold_out", "ended", "cancelled"])
    );
    assert_eq!(
        schemas["OrderStatus"]["enum"],
        serde_json::json!([
            "pending_payment",
            "paid",
            "cancelled",
            "expired",
            "refund_required",
            "refunding",
            "refunded"
        ])
    );
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(value, refs),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|value| collect_refs(value, refs)),
        _ => {}
    }
}

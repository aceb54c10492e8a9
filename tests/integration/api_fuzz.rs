//! Goal: nothing a client sends makes the engine answer 5xx, drop the
//! connection, or send an error outside the contract's format and codes.
//! Method: proptest generates malformed requests (method × route with a
//! garbage or real id × Authorization × Content-Type × Idempotency-Key ×
//! X-Purchase-Token × body) and sends them one at a time to ONE engine on
//! the embedded store; every answer must be 2xx or 4xx, and every 4xx a
//! JSON `{"error": {"code", "message"}}` whose code is documented and
//! matches its status. A 2xx on a route that needs a token comes only with
//! the right kind of token, and an order on a sale that requires purchase
//! tokens only with one issued to that shopper for that sale. Afterwards
//! the engine still serves `/healthz` and `/readyz`, and the fixture sales
//! still keep `remaining + reserved + paid == stock_total`. A second test
//! sends bodies far over the body limit.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use flashsale::http::ErrorCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::support::{
    assert_stats_consistent, live_sale, rfc3339_in, token, Backend, Harness, TestApp, ADMIN_TOKEN,
    SHOPPER_SECRET,
};

/// Generated requests; each is one HTTP round trip on a fresh connection
/// (about 3 ms in a debug build), so the run takes about 10 s.
const CASES: u32 = 3_000;

/// The HTTP statuses the engine's one table of error codes gives `code`
/// (none for a code outside it).
fn statuses_of(code: &str) -> &'static [u16] {
    ErrorCode::ALL
        .iter()
        .find(|known| known.as_str() == code)
        .map_or(&[], |known| known.statuses())
}

/// One generated request. Header values and the body are raw bytes (header
/// bytes restricted to what an HTTP client can send: tab, visible ASCII,
/// space and obs-text).
#[derive(Clone)]
struct Case {
    method: Method,
    path: String,
    authorization: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    purchase_token: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

/// Shows bytes as text, cut at 400 characters so a failure stays readable.
struct Shown<'a>(&'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = String::from_utf8_lossy(self.0);
        if text.chars().count() > 400 {
            let head: String = text.chars().take(400).collect();
            write!(f, "{head:?}... ({} bytes)", self.0.len())
        } else {
            write!(f, "{text:?}")
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn shown(bytes: &Option<Vec<u8>>) -> Option<Shown<'_>> {
            bytes.as_deref().map(Shown)
        }
        f.debug_struct("Case")
            .field("method", &self.method)
            .field("path", &Shown(self.path.as_bytes()))
            .field("authorization", &shown(&self.authorization))
            .field("content_type", &shown(&self.content_type))
            .field("idempotency_key", &shown(&self.idempotency_key))
            .field("purchase_token", &shown(&self.purchase_token))
            .field("body", &shown(&self.body))
            .finish()
    }
}

/// Real ids the generated paths can name.
struct Fixtures {
    live_sale: String,
    extreme_sale: String,
    upcoming_sale: String,
    /// Live, with `require_purchase_token`.
    token_sale: String,
    order: String,
    other_order: String,
    /// Purchase tokens the engine issued (fuzz-owner and fuzz-other for
    /// `token_sale`, fuzz-owner for `live_sale`).
    purchase_tokens: Vec<String>,
    /// `Authorization` values of valid shopper tokens.
    shoppers: Vec<Vec<u8>>,
    /// The shopper each of `shoppers` names.
    shopper_ids: Vec<String>,
    /// `Authorization: Bearer <admin token>`.
    admin: Vec<u8>,
}

impl Fixtures {
    /// Who an `Authorization` value makes the caller.
    fn caller(&self, authorization: Option<&[u8]>) -> Caller {
        match authorization {
            Some(value) if value == self.admin.as_slice() => Caller::Admin,
            Some(value) if self.shoppers.iter().any(|shopper| shopper == value) => Caller::Shopper,
            _ => Caller::Nobody,
        }
    }

    /// The shopper an `Authorization` value names, if it is a valid one.
    fn shopper_id(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let position = self
            .shoppers
            .iter()
            .position(|shopper| Some(shopper.as_slice()) == authorization)?;
        Some(&self.shopper_ids[position])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Shopper,
    Nobody,
}

/// What the run saw, for the report.
#[derive(Default)]
struct Tally {
    requests: u64,
    rejected: u64,
    statuses: BTreeMap<u16, u64>,
    codes: BTreeMap<String, u64>,
    /// New orders on the sale that requires purchase tokens.
    token_sale_orders: u64,
    /// The purchase tokens those orders used.
    spent_purchase_tokens: Vec<Vec<u8>>,
}

/// A JWT assembled by hand: any header, any claims, an HS-family signature
/// with `secret` over whatever header was given (or none at all).
fn jwt(header: &Value, claims: &Value, signature: Option<(Algorithm, &[u8])>) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signature.map_or_else(String::new, |(algorithm, secret)| {
        let key = EncodingKey::from_secret(secret).unwrap();
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm).unwrap()
    });
    format!("{message}.{signature}")
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Authorization values that must all be refused (401, or 403 where a valid
/// token meets the wrong API), one per way a token can be wrong.
fn bad_authorizations() -> Vec<Vec<u8>> {
    let secret = SHOPPER_SECRET.as_bytes();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let valid_claims = json!({"sub": "fuzz-owner", "exp": now_secs() + 3600});
    let signed =
        |header: &Value, claims: &Value| jwt(header, claims, Some((Algorithm::HS256, secret)));
    let tokens = [
        // alg none, unsigned: the classic.
        jwt(&json!({"alg": "none"}), &valid_claims, None),
        format!(
            "eyJhbGciOiJub25lIn0.{}.",
            URL_SAFE_NO_PAD.encode(valid_claims.to_string())
        ),
        jwt(&json!({"alg": "None", "typ": "JWT"}), &valid_claims, None),
        jwt(&json!({"alg": "NONE"}), &valid_claims, None),
        // Signed with the wrong secret.
        jwt(
            &hs256,
            &valid_claims,
            Some((Algorithm::HS256, b"not-the-shopper-secret")),
        ),
        // Expired past the leeway.
        signed(
            &hs256,
            &json!({"sub": "fuzz-owner", "exp": now_secs() - 3600}),
        ),
        // Labelled RS256, signed HS256 with the real secret (alg confusion).
        signed(&json!({"alg": "RS256", "typ": "JWT"}), &valid_claims),
        signed(&json!({"alg": "ES256", "typ": "JWT"}), &valid_claims),
        // Another HS algorithm with the real secret.
        jwt(
            &json!({"alg": "HS512", "typ": "JWT"}),
            &valid_claims,
            Some((Algorithm::HS512, secret)),
        ),
        // Claims the engine requires, missing or malformed.
        signed(&hs256, &json!({"sub": "fuzz-owner"})),
        signed(&hs256, &json!({"exp": now_secs() + 3600})),
        signed(&hs256, &json!({"sub": "", "exp": now_secs() + 3600})),
        signed(
            &hs256,
            &json!({"sub": "x".repeat(129), "exp": now_secs() + 3600}),
        ),
        signed(&hs256, &json!({"sub": "店员", "exp": now_secs() + 3600})),
        signed(&hs256, &json!({"sub": "a b", "exp": now_secs() + 3600})),
        signed(&hs256, &json!({"sub": 42, "exp": now_secs() + 3600})),
        signed(&hs256, &json!({"sub": "fuzz-owner", "exp": "9999999999"})),
        signed(&hs256, &json!({"sub": "fuzz-owner", "exp": 1e300})),
        signed(&hs256, &json!({"sub": "fuzz-owner", "exp": u64::MAX})),
        signed(&hs256, &json!({"sub": "fuzz-owner", "exp": i64::MIN})),
        signed(&hs256, &json!([1, 2, 3])),
        signed(&hs256, &json!(null)),
        // Not a JWT at all, or one cut or padded.
        "not.a.jwt".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "..".to_owned(),
        format!("{}.", token("fuzz-owner")),
        token("fuzz-owner")[..token("fuzz-owner").len() - 3].to_owned(),
        format!("{} trailing", token("fuzz-owner")),
        format!("{ADMIN_TOKEN}x"),
        ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1].to_owned(),
    ];
    let mut values: Vec<Vec<u8>> = tokens
        .iter()
        .map(|token| format!("Bearer {token}").into_bytes())
        .collect();
    values.extend(
        [
            format!("Basic {ADMIN_TOKEN}"),
            format!("Basic {}", STANDARD.encode(format!("admin:{ADMIN_TOKEN}"))),
            format!("bearer {}", token("fuzz-owner")),
            format!("Token {}", token("fuzz-owner")),
            ADMIN_TOKEN.to_owned(),
            token("fuzz-owner"),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Bearer \t ".to_owned(),
            String::new(),
        ]
        .map(String::into_bytes),
    );
    values.push(b"Bearer \xff\xfe\x80".to_vec());
    values.push([b"Bearer ".as_slice(), "eyJ\u{fffd}".as_bytes()].concat());
    values
}

/// Bytes an HTTP client can put in a header value.
fn header_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(b'\t'),
            8 => 0x20u8..0x7f,
            2 => 0x80u8..=0xff,
        ],
        len,
    )
}

fn authorization_strategy(fixtures: &Fixtures) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        5 => select(fixtures.shoppers.clone()).prop_map(Some),
        3 => Just(Some(fixtures.admin.clone())),
        6 => select(bad_authorizations()).prop_map(Some),
        1 => "[!-~]{0,200}".prop_map(|garbage| Some(format!("Bearer {garbage}").into_bytes())),
        1 => header_bytes(0..300).prop_map(Some),
    ]
}

fn content_type_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    let odd = [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "text/plain",
        "text/html; charset=iso-8859-1",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----fuzz",
        "application/octet-stream",
        "*/*",
        "application/json, text/plain",
        "application/vnd.api+json",
        "json",
        ";;;",
        "",
    ]
    .map(|value| value.as_bytes().to_vec())
    .to_vec();
    prop_oneof![
        4 => Just(None),
        4 => select(odd).prop_map(Some),
        1 => "[ -~]{0,60}".prop_map(|value| Some(value.into_bytes())),
        1 => header_bytes(0..60).prop_map(Some),
    ]
}

fn idempotency_key_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    let fixed = [
        "fuzz-key-1".to_owned(),
        "fuzz-key-2".to_owned(),
        "k".repeat(128),
        "k".repeat(129),
        "k".repeat(500),
        String::new(),
        " ".to_owned(),
        "a b".to_owned(),
        "a\tb".to_owned(),
        "\t".to_owned(),
    ]
    .map(String::into_bytes)
    .to_vec();
    prop_oneof![
        6 => Just(None),
        3 => select(fixed).prop_map(Some),
        2 => "[!-~]{1,128}".prop_map(|key| Some(key.into_bytes())),
        1 => header_bytes(0..600).prop_map(Some),
        1 => header_bytes(0..40).prop_map(|mut key| {
            key.extend_from_slice(b"\xff\x80");
            Some(key)
        }),
    ]
}

/// `X-Purchase-Token` values: real ones (right or wrong shopper and sale),
/// forged ones, shopper JWTs (the wrong kind), garbage.
fn purchase_token_strategy(fixtures: &Fixtures) -> impl Strategy<Value = Option<Vec<u8>>> {
    let secret = SHOPPER_SECRET.as_bytes();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "sub": "fuzz-owner",
        "sale": fixtures.token_sale,
        "jti": "fuzzjti0000000000000000",
        "exp": now_secs() + 60,
    });
    let mut tokens: Vec<Vec<u8>> = fixtures
        .purchase_tokens
        .iter()
        .map(|token| token.clone().into_bytes())
        .collect();
    tokens.extend(
        [
            // Signed with the shopper secret itself, not the derived key.
            jwt(&hs256, &claims, Some((Algorithm::HS256, secret))),
            jwt(&json!({"alg": "none"}), &claims, None),
            jwt(&hs256, &claims, Some((Algorithm::HS256, b"guess"))),
            // A shopper token where a purchase token belongs.
            token("fuzz-owner"),
            format!("Bearer {}", fixtures.purchase_tokens[0]),
            format!("{}x", fixtures.purchase_tokens[0]),
            "not.a.jwt".to_owned(),
            String::new(),
        ]
        .map(String::into_bytes),
    );
    prop_oneof![
        6 => Just(None),
        6 => select(tokens).prop_map(Some),
        1 => "[!-~]{0,300}".prop_map(|token| Some(token.into_bytes())),
        1 => header_bytes(0..100).prop_map(Some),
    ]
}

fn method_strategy() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        6 => Just(Method::POST),
        3 => Just(Method::PATCH),
        3 => Just(Method::DELETE),
        2 => Just(Method::PUT),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::HEAD),
        1 => Just(Method::from_bytes(b"FUZZ").unwrap()),
    ]
}

/// Ids for path segments: empty, real, near-real, long, unicode, dot
/// segments, percent-encoded bytes.
fn id_strategy(fixtures: &Fixtures) -> impl Strategy<Value = String> {
    let real = vec![
        fixtures.live_sale.clone(),
        fixtures.extreme_sale.clone(),
        fixtures.upcoming_sale.clone(),
        fixtures.token_sale.clone(),
        fixtures.order.clone(),
        fixtures.other_order.clone(),
    ];
    let garbage = [
        "",
        ".",
        "..",
        "%2e%2e",
        "..%2f..%2fadmin%2fv1%2fsales",
        "%2F",
        "%00",
        "%ff%fe",
        "%C0%AF",
        "%E2%80%AE",
        "%25",
        "%",
        "%zz",
        "s_",
        "o_",
        "s_zzzzzzzzzzzz",
        "o_zzzzzzzzzzzz_zzzzzzzzzzzzzzzz",
        "null",
        "-1",
        "0",
        "💥",
        "ünïcødé",
        "s_%F0%9F%92%A5",
        "a;b=c",
        "*",
    ]
    .map(str::to_owned)
    .to_vec();
    let mutated =
        (select(real.clone()), 0usize..4, "[ -~]{0,3}").prop_map(|(id, how, extra)| match how {
            0 => format!("{id}{extra}"),
            1 => id[..id.len() / 2].to_owned(),
            2 => id.to_uppercase(),
            _ => format!("{extra}{id}"),
        });
    prop_oneof![
        12 => select(real),
        2 => mutated,
        4 => select(garbage),
        2 => "[a-zA-Z0-9_.~-]{0,64}",
        2 => any::<String>(),
        1 => (1usize..12_000).prop_map(|n| "x".repeat(n)),
        1 => prop::collection::vec(any::<u8>(), 1..40)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect::<String>()),
    ]
}

/// The routes, each with its own method and a weight: most cases aim at a
/// real route with its method (where the interesting code is), the rest at
/// a random method or a route that does not exist.
const ROUTES: [(&str, &str, usize); 24] = [
    ("GET", "/api/v1/sales", 1),
    ("GET", "/api/v1/sales/{id}", 2),
    ("POST", "/api/v1/sales/{id}/orders", 8),
    // The sale that requires purchase tokens, aimed at on purpose.
    ("POST", "/api/v1/sales/{token_sale}/orders", 3),
    // In the contract's plans: a 404 until it exists, fuzzed once it does.
    ("POST", "/api/v1/sales/{id}/purchase-token", 3),
    ("GET", "/api/v1/orders", 2),
    ("GET", "/api/v1/orders/{id}", 2),
    ("POST", "/api/v1/orders/{id}/cancel", 2),
    ("POST", "/api/v1/orders/{id}/pay", 2),
    ("POST", "/api/v1/payments/wechatpay/notify", 2),
    ("POST", "/admin/v1/sales", 4),
    ("GET", "/admin/v1/sales", 1),
    ("GET", "/admin/v1/sales/{id}", 2),
    ("PATCH", "/admin/v1/sales/{id}", 4),
    ("DELETE", "/admin/v1/sales/{id}", 2),
    ("GET", "/healthz", 1),
    ("GET", "/readyz", 1),
    ("GET", "/metrics", 1),
    ("GET", "/openapi.json", 1),
    ("GET", "/{id}", 1),
    ("POST", "/api/v1/{id}", 1),
    ("GET", "/api/v1/sales/{id}/{id}", 1),
    ("POST", "/admin/v1/sales/{id}/orders", 1),
    ("PUT", "/admin/v1/sales/{id}", 1),
];

/// (method, path): the route's own method three times in four.
fn request_line_strategy(
    fixtures: &Fixtures,
) -> impl Strategy<Value = (Method, String, &'static str)> {
    let routes: Vec<(&str, &'static str)> = ROUTES
        .iter()
        .flat_map(|&(method, template, weight)| std::iter::repeat_n((method, template), weight))
        .collect();
    let suffixes = ["/", "//", "?", "?quantity=1&x=%00", "#x", "/..", "/%2e%2e"].to_vec();
    let suffix = prop_oneof![8 => Just(""), 1 => select(suffixes)];
    let method = prop_oneof![3 => Just(None), 1 => method_strategy().prop_map(Some)];
    let token_sale = fixtures.token_sale.clone();
    (select(routes), method, id_strategy(fixtures), suffix).prop_map(
        move |((own_method, template), method, id, suffix)| {
            let method =
                method.unwrap_or_else(|| Method::from_bytes(own_method.as_bytes()).unwrap());
            let path = template
                .replace("{id}", &id)
                .replace("{token_sale}", &token_sale);
            let path = format!("{path}{suffix}");
            (method, path, template)
        },
    )
}

/// Any JSON value, with the numbers and strings most likely to hurt.
fn json_value_strategy() -> impl Strategy<Value = Value> {
    let interesting = vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(10_000),
        json!(10_001),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e30),
        json!(-0.0),
        json!(1.5),
        json!(""),
        json!("1"),
        json!("ended"),
        json!("2020-01-01T00:00:00Z"),
        json!("+262143-12-31T23:59:59Z"),
        json!("-262143-01-01T00:00:00Z"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
        select(interesting),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,16}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Raw JSON number (and not-quite-number) literals, some beyond what a
/// `serde_json::Value` can hold.
const QUANTITY_LITERALS: [&str; 30] = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "10000",
    "10001",
    "1e30",
    "-1e30",
    "1e400",
    "-1e400",
    "1e-400",
    "99999999999999999999999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1.0",
    "1.5",
    "-0",
    "\"1\"",
    "null",
    "true",
    "[1]",
    "{}",
    "0x10",
    "NaN",
    "Infinity",
    "01",
    "+1",
    ".5",
];

/// Patches an admin could send (allowed or not, depending on the sale).
fn valid_patches() -> Vec<Option<Vec<u8>>> {
    [
        json!({"title": "patched by fuzz"}),
        json!({"stock_total": 2_000}),
        json!({"stock_total": 1}),
        json!({"per_user_limit": 10_000}),
        json!({"ends_at": rfc3339_in(Duration::from_secs(7200), false)}),
        json!({"starts_at": rfc3339_in(Duration::from_secs(60), true)}),
        json!({}),
    ]
    .into_iter()
    .map(|patch| Some(patch.to_string().into_bytes()))
    .collect()
}

fn sale_body() -> Value {
    let mut body = live_sale(10, 2);
    body["title"] = json!("fuzzed sale");
    body
}

/// Bodies: none, random bytes, cut JSON, wrong types, deep nesting, huge
/// numbers, unknown fields, near-valid orders, sales and patches, and some
/// over the body limit.
fn body_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    let valid_texts = vec![
        r#"{"quantity":1}"#.to_owned(),
        r#"{"quantity":2,"note":"x"}"#.to_owned(),
        sale_body().to_string(),
        json!({"title": "patched by fuzz", "stock_total": 50}).to_string(),
        r#"{"resource":{"ciphertext":"AAAA","nonce":"n","associated_data":"t"}}"#.to_owned(),
    ];
    let truncated = (select(valid_texts), any::<prop::sample::Index>()).prop_map(|(text, cut)| {
        let cut = cut.index(text.len());
        Some(text.as_bytes()[..cut].to_vec())
    });
    let quantity = (select(QUANTITY_LITERALS.to_vec()), "[ \t\r\n]{0,2}")
        .prop_map(|(q, ws)| Some(format!(r#"{ws}{{"quantity":{q}}}{ws}"#).into_bytes()));
    // Bodies stay within about 24 KiB here: far larger ones are
    // `oversized_bodies_get_an_answer_not_a_reset`'s business.
    let nested = (
        1usize..4_000,
        select(vec!["[", "{\"a\":", "[{\"quantity\":"]),
        any::<bool>(),
    )
        .prop_map(|(depth, open, balanced)| {
            let depth = depth.min(20_000 / open.len());
            let mut text = open.repeat(depth);
            if balanced {
                text.push('1');
                let close = if open == "[" { "]" } else { "}" };
                text.push_str(&close.repeat(depth));
            }
            Some(text.into_bytes())
        });
    let fields = vec![
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
        "require_purchase_token",
        "quantity",
        "colour",
    ];
    let sale_with_wrong_field =
        (select(fields.clone()), json_value_strategy()).prop_map(|(field, value)| {
            let mut body = sale_body();
            body[field] = value;
            Some(body.to_string().into_bytes())
        });
    let sale_with_raw_field = (select(fields.clone()), select(QUANTITY_LITERALS.to_vec()))
        .prop_map(|(field, raw)| {
            let mut body = sale_body();
            body[field] = json!("@RAW@");
            Some(body.to_string().replace("\"@RAW@\"", raw).into_bytes())
        });
    let patch = (select(fields), json_value_strategy())
        .prop_map(|(field, value)| Some(json!({ field: value }).to_string().into_bytes()));
    // Ending a sale early is valid too; rarer, so the fixtures stay live.
    let mut known_patches = valid_patches();
    known_patches.push(Some(br#"{"status":"ended"}"#.to_vec()));
    let unknown_field = ("\\PC{0,12}", json_value_strategy())
        .prop_map(|(key, value)| Some(json!({"quantity": 1, key: value}).to_string().into_bytes()));
    let oversized = (15_000usize..24_000)
        .prop_map(|n| Some(format!(r#"{{"quantity":1,"pad":"{}"}}"#, "x".repeat(n)).into_bytes()));
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Vec::new())),
        1 => Just(Some(b" \r\n\t ".to_vec())),
        1 => Just(Some(b"\x0c".to_vec())),
        3 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Some),
        3 => truncated,
        4 => quantity,
        2 => nested,
        3 => json_value_strategy().prop_map(|value| Some(value.to_string().into_bytes())),
        3 => sale_with_wrong_field,
        2 => sale_with_raw_field,
        2 => patch,
        2 => select(known_patches),
        1 => Just(Some(sale_body().to_string().into_bytes())),
        2 => unknown_field,
        1 => oversized,
    ]
}

/// Half the time the route's valid value ("baseline"), else a fuzzed one.
fn or_baseline<S>(fuzzed: S) -> impl Strategy<Value = Option<S::Value>>
where
    S: Strategy,
    S::Value: Clone,
{
    prop_oneof![Just(None), fuzzed.prop_map(Some)]
}

/// A request: each part (request line aside) is either what a valid request
/// to that route would carry or a fuzzed one, so that many cases get past
/// authentication and parsing to the engine's deeper checks with one or two
/// things wrong.
fn case_strategy(fixtures: &Fixtures) -> impl Strategy<Value = Case> {
    let shoppers = fixtures.shoppers.clone();
    let admin = fixtures.admin.clone();
    let purchase_tokens = fixtures.purchase_tokens.clone();
    let patches = valid_patches();
    (
        request_line_strategy(fixtures),
        or_baseline(authorization_strategy(fixtures)),
        or_baseline(content_type_strategy()),
        or_baseline(idempotency_key_strategy()),
        or_baseline(purchase_token_strategy(fixtures)),
        or_baseline(body_strategy()),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            move |(
                (method, path, template),
                authorization,
                content_type,
                idempotency_key,
                purchase_token,
                body,
                pick,
            )| {
                // On the token sale: fuzz-owner or fuzz-other, with the
                // purchase token issued to them.
                let (baseline_authorization, baseline_purchase_token) =
                    if template.starts_with("/admin/") {
                        (Some(admin.clone()), None)
                    } else if template.contains("{token_sale}") {
                        let who = pick.index(2);
                        (
                            Some(shoppers[who].clone()),
                            Some(purchase_tokens[who].clone().into_bytes()),
                        )
                    } else if template.starts_with("/api/v1/orders")
                        || template.starts_with("/api/v1/sales/{id}/")
                    {
                        (Some(pick.get(&shoppers).clone()), None)
                    } else {
                        (None, None)
                    };
                let baseline_body = match (template, method.as_str()) {
                    ("/admin/v1/sales", "POST") => Some(sale_body().to_string().into_bytes()),
                    ("/admin/v1/sales/{id}", "PATCH") => pick.get(&patches).clone(),
                    (template, "POST") if template.ends_with("/orders") => {
                        Some(format!(r#"{{"quantity":{}}}"#, pick.index(3) + 1).into_bytes())
                    }
                    _ => None,
                };
                let baseline_content_type =
                    baseline_body.as_ref().map(|_| b"application/json".to_vec());
                Case {
                    method,
                    path,
                    authorization: authorization.unwrap_or(baseline_authorization),
                    content_type: content_type.unwrap_or(baseline_content_type),
                    idempotency_key: idempotency_key.unwrap_or(None),
                    purchase_token: purchase_token.unwrap_or(baseline_purchase_token),
                    body: body.unwrap_or(baseline_body),
                }
            },
        )
}

/// Sends one case and checks the property. A case that no HTTP client could
/// send (an unparsable URL) is rejected, not failed.
async fn check(
    client: &reqwest::Client,
    app: &TestApp,
    fixtures: &Fixtures,
    tally: &Mutex<Tally>,
    case: Case,
) -> Result<(), TestCaseError> {
    let Ok(url) = Url::parse(&app.url(&case.path)) else {
        tally.lock().unwrap().rejected += 1;
        return Err(TestCaseError::reject("not a URL"));
    };
    // The path as the server sees it (the URL parser resolves dot segments).
    let path = url.path().to_owned();
    let mut request = client.request(case.method.clone(), url);
    for (name, value) in [
        (AUTHORIZATION.as_str(), &case.authorization),
        (CONTENT_TYPE.as_str(), &case.content_type),
        ("idempotency-key", &case.idempotency_key),
        ("x-purchase-token", &case.purchase_token),
    ] {
        if let Some(value) = value {
            let value = HeaderValue::from_bytes(value)
                .map_err(|err| TestCaseError::fail(format!("test bug: header {name}: {err}")))?;
            request = request.header(name, value);
        }
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let request = match request.build() {
        Ok(request) => request,
        Err(_) => {
            tally.lock().unwrap().rejected += 1;
            return Err(TestCaseError::reject("the client cannot build it"));
        }
    };
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(err) if err.is_builder() => {
            tally.lock().unwrap().rejected += 1;
            return Err(TestCaseError::reject("the client cannot send it"));
        }
        Err(err) => {
            return Err(TestCaseError::fail(format!(
                "no response (connection dropped or timed out): {err:?}"
            )))
        }
    };
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true");
    let body = response
        .bytes()
        .await
        .map_err(|err| TestCaseError::fail(format!("{status}: the body was cut short: {err:?}")))?;
    let shown = Shown(&body);
    {
        let mut tally = tally.lock().unwrap();
        tally.requests += 1;
        *tally.statuses.entry(status.as_u16()).or_default() += 1;
    }

    prop_assert!(!status.is_server_error(), "5xx: {} {:?}", status, shown);
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "neither 2xx nor 4xx: {} {:?}",
        status,
        shown
    );
    if status.is_success() {
        // Whatever else is wrong with it, a request only succeeds on a
        // route that needs a token when it carries the right kind.
        let caller = fixtures.caller(case.authorization.as_deref());
        let admin_route = path.starts_with("/admin/");
        let shopper_route = path.starts_with("/api/v1/orders")
            || (path.starts_with("/api/v1/sales/")
                && (path.ends_with("/orders") || path.ends_with("/purchase-token")));
        prop_assert!(
            !admin_route || caller == Caller::Admin,
            "{} on an admin route as {:?}",
            status,
            caller
        );
        prop_assert!(
            !shopper_route || caller == Caller::Shopper,
            "{} on a shopper route as {:?}",
            status,
            caller
        );
        // A sale that requires purchase tokens sells only against one the
        // engine issued to this shopper for this sale (a replay repeats an
        // earlier answer, which was checked when it was first given).
        let token_sale_orders = format!("/api/v1/sales/{}/orders", fixtures.token_sale);
        if path == token_sale_orders && !replayed {
            let caller = fixtures.shopper_id(case.authorization.as_deref());
            let issued_to_caller = fixtures.purchase_tokens[..2]
                .iter()
                .zip(["fuzz-owner", "fuzz-other"])
                .any(|(purchase, shopper)| {
                    case.purchase_token.as_deref() == Some(purchase.as_bytes())
                        && caller == Some(shopper)
                });
            prop_assert!(
                issued_to_caller,
                "{} on a sale requiring purchase tokens without the caller's own: {:?}",
                status,
                shown
            );
            let mut tally = tally.lock().unwrap();
            tally.token_sale_orders += 1;
            let spent = case.purchase_token.clone().unwrap_or_default();
            prop_assert!(
                !tally.spent_purchase_tokens.contains(&spent),
                "{} with a purchase token already spent: {:?}",
                status,
                shown
            );
            tally.spent_purchase_tokens.push(spent);
        }
        return Ok(());
    }
    if case.method == Method::HEAD {
        return Ok(());
    }
    let error: Value = serde_json::from_slice(&body).map_err(|err| {
        TestCaseError::fail(format!("{status} without a JSON body ({err}): {shown:?}"))
    })?;
    let code = error["error"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_owned();
    tally
        .lock()
        .unwrap()
        .codes
        .entry(format!("{} {code}", status.as_u16()))
        .and_modify(|n| *n += 1)
        .or_insert(1);
    prop_assert!(
        ErrorCode::ALL.iter().any(|known| known.as_str() == code),
        "{} with an undocumented error code: {}",
        status,
        error
    );
    prop_assert!(
        statuses_of(&code).contains(&status.as_u16()),
        "code {} comes with status {}: {}",
        code,
        status,
        error
    );
    prop_assert!(
        error["error"]["message"].is_string(),
        "{} without error.message: {}",
        status,
        error
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        prop_assert!(retry_after.is_some(), "429 without Retry-After: {}", error);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_documented_4xx_never_5xx() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    let upcoming_sale = {
        let mut body = live_sale(5, 1);
        body["starts_at"] = json!(rfc3339_in(Duration::from_secs(3600), false));
        body["ends_at"] = json!(rfc3339_in(Duration::from_secs(7200), false));
        app.create_sale(body).await
    };
    let extreme_sale = {
        let mut body = live_sale(1_000_000_000, 10_000);
        body["price_cents"] = json!(10_000_000_000_i64);
        body["payment_timeout_secs"] = json!(7200);
        app.create_sale(body).await
    };
    let token_sale = {
        let mut body = live_sale(1_000, 2);
        body["require_purchase_token"] = json!(true);
        app.create_sale(body).await
    };
    let live = app.create_sale(live_sale(1_000, 3)).await;
    let order = app.buy(&live, "fuzz-owner").await;
    let other_order = app.buy(&live, "fuzz-other").await;
    let mut purchase_tokens = Vec::new();
    for (shopper, sale) in [
        ("fuzz-owner", &token_sale),
        ("fuzz-other", &token_sale),
        ("fuzz-owner", &live),
    ] {
        let path = format!("/api/v1/sales/{sale}/purchase-token");
        let response = app.shopper_post(shopper, &path).await;
        let status = response.status();
        let issued: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{shopper}'s purchase token: {issued}"
        );
        purchase_tokens.push(issued["purchase_token"].as_str().unwrap().to_owned());
    }
    let shopper_ids: Vec<String> = ["fuzz-owner".to_owned(), "fuzz-other".to_owned()]
        .into_iter()
        .chain((0..20).map(|n| format!("fuzz-shopper-{n}")))
        .collect();
    let fixtures = Fixtures {
        live_sale: live,
        extreme_sale,
        upcoming_sale,
        token_sale,
        order: order["id"].as_str().unwrap().to_owned(),
        other_order: other_order["id"].as_str().unwrap().to_owned(),
        purchase_tokens,
        shoppers: shopper_ids
            .iter()
            .map(|shopper| format!("Bearer {}", token(shopper)).into_bytes())
            // Spaces around the token are trimmed: still valid.
            .chain([format!("Bearer   {}  ", token("fuzz-other")).into_bytes()])
            .collect(),
        shopper_ids: shopper_ids
            .iter()
            .cloned()
            .chain(["fuzz-other".to_owned()])
            .collect(),
        admin: format!("Bearer {ADMIN_TOKEN}").into_bytes(),
    };

    let client = fresh_connection_client();
    let mut config = ProptestConfig::with_cases(CASES);
    config.failure_persistence = None;
    config.max_shrink_iters = 512;
    config.max_global_rejects = CASES;
    let mut runner = TestRunner::new(config);
    let strategy = case_strategy(&fixtures);
    let tally = Mutex::new(Tally::default());
    let handle = tokio::runtime::Handle::current();

    let started = Instant::now();
    // The runner is synchronous: each case blocks on its request, on this
    // thread, while the engine runs on the runtime's workers.
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |case| {
                handle.block_on(check(&client, &app, &fixtures, &tally, case))
            })
            .map_err(|failure| failure.to_string())
    });
    let elapsed = started.elapsed();
    let tally = tally.into_inner().unwrap();
    println!(
        "api_fuzz: {} requests ({} generated cases rejected as unsendable) in {:.1} s, {:.2} ms each",
        tally.requests,
        tally.rejected,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / tally.requests.max(1) as f64
    );
    println!("api_fuzz: statuses {:?}", tally.statuses);
    println!("api_fuzz: error codes {:?}", tally.codes);
    println!(
        "api_fuzz: {} new orders on the sale that requires purchase tokens",
        tally.token_sale_orders
    );
    if let Err(err) = result {
        panic!("{err}");
    }
    assert!(
        tally
            .statuses
            .keys()
            .any(|status| (200..300).contains(status)),
        "some generated requests were valid: {:?}",
        tally.statuses
    );

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "still alive after the fuzz"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "still ready after the fuzz");
    for sale in [
        &fixtures.live_sale,
        &fixtures.extreme_sale,
        &fixtures.upcoming_sale,
        &fixtures.token_sale,
    ] {
        assert_stats_consistent(&app.sale(sale).await);
    }
}

/// A client that opens a fresh connection per request: a transport error is
/// then the engine's doing, never a pooled connection the server had closed.
fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Bodies far over the body limit (16 KiB in the test config), sent to
/// routes that read a body (413 `payload_too_large` expected) and to routes
/// that take none (their usual answer): every request gets a whole answer,
/// never a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_an_answer_not_a_reset() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    let sale = app.create_sale(live_sale(10, 1)).await;
    let client = fresh_connection_client();
    let shopper = format!("Bearer {}", token("big-sender"));
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let routes: Vec<(Method, String, Option<&str>, StatusCode)> = vec![
        (
            Method::POST,
            format!("/api/v1/sales/{sale}/orders"),
            Some(&shopper),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/admin/v1/sales".into(),
            Some(&admin),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Method::GET, "/api/v1/sales".into(), None, StatusCode::OK),
        (
            Method::GET,
            "/api/v1/no-such-route".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    let mut failures = Vec::new();
    let mut sent = 0;
    for size in [96 * 1024, 1024 * 1024] {
        let body = format!(r#"{{"quantity":1,"pad":"{}"}}"#, "x".repeat(size));
        for (method, path, authorization, expected) in &routes {
            for _ in 0..10 {
                sent += 1;
                let mut request = client
                    .request(method.clone(), app.url(path))
                    .body(body.clone());
                if let Some(authorization) = authorization {
                    request = request.header(AUTHORIZATION, *authorization);
                }
                let what = format!("{method} {path} with a {size}-byte body");
                match request.send().await {
                    Err(err) => failures.push(format!("{what}: no answer: {err:?}")),
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Err(err) => {
                                failures.push(format!("{what}: {status}, body cut short: {err:?}"))
                            }
                            Ok(_) if status != *expected => {
                                failures.push(format!("{what}: {status}, expected {expected}"))
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} requests with an oversized body got no whole answer:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let view = app.sale(&sale).await;
    assert_eq!(
        view["stats"]["remaining"], 10,
        "no oversized order took stock"
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

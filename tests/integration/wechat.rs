//! A stand-in for WeChat Pay.
//!
//! - [`WeChatPaySim`]: WeChat Pay's keys and notifications: a platform key
//!   pair and an APIv3 key; notifications built the way WeChat Pay API v3
//!   does: the transaction JSON encrypted with AEAD_AES_256_GCM under the
//!   APIv3 key, the body signed with RSA-SHA256 (PKCS#1 v1.5) over
//!   `"{timestamp}\n{nonce}\n{body}\n"`.
//! - [`WeChatPayServer`]: WeChat Pay's API as an axum server on a free
//!   port: it verifies every request's `Authorization` signature with the
//!   merchant's public key, answers prepay, close, query and refund as
//!   WeChat Pay documents them, signs every answer with the platform key,
//!   keeps the WeChat Pay orders (paid, closed) and refunds (one per
//!   `out_refund_no`: a repeat is answered with the refund made first, as
//!   WeChat Pay does, and counted), and can be told to fail, stall, refuse,
//!   take a refund and lose the answer, or answer forged or stale
//!   signatures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{FixedOffset, SecondsFormat, Utc};
use flashsale::config::{Config, PaymentMode};
use flashsale::payments::wechatpay::{
    Account, MerchantKey, PlatformKeys, WeChatPay, WeChatPayClient, WeChatPayVerifier,
};
use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::task::JoinHandle;

pub const MCHID: &str = "1230000109";
pub const APPID: &str = "wxd678efh567hg6787";
pub const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD00000000";
pub const NOTIFY_URL: &str = "https://shop.example.com/api/v1/payments/wechatpay/notify";

/// The merchant's API key pair, one for every test: 2048-bit generation
/// is slow.
static MERCHANT_KEY: LazyLock<rsa::PrivateKey> = LazyLock::new(|| {
    rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation")
});

/// The merchant API private key, PKCS#8 PEM (as `apiclient_key.pem`).
pub fn merchant_key_pem() -> String {
    MERCHANT_KEY
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 PEM")
        .to_string()
}

/// Whether `signature` (base64) is the merchant key's over `message`.
pub fn signed_by_merchant(message: &str, signature: &str) -> bool {
    let Ok(bytes) = BASE64.decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(MERCHANT_KEY.to_public_key())
        .verify(message.as_bytes(), &signature)
        .is_ok()
}

/// WeChat Pay, as far as notifications go.
pub struct WeChatPaySim {
    signing_key: SigningKey<Sha256>,
    platform_key_pem: String,
    apiv3_key: String,
    /// The platform certificate's serial, sent as `Wechatpay-Serial`.
    serial: String,
}

impl WeChatPaySim {
    /// A fresh 2048-bit platform key pair and a random 32-character
    /// alphanumeric APIv3 key.
    pub fn new() -> Self {
        let private_key =
            rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation");
        let platform_key_pem = private_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM");
        let mut rng = rand::rng();
        Self {
            signing_key: SigningKey::new(private_key),
            platform_key_pem,
            apiv3_key: Alphanumeric.sample_string(&mut rng, 32),
            serial: (0..40)
                .map(|_| char::from(b"0123456789ABCDEF"[rng.random_range(0..16)]))
                .collect(),
        }
    }

    /// The platform public key, SPKI PEM ("BEGIN PUBLIC KEY").
    pub fn platform_key_pem(&self) -> String {
        self.platform_key_pem.clone()
    }

    pub fn apiv3_key(&self) -> String {
        self.apiv3_key.clone()
    }

    /// The serial `Wechatpay-Serial` names this platform key by.
    pub fn serial(&self) -> String {
        self.serial.clone()
    }

    /// WeChat Pay after a key rotation: the same APIv3 key, a new platform
    /// key pair under a new serial.
    pub fn rotated(&self) -> Self {
        Self {
            apiv3_key: self.apiv3_key.clone(),
            ..Self::new()
        }
    }

    /// The engine's side of WeChat Pay, built from the library's parts as
    /// startup builds them, trusting this platform key and calling
    /// `base_url`.
    pub fn engine_side(&self, base_url: &str) -> WeChatPay {
        let keys = Arc::new(PlatformKeys::single(&self.platform_key_pem).expect("platform key"));
        let account = Account {
            mchid: MCHID.into(),
            appid: APPID.into(),
            notify_url: NOTIFY_URL.into(),
            base_url: base_url.parse().expect("base URL"),
            timeout: Duration::from_secs(2),
        };
        let merchant = MerchantKey::new(&merchant_key_pem(), MERCHANT_SERIAL).expect("key");
        WeChatPay {
            verifier: WeChatPayVerifier::new(Arc::clone(&keys), &self.apiv3_key).expect("verifier"),
            client: WeChatPayClient::new(account, merchant, keys).expect("client"),
        }
    }

    /// A SUCCESS transaction notification for `order_id` paying
    /// `amount_cents` CNY, signed now.
    pub fn payment(&self, order_id: &str, amount_cents: i64) -> Notification {
        self.notification_for(json!({
            "appid": "wxd678efh567hg6787",
            "mchid": "1230000109",
            "out_trade_no": order_id,
            "transaction_id": format!("4200{}", digits(24)),
            "trade_type": "JSAPI",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "CMC",
            "attach": "",
            "success_time": beijing_now(),
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {
                "total": amount_cents,
                "payer_total": amount_cents,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }))
    }

    /// A notification carrying `transaction` (the decrypted resource) as
    /// given, signed now. The event type follows its `trade_state`.
    pub fn notification_for(&self, transaction: Value) -> Notification {
        let state = transaction["trade_state"].as_str().unwrap_or("SUCCESS");
        self.notification_of("transaction", &format!("TRANSACTION.{state}"), &transaction)
    }

    /// A refund result notification carrying `refund` (the decrypted
    /// resource), signed now: event type `REFUND.<refund_status>`.
    pub fn refund_notification_for(&self, refund: &Value) -> Notification {
        let state = refund["refund_status"].as_str().unwrap_or("SUCCESS");
        self.notification_of("refund", &format!("REFUND.{state}"), refund)
    }

    /// A notification of `event_type` whose resource of `original_type`
    /// is `resource`, encrypted and signed now.
    fn notification_of(
        &self,
        original_type: &str,
        event_type: &str,
        resource: &Value,
    ) -> Notification {
        let resource_nonce = Alphanumeric.sample_string(&mut rand::rng(), 12);
        let body = json!({
            "id": format!("EV-{}", digits(19)),
            "create_time": beijing_now(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": self.encrypt(&resource.to_string(), &resource_nonce),
                "associated_data": "transaction",
                "nonce": resource_nonce,
            },
        });
        Notification {
            timestamp: unix_now().to_string(),
            nonce: Alphanumeric.sample_string(&mut rand::rng(), 32),
            signature: String::new(),
            serial: self.serial.clone(),
            body: body.to_string(),
        }
        .resigned(self)
    }

    /// Base64 of AES-256-GCM(plaintext) with the tag appended, as in
    /// `resource.ciphertext`.
    fn encrypt(&self, plaintext: &str, nonce: &str) -> String {
        let cipher = Aes256Gcm::new_from_slice(self.apiv3_key.as_bytes()).expect("32-byte key");
        let nonce: &[u8; 12] = nonce.as_bytes().try_into().expect("12-byte nonce");
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: b"transaction",
        };
        BASE64.encode(cipher.encrypt(nonce.into(), payload).expect("encrypt"))
    }

    fn sign(&self, message: &str) -> String {
        BASE64.encode(self.signing_key.sign(message.as_bytes()).to_vec())
    }
}

/// One notification as WeChat Pay posts it: four headers and a JSON body.
#[derive(Clone, Debug)]
pub struct Notification {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
    pub body: String,
}

impl Notification {
    /// The request headers, names as WeChat Pay sends them.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Wechatpay-Timestamp", self.timestamp.clone()),
            ("Wechatpay-Nonce", self.nonce.clone()),
            ("Wechatpay-Signature", self.signature.clone()),
            ("Wechatpay-Serial", self.serial.clone()),
        ]
    }

    /// Signs again with `sim`'s key, after the caller changed a field (a
    /// stale timestamp, say); the signature covers timestamp, nonce and body.
    pub fn resigned(self, sim: &WeChatPaySim) -> Self {
        let message = format!("{}\n{}\n{}\n", self.timestamp, self.nonce, self.body);
        Self {
            signature: sim.sign(&message),
            ..self
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Now in China Standard Time, as WeChat Pay writes times.
fn beijing_now() -> String {
    let cst = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    Utc::now()
        .with_timezone(&cst)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn digits(count: usize) -> String {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from(b'0' + rng.random_range(0..10)))
        .collect()
}

/// How the stand-in answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As WeChat Pay documents.
    Normal,
    /// 500 `SYSTEM_ERROR` to every call.
    ServerError,
    /// Never answers (past any client's timeout).
    Stall,
    /// 400 with this error code to every call.
    Refuse(&'static str),
    /// Answers signed with a key WeChat Pay does not hold.
    ForgedAnswers,
    /// Answers signed 10 minutes ago.
    StaleAnswers,
    /// Takes a refund as asked, then never answers (the answer is lost):
    /// the engine must send it again, and WeChat Pay refunds once.
    TakeRefundThenStall,
}

/// One WeChat Pay order, as the stand-in keeps it.
#[derive(Debug, Clone)]
pub struct WxOrder {
    pub prepay_id: String,
    /// The jsapi call's body, as received.
    pub request: Value,
    pub state: WxState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WxState {
    NotPay,
    /// Paid, with its transaction id.
    Paid(String),
    Closed,
}

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct WxCall {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Whether its `Authorization` verified with the merchant public key.
    pub authorized: bool,
}

/// One refund, as the stand-in keeps it (by `out_refund_no`).
#[derive(Debug, Clone)]
pub struct WxRefund {
    pub out_trade_no: String,
    /// The refunded payment's transaction id.
    pub transaction_id: String,
    pub refund_id: String,
    /// `PROCESSING` until a notification settles it.
    pub status: String,
    /// The refund call's body, as first received.
    pub request: Value,
    /// Refund calls received for this `out_refund_no` (a repeat is
    /// answered with this same refund).
    pub calls: u32,
}

#[derive(Default)]
struct Ledger {
    orders: HashMap<String, WxOrder>,
    refunds: HashMap<String, WxRefund>,
    calls: Vec<WxCall>,
}

#[derive(Clone)]
struct StandIn {
    sim: Arc<WeChatPaySim>,
    /// Signs forged answers.
    stranger: Arc<WeChatPaySim>,
    ledger: Arc<Mutex<Ledger>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// WeChat Pay's API on a free port (see the module docs). Also keeps the
/// engine's key files.
pub struct WeChatPayServer {
    pub sim: Arc<WeChatPaySim>,
    pub base_url: String,
    state: StandIn,
    server: JoinHandle<()>,
    keys: tempfile::TempDir,
    /// The platform key setting: one file, or a directory by serial.
    platform_key_path: PathBuf,
}

impl WeChatPayServer {
    /// With one platform key file.
    pub async fn start() -> Self {
        Self::start_with_key_directory(false).await
    }

    /// With the platform keys in a directory of `<serial>.pem` when
    /// `directory`, else in one file.
    pub async fn start_with_key_directory(directory: bool) -> Self {
        let sim = Arc::new(WeChatPaySim::new());
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(keys.path().join("merchant.pem"), merchant_key_pem()).unwrap();
        let platform_key_path = if directory {
            let dir = keys.path().join("platform");
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(
                dir.join(format!("{}.pem", sim.serial())),
                sim.platform_key_pem(),
            )
            .unwrap();
            dir
        } else {
            let file = keys.path().join("platform.pem");
            std::fs::write(&file, sim.platform_key_pem()).unwrap();
            file
        };
        let state = StandIn {
            sim: Arc::clone(&sim),
            stranger: Arc::new(WeChatPaySim::new()),
            ledger: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Normal)),
        };
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            sim,
            base_url,
            state,
            server,
            keys,
            platform_key_path,
        }
    }

    /// The engine settings of WeChat Pay mode against this stand-in.
    pub fn configure(&self, config: &mut Config) {
        config.payments = Some(PaymentMode::Wechatpay);
        config.wechatpay_platform_key = Some(self.platform_key_path.clone());
        config.wechatpay_apiv3_key = Some(self.sim.apiv3_key());
        config.wechatpay_mchid = Some(MCHID.into());
        config.wechatpay_appid = Some(APPID.into());
        config.wechatpay_merchant_key = Some(self.keys.path().join("merchant.pem"));
        config.wechatpay_merchant_serial = Some(MERCHANT_SERIAL.into());
        config.wechatpay_notify_url = Some(NOTIFY_URL.into());
        config.wechatpay_base_url = self.base_url.clone();
        config.wechatpay_timeout_ms = 500;
    }

    /// Adds `sim`'s platform key to the engine's key directory, as an
    /// operator does for a rotation.
    pub fn add_platform_key(&self, sim: &WeChatPaySim) {
        assert!(self.platform_key_path.is_dir(), "keys are in one file");
        std::fs::write(
            self.platform_key_path.join(format!("{}.pem", sim.serial())),
            sim.platform_key_pem(),
        )
        .unwrap();
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock() = behaviour;
    }

    /// The WeChat Pay orders made, by `out_trade_no`.
    pub fn orders(&self) -> HashMap<String, WxOrder> {
        self.state.ledger.lock().orders.clone()
    }

    /// Every call received, oldest first.
    pub fn calls(&self) -> Vec<WxCall> {
        self.state.ledger.lock().calls.clone()
    }

    /// The refunds made, by `out_refund_no`.
    pub fn refunds(&self) -> HashMap<String, WxRefund> {
        self.state.ledger.lock().refunds.clone()
    }

    /// WeChat Pay settles the refund of `out_refund_no` (which must exist)
    /// as `status` (`SUCCESS`, `ABNORMAL` or `CLOSED`): the refund result
    /// notification it then posts.
    pub fn settle_refund(&self, out_refund_no: &str, status: &str) -> Notification {
        let mut ledger = self.state.ledger.lock();
        let refund = ledger
            .refunds
            .get_mut(out_refund_no)
            .unwrap_or_else(|| panic!("no refund {out_refund_no}"));
        refund.status = status.to_owned();
        let resource = refund_json(out_refund_no, refund, "refund_status");
        drop(ledger);
        self.sim.refund_notification_for(&resource)
    }

    /// The shopper pays the WeChat Pay order of `out_trade_no` (it must
    /// exist and not be closed): the notification WeChat Pay then posts.
    pub fn pay(&self, out_trade_no: &str) -> Notification {
        let mut ledger = self.state.ledger.lock();
        let order = ledger
            .orders
            .get_mut(out_trade_no)
            .unwrap_or_else(|| panic!("no WeChat Pay order {out_trade_no}"));
        assert_eq!(order.state, WxState::NotPay, "{out_trade_no} can be paid");
        let transaction_id = format!("4200{}", digits(24));
        order.state = WxState::Paid(transaction_id);
        let transaction = transaction_json(out_trade_no, order);
        drop(ledger);
        self.sim.notification_for(transaction)
    }
}

impl WeChatPayServer {
    /// The shopper pays the WeChat Pay order of `out_trade_no` whatever
    /// its state: the race no close can prevent (WeChat Pay completed the
    /// payment after answering our close). The notification it posts.
    pub fn pay_anyway(&self, out_trade_no: &str) -> Notification {
        let mut ledger = self.state.ledger.lock();
        let order = ledger
            .orders
            .get_mut(out_trade_no)
            .unwrap_or_else(|| panic!("no WeChat Pay order {out_trade_no}"));
        order.state = WxState::Paid(format!("4200{}", digits(24)));
        let transaction = transaction_json(out_trade_no, order);
        drop(ledger);
        self.sim.notification_for(transaction)
    }
}

impl Drop for WeChatPayServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The transaction of a WeChat Pay order, as query answers and payment
/// notifications carry it.
fn transaction_json(out_trade_no: &str, order: &WxOrder) -> Value {
    let (state, transaction_id) = match &order.state {
        WxState::NotPay => ("NOTPAY", None),
        WxState::Paid(id) => ("SUCCESS", Some(id.clone())),
        WxState::Closed => ("CLOSED", None),
    };
    let amount = &order.request["amount"];
    let mut transaction = json!({
        "appid": order.request["appid"],
        "mchid": order.request["mchid"],
        "out_trade_no": out_trade_no,
        "trade_type": "JSAPI",
        "trade_state": state,
        "trade_state_desc": state,
        "payer": order.request["payer"],
        "amount": {
            "total": amount["total"],
            "payer_total": amount["total"],
            "currency": amount["currency"],
            "payer_currency": amount["currency"],
        },
    });
    if let Some(id) = transaction_id {
        transaction["transaction_id"] = json!(id);
        transaction["success_time"] = json!(beijing_now());
        transaction["bank_type"] = json!("CMC");
    }
    transaction
}

/// A refund as WeChat Pay writes it: in the refund call's answer (its
/// state in `status`) and in a refund notification's resource (in
/// `refund_status`).
fn refund_json(out_refund_no: &str, refund: &WxRefund, status_field: &str) -> Value {
    let amount = &refund.request["amount"];
    let mut json = json!({
        "mchid": MCHID,
        "out_trade_no": refund.out_trade_no,
        "transaction_id": refund.transaction_id,
        "out_refund_no": out_refund_no,
        "refund_id": refund.refund_id,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": beijing_now(),
        "amount": {
            "total": amount["total"],
            "refund": amount["refund"],
            "payer_total": amount["total"],
            "payer_refund": amount["refund"],
            "currency": amount["currency"],
        },
    });
    json[status_field] = json!(refund.status);
    if refund.status == "SUCCESS" {
        json["success_time"] = json!(beijing_now());
    }
    json
}

/// `POST /v3/refund/domestic/refunds`: one refund per `out_refund_no`; a
/// repeat is answered with the first (WeChat Pay's idempotency). Only a
/// paid order can be refunded.
fn take_refund(state: &StandIn, body: &str) -> (StatusCode, String) {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let (Some(out_refund_no), Some(out_trade_no)) = (
        request["out_refund_no"].as_str(),
        request["out_trade_no"].as_str(),
    ) else {
        return (StatusCode::BAD_REQUEST, error_body("PARAM_ERROR"));
    };
    let mut ledger = state.ledger.lock();
    let paid = match ledger.orders.get(out_trade_no).map(|order| &order.state) {
        Some(WxState::Paid(transaction_id)) => Some(transaction_id.clone()),
        _ => None,
    };
    if paid.is_none() && !ledger.refunds.contains_key(out_refund_no) {
        return (StatusCode::BAD_REQUEST, error_body("INVALID_REQUEST"));
    }
    let refund = ledger
        .refunds
        .entry(out_refund_no.to_owned())
        .or_insert_with(|| WxRefund {
            out_trade_no: out_trade_no.to_owned(),
            transaction_id: paid.unwrap_or_default(),
            refund_id: format!("5030{}", digits(25)),
            status: "PROCESSING".into(),
            request: request.clone(),
            calls: 0,
        });
    refund.calls += 1;
    (
        StatusCode::OK,
        refund_json(out_refund_no, refund, "status").to_string(),
    )
}

/// Every call: checks its signature, records it, and answers as told.
async fn answer(
    State(state): State<StandIn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorized = authorized(&method, &path, &headers, &body);
    state.ledger.lock().calls.push(WxCall {
        method: method.to_string(),
        path: path.clone(),
        authorized,
    });
    if !authorized {
        return signed(&state, StatusCode::UNAUTHORIZED, error_body("SIGN_ERROR"));
    }
    let behaviour = *state.behaviour.lock();
    match behaviour {
        Behaviour::ServerError => {
            return signed(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body("SYSTEM_ERROR"),
            )
        }
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Behaviour::Refuse(code) => {
            return signed(&state, StatusCode::BAD_REQUEST, error_body(code));
        }
        _ => {}
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v3", "refund", "domestic", "refunds"]) => {
            let (status, answer) = take_refund(&state, &body);
            if behaviour == Behaviour::TakeRefundThenStall {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
            signed(&state, status, answer)
        }
        ("POST", ["v3", "pay", "transactions", "jsapi"]) => {
            let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let Some(out_trade_no) = request["out_trade_no"].as_str() else {
                return signed(&state, StatusCode::BAD_REQUEST, error_body("PARAM_ERROR"));
            };
            let mut ledger = state.ledger.lock();
            // One WeChat Pay order per out_trade_no: a repeat gets its
            // prepay id again.
            let order = ledger
                .orders
                .entry(out_trade_no.to_owned())
                .or_insert_with(|| WxOrder {
                    prepay_id: format!("wx{}", digits(34)),
                    request: request.clone(),
                    state: WxState::NotPay,
                });
            let prepay = json!({ "prepay_id": order.prepay_id }).to_string();
            drop(ledger);
            signed(&state, StatusCode::OK, prepay)
        }
        ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => {
            let mut ledger = state.ledger.lock();
            let Some(order) = ledger.orders.get_mut(*no) else {
                drop(ledger);
                return signed(&state, StatusCode::NOT_FOUND, error_body("ORDER_NOT_EXIST"));
            };
            if matches!(order.state, WxState::Paid(_)) {
                drop(ledger);
                return signed(&state, StatusCode::BAD_REQUEST, error_body("ORDERPAID"));
            }
            order.state = WxState::Closed;
            drop(ledger);
            signed(&state, StatusCode::NO_CONTENT, String::new())
        }
        ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
            let ledger = state.ledger.lock();
            let Some(order) = ledger.orders.get(*no) else {
                drop(ledger);
                return signed(&state, StatusCode::NOT_FOUND, error_body("ORDER_NOT_EXIST"));
            };
            let transaction = transaction_json(no, order).to_string();
            drop(ledger);
            signed(&state, StatusCode::OK, transaction)
        }
        _ => signed(&state, StatusCode::NOT_FOUND, error_body("NOT_FOUND")),
    }
}

fn error_body(code: &str) -> String {
    json!({"code": code, "message": format!("stand-in says {code}")}).to_string()
}

/// An answer with its `Wechatpay-*` signature headers, genuine or (as
/// told) forged or stale.
fn signed(state: &StandIn, status: StatusCode, body: String) -> Response {
    let behaviour = *state.behaviour.lock();
    let signer = if behaviour == Behaviour::ForgedAnswers {
        &state.stranger
    } else {
        &state.sim
    };
    let timestamp = if behaviour == Behaviour::StaleAnswers {
        unix_now() - 600
    } else {
        unix_now()
    };
    let nonce = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let signature = signer.sign(&format!("{timestamp}\n{nonce}\n{body}\n"));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert(
        "wechatpay-timestamp",
        timestamp.to_string().parse().unwrap(),
    );
    headers.insert("wechatpay-nonce", nonce.parse().unwrap());
    headers.insert("wechatpay-signature", signature.parse().unwrap());
    headers.insert("wechatpay-serial", state.sim.serial().parse().unwrap());
    response
}

/// Whether the request's `Authorization` is the merchant's APIv3
/// signature of it, for our merchant id and the merchant key's serial.
fn authorized(method: &Method, path: &str, headers: &HeaderMap, body: &str) -> bool {
    let Some(value) = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some(params) = value.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let fields: HashMap<&str, &str> = params
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.strip_prefix('"')?.strip_suffix('"')?))
        })
        .collect();
    let field = |name: &str| fields.get(name).copied().unwrap_or_default();
    field("mchid") == MCHID
        && field("serial_no") == MERCHANT_SERIAL
        && signed_by_merchant(
            &format!(
                "{method}\n{path}\n{}\n{}\n{body}\n",
                field("timestamp"),
                field("nonce_str")
            ),
            field("signature"),
        )
}

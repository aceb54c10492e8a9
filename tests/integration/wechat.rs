//! A stand-in for WeChat Pay's side of payment notifications: it holds a
//! platform key pair and an APIv3 key, and builds notifications the way
//! WeChat Pay API v3 does: the transaction JSON encrypted with
//! AEAD_AES_256_GCM under the APIv3 key, the body signed with RSA-SHA256
//! (PKCS#1 v1.5) over `"{timestamp}\n{nonce}\n{body}\n"`.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{FixedOffset, SecondsFormat, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Value};
use sha2::Sha256;

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
        let event_type = format!("TRANSACTION.{state}");
        let resource_nonce = Alphanumeric.sample_string(&mut rand::rng(), 12);
        let body = json!({
            "id": format!("EV-{}", digits(19)),
            "create_time": beijing_now(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": self.encrypt(&transaction.to_string(), &resource_nonce),
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

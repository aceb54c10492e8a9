//! WeChat Pay's keys and what it signs: the merchant's API key pair (as
//! the merchant holds it; WeChat Pay checks with its public half), the
//! platform key pair and APIv3 key ([`WeChatPaySim`]), and notifications
//! built the way WeChat Pay API v3 does: the resource JSON encrypted with
//! AEAD_AES_256_GCM under the APIv3 key, the body signed with RSA-SHA256
//! (PKCS#1 v1.5) over `"{timestamp}\n{nonce}\n{body}\n"`.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{FixedOffset, SecondsFormat, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::{APPID, MCHID};

/// The merchant's API key pair, one per process: 2048-bit generation is
/// slow, and every test of a run (or the one stand-in process) plays the
/// same merchant.
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

/// WeChat Pay, as far as its keys and notifications go.
pub struct WeChatPaySim {
    signing_key: SigningKey<Sha256>,
    platform_key_pem: String,
    apiv3_key: String,
    /// The platform certificate's serial, sent as `Wechatpay-Serial`.
    serial: String,
}

impl Default for WeChatPaySim {
    fn default() -> Self {
        Self::new()
    }
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

    /// A SUCCESS transaction notification for `order_id` paying
    /// `amount_cents` CNY, signed now.
    pub fn payment(&self, order_id: &str, amount_cents: i64) -> Notification {
        self.notification_for(json!({
            "appid": APPID,
            "mchid": MCHID,
            "out_trade_no": order_id,
            "transaction_id": transaction_id(),
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

    /// Base64 RSA-SHA256 of `message` with the platform key.
    pub(crate) fn sign(&self, message: &str) -> String {
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

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Now in China Standard Time, as WeChat Pay writes times.
pub(crate) fn beijing_now() -> String {
    let cst = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    Utc::now()
        .with_timezone(&cst)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A fresh WeChat Pay transaction id.
pub(crate) fn transaction_id() -> String {
    format!("4200{}", digits(24))
}

pub(crate) fn digits(count: usize) -> String {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| char::from(b'0' + rng.random_range(0..10)))
        .collect()
}

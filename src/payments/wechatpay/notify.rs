//! WeChat Pay API v3 notifications: verifying and decrypting them.
//!
//! No I/O but the platform keys' re-read (see [`super::keys`]): the caller
//! hands over the four `Wechatpay-*` headers, the raw body and the current
//! time, and gets back the [`Transaction`] it carries, or a [`NotifyError`] saying why the notification was refused. Nothing in the
//! body is trusted before its signature verified; the check order is
//! headers present, timestamp within 5 minutes, RSA-SHA256 signature over
//! `"{timestamp}\n{nonce}\n{body}\n"` (PKCS#1 v1.5, the platform key the
//! serial names), body JSON, AES-256-GCM decryption of `resource` with the
//! APIv3 key, resource JSON.
//!
//! Spec: <https://pay.weixin.qq.com/wiki/doc/apiv3/wechatpay/wechatpay4_1.shtml>.

use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::keys::{PlatformKeys, SignedHeaders};
use super::WeChatPayConfigError;
use crate::json::{self, JsonProblem};

/// The only `resource.algorithm` WeChat Pay v3 uses.
const ALGORITHM: &str = "AEAD_AES_256_GCM";

/// Length of the APIv3 key (the AES-256 key) and of the GCM nonce, in bytes.
const APIV3_KEY_LEN: usize = 32;
const GCM_NONCE_LEN: usize = 12;

/// Checks WeChat Pay notifications against the platform keys and opens
/// them with the merchant's APIv3 key.
pub struct WeChatPayVerifier {
    platform_keys: Arc<PlatformKeys>,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for WeChatPayVerifier {
    /// Shows no key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatPayVerifier").finish_non_exhaustive()
    }
}

impl WeChatPayVerifier {
    /// `platform_keys`: WeChat Pay's platform public keys.
    /// `apiv3_key`: the merchant's 32-character APIv3 key (its ASCII bytes
    /// are the AES-256 key).
    pub fn new(
        platform_keys: Arc<PlatformKeys>,
        apiv3_key: &str,
    ) -> Result<Self, WeChatPayConfigError> {
        let key = apiv3_key.as_bytes();
        if key.len() != APIV3_KEY_LEN {
            return Err(WeChatPayConfigError::ApiV3KeyLength(key.len()));
        }
        let cipher = Aes256Gcm::new_from_slice(key)
            .map_err(|_| WeChatPayConfigError::ApiV3KeyLength(key.len()))?;
        Ok(Self {
            platform_keys,
            cipher,
        })
    }

    /// Verifies and opens one payment notification. `now_secs` is the
    /// current Unix time in seconds.
    pub fn open(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Transaction, NotifyError> {
        match self.open_notice(headers, body, now_secs)? {
            Notice::Transaction(transaction) => Ok(transaction),
            Notice::Refund(_) => Err(NotifyError::Malformed(
                "a refund notification where a payment was expected".into(),
            )),
        }
    }

    /// Verifies and opens one notification of either kind: a payment
    /// (`resource.original_type` `transaction`) or a refund's result
    /// (`refund`, event types `REFUND.SUCCESS`, `REFUND.ABNORMAL`,
    /// `REFUND.CLOSED`).
    pub fn open_notice(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Notice, NotifyError> {
        self.platform_keys.verify(headers, body, now_secs)?;

        let envelope: Envelope = parse_json(body, "notification body")?;
        let resource = envelope.resource;
        if resource.algorithm != ALGORITHM {
            return Err(NotifyError::Malformed(format!(
                "notification body: resource.algorithm: expected {ALGORITHM}, got {:?}",
                resource.algorithm
            )));
        }
        let plaintext = self.decrypt(&resource)?;

        if resource.original_type.as_deref() == Some("refund") {
            return refund_result(plaintext.as_bytes()).map(Notice::Refund);
        }
        transaction(plaintext.as_bytes()).map(Notice::Transaction)
    }

    fn decrypt(&self, resource: &EncryptedResource) -> Result<String, NotifyError> {
        let nonce: [u8; GCM_NONCE_LEN] = resource
            .nonce
            .as_bytes()
            .try_into()
            .map_err(|_| NotifyError::Undecryptable)?;
        let ciphertext = BASE64
            .decode(&resource.ciphertext)
            .map_err(|_| NotifyError::Undecryptable)?;
        let aad = resource.associated_data.as_deref().unwrap_or_default();
        let nonce: &Nonce<_> = (&nonce).into();
        let plaintext = self
            .cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| NotifyError::Undecryptable)?;
        String::from_utf8(plaintext).map_err(|_| NotifyError::Undecryptable)
    }
}

/// A verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// About a payment.
    Transaction(Transaction),
    /// About a refund's result.
    Refund(RefundResult),
}

/// A refund as WeChat Pay reports it (a refund notification's resource,
/// or the answer to the refund call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundResult {
    /// The refunded order (ours).
    pub out_trade_no: String,
    /// Our refund number (see `client::out_refund_no`).
    pub out_refund_no: String,
    /// WeChat Pay's id of the refunded payment.
    pub transaction_id: String,
    /// WeChat Pay's own id of the refund.
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`, or (answers only) `PROCESSING`.
    pub status: String,
    /// What was refunded, in the currency's smallest unit.
    pub refund: i64,
}

/// A refund's JSON: `refund_status` in a notification, `status` in the
/// refund call's answer and in a refund query's.
pub(super) fn refund_result(bytes: &[u8]) -> Result<RefundResult, NotifyError> {
    #[derive(Deserialize)]
    struct RawRefund {
        out_trade_no: String,
        out_refund_no: String,
        #[serde(default)]
        transaction_id: String,
        #[serde(default)]
        refund_id: String,
        #[serde(alias = "refund_status")]
        status: String,
        amount: RawRefundAmount,
    }
    #[derive(Deserialize)]
    struct RawRefundAmount {
        refund: i64,
    }
    let raw: RawRefund = parse_json(bytes, "refund")?;
    Ok(RefundResult {
        out_trade_no: raw.out_trade_no,
        out_refund_no: raw.out_refund_no,
        transaction_id: raw.transaction_id,
        refund_id: raw.refund_id,
        status: raw.status,
        refund: raw.amount.refund,
    })
}

/// What a verified notification says about the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The merchant's order number (ours).
    pub out_trade_no: String,
    /// WeChat Pay's own transaction id (empty while unpaid).
    pub transaction_id: String,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING` or
    /// `PAYERROR`.
    pub trade_state: String,
    /// The order total, in the currency's smallest unit (fen for CNY).
    pub amount_total: i64,
    pub currency: String,
}

impl Transaction {
    /// Whether the payment went through (`trade_state` is `SUCCESS`).
    pub fn succeeded(&self) -> bool {
        self.trade_state == "SUCCESS"
    }
}

/// Why a notification (or an API answer) from WeChat Pay was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A required header is absent or empty; its name.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `Wechatpay-Timestamp` is not an integer, or more than 5 minutes from
    /// now in either direction.
    #[error("Wechatpay-Timestamp is not within 5 minutes of now")]
    StaleTimestamp,
    /// `Wechatpay-Signature` is not base64, or does not verify.
    #[error("Wechatpay-Signature does not verify")]
    BadSignature,
    /// The resource does not decrypt with the APIv3 key (bad base64, nonce
    /// not 12 bytes, authentication failure, plaintext not UTF-8).
    #[error("notification resource does not decrypt with the APIv3 key")]
    Undecryptable,
    /// The body or the decrypted transaction is not the expected JSON; the
    /// message names the field.
    #[error("malformed notification: {0}")]
    Malformed(String),
}

/// A transaction as WeChat Pay writes it (a notification's resource, or
/// the answer to a query).
pub(super) fn transaction(bytes: &[u8]) -> Result<Transaction, NotifyError> {
    let raw: RawTransaction = parse_json(bytes, "transaction")?;
    Ok(Transaction {
        out_trade_no: raw.out_trade_no,
        transaction_id: raw.transaction_id,
        trade_state: raw.trade_state,
        amount_total: raw.amount.total,
        currency: raw.amount.currency,
    })
}

/// Parses `what` as JSON; the error names the offending field.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, NotifyError> {
    json::from_slice(bytes).map_err(|problem| {
        NotifyError::Malformed(match problem {
            JsonProblem::Syntax(_) => format!("{what} is {problem}"),
            JsonProblem::Data { .. } => format!("{what}: {problem}"),
        })
    })
}

/// The notification body; only what we need (serde ignores the rest).
#[derive(Deserialize)]
struct Envelope {
    resource: EncryptedResource,
}

#[derive(Deserialize)]
struct EncryptedResource {
    /// `transaction` or `refund`.
    #[serde(default)]
    original_type: Option<String>,
    algorithm: String,
    ciphertext: String,
    #[serde(default)]
    associated_data: Option<String>,
    nonce: String,
}

/// The decrypted resource; only what we need.
#[derive(Deserialize)]
struct RawTransaction {
    out_trade_no: String,
    /// Absent from an unpaid transaction.
    #[serde(default)]
    transaction_id: String,
    trade_state: String,
    amount: RawAmount,
}

#[derive(Deserialize)]
struct RawAmount {
    total: i64,
    currency: String,
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::signature::{SignatureEncoding, Signer};
    use serde_json::json;
    use sha2::Sha256;

    use super::*;

    const APIV3_KEY: &str = "0123456789abcdefghijABCDEFGHIJ01";
    const NOW: i64 = 1_700_000_000;

    /// One key for the whole module: 2048-bit generation is slow.
    static PLATFORM_KEY: LazyLock<rsa::PrivateKey> = LazyLock::new(|| {
        rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation")
    });

    fn spki_pem() -> String {
        PLATFORM_KEY
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM")
    }

    fn platform_keys(pem: &str) -> Arc<PlatformKeys> {
        Arc::new(PlatformKeys::single(pem).expect("platform key"))
    }

    fn verifier() -> WeChatPayVerifier {
        WeChatPayVerifier::new(platform_keys(&spki_pem()), APIV3_KEY).expect("verifier")
    }

    /// What WeChat Pay does, in brief: the full simulator lives with the
    /// integration tests.
    fn sign(timestamp: &str, nonce: &str, body: &str) -> String {
        let signer = SigningKey::<Sha256>::new(PLATFORM_KEY.clone());
        let signature = signer.sign(format!("{timestamp}\n{nonce}\n{body}\n").as_bytes());
        BASE64.encode(signature.to_vec())
    }

    fn body_with(algorithm: &str, transaction: &serde_json::Value) -> String {
        let nonce = "0123456789ab";
        let cipher = Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes()).expect("cipher");
        let plaintext = transaction.to_string();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: b"transaction",
        };
        let nonce_bytes: &[u8; 12] = nonce.as_bytes().try_into().expect("12 bytes");
        let ciphertext = cipher
            .encrypt(nonce_bytes.into(), payload)
            .expect("encrypt");
        json!({
            "id": "EV-2018022511223320873",
            "create_time": "2015-05-20T13:29:35+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": algorithm,
                "ciphertext": BASE64.encode(ciphertext),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        })
        .to_string()
    }

    fn paid_transaction() -> serde_json::Value {
        json!({
            "appid": "wxd678efh567hg6787",
            "mchid": "1230000109",
            "out_trade_no": "order-42",
            "transaction_id": "4200000000202401010000000001",
            "trade_type": "JSAPI",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "CMC",
            "success_time": "2018-06-08T10:34:56+08:00",
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": 19900, "payer_total": 19900, "currency": "CNY", "payer_currency": "CNY"},
        })
    }

    fn headers<'a>(timestamp: &'a str, signature: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            timestamp: Some(timestamp),
            nonce: Some("5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            signature: Some(signature),
            serial: Some("5157F09EFDC096DE15EBE81A47057A7232F1B8E1"),
        }
    }

    fn signed_open(body: &str, timestamp: i64) -> Result<Transaction, NotifyError> {
        let timestamp = timestamp.to_string();
        let signature = sign(&timestamp, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", body);
        verifier().open(&headers(&timestamp, &signature), body.as_bytes(), NOW)
    }

    #[test]
    fn a_signed_encrypted_payment_opens_to_its_transaction() {
        let body = body_with("AEAD_AES_256_GCM", &paid_transaction());
        let transaction = signed_open(&body, NOW - 10).expect("valid notification");
        assert_eq!(
            transaction,
            Transaction {
                out_trade_no: "order-42".into(),
                transaction_id: "4200000000202401010000000001".into(),
                trade_state: "SUCCESS".into(),
                amount_total: 19900,
                currency: "CNY".into(),
            }
        );
        assert!(transaction.succeeded());
    }

    #[test]
    fn config_takes_an_spki_or_pkcs1_pem_and_a_32_byte_apiv3_key() {
        let public_key = PLATFORM_KEY.to_public_key();
        let pkcs1 = public_key.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        assert!(spki_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let body = body_with("AEAD_AES_256_GCM", &paid_transaction());
        let timestamp = NOW.to_string();
        let signature = sign(&timestamp, "5K8264ILTKCH16CQ2502SI8ZNMTM67VS", &body);
        let from_pkcs1 =
            WeChatPayVerifier::new(platform_keys(&pkcs1), APIV3_KEY).expect("PKCS#1 key");
        from_pkcs1
            .open(&headers(&timestamp, &signature), body.as_bytes(), NOW)
            .expect("the PKCS#1 key verifies");

        for pem in [
            "",
            "not a key",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let err = PlatformKeys::single(pem).expect_err("bad PEM");
            assert!(
                matches!(err, WeChatPayConfigError::PlatformKey(_)),
                "{err:?}"
            );
        }
        for key in ["", "short", "0123456789abcdefghijABCDEFGHIJ012"] {
            let err =
                WeChatPayVerifier::new(platform_keys(&spki_pem()), key).expect_err("bad APIv3 key");
            assert!(
                matches!(err, WeChatPayConfigError::ApiV3KeyLength(len) if len == key.len()),
                "{err:?}"
            );
        }
    }

    #[test]
    fn each_missing_header_is_named() {
        let full = headers("1700000000", "c2ln");
        let without = |remove: fn(&mut SignedHeaders<'_>)| {
            let mut headers = full;
            remove(&mut headers);
            headers
        };
        let cases = [
            (without(|h| h.timestamp = None), "Wechatpay-Timestamp"),
            (without(|h| h.nonce = None), "Wechatpay-Nonce"),
            (without(|h| h.signature = None), "Wechatpay-Signature"),
            (without(|h| h.signature = Some("")), "Wechatpay-Signature"),
        ];
        let verifier = verifier();
        for (headers, name) in cases {
            let err = verifier.open(&headers, b"{}", NOW).expect_err(name);
            assert!(
                matches!(err, NotifyError::MissingHeader(n) if n == name),
                "{err:?}"
            );
        }
        let no_serial = SignedHeaders {
            serial: None,
            ..full
        };
        let err = verifier
            .open(&no_serial, b"{}", NOW)
            .expect_err("bad signature");
        assert!(matches!(err, NotifyError::BadSignature), "{err:?}");
    }

    #[test]
    fn a_timestamp_more_than_five_minutes_off_either_way_is_stale() {
        let verifier = verifier();
        let open_at = |timestamp: &str| verifier.open(&headers(timestamp, "c2ln"), b"{}", NOW);
        for timestamp in [NOW - 301, NOW + 301] {
            let err = open_at(&timestamp.to_string()).expect_err("stale");
            assert!(
                matches!(err, NotifyError::StaleTimestamp),
                "{timestamp}: {err:?}"
            );
        }
        // On the edge of the window: past the clock, stopped by the signature.
        for timestamp in [NOW - 300, NOW + 300] {
            let err = open_at(&timestamp.to_string()).expect_err("bad signature");
            assert!(
                matches!(err, NotifyError::BadSignature),
                "{timestamp}: {err:?}"
            );
        }
        let err = open_at("soon").expect_err("not an integer");
        assert!(matches!(err, NotifyError::StaleTimestamp), "{err:?}");
    }

    #[test]
    fn a_signature_that_is_not_base64_is_bad() {
        let body = body_with("AEAD_AES_256_GCM", &paid_transaction());
        let err = verifier()
            .open(
                &headers(&NOW.to_string(), "not base64!"),
                body.as_bytes(),
                NOW,
            )
            .expect_err("bad signature");
        assert!(matches!(err, NotifyError::BadSignature), "{err:?}");
    }

    #[test]
    fn an_algorithm_other_than_aes_256_gcm_is_malformed() {
        let body = body_with("AEAD_CHACHA20_POLY1305", &paid_transaction());
        let err = signed_open(&body, NOW).expect_err("wrong algorithm");
        assert!(
            matches!(&err, NotifyError::Malformed(msg) if msg.contains("resource.algorithm")),
            "{err:?}"
        );
    }
}

//! The keys of the WeChat Pay exchange: the platform public keys that sign
//! everything WeChat Pay sends (notifications and API answers), and the
//! merchant's API private key that signs everything the engine sends (API
//! requests, `paySign`).
//!
//! Platform keys come from `FLASHSALE_WECHATPAY_PLATFORM_KEY`:
//! - one PEM file: that key verifies whatever `Wechatpay-Serial` a message
//!   names (a deployment with one key, unchanged);
//! - a directory of `<serial>.pem` files (a platform certificate's serial,
//!   or a WeChat Pay public-key id such as `PUB_KEY_ID_...`): the key the
//!   message's serial names. A serial not loaded makes the directory be
//!   read again when it changed since it was last read (its modification
//!   time), so a key added for a rotation is picked up without a restart,
//!   and a forged serial costs one `stat`, never a re-read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use parking_lot::RwLock;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use sha2::Sha256;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

use super::notify::NotifyError;
use super::WeChatPayConfigError;

/// How far (either direction, seconds) a signed message's timestamp may be
/// from now.
const CLOCK_SKEW_SECS_MAX: u64 = 300;

/// The most platform keys a key directory may hold (WeChat Pay keeps at
/// most two valid at once, during a rotation).
pub const PLATFORM_KEYS_MAX: usize = 16;

/// The `Wechatpay-*` headers of a message WeChat Pay signed (a notification
/// or an API answer), as sent (`None` when absent; an empty value counts as
/// absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// The serial of the key that signed: a platform certificate's serial
    /// or a WeChat Pay public-key id.
    pub serial: Option<&'a str>,
}

/// The platform public keys, by serial (see the module docs).
pub struct PlatformKeys {
    /// Where keys are re-read from (`None`: one key file, never re-read).
    directory: Option<PathBuf>,
    loaded: RwLock<Loaded>,
}

enum Loaded {
    /// One key, whatever the serial.
    Any(VerifyingKey<Sha256>),
    /// Keys by serial, and the directory's modification time when read.
    BySerial {
        keys: HashMap<String, VerifyingKey<Sha256>>,
        modified: Option<SystemTime>,
    },
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeys")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl PlatformKeys {
    /// One key for every serial, from its PEM (SPKI "BEGIN PUBLIC KEY",
    /// PKCS#1 "BEGIN RSA PUBLIC KEY", or a "BEGIN CERTIFICATE").
    pub fn single(pem: &str) -> Result<Self, WeChatPayConfigError> {
        Ok(Self {
            directory: None,
            loaded: RwLock::new(Loaded::Any(public_key(pem)?)),
        })
    }

    /// From `path`: one PEM file, or a directory of `<serial>.pem` files
    /// (at least one).
    pub fn load(path: &Path) -> Result<Self, WeChatPayConfigError> {
        let unreadable = |err: std::io::Error| {
            WeChatPayConfigError::PlatformKey(format!("cannot read {}: {err}", path.display()))
        };
        if !path.is_dir() {
            return Self::single(&std::fs::read_to_string(path).map_err(unreadable)?);
        }
        let loaded = read_directory(path)?;
        if matches!(&loaded, Loaded::BySerial { keys, .. } if keys.is_empty()) {
            return Err(WeChatPayConfigError::PlatformKey(format!(
                "{} holds no <serial>.pem key",
                path.display()
            )));
        }
        Ok(Self {
            directory: Some(path.to_owned()),
            loaded: RwLock::new(loaded),
        })
    }

    /// Checks a signed message: headers present, timestamp within 5 minutes
    /// of `now_secs`, and the RSA-SHA256 (PKCS#1 v1.5) signature over
    /// `"{timestamp}\n{nonce}\n{body}\n"` by the key the serial names.
    pub fn verify(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), NotifyError> {
        let timestamp = required(headers.timestamp, "Wechatpay-Timestamp")?;
        let nonce = required(headers.nonce, "Wechatpay-Nonce")?;
        let signature = required(headers.signature, "Wechatpay-Signature")?;
        let sent_at: i64 = timestamp.parse().map_err(|_| NotifyError::StaleTimestamp)?;
        if now_secs.abs_diff(sent_at) > CLOCK_SKEW_SECS_MAX {
            return Err(NotifyError::StaleTimestamp);
        }
        let key = self
            .key_for(headers.serial.filter(|serial| !serial.is_empty()))
            .ok_or(NotifyError::BadSignature)?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| NotifyError::BadSignature)?;
        let signature =
            Signature::try_from(signature.as_slice()).map_err(|_| NotifyError::BadSignature)?;
        let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
        for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
            message.extend_from_slice(part);
            message.push(b'\n');
        }
        key.verify(&message, &signature)
            .map_err(|_| NotifyError::BadSignature)
    }

    /// The key for `serial`, re-reading the directory once if it changed.
    fn key_for(&self, serial: Option<&str>) -> Option<VerifyingKey<Sha256>> {
        if let Some(key) = self.loaded.read().lookup(serial) {
            return Some(key);
        }
        let directory = self.directory.as_deref()?;
        let modified = modified(directory);
        let mut loaded = self.loaded.write();
        if matches!(&*loaded, Loaded::BySerial { modified: seen, .. } if *seen != modified) {
            match read_directory(directory) {
                Ok(fresh) => {
                    if let Loaded::BySerial { keys, .. } = &fresh {
                        tracing::info!(directory = %directory.display(), keys = keys.len(),
                            "WeChat Pay platform keys re-read");
                    }
                    *loaded = fresh;
                }
                Err(err) => tracing::error!(error = %err,
                    "cannot re-read the WeChat Pay platform keys; keeping those loaded"),
            }
        }
        loaded.lookup(serial)
    }
}

impl Loaded {
    fn lookup(&self, serial: Option<&str>) -> Option<VerifyingKey<Sha256>> {
        match self {
            Self::Any(key) => Some(key.clone()),
            Self::BySerial { keys, .. } => keys.get(serial?).cloned(),
        }
    }
}

fn modified(directory: &Path) -> Option<SystemTime> {
    std::fs::metadata(directory)
        .and_then(|meta| meta.modified())
        .ok()
}

/// Every `<serial>.pem` of `directory` (at most [`PLATFORM_KEYS_MAX`]).
fn read_directory(directory: &Path) -> Result<Loaded, WeChatPayConfigError> {
    let failed = |err: std::io::Error| {
        WeChatPayConfigError::PlatformKey(format!("cannot read {}: {err}", directory.display()))
    };
    let modified = modified(directory);
    let mut keys = HashMap::new();
    for entry in std::fs::read_dir(directory).map_err(failed)? {
        let path = entry.map_err(failed)?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("pem") {
            continue;
        }
        let Some(serial) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        if keys.len() == PLATFORM_KEYS_MAX {
            return Err(WeChatPayConfigError::PlatformKey(format!(
                "{} holds more than {PLATFORM_KEYS_MAX} keys",
                directory.display()
            )));
        }
        let pem = std::fs::read_to_string(&path).map_err(failed)?;
        let key = public_key(&pem).map_err(|err| {
            WeChatPayConfigError::PlatformKey(format!("{}: {err}", path.display()))
        })?;
        keys.insert(serial.to_owned(), key);
    }
    Ok(Loaded::BySerial { keys, modified })
}

/// A platform key from its PEM: an RSA public key (SPKI or PKCS#1), or a
/// platform certificate (`wechatpay_<serial>.pem` as WeChat Pay hands it
/// out), whose subject public key it is. A certificate's validity and
/// chain are not checked: like a bare key, the file is what the merchant
/// chose to trust.
fn public_key(pem: &str) -> Result<VerifyingKey<Sha256>, WeChatPayConfigError> {
    if pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----") {
        return certificate_key(pem).map_err(WeChatPayConfigError::PlatformKey);
    }
    VerifyingKey::<Sha256>::from_public_key_pem(pem)
        .map_err(|err| err.to_string())
        .or_else(|spki_err| {
            rsa::PublicKey::from_pkcs1_pem(pem)
                .map(VerifyingKey::<Sha256>::new)
                .map_err(|_| spki_err)
        })
        .map_err(WeChatPayConfigError::PlatformKey)
}

/// The subject public key of an X.509 certificate's PEM.
fn certificate_key(pem: &str) -> Result<VerifyingKey<Sha256>, String> {
    let certificate =
        Certificate::from_pem(pem).map_err(|err| format!("not an X.509 certificate: {err}"))?;
    let spki = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|err| err.to_string())?;
    VerifyingKey::<Sha256>::from_public_key_der(&spki)
        .map_err(|err| format!("the certificate's key is not an RSA key: {err}"))
}

fn required<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, NotifyError> {
    value
        .filter(|value| !value.is_empty())
        .ok_or(NotifyError::MissingHeader(name))
}

/// The merchant's API private key and the serial of its certificate: signs
/// API requests and `wx.requestPayment`'s `paySign`.
pub struct MerchantKey {
    signer: SigningKey<Sha256>,
    serial: String,
}

impl std::fmt::Debug for MerchantKey {
    /// Shows no key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantKey")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl MerchantKey {
    /// `pem`: the merchant API private key (PKCS#8 "BEGIN PRIVATE KEY", as
    /// WeChat Pay's `apiclient_key.pem`, or PKCS#1 "BEGIN RSA PRIVATE
    /// KEY"); `serial`: its certificate's serial.
    pub fn new(pem: &str, serial: &str) -> Result<Self, WeChatPayConfigError> {
        let key = rsa::PrivateKey::from_pkcs8_pem(pem)
            .map_err(|err| err.to_string())
            .or_else(|pkcs8_err| rsa::PrivateKey::from_pkcs1_pem(pem).map_err(|_| pkcs8_err))
            .map_err(WeChatPayConfigError::MerchantKey)?;
        Ok(Self {
            signer: SigningKey::new(key),
            serial: serial.to_owned(),
        })
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Base64 of the RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
    pub fn sign(&self, message: &str) -> String {
        BASE64.encode(self.signer.sign(message.as_bytes()).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_platform_certificate_stands_for_its_public_key() {
        // A self-signed certificate and its key as `openssl x509 -pubkey`
        // gives it.
        let certificate = include_str!("testdata/platform_cert.pem");
        let from_certificate = public_key(certificate).expect("a certificate's key");
        let from_key = public_key(include_str!("testdata/platform_cert_public_key.pem"))
            .expect("the bare key");
        assert_eq!(from_certificate.as_ref(), from_key.as_ref());
        let keys = PlatformKeys::single(certificate).expect("a certificate file");
        assert!(matches!(&*keys.loaded.read(), Loaded::Any(_)));
        for broken in [
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n",
        ] {
            let err = public_key(broken).expect_err("not a certificate");
            assert!(
                matches!(&err, WeChatPayConfigError::PlatformKey(why) if why.contains("X.509")),
                "{err:?}"
            );
        }
    }

    static KEYS: LazyLock<[rsa::PrivateKey; 2]> = LazyLock::new(|| {
        [0, 1].map(|_| rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key"))
    });

    fn public_pem(key: &rsa::PrivateKey) -> String {
        key.to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM")
    }

    fn signer(key: &rsa::PrivateKey) -> MerchantKey {
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
        MerchantKey::new(&pem, "serial").expect("merchant key")
    }

    fn headers<'a>(serial: &'a str, signature: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            timestamp: Some("1700000000"),
            nonce: Some("n"),
            signature: Some(signature),
            serial: Some(serial),
        }
    }

    #[test]
    fn a_key_directory_picks_the_key_by_serial_and_reads_new_keys() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("OLD.pem"), public_pem(&KEYS[0])).expect("write");
        let keys = PlatformKeys::load(dir.path()).expect("keys");
        let body = b"{}";
        let by_old = signer(&KEYS[0]).sign("1700000000\nn\n{}\n");
        let by_new = signer(&KEYS[1]).sign("1700000000\nn\n{}\n");

        keys.verify(&headers("OLD", &by_old), body, NOW)
            .expect("old key, old serial");
        let wrong = keys.verify(&headers("NEW", &by_new), body, NOW);
        assert!(matches!(wrong, Err(NotifyError::BadSignature)), "{wrong:?}");
        let crossed = keys.verify(&headers("OLD", &by_new), body, NOW);
        assert!(
            matches!(crossed, Err(NotifyError::BadSignature)),
            "{crossed:?}"
        );

        // A rotation: the new key is added beside the old one.
        std::fs::write(dir.path().join("NEW.pem"), public_pem(&KEYS[1])).expect("write");
        let dir_file = std::fs::File::open(dir.path()).expect("open dir");
        dir_file
            .set_modified(SystemTime::now() + std::time::Duration::from_secs(1))
            .expect("touch dir");
        keys.verify(&headers("NEW", &by_new), body, NOW)
            .expect("new key read without a restart");
        keys.verify(&headers("OLD", &by_old), body, NOW)
            .expect("old key still good");
    }

    #[test]
    fn one_key_file_verifies_whatever_the_serial() {
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), public_pem(&KEYS[0])).expect("write");
        let keys = PlatformKeys::load(file.path()).expect("keys");
        let signature = signer(&KEYS[0]).sign("1700000000\nn\n{}\n");
        for serial in ["ANY", "PUB_KEY_ID_0114232134912410000000000000000000"] {
            keys.verify(&headers(serial, &signature), b"{}", NOW)
                .expect(serial);
        }
    }

    #[test]
    fn an_empty_directory_and_a_bad_merchant_key_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(matches!(
            PlatformKeys::load(dir.path()),
            Err(WeChatPayConfigError::PlatformKey(_))
        ));
        assert!(matches!(
            MerchantKey::new("not a key", "serial"),
            Err(WeChatPayConfigError::MerchantKey(_))
        ));
    }
}

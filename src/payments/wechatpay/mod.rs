//! WeChat Pay API v3, the protocol side: no order logic here (that is
//! [`super::Payments`]).
//!
//! - [`keys`]: the platform keys (several by serial, re-read without a
//!   restart) that sign what WeChat Pay sends, and the merchant key that
//!   signs what the engine sends.
//! - [`notify`]: verifying and decrypting notifications.
//! - [`client`]: the signed calls (prepay, close, query, refund) with verified
//!   answers, and the `wx.requestPayment` parameters.

pub mod client;
pub mod keys;
pub mod notify;

pub use self::client::{
    out_refund_no, Account, CallError, Closed, PrepayOrder, RequestPayment, WeChatPayClient,
};
pub use self::keys::{MerchantKey, PlatformKeys, SignedHeaders};
pub use self::notify::{Notice, NotifyError, RefundResult, Transaction, WeChatPayVerifier};

/// WeChat Pay as the engine uses it: notifications in, calls out.
#[derive(Debug)]
pub struct WeChatPay {
    pub verifier: WeChatPayVerifier,
    pub client: WeChatPayClient,
}

/// Why WeChat Pay cannot be used with the configuration given.
#[derive(Debug, thiserror::Error)]
pub enum WeChatPayConfigError {
    /// A platform key is not an RSA public key PEM (SPKI or PKCS#1) nor
    /// an X.509 certificate of one, or the key file or directory cannot be
    /// read.
    #[error("WeChat Pay platform key: {0}")]
    PlatformKey(String),
    /// The merchant API key is not an RSA private key PEM (PKCS#8 or
    /// PKCS#1).
    #[error("WeChat Pay merchant key is not an RSA private key PEM (PKCS#8 or PKCS#1): {0}")]
    MerchantKey(String),
    /// The APIv3 key is not 32 bytes; the length it has.
    #[error("WeChat Pay APIv3 key must be 32 bytes, got {0}")]
    ApiV3KeyLength(usize),
}

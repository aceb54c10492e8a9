//! The WeChat Pay stand-in (the `wechatpay-standin` crate, shared with the
//! load suite) as the engine's tests use it: what it exports, plus what
//! ties it to the engine's library: the engine's settings against a
//! running stand-in ([`EngineSettings`]) and the engine's side of WeChat
//! Pay built from a stand-in's keys ([`EngineSide`]).

use std::sync::Arc;
use std::time::Duration;

use flashsale::config::{Config, PaymentMode};
use flashsale::payments::wechatpay::{
    Account, MerchantKey, PlatformKeys, WeChatPay, WeChatPayClient, WeChatPayVerifier,
};
pub use wechatpay_standin::*;

/// The notify URL the tests' engines give WeChat Pay (tests deliver the
/// notifications themselves).
pub const NOTIFY_URL: &str = "https://shop.example.com/api/v1/payments/wechatpay/notify";

/// The engine's settings of WeChat Pay mode against a stand-in.
pub trait EngineSettings {
    fn configure(&self, config: &mut Config);
}

impl EngineSettings for WeChatPayServer {
    fn configure(&self, config: &mut Config) {
        config.payments = Some(PaymentMode::Wechatpay);
        config.wechatpay_platform_key = Some(self.platform_key_path().to_owned());
        config.wechatpay_apiv3_key = Some(self.sim.apiv3_key());
        config.wechatpay_mchid = Some(MCHID.into());
        config.wechatpay_appid = Some(APPID.into());
        config.wechatpay_merchant_key = Some(self.merchant_key_path());
        config.wechatpay_merchant_serial = Some(MERCHANT_SERIAL.into());
        config.wechatpay_notify_url = Some(NOTIFY_URL.into());
        config.wechatpay_base_url = self.base_url.clone();
        config.wechatpay_timeout_ms = 500;
    }
}

/// The engine's side of WeChat Pay, built from the library's parts as
/// startup builds them.
pub trait EngineSide {
    /// Trusting this platform key and calling `base_url`.
    fn engine_side(&self, base_url: &str) -> WeChatPay;
}

impl EngineSide for WeChatPaySim {
    fn engine_side(&self, base_url: &str) -> WeChatPay {
        let keys = Arc::new(PlatformKeys::single(&self.platform_key_pem()).expect("platform key"));
        let account = Account {
            mchid: MCHID.into(),
            appid: APPID.into(),
            notify_url: NOTIFY_URL.into(),
            base_url: base_url.parse().expect("base URL"),
            timeout: Duration::from_secs(2),
        };
        let merchant = MerchantKey::new(&merchant_key_pem(), MERCHANT_SERIAL).expect("key");
        WeChatPay {
            verifier: WeChatPayVerifier::new(Arc::clone(&keys), &self.apiv3_key())
                .expect("verifier"),
            client: WeChatPayClient::new(account, merchant, keys).expect("client"),
        }
    }
}

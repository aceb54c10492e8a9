//! [`WeChatPayServer`]: the stand-in as one axum server on 127.0.0.1, with
//! the engine's key files beside it. `/v3/...` is WeChat Pay's API
//! ([`crate::api`]); `/standin/...` is what WeChat Pay's app and a test
//! bench would do ([`crate::shopper`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{refund_json, transaction_json, Behaviour};
use crate::ledger::{Ledger, WxCall, WxOrder, WxRefund, WxState};
use crate::shopper;
use crate::sim::{merchant_key_pem, transaction_id, Notification, WeChatPaySim};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct StandIn {
    pub sim: Arc<WeChatPaySim>,
    /// Signs forged answers.
    pub stranger: Arc<WeChatPaySim>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    /// Posts payment notifications to the engine.
    pub client: reqwest::Client,
}

/// Why a WeChat Pay order cannot be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotPayable {
    Unknown,
    Closed,
    AlreadyPaid,
}

impl StandIn {
    /// The shopper pays the WeChat Pay order of `out_trade_no` (unless
    /// `anyway`, only a `NOTPAY` one): the transaction its payment
    /// notification carries, and the order's `notify_url`.
    pub fn pay(
        &self,
        out_trade_no: &str,
        anyway: bool,
    ) -> Result<(Value, Option<String>), NotPayable> {
        let mut ledger = self.ledger.lock();
        let order = ledger
            .orders
            .get_mut(out_trade_no)
            .ok_or(NotPayable::Unknown)?;
        if !anyway {
            match order.state {
                WxState::NotPay => {}
                WxState::Closed => return Err(NotPayable::Closed),
                WxState::Paid(_) => return Err(NotPayable::AlreadyPaid),
            }
        }
        order.state = WxState::Paid(transaction_id());
        order.payments += 1;
        let notify_url = order.request["notify_url"].as_str().map(str::to_owned);
        Ok((transaction_json(out_trade_no, order), notify_url))
    }
}

/// Where the engine's key files are: a temporary directory of the server's
/// own (removed with it), or one it was given.
enum KeyDir {
    Temporary(tempfile::TempDir),
    Given(PathBuf),
}

impl KeyDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Given(dir) => dir,
        }
    }
}

/// WeChat Pay's API on 127.0.0.1 (see the crate docs), and the key files
/// the engine needs to talk to it: `merchant.pem` (the merchant API
/// private key) and the platform key, `platform.pem` or, for rotations,
/// a directory `platform/` of `<serial>.pem`.
pub struct WeChatPayServer {
    pub sim: Arc<WeChatPaySim>,
    pub base_url: String,
    state: StandIn,
    server: JoinHandle<()>,
    keys: KeyDir,
    /// The platform key setting: one file, or a directory by serial.
    platform_key_path: PathBuf,
}

impl WeChatPayServer {
    /// On a free port, with one platform key file in a temporary directory.
    pub async fn start() -> Self {
        Self::start_with_key_directory(false).await
    }

    /// On a free port, with the platform keys in a directory of
    /// `<serial>.pem` when `directory`, else in one file, in a temporary
    /// directory.
    pub async fn start_with_key_directory(directory: bool) -> Self {
        let keys = tempfile::tempdir().expect("a temporary directory");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        Self::serve(listener, KeyDir::Temporary(keys), directory).expect("the stand-in starts")
    }

    /// On `listener`, with the engine's key files (one platform key file)
    /// written to `dir`, which must exist.
    pub fn start_on(listener: TcpListener, dir: &Path) -> std::io::Result<Self> {
        Self::serve(listener, KeyDir::Given(dir.to_owned()), false)
    }

    fn serve(listener: TcpListener, keys: KeyDir, directory: bool) -> std::io::Result<Self> {
        let sim = Arc::new(WeChatPaySim::new());
        std::fs::write(keys.path().join("merchant.pem"), merchant_key_pem())?;
        let platform_key_path = if directory {
            let dir = keys.path().join("platform");
            std::fs::create_dir(&dir)?;
            std::fs::write(
                dir.join(format!("{}.pem", sim.serial())),
                sim.platform_key_pem(),
            )?;
            dir
        } else {
            let file = keys.path().join("platform.pem");
            std::fs::write(&file, sim.platform_key_pem())?;
            file
        };
        let state = StandIn {
            sim: Arc::clone(&sim),
            stranger: Arc::new(WeChatPaySim::new()),
            ledger: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Normal)),
            client: shopper::notify_client()?,
        };
        let router = axum::Router::new()
            .route("/standin/pay", post(shopper::pay))
            .route("/standin/ledger", get(shopper::ledger))
            .fallback(crate::api::answer)
            .with_state(state.clone());
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("wechatpay-standin: the server stopped: {err}");
            }
        });
        Ok(Self {
            sim,
            base_url,
            state,
            server,
            keys,
            platform_key_path,
        })
    }

    /// The merchant API private key file (PEM) the engine signs with.
    pub fn merchant_key_path(&self) -> PathBuf {
        self.keys.path().join("merchant.pem")
    }

    /// The platform key setting: one PEM file, or a directory by serial.
    pub fn platform_key_path(&self) -> &Path {
        &self.platform_key_path
    }

    /// Adds `sim`'s platform key to the engine's key directory, as an
    /// operator does for a rotation.
    pub fn add_platform_key(&self, sim: &WeChatPaySim) {
        assert!(self.platform_key_path.is_dir(), "keys are in one file");
        std::fs::write(
            self.platform_key_path.join(format!("{}.pem", sim.serial())),
            sim.platform_key_pem(),
        )
        .expect("write the platform key");
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock() = behaviour;
    }

    /// The WeChat Pay orders made, by `out_trade_no`.
    pub fn orders(&self) -> HashMap<String, WxOrder> {
        self.state.ledger.lock().orders.clone()
    }

    /// The calls received, oldest first (the newest
    /// [`crate::ledger::CALLS_KEPT_MAX`]).
    pub fn calls(&self) -> Vec<WxCall> {
        self.state.ledger.lock().calls.iter().cloned().collect()
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
    /// exist and not be closed or paid): the notification WeChat Pay then
    /// posts, for the caller to deliver.
    pub fn pay(&self, out_trade_no: &str) -> Notification {
        match self.state.pay(out_trade_no, false) {
            Ok((transaction, _)) => self.sim.notification_for(transaction),
            Err(why) => panic!("WeChat Pay order {out_trade_no} cannot be paid: {why:?}"),
        }
    }

    /// The shopper pays the WeChat Pay order of `out_trade_no`, and WeChat
    /// Pay records `total` paid, not what the prepay asked: a ledger that
    /// disagrees with the engine's. The notification it posts.
    pub fn pay_other_amount(&self, out_trade_no: &str, total: i64) -> Notification {
        if let Some(order) = self.state.ledger.lock().orders.get_mut(out_trade_no) {
            order.request["amount"]["total"] = total.into();
        }
        self.pay(out_trade_no)
    }

    /// The shopper pays the WeChat Pay order of `out_trade_no` whatever
    /// its state: the race no close can prevent (WeChat Pay completed the
    /// payment after answering our close). The notification it posts.
    pub fn pay_anyway(&self, out_trade_no: &str) -> Notification {
        match self.state.pay(out_trade_no, true) {
            Ok((transaction, _)) => self.sim.notification_for(transaction),
            Err(why) => panic!("WeChat Pay order {out_trade_no} cannot be paid: {why:?}"),
        }
    }
}

impl Drop for WeChatPayServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

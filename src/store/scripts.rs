//! The Lua scripts of the Redis store (`lua/`, each prefixed with
//! `lua/common.lua`) and how they run: EVALSHA, and when Redis has lost its
//! script cache (a restart, a failover, `SCRIPT FLUSH`) the script's body
//! with EVAL, which cannot miss the cache however often it is flushed.
//! NOSCRIPT means the script did not run, so the second send is safe.

use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, ErrorKind, RedisResult, Script, ServerErrorKind, ToRedisArgs, Value};

/// One script: its body and its SHA1 (held by `redis::Script`).
pub struct LuaScript {
    script: Script,
    body: &'static str,
}

/// `lua/<name>.lua`, prefixed with the helpers of `lua/common.lua`.
macro_rules! script {
    ($name:literal) => {
        LuaScript::new(concat!(
            include_str!("../../lua/common.lua"),
            include_str!(concat!("../../lua/", $name, ".lua"))
        ))
    };
}

impl LuaScript {
    fn new(body: &'static str) -> Self {
        Self {
            script: Script::new(body),
            body,
        }
    }

    /// Starts a call with its first key.
    pub fn key(&self, key: impl ToRedisArgs) -> Invocation<'_> {
        let mut invocation = Invocation {
            script: self,
            keys: Cmd::new(),
            args: Cmd::new(),
        };
        invocation.key(key);
        invocation
    }
}

/// A call of a script: its keys and arguments, each list written into one
/// buffer (a `Cmd` used as an argument list, never sent) rather than an
/// allocation per argument: the reserve script takes three to six
/// arguments per reservation.
pub struct Invocation<'a> {
    script: &'a LuaScript,
    keys: Cmd,
    args: Cmd,
}

impl Invocation<'_> {
    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.arg(key);
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.arg(arg);
        self
    }

    /// EVALSHA; on NOSCRIPT, EVAL with the body (which also caches it again).
    pub async fn invoke(&self, conn: &mut impl ConnectionLike) -> RedisResult<Value> {
        match self
            .command("EVALSHA", self.script.script.get_hash())
            .query_async(conn)
            .await
        {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.command("EVAL", self.script.body)
                    .query_async(conn)
                    .await
            }
            reply => reply,
        }
    }

    fn command(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.args_iter().len());
        // Only `arg` writes these lists: every argument is a simple one.
        for arg in self.keys.args_iter().chain(self.args.args_iter()) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// The Lua scripts, one per state change plus the consistent reads.
pub struct Scripts {
    pub index_sale: LuaScript,
    pub create_sale: LuaScript,
    pub create_campaign: LuaScript,
    pub forget_campaign: LuaScript,
    pub unindex_campaign: LuaScript,
    pub update_campaign: LuaScript,
    pub sale_snapshot: LuaScript,
    pub update_sale: LuaScript,
    pub cancel_sale: LuaScript,
    pub reserve: LuaScript,
    pub cancel_order: LuaScript,
    pub take_cancel: LuaScript,
    pub give_back_cancel: LuaScript,
    pub pay_order: LuaScript,
    pub record_prepay: LuaScript,
    pub refund_order: LuaScript,
    pub settle_refund: LuaScript,
    pub expire_orders: LuaScript,
    pub expire_order: LuaScript,
    pub postpone_expiry: LuaScript,
    pub join_reservations: LuaScript,
    pub accept_orders: LuaScript,
    pub ack_reservations: LuaScript,
    pub claim_deliveries: LuaScript,
    pub delivered: LuaScript,
    pub postpone_delivery: LuaScript,
    pub dead_letter: LuaScript,
    pub redrive_dead_letters: LuaScript,
    pub audit_sale: LuaScript,
    pub record_payment_exception: LuaScript,
    pub settle_payment_exception: LuaScript,
    pub open_sales: LuaScript,
    pub settle_sale: LuaScript,
    pub release_settle: LuaScript,
    pub forget_sale: LuaScript,
    pub queue_join: LuaScript,
    pub queue_poll: LuaScript,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            index_sale: script!("index_sale"),
            create_sale: script!("create_sale"),
            create_campaign: script!("create_campaign"),
            forget_campaign: script!("forget_campaign"),
            unindex_campaign: script!("unindex_campaign"),
            update_campaign: script!("update_campaign"),
            sale_snapshot: script!("sale_snapshot"),
            update_sale: script!("update_sale"),
            cancel_sale: script!("cancel_sale"),
            reserve: script!("reserve"),
            cancel_order: script!("cancel_order"),
            take_cancel: script!("take_cancel"),
            give_back_cancel: script!("give_back_cancel"),
            pay_order: script!("pay_order"),
            record_prepay: script!("record_prepay"),
            refund_order: script!("refund_order"),
            settle_refund: script!("settle_refund"),
            expire_orders: script!("expire_orders"),
            expire_order: script!("expire_order"),
            postpone_expiry: script!("postpone_expiry"),
            join_reservations: script!("join_reservations"),
            accept_orders: script!("accept_orders"),
            ack_reservations: script!("ack_reservations"),
            claim_deliveries: script!("claim_deliveries"),
            delivered: script!("delivered"),
            postpone_delivery: script!("postpone_delivery"),
            dead_letter: script!("dead_letter"),
            redrive_dead_letters: script!("redrive_dead_letters"),
            audit_sale: script!("audit_sale"),
            record_payment_exception: script!("record_payment_exception"),
            settle_payment_exception: script!("settle_payment_exception"),
            open_sales: script!("open_sales"),
            settle_sale: script!("settle_sale"),
            release_settle: script!("release_settle"),
            forget_sale: script!("forget_sale"),
            queue_join: script!("queue_join"),
            queue_poll: script!("queue_poll"),
        }
    }

    /// Every script.
    fn all(&self) -> [&LuaScript; 37] {
        [
            &self.index_sale,
            &self.create_sale,
            &self.create_campaign,
            &self.forget_campaign,
            &self.unindex_campaign,
            &self.update_campaign,
            &self.sale_snapshot,
            &self.update_sale,
            &self.cancel_sale,
            &self.reserve,
            &self.cancel_order,
            &self.take_cancel,
            &self.give_back_cancel,
            &self.pay_order,
            &self.record_prepay,
            &self.refund_order,
            &self.settle_refund,
            &self.expire_orders,
            &self.expire_order,
            &self.postpone_expiry,
            &self.join_reservations,
            &self.accept_orders,
            &self.ack_reservations,
            &self.claim_deliveries,
            &self.delivered,
            &self.postpone_delivery,
            &self.dead_letter,
            &self.redrive_dead_letters,
            &self.audit_sale,
            &self.record_payment_exception,
            &self.settle_payment_exception,
            &self.open_sales,
            &self.settle_sale,
            &self.release_settle,
            &self.forget_sale,
            &self.queue_join,
            &self.queue_poll,
        ]
    }

    /// Loads every script into the script cache (on a Cluster, every
    /// primary's), so the first calls need not send the bodies.
    pub async fn load(&self, conn: &mut impl ConnectionLike) -> RedisResult<()> {
        for script in self.all() {
            script.script.load_async(conn).await?;
        }
        Ok(())
    }

    /// Whether every script is in the script cache (on a Cluster, in every
    /// primary's): one SCRIPT EXISTS with their hashes.
    pub async fn all_cached(&self, conn: &mut impl ConnectionLike) -> RedisResult<bool> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("EXISTS");
        for script in self.all() {
            cmd.arg(script.script.get_hash());
        }
        let cached: Vec<bool> = cmd.query_async(conn).await?;
        Ok(cached.into_iter().all(|cached| cached))
    }
}

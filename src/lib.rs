//! flashsale: a flash-sale and seckill engine.
//!
//! Merchants schedule timed sales of one SKU in limited stock; shoppers race
//! for it. The engine never sells more than the stock, never loses an
//! accepted reservation, and holds each shopper to the sale's per-user limit.
//!
//! # Layout
//! - [`config`]: every setting, as a CLI flag and a `FLASHSALE_*` variable.
//! - [`telemetry`]: logs and the Prometheus metric names.
//! - [`clock`]: the engine's steady clock and timers, which tests move by hand.
//! - [`domain`]: sales, orders, ids and the reservation rule; no I/O.
//! - [`store`]: the source of truth: Redis (Lua scripts from `lua/`) or the
//!   embedded in-process store, behind one trait.
//! - [`inventory`]: one actix actor per sale, answering from memory what it
//!   can and shedding load past its bounds.
//! - [`orders`]: the order service: consumes the reservation streams,
//!   expires unpaid orders, hands orders to the merchant's webhook, and
//!   takes payments (WeChat Pay notifications or simulated).
//! - [`http`]: the axum router: public, admin and ops routes, auth, and the
//!   one place where errors become responses.
//! - [`json`]: strict JSON reading whose errors name the field.
//! - [`startup`]: [`Application::build`] wires it all and binds the socket.

pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod inventory;
pub mod json;
pub mod orders;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::Application;

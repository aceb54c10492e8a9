//! flashsale: a flash-sale and seckill engine.
//!
//! Merchants schedule timed sales of one SKU in limited stock; shoppers race
//! for it. The engine never sells more than the stock, never loses an
//! accepted reservation, and holds each shopper to the sale's per-user limit.
//!
//! # Layout
//! A request crosses three layers: [`http`] parses it and maps the answer,
//! one service function does the work ([`sales`], [`orders`],
//! [`payments`]), and the services reach the state through the inventory
//! actors ([`inventory`]) and the [`store`]. Types that cross layers live
//! in [`domain`]. `docs/architecture.md` follows one reservation and one
//! payment through them, naming each thread hop.
//!
//! - [`config`]: every setting, as a CLI flag and a `FLASHSALE_*` variable.
//! - [`telemetry`]: logs and the Prometheus metric names.
//! - [`clock`]: the engine's steady clock and timers, which tests move by hand.
//! - [`domain`]: sales, orders, ids, the reservation rule, payments, the
//!   audit; no I/O, no HTTP.
//! - [`sales`]: the sale workflows: schedule, change, end, cancel, audit,
//!   the listings, and the live feeds of watched sales for the console.
//! - [`campaigns`]: seckill campaigns (rounds × items, each a sale), the
//!   seckill page, and the round-start reminders.
//! - [`orders`]: the order workflows (reserve, look up, cancel, expire) and
//!   the order service, the background task that consumes the reservation
//!   streams, expires unpaid orders, hands orders to the merchant's
//!   webhook (a campaign round's reminder too) and sends refunds to WeChat
//!   Pay (one outbox for all).
//! - [`payments`]: WeChat Pay notifications (payments and refunds), prepay,
//!   close, refunds, and simulated payments, each applied once.
//! - [`admission`]: the waiting room of queued sales: join, poll, and the
//!   per-node memory that bounds polling.
//! - [`inventory`]: one actix actor per sale, answering from memory what it
//!   can and shedding load past its bounds.
//! - [`store`]: the source of truth: Redis (Lua scripts from `lua/`) or the
//!   embedded in-process store, behind one trait.
//! - [`http`]: the axum router: public, admin and ops routes, auth, limits,
//!   the views and schemas, the one table of error codes, and the merchant
//!   console's embedded page.
//! - [`json`]: strict JSON reading whose errors name the field.
//! - [`startup`]: [`Application::build`] wires it all and binds the socket.

pub mod admission;
pub mod campaigns;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod inventory;
pub mod json;
pub mod orders;
pub mod payments;
pub mod sales;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use startup::Application;

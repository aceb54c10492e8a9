//! The Redis store: standalone or Cluster. Each state change is one script
//! from `lua/` (see [`super::scripts`]), touching the keys of one hash slot.
//! Reads that must be consistent (a sale with its counts) are scripts too.
//!
//! - [`connection`]: connecting, checking the server's settings, loading the
//!   scripts, and running scripts and commands on the one multiplexed
//!   connection (timed, errors mapped); the pub/sub subscription, on one
//!   configured node at a time (a deadpool-redis pool of one per node).
//! - [`codec`]: how records and replies look in Redis: the sale's fields,
//!   the order record's `name=value` pairs, the scripts' replies, outbox
//!   members and stream entries. No I/O.
//! - [`store`]: the [`Store`](super::Store) impl: which script or command
//!   each call sends, with which keys and arguments; [`reads`]: the reads
//!   several of its calls share; [`indexes`]: the indexes of sales and of
//!   each shopper's sales, which have no sale's slot.
//!
//! Creating a sale (or moving its window) is two scripts, since the
//! indexes of sales are no sale's and have no sale's hash tag:
//! `index_sale.lua` lists the id, then `create_sale.lua` writes the sale.
//! A crash between them leaves an id that names no sale, which every reader
//! of the index skips.
//!
//! What Redis is sent outside scripts, and why:
//! - `PUBLISH` on `fs:stock_returns` (announcing stock returns): a message
//!   to the other engine nodes, not state. A node that misses one learns
//!   the stock at its next refresh.
//! - `XREADGROUP` and `XAUTOCLAIM` on a sale's stream (reading and taking
//!   over reservations): the consumer-group protocol itself, one atomic
//!   command each on one key. They change only the group's record of which
//!   entry is pending on which consumer; the orders change in
//!   `accept_orders.lua`, and entries leave in `ack_reservations.lua`.
//! - `ZADD`/`ZREM` on a shopper's sales (`fs:shopper_sales:<shopper>`) when
//!   the order service settles a sale or retention deletes it, and `ZREM`
//!   on the indexes of sales then: index entries, one key each, in no
//!   sale's slot (see [`indexes`]); `UNLINK` of the forgotten sale's
//!   shoppers hash (`fs:{s_id}:shoppers`), which `forget_sale.lua` leaves
//!   until the shoppers' indexes are done.
//! - `SCRIPT LOAD` (the script cache, not data). Everything else outside
//!   scripts is a read: `HGET`, `HSCAN`, `ZRANGE`, `XLEN`, `ZCARD`,
//!   `CONFIG GET`.

mod codec;
mod connection;
mod indexes;
mod reads;
mod store;

use std::time::Duration;

pub use self::connection::RedisTarget;
use self::connection::{Connection, Subscriber};
use super::scripts::Scripts;
use super::ShopperBounds;

/// The production store: one multiplexed connection to Redis (standalone or
/// Cluster) and the scripts it runs.
pub struct RedisStore {
    conn: Connection,
    scripts: Scripts,
    /// The pub/sub subscription's connection, to one node at a time
    /// (Redis Cluster forwards PUBLISH to every node).
    subscriber: Subscriber,
    /// This process's name in announcements, to skip its own.
    node: String,
    timeout: Duration,
    /// What one shopper may leave unpaid in one sale.
    shopper_bounds: ShopperBounds,
}

//! The Redis store: standalone or Cluster. Each state change is one script
//! from `lua/` (see [`super::scripts`]). Reads that must be consistent (a
//! sale with its counts) are scripts too.
//!
//! - [`connection`]: connecting, checking the server's settings, loading the
//!   scripts, and running scripts and commands on the one multiplexed
//!   connection (timed, errors mapped); the pub/sub subscription.
//! - [`codec`]: how records and replies look in Redis: the sale's fields,
//!   the order record's `name=value` pairs, the scripts' replies, outbox
//!   members and stream entries. No I/O.
//! - [`store`]: the [`Store`](super::Store) impl: which script or command
//!   each call sends, with which keys and arguments.

mod codec;
mod connection;
mod store;

use std::time::Duration;

use self::connection::Connection;
pub use self::connection::RedisTarget;
use super::scripts::Scripts;

/// The production store: one multiplexed connection to Redis (standalone or
/// Cluster) and the scripts it runs.
pub struct RedisStore {
    conn: Connection,
    scripts: Scripts,
    /// A plain client of the first node, for the pub/sub subscription
    /// (Redis Cluster forwards PUBLISH to every node).
    pubsub_client: redis::Client,
    /// This process's name in announcements, to skip its own.
    node: String,
    timeout: Duration,
}

//! Goal: a store call whose reply is lost on its way back (the connection
//! drops after Redis ran the script) is not run again by the Redis client
//! library: its change happens once, and the engine learns that the
//! outcome is unknown (`Unavailable`, a 503 to the client), as on a
//! standalone Redis. Taking a shopper's cancel twice, or giving it back
//! twice, would move their count of cancels past what happened.
//! Method: a 3-node Cluster whose nodes announce a relay each in front of
//! them, so every connection of the store goes through the relays; an armed
//! relay drops the next reply it carries and closes the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::domain::ShopperId;
use flashsale::store::{keys, RedisStore, RedisTarget, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::conformance::sale;
use crate::support::{RedisCluster, RedisServer};

/// A TCP relay in front of one Redis node.
struct Relay {
    port: u16,
    /// Armed: the next reply from the node is dropped, and its connection
    /// closed both ways.
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(node: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let armed = Arc::clone(&cut);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", node)).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, Arc::clone(&armed)));
            }
        });
        Self { port, cut }
    }
}

/// Carries one connection both ways until either side closes, or a reply
/// comes while `cut` is armed.
async fn relay(client: TcpStream, server: TcpStream, cut: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) if cut.swap(false, Ordering::SeqCst) => break,
            Ok(read) => {
                if client_write.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    }
    requests.abort();
}

/// Makes every node of `cluster` announce its relay's port (its cluster
/// bus stays where it is) and waits until every node's slot map names
/// only relays.
async fn announce(cluster: &RedisCluster, relays: &[Relay]) {
    for (node, relay) in cluster.nodes().iter().zip(relays) {
        node.config_set(
            "cluster-announce-bus-port",
            &(node.port() + 10_000).to_string(),
        );
        node.config_set("cluster-announce-port", &relay.port.to_string());
    }
    let relayed: Vec<u16> = relays.iter().map(|relay| relay.port).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let announced = cluster.nodes().iter().all(|node| {
            let slots: redis::Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut node.connection())
                .unwrap();
            slot_owner_ports(&slots)
                .iter()
                .all(|port| relayed.contains(port))
        });
        if announced {
            return;
        }
        assert!(Instant::now() < deadline, "the relays were never announced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The port of each slot range's primary in a `CLUSTER SLOTS` reply.
fn slot_owner_ports(slots: &redis::Value) -> Vec<u16> {
    let redis::Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}");
    };
    ranges
        .iter()
        .map(|range| match range {
            redis::Value::Array(items) => match &items[2] {
                redis::Value::Array(primary) => match primary[1] {
                    redis::Value::Int(port) => port as u16,
                    ref other => panic!("a port: {other:?}"),
                },
                other => panic!("a primary: {other:?}"),
            },
            other => panic!("a slot range: {other:?}"),
        })
        .collect()
}

fn cancels_taken(node: &[RedisServer], key: &str, shopper: &str) -> i64 {
    let mut hget = redis::cmd("HGET");
    hget.arg(key).arg(shopper);
    node.iter()
        .find_map(|node| hget.query::<Option<i64>>(&mut node.connection()).ok())
        .expect("the node of the key")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_reply_is_lost_is_not_run_again_on_a_cluster() {
    let cluster = RedisCluster::start();
    let mut relays = Vec::new();
    for node in cluster.nodes() {
        relays.push(Relay::start(node.port()).await);
    }
    announce(&cluster, &relays).await;
    let urls = relays
        .iter()
        .map(|relay| format!("redis://127.0.0.1:{}/", relay.port))
        .collect();
    let store = RedisStore::connect(
        &RedisTarget::Cluster(urls),
        Duration::from_secs(2),
        flashsale::config::RedisDurability::Always,
    )
    .await
    .expect("connect through the relays");
    let live = sale(10, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let shopper = ShopperId::parse("lost-reply").unwrap();
    let cancels = keys::SaleKeys::new(&live.id).cancels();

    store.take_cancel(&live.id, &shopper).await.unwrap();
    assert_eq!(cancels_taken(cluster.nodes(), &cancels, "lost-reply"), 1);

    for relay in &relays {
        relay.cut.store(true, Ordering::SeqCst);
    }
    let lost = store.take_cancel(&live.id, &shopper).await;
    for relay in &relays {
        relay.cut.store(false, Ordering::SeqCst);
    }
    assert!(
        matches!(lost, Err(StoreError::Unavailable(_))),
        "the outcome is unknown: {lost:?}"
    );
    assert_eq!(
        cancels_taken(cluster.nodes(), &cancels, "lost-reply"),
        2,
        "taken once by the call whose reply was lost, not again"
    );
    store.take_cancel(&live.id, &shopper).await.unwrap();
    assert_eq!(cancels_taken(cluster.nodes(), &cancels, "lost-reply"), 3);
}

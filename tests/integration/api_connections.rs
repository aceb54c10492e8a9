//! Goal: shoppers waiting for a sale's opening keep their connections:
//! a kept-alive connection that sits idle past the header-read timeout is
//! still served, while a request whose headers come too slowly is still cut
//! off. (A connection idle past the idle timeout is closed and counted:
//! `tests/idle_close_metrics.rs`, a binary of its own for its metrics.)
//! Method: raw TCP connections to the engine speaking HTTP/1.1 by hand, so
//! each request goes on the connection the test chose.

use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{test_config, TestApp};

const HEALTH_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\n\r\n";

/// Sends `GET /healthz` on `stream` and reads the whole answer (its body
/// is small and has a Content-Length); the status code, or `None` if the
/// connection was closed instead.
async fn health_on(stream: &mut TcpStream) -> Option<u16> {
    answer_on(stream, HEALTH_REQUEST)
        .await
        .map(|(status, _)| status)
}

/// Sends `request` on `stream` and reads the whole answer (it has a
/// Content-Length): its status and its text (head and body), or `None` if
/// the connection was closed instead.
async fn answer_on(stream: &mut TcpStream, request: &[u8]) -> Option<(u16, String)> {
    stream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, text.into_owned()));
            }
        }
    }
}

fn address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// 5,000 shoppers connect, ask once, and wait past the header-read timeout
/// (as they would for a sale's countdown); then each asks again on the
/// same connection, and every one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_outlive_the_header_timeout() {
    const CONNECTIONS: usize = 5_000;
    let mut config = test_config();
    config.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let address = address(&app);
    let connected: Vec<TcpStream> = stream::iter(0..CONNECTIONS)
        .map(|_| {
            let address = address.clone();
            async move {
                let mut stream = TcpStream::connect(&address).await.expect("connect");
                assert_eq!(health_on(&mut stream).await, Some(200), "first request");
                stream
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert_eq!(connected.len(), CONNECTIONS);

    tokio::time::sleep(Duration::from_millis(900)).await;
    let answers = join_all(
        connected
            .into_iter()
            .map(|mut stream| async move { health_on(&mut stream).await }),
    )
    .await;
    let answered = answers
        .iter()
        .filter(|status| **status == Some(200))
        .count();
    assert_eq!(
        answered, CONNECTIONS,
        "every kept-alive connection answers after sitting idle three header timeouts"
    );
}

/// A connection an HTTP client opened and kept unused in its pool past the
/// header-read timeout is served when the client finally sends on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_pooled_connection_outlives_the_header_timeout() {
    let mut config = test_config();
    config.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(health_on(&mut stream).await, Some(200));
}

/// The slow-loris guard still holds on a kept-alive connection: once a
/// request's first byte has come, its headers must follow within the
/// header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_on_a_kept_alive_connection_are_cut_off() {
    let mut config = test_config();
    config.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let mut stream = TcpStream::connect(address(&app)).await.unwrap();
    assert_eq!(health_on(&mut stream).await, Some(200));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("the engine closed the slow request's connection");
    assert!(
        matches!(read, Ok(0) | Err(_)) || buffer.starts_with(b"HTTP/1.1 408"),
        "closed, not answered: {:?}",
        read.map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
    );
    println!("slow headers cut off after {:?}", started.elapsed());
}

/// Past `FLASHSALE_MAX_CONNECTIONS` open connections, a new connection's
/// request is answered 503 `overloaded` with `Retry-After`, and the
/// connection is closed; the ops routes (probes, metrics) are still
/// answered there; once a served connection closes, a new one is served
/// again. Connections are opened one at a time, each asking once and
/// staying open, until one is refused: no more than the bound were served
/// (the test's own client may hold one place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_answered_503_and_closed() {
    const MAX: usize = 3;
    const SALES_REQUEST: &[u8] = b"GET /api/v1/sales HTTP/1.1\r\nHost: flashsale\r\n\r\n";
    let mut config = test_config();
    config.max_connections = MAX as u32;
    let app = TestApp::spawn_with(config).await;
    let mut served = Vec::new();
    let (mut refused, answer) = loop {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        let (status, answer) = answer_on(&mut stream, SALES_REQUEST)
            .await
            .expect("an answer");
        if status == 503 {
            break (stream, answer);
        }
        assert_eq!(status, 200, "{answer}");
        served.push(stream);
        assert!(served.len() <= MAX, "{} connections served", served.len());
    };
    assert!(served.len() >= MAX - 1, "refused at {}", served.len());
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1"), "{answer}");
    assert!(head.contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
    let mut rest = [0u8; 16];
    assert_eq!(
        refused.read(&mut rest).await.unwrap(),
        0,
        "closed after the answer"
    );

    let mut probe = TcpStream::connect(address(&app)).await.unwrap();
    let (status, answer) = answer_on(&mut probe, HEALTH_REQUEST)
        .await
        .expect("an answer");
    assert_eq!(status, 200, "a probe is answered over capacity: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    served.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(address(&app)).await.unwrap();
        if answer_on(&mut stream, SALES_REQUEST)
            .await
            .map(|(status, _)| status)
            == Some(200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no place came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"flashsale_http_connections_closed_total{reason="over_capacity"}"#),
        "{metrics}"
    );
}

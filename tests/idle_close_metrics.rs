//! How kept-alive connections are closed, and the metrics that count it:
//! one idle past the idle timeout (accepted, closed as `idle`, open
//! connections a gauge), and one whose next request's head stays
//! unfinished past the header-read timeout (`header_timeout`).
//! Its own test binary, because the metrics are the process's: in the
//! integration binary other tests' engines close connections as idle too,
//! and their closes would count for these tests'.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flashsale::config::Config;
use flashsale::startup::Application;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the close may take, and then to show in the metrics (the
/// server counts it after hyper has dropped the connection).
const WITHIN: Duration = Duration::from_secs(10);

/// The value of the series `name` in the metrics `text` (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// An engine running with its own config, and a client that reads its
/// metrics on a fresh connection each time: a pooled connection left idle
/// would be closed as idle too and could pass for the one under test.
struct Running {
    address: SocketAddr,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(config: Config) -> Self {
        let app = Application::build(config).await.expect("build the app");
        let address = app.address();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client");
        Self {
            address,
            client,
            stop,
            server,
        }
    }

    async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .expect("the metrics answer");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("the metrics' text")
    }

    /// The metrics once the series `name` has passed its value in
    /// `before`, or after [`WITHIN`].
    async fn metrics_past(&self, before: &str, name: &str) -> String {
        let waiting = Instant::now();
        let mut after = self.metrics().await;
        while metric(&after, name) <= metric(before, name) && waiting.elapsed() < WITHIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
            after = self.metrics().await;
        }
        after
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server
            .await
            .expect("the server task")
            .expect("the server stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout_and_counted() {
    let mut config = Config::for_tests();
    config.header_read_timeout_ms = 5_000;
    config.idle_timeout_ms = 200;
    let engine = Running::start(config).await;
    let before = engine.metrics().await;

    // One request, then the connection sits idle: everything read up to
    // the close is the answer.
    let mut stream = TcpStream::connect(engine.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WITHIN, stream.read_to_end(&mut answer))
        .await
        .expect("the idle connection is closed")
        .expect("closed, not reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered first: {answer}"
    );

    let idle = "flashsale_http_connections_closed_total{reason=\"idle\"}";
    let after = engine.metrics_past(&before, idle).await;
    assert_eq!(
        metric(&after, idle),
        metric(&before, idle) + 1.0,
        "closed as idle, once:\n{after}"
    );
    let accepted = "flashsale_http_connections_accepted_total";
    assert!(metric(&after, accepted) > metric(&before, accepted));
    assert!(
        after.contains("flashsale_http_connections_open"),
        "open connections are a gauge:\n{after}"
    );
    engine.stop().await;
}

/// On a kept-alive connection the next request's head is timed from its
/// first byte with the header-read timeout, not the idle one: a second
/// head left unfinished is cut off and counted as `header_timeout`. (A
/// connection's heads share one timer, moved from the idle deadline to the
/// header-read one when the first byte comes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_second_head_is_cut_at_the_header_read_timeout() {
    let mut config = Config::for_tests();
    config.header_read_timeout_ms = 300;
    // Far past `WITHIN`: a close within it is not the idle timeout's.
    config.idle_timeout_ms = 60_000;
    let engine = Running::start(config).await;
    let before = engine.metrics().await;

    let mut stream = TcpStream::connect(engine.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_answer(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\nX-Slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WITHIN, stream.read_to_end(&mut rest))
        .await
        .expect("the unfinished head is cut off");
    // Closed: end of stream, maybe after a 408 answer, or a reset.
    if read.is_ok() && !rest.is_empty() {
        let answer = String::from_utf8_lossy(&rest);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    let header_timeout = "flashsale_http_connections_closed_total{reason=\"header_timeout\"}";
    let after = engine.metrics_past(&before, header_timeout).await;
    assert_eq!(
        metric(&after, header_timeout),
        metric(&before, header_timeout) + 1.0,
        "closed as a header timeout, once:\n{after}"
    );
    engine.stop().await;
}

/// One HTTP/1.1 answer with a `content-length`, read whole from `stream`.
async fn read_one_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout(WITHIN, stream.read(&mut buffer))
            .await
            .expect("answered")
            .expect("read");
        assert!(read > 0, "closed before the answer ended");
        answer.extend_from_slice(&buffer[..read]);
    }
}

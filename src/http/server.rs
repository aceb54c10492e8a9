//! The HTTP/1.1 server loop: binds the listener with its backlog, accepts
//! connections, guards against slow clients, counts every connection from
//! accept to close, and drains on shutdown. `axum::serve` cannot be told a
//! header-read timeout, so the loop drives hyper-util itself.
//!
//! Two timeouts, told apart (`HeadTimer`): a request's headers must
//! arrive within the header-read timeout of its first byte (slow-loris),
//! and a kept-alive connection may wait for its next request's first byte
//! for the longer idle timeout. hyper alone times both with one clock that
//! starts when the previous answer is sent, so a shopper's connection
//! polled every few seconds while the sale's countdown runs would be cut
//! at the header-read timeout, racing the shopper's next request.
//!
//! Open connections are bounded ([`ConnectionRules::max_open`]): past the
//! bound a connection's request is answered 503 `overloaded` and the
//! connection closed, so a crowd past what the engine can hold hears so
//! rather than waiting in the kernel's backlog; the ops routes are still
//! answered there, so probes and scrapes go on at a peak.
//!
//! HTTP/1 only: protocol detection would wait, untimed, for a client's
//! first bytes; Mini Program traffic reaches the engine as HTTP/1.1 behind
//! the TLS proxy.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::convert::Infallible;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::future;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::util::Either;
use tower::Service;

use super::ops::OPS_PATHS;
use super::ApiError;
use crate::telemetry;

/// Longest a graceful shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `address` with room for `backlog` connections the kernel has
/// completed but the engine not yet accepted (the kernel caps it at
/// `net.core.somaxconn`). A connection that finds the queue full has its
/// handshake dropped and retried by the client's TCP, seconds later.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Why a connection closed, as the connections metric counts it.
#[derive(Debug, Clone, Copy)]
enum Closed {
    /// The client sent nothing within the idle timeout of connecting.
    Silent,
    /// The engine stopped before the client sent anything.
    Shutdown,
    /// The client took longer than the header-read timeout to send a
    /// request's headers after their first byte.
    HeaderTimeout,
    /// A kept-alive connection sat idle (no byte of a next request) for the
    /// idle timeout.
    Idle,
    /// The client closed it, or the connection ended after an answer.
    Ended,
    /// An I/O or protocol error.
    Failed,
    /// Past the bound on open connections: closed after its one request
    /// (answered 503 `overloaded`, or an ops route), or unanswered past
    /// the bound on those.
    OverCapacity,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::Shutdown => "shutdown",
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
            Self::Ended => "ended",
            Self::Failed => "failed",
            Self::OverCapacity => "over_capacity",
        }
    }
}

/// An accepted connection, counted open until dropped.
struct Counted;

impl Counted {
    fn accepted() -> Self {
        telemetry::connection_accepted();
        Self
    }

    fn close(self, reason: Closed) {
        telemetry::connection_closed(reason.as_str());
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        telemetry::connection_dropped();
    }
}

/// What a connection's timer watches: the bytes it has read, and whether
/// the last timeout that fired was the idle one; and the one tokio timer
/// its request heads are timed with.
struct Activity {
    bytes_read: AtomicU64,
    idle_expired: AtomicBool,
    /// Every head's sleep ([`HeadSleep`]) moves this one timer rather than
    /// making and filing one of its own: tokio moves a filed timer to a
    /// later deadline with an atomic store and files it again only when it
    /// comes due, so a kept-alive connection's requests cost its timer
    /// wheel nothing after the first. Locked only by the connection's own
    /// task.
    timer: Mutex<Pin<Box<Sleep>>>,
}

impl Activity {
    /// Within the runtime: the timer is tokio's.
    fn new() -> Self {
        Self {
            bytes_read: AtomicU64::new(0),
            idle_expired: AtomicBool::new(false),
            timer: Mutex::new(Box::pin(tokio::time::sleep(Duration::ZERO))),
        }
    }
}

/// A connection's socket, counting the bytes read from it.
struct Metered {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.activity
            .bytes_read
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper asks it for one sleep, of the
/// header-read timeout, each time it starts waiting for a request's head;
/// the sleep given back ends `idle_timeout` after that start while no byte
/// has come, and `header_read_timeout` after the first byte once one has.
#[derive(Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let waiting_since = deadline
            .checked_sub(self.header_read_timeout)
            .unwrap_or_else(Instant::now);
        self.activity.idle_expired.store(false, Ordering::Relaxed);
        Box::pin(HeadSleep {
            activity: Arc::clone(&self.activity),
            bytes_read_before: self.activity.bytes_read.load(Ordering::Relaxed),
            first_byte_seen: false,
            header_read_timeout: self.header_read_timeout,
            deadline: (waiting_since + self.idle_timeout).into(),
        })
    }
}

/// See [`HeadTimer`]. hyper polls it after every read that left the head
/// incomplete, so the first byte is noticed as it comes; each poll sets
/// the connection's one timer ([`Activity::timer`]) to this sleep's
/// deadline and polls it.
struct HeadSleep {
    activity: Arc<Activity>,
    bytes_read_before: u64,
    first_byte_seen: bool,
    header_read_timeout: Duration,
    deadline: tokio::time::Instant,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this.first_byte_seen
            && this.activity.bytes_read.load(Ordering::Relaxed) != this.bytes_read_before
        {
            this.first_byte_seen = true;
            this.deadline = tokio::time::Instant::now() + this.header_read_timeout;
        }
        let mut timer = this.activity.timer.lock();
        if timer.deadline() != this.deadline {
            timer.as_mut().reset(this.deadline);
        }
        let fired = timer.as_mut().poll(cx);
        if fired.is_ready() && !this.first_byte_seen {
            this.activity.idle_expired.store(true, Ordering::Relaxed);
        }
        fired
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// How the server holds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionRules {
    /// Longest from a request's first byte to its last header
    /// (slow-loris).
    pub header_read_timeout: Duration,
    /// Longest a connection waits for the first byte of its first or next
    /// request.
    pub idle_timeout: Duration,
    /// Most connections open at once; past it a connection's request is
    /// answered 503 `overloaded` (the ops routes are still answered) and
    /// the connection closed, and past an eighth as many of those as well,
    /// it is closed unanswered.
    pub max_open: usize,
}

/// Serves HTTP/1.1 on `listener` until `shutdown`, then stops accepting and
/// lets open connections finish (at most `DRAIN_TIMEOUT`), holding its
/// connections to `rules`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    rules: ConnectionRules,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ConnectionRules {
        header_read_timeout,
        idle_timeout,
        max_open,
    } = rules;
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let connections = GracefulShutdown::new();
    // A place for each connection served; past them, a place for each
    // connection told it is over capacity.
    let served_places = Arc::new(Semaphore::new(max_open));
    let refusal_places = Arc::new(Semaphore::new(max_open / 8 + 1));
    // Tells connections that have not sent their first byte yet (hyper's
    // graceful shutdown only reaches connections it already serves, and an
    // HTTP client may keep a fresh, unused connection in its pool).
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let counted = Counted::accepted();
        let (place, refused) = match Arc::clone(&served_places).try_acquire_owned() {
            Ok(place) => (place, false),
            Err(_) => match Arc::clone(&refusal_places).try_acquire_owned() {
                Ok(place) => (place, true),
                Err(_) => {
                    drop(stream);
                    counted.close(Closed::OverCapacity);
                    continue;
                }
            },
        };
        let service = match make_service.call(peer).await {
            Ok(service) if refused => Either::Right(OverCapacity(service)),
            Ok(service) => Either::Left(service),
            Err(never) => match never {},
        };
        let (mut builder, watcher) = (builder.clone(), connections.watcher());
        let activity = Arc::new(Activity::new());
        builder
            .http1()
            .timer(HeadTimer {
                activity: Arc::clone(&activity),
                header_read_timeout,
                idle_timeout,
            })
            .header_read_timeout(header_read_timeout)
            .keep_alive(!refused);
        // A connection over capacity gets no longer than a request's
        // headers to start its request.
        let first_byte_timeout = if refused {
            header_read_timeout.min(idle_timeout)
        } else {
            idle_timeout
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _place = place;
            // hyper times a request from its first byte: a connection that
            // has sent nothing yet is timed here, like an idle kept-alive
            // one (an HTTP client may open a connection and keep it unused
            // in its pool for a while).
            let mut first = [0u8; 1];
            tokio::select! {
                // A connection whose first bytes are there is served.
                biased;
                peeked = tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)) => {
                    if peeked.is_err() {
                        return counted.close(Closed::Silent);
                    }
                }
                _ = stopped.wait_for(|stopped| *stopped) => return counted.close(Closed::Shutdown),
            }
            let metered = Metered {
                stream,
                activity: Arc::clone(&activity),
            };
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(metered),
                TowerToHyperService::new(service),
            );
            let closed = match watcher.watch(connection.into_owned()).await {
                Ok(()) if refused => Closed::OverCapacity,
                Ok(()) => Closed::Ended,
                Err(err) => {
                    let timed_out = err
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                    match timed_out {
                        true if activity.idle_expired.load(Ordering::Relaxed) => Closed::Idle,
                        true => Closed::HeaderTimeout,
                        false => Closed::Failed,
                    }
                }
            };
            counted.close(closed);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
}

/// The service of a connection past the bound on open ones: the ops
/// routes (probes, metrics: outside load shedding) are the router's, any
/// other request is answered 503 `overloaded`.
#[derive(Clone)]
struct OverCapacity<S>(S);

impl<S> Service<Request<Incoming>> for OverCapacity<S>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = future::Either<S::Future, future::Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        if OPS_PATHS.contains(&request.uri().path()) {
            return future::Either::Left(self.0.call(request));
        }
        telemetry::count_shed("connections");
        let refusal = ApiError::Overloaded(
            "the server holds all the connections it can; retry shortly".into(),
        );
        future::Either::Right(future::ready(Ok(refusal.into_response())))
    }
}

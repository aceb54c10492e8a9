//! The one layer every request passes ([`FrontDoorLayer`]): for the engine
//! routes, and apart for WeChat Pay's notify route, an in-flight bound and
//! the request timeout ([`Shedding`]), for every route a handler's panic
//! turned into a 500, then the counts of the answer. Requests are counted
//! under labels from fixed sets, so no client can add a metric series: the
//! matched route pattern (or `unmatched`), a standard method (or `other`),
//! and the status.
//!
//! One layer rather than one per concern, and a service of its own rather
//! than axum's `from_fn`, which costs every request a second clone of the
//! route's boxed service, a boxed `Next` and its boxed future. Its future
//! ([`FrontDoorFuture`]) is written out rather than an `async` block: it
//! polls the route's future where it lies, where nested `async` blocks
//! moved that future (and the request inside it) from block to block on
//! the first poll, and axum boxes it once with the route, where a boxed
//! `async` block was boxed twice. The request timeout runs from the route's
//! call, but its timer is made only if the route's future is not ready at
//! its first poll: a sold-out answer never makes one.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{unconstrained, Unconstrained};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::limits::Shedding;
use crate::telemetry::{self, HttpRequestCounters, Sheds};

/// What the front door does for a group of routes.
pub(super) struct FrontDoor {
    /// The in-flight bound and the request timeout (`None`: the ops
    /// routes, which answer under overload).
    pub(super) shedding: Option<Shedding>,
    /// Where the engine's and the notify route's 429 and 503 answers,
    /// sheds included, are counted for the consoles' live feeds.
    pub(super) sheds: Option<Arc<Sheds>>,
    pub(super) requests: Arc<HttpRequestCounters>,
}

/// Wraps each route in a [`FrontDoorService`] sharing one [`FrontDoor`].
#[derive(Clone)]
pub(super) struct FrontDoorLayer(pub(super) Arc<FrontDoor>);

impl<S> Layer<S> for FrontDoorLayer {
    type Service = FrontDoorService<S>;

    fn layer(&self, inner: S) -> FrontDoorService<S> {
        FrontDoorService {
            door: Arc::clone(&self.0),
            inner,
        }
    }
}

#[derive(Clone)]
pub(super) struct FrontDoorService<S> {
    door: Arc<FrontDoor>,
    inner: S,
}

impl<S> Service<Request> for FrontDoorService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontDoorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        let shedding = self.door.shedding.as_ref();
        let in_flight = shedding.map(Shedding::admit);
        // Past the in-flight bound the route is not called at all. Making
        // the route's future runs none of its handler: that starts at its
        // first poll, right after this.
        let answer = match (shedding, &in_flight) {
            (Some(shedding), Some(None)) => Answer::Shed {
                response: shedding.overloaded(),
            },
            _ => Answer::Route {
                future: self.inner.call(request),
            },
        };
        FrontDoorFuture {
            answer,
            timeout_at: shedding.map(|shedding| Instant::now() + shedding.timeout()),
            timer: None,
            in_flight: in_flight.flatten(),
            door: Arc::clone(&self.door),
            route,
            method,
        }
    }
}

pin_project! {
    /// A request's answer through the front door: the route's, or the
    /// front door's own (shed, timed out, panicked), then counted.
    pub(super) struct FrontDoorFuture<F> {
        #[pin]
        answer: Answer<F>,
        // When the request times out (the routes with bounds only).
        timeout_at: Option<Instant>,
        // The timer for `timeout_at`, made the first time the route's
        // future is not ready. Unconstrained by tokio's task budget, as
        // tokio's own `timeout` polls its timer: a route that spends the
        // whole budget on every poll still times out.
        #[pin]
        timer: Option<Unconstrained<Sleep>>,
        // The place among the requests in flight, given back with the
        // answer.
        in_flight: Option<OwnedSemaphorePermit>,
        door: Arc<FrontDoor>,
        route: Option<MatchedPath>,
        method: &'static str,
    }
}

pin_project! {
    #[project = AnswerProjection]
    enum Answer<F> {
        // Past the in-flight bound: 503 `overloaded`, made at the call.
        Shed { response: Response },
        // The route's own answer.
        Route { #[pin] future: F },
        // Answered: the route's future, if any, is dropped.
        Done,
    }
}

impl<F> Future for FrontDoorFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match this.answer.as_mut().project() {
            AnswerProjection::Shed { response } => std::mem::take(response),
            AnswerProjection::Route { future } => {
                let (door, timeout_at, mut timer) = (&**this.door, *this.timeout_at, this.timer);
                // The route's answer, or past the request timeout the front
                // door's; a panic in either is a 500.
                let polled = catch_unwind(AssertUnwindSafe(|| {
                    if let Poll::Ready(Ok(response)) = future.poll(cx) {
                        return Poll::Ready(response);
                    }
                    let (Some(shedding), Some(at)) = (&door.shedding, timeout_at) else {
                        return Poll::Pending;
                    };
                    if timer.is_none() {
                        timer.set(Some(unconstrained(tokio::time::sleep_until(at))));
                    }
                    match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
                        Some(Poll::Ready(())) => Poll::Ready(shedding.timed_out()),
                        _ => Poll::Pending,
                    }
                }));
                match polled {
                    Ok(Poll::Ready(response)) => response,
                    Ok(Poll::Pending) => return Poll::Pending,
                    Err(panic) => panic_response(panic),
                }
            }
            AnswerProjection::Done => panic!("the front door's future polled after its answer"),
        };
        this.answer.set(Answer::Done);
        this.in_flight.take();
        let status = response.status().as_u16();
        if let Some(sheds) = &this.door.sheds {
            sheds.count(status);
        }
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        this.door.requests.count(route, this.method, status);
        Poll::Ready(Ok(response))
    }
}

/// A handler panicked (a bug): 500 with a JSON body, counted, logged.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    telemetry::count_panic();
    tracing::error!("a request handler panicked");
    let body = serde_json::json!({"error": {"code": "internal", "message": "internal error"}});
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// A request method as a metric label: the standard methods by name, any
/// other token `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn methods_outside_the_standard_set_are_labelled_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for token in ["XMETHOD1", "get", "PROPFIND"] {
            let method = Method::from_bytes(token.as_bytes()).expect("a method token");
            assert_eq!(method_label(&method), "other", "{token}");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json() {
        async fn broken() -> &'static str {
            panic!("a bug")
        }
        let door = FrontDoor {
            shedding: None,
            sheds: None,
            requests: Arc::new(HttpRequestCounters::default()),
        };
        let app = Router::new()
            .route("/broken", get(broken))
            .layer(FrontDoorLayer(Arc::new(door)));
        let request = Request::builder()
            .uri("/broken")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("an answer");
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "internal");
    }
}

//! The canonical client stack — deadline → retry → hedge → breaker → rate limit →
//! concurrency limit → per-attempt timeout → hyper client — over loopback against a real
//! axum upstream that sheds (503 + Retry-After), rate-limits (429), is slow, and fails.
//! Real time: the assertions are on what the caller sees, on how often the upstream was
//! called, and upper bounds on time.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_breaker::{CircuitBreakerLayer, FailureModel, State};
use palisade_core::classify::HttpClassifier;
use palisade_core::{CircuitOpen, Elapsed};
use palisade_deadline::{DeadlineLayer, TimeoutLayer};
use palisade_fanout::{HedgeDelay, HedgeLayer};
use palisade_limit::ConcurrencyLimitLayer;
use palisade_rate::{Quota, RateLimitLayer};
use palisade_retry::{Backoff, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

use crate::support::serve;

/// Calls per route, as the upstream saw them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<&'static str, usize>>>);

impl Seen {
    /// Counts a call and returns its number on that route (0 for the first).
    fn hit(&self, route: &'static str) -> usize {
        let mut seen = self.0.lock().unwrap();
        let n = seen.entry(route).or_default();
        *n += 1;
        *n - 1
    }

    fn count(&self, route: &'static str) -> usize {
        self.0.lock().unwrap().get(route).copied().unwrap_or(0)
    }
}

fn upstream(seen: &Seen) -> Router {
    let s = seen.clone();
    let ok = get(move || {
        s.hit("ok");
        async { "ok" }
    });
    let s = seen.clone();
    // The first call is shed with a Retry-After; later ones succeed.
    let shed = get(move || {
        let first = s.hit("shed") == 0;
        async move {
            if first {
                let mut res = StatusCode::SERVICE_UNAVAILABLE.into_response();
                res.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                res
            } else {
                "ok".into_response()
            }
        }
    });
    let s = seen.clone();
    let limited = get(move || {
        let first = s.hit("limited") == 0;
        async move {
            if first {
                let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
                res.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                res
            } else {
                "ok".into_response()
            }
        }
    });
    let s = seen.clone();
    let slow = get(move || {
        s.hit("slow");
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }
    });
    let s = seen.clone();
    let fail = get(move || {
        s.hit("fail");
        async { StatusCode::INTERNAL_SERVER_ERROR }
    });
    Router::new()
        .route("/ok", ok)
        .route("/shed", shed)
        .route("/limited", limited)
        .route("/slow", slow)
        .route("/fail", fail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_client_stack_against_a_misbehaving_upstream() {
    let seen = Seen::default();
    let addr = serve(upstream(&seen)).await;

    let breaker = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::consecutive(10))
        .open_duration(Duration::from_secs(30))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let health = breaker.handle();
    let limit = ConcurrencyLimitLayer::builder(8)
        .queue(64, Duration::from_secs(1))
        .build()
        .unwrap();
    let permits = limit.handle();
    let quota =
        Quota::per_second(NonZeroU32::new(100).unwrap()).allow_burst(NonZeroU32::new(20).unwrap());
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(4)))
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .backoff(Backoff::exponential(Duration::from_millis(20)))
                .budget(RetryBudget::unlimited())
                .classify(HttpClassifier::new())
                .build()
                .unwrap(),
        )
        .layer(
            HedgeLayer::builder(HedgeDelay::fixed(Duration::from_millis(100)))
                .classify(HttpClassifier::new())
                .build()
                .unwrap(),
        )
        .layer(breaker)
        .layer(RateLimitLayer::new(quota).wait(Duration::from_millis(100)))
        .layer(limit)
        .layer(TimeoutLayer::new(Duration::from_millis(300)))
        .service(client);
    let get = |path: &str| {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        stack.clone().oneshot(req)
    };

    // Healthy: one call, one answer.
    assert_eq!(get("/ok").await.unwrap().status(), 200);
    assert_eq!(seen.count("ok"), 1);

    // Shed with Retry-After: 1, then served: the caller sees the 200, after the wait.
    let t0 = Instant::now();
    assert_eq!(get("/shed").await.unwrap().status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "within the deadline");
    assert_eq!(seen.count("shed"), 2);

    // Rate-limited upstream (429 + Retry-After): the same.
    assert_eq!(get("/limited").await.unwrap().status(), 200);
    assert_eq!(seen.count("limited"), 2);

    // Slow upstream: every attempt times out at 300 ms; the caller gets the timeout, within
    // the deadline, after at most 3 attempts, each with at most one hedge.
    let t0 = Instant::now();
    let err = get("/slow").await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    let slow = seen.count("slow");
    assert!(
        (1..=6).contains(&slow),
        "{slow} calls reached the slow upstream"
    );

    // Failing upstream: a 500 is not retryable; the caller gets the real 500, once per call,
    // until the breaker (10 consecutive failures, the slow route's timeouts included, at
    // most 6 of them) opens.
    let mut answered = 0;
    let mut opened = false;
    for _ in 0..12 {
        match get("/fail").await {
            Ok(res) => {
                assert_eq!(res.status(), 500);
                answered += 1;
            }
            Err(e) => {
                assert!(e.is::<CircuitOpen>(), "{e}");
                opened = true;
                break;
            }
        }
    }
    assert!(opened, "the breaker opened");
    assert!(
        answered >= 4,
        "{answered}: the 500s reach the caller as they are"
    );
    assert_eq!(
        seen.count("fail"),
        answered,
        "no retry of a non-retryable 500"
    );
    assert_eq!(health.state(), State::Open);

    // Open: the caller fails fast with CircuitOpen; nothing reaches the upstream, not even
    // healthy routes, and the retry layer does not retry into the open breaker.
    let before: usize = ["ok", "fail"].iter().map(|r| seen.count(r)).sum();
    for path in ["/fail", "/ok", "/fail"] {
        let t0 = Instant::now();
        let err = get(path).await.unwrap_err();
        assert!(err.is::<CircuitOpen>(), "{err}");
        assert!(t0.elapsed() < Duration::from_millis(500), "fail fast");
    }
    let after: usize = ["ok", "fail"].iter().map(|r| seen.count(r)).sum();
    assert_eq!(after, before);
    assert_eq!((permits.in_flight(), permits.queued()), (0, 0));
}

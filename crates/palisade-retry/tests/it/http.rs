//! HTTP and gRPC: methods, Retry-After (seconds and HTTP-date), pushback,
//! `grpc-previous-rpc-attempts`.

use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use palisade_core::classify::{GrpcClassifier, HttpClassifier};
use palisade_retry::{AnyMethod, Backoff, Grpc, Jitter, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::support::{ms, Backend};

type Req = Request<String>;

fn response(status: u16, headers: &[(&'static str, String)]) -> Response<()> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(()).unwrap()
}

/// Answers `first` to call 0 and 200 afterwards.
fn then_ok(first: impl Fn() -> Response<()> + Send + Sync + 'static) -> Backend<Req, Response<()>> {
    Backend::new(move |n| {
        let res = if n == 0 { first() } else { response(200, &[]) };
        (Duration::ZERO, Ok(res))
    })
}

fn builder() -> palisade_retry::RetryBuilder {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(ms(100)))
        .jitter(Jitter::none())
        .budget(RetryBudget::unlimited())
}

fn get() -> Req {
    Request::get("/").body("q".to_owned()).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_seconds_on_503() {
    let backend = then_ok(|| response(503, &[("retry-after", "2".into())]));
    let layer = builder().classify(HttpClassifier::new()).build().unwrap();
    let t0 = Instant::now();
    let res = layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(backend.times(t0), [ms(0), Duration::from_secs(2)]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_http_date_on_429() {
    // The classifier reads an HTTP-date against the wall clock, which paused tokio time
    // does not stop; HTTP-dates have whole seconds, so the wait is in (2 s, 3 s].
    let backend = then_ok(|| {
        let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
        response(429, &[("retry-after", at)])
    });
    let layer = builder().classify(HttpClassifier::new()).build().unwrap();
    let t0 = Instant::now();
    layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    let times = backend.times(t0);
    assert_eq!(times.len(), 2);
    assert!(
        times[1] > Duration::from_secs(1) && times[1] <= Duration::from_secs(3),
        "{times:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hint_beyond_the_cap_returns_the_real_response() {
    let backend = then_ok(|| response(503, &[("retry-after", "120".into())]));
    let layer = builder()
        .classify(HttpClassifier::new())
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let res = layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "120");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hint_past_the_deadline_gives_up_at_once() {
    use palisade_core::{Deadline, SetDeadline};
    let backend = then_ok(|| response(503, &[("retry-after", "2".into())]));
    let layer = builder().classify(HttpClassifier::new()).build().unwrap();
    let mut req = get();
    req.set_deadline(Deadline::after(Duration::from_secs(1)));
    let t0 = Instant::now();
    let res = layer.layer(backend.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no sleep that could not end in time"
    );
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_zero_still_waits_the_backoff_floor() {
    let backend = then_ok(|| response(503, &[("retry-after", "0".into())]));
    let layer = builder()
        .backoff(Backoff::exponential(ms(100)).min(ms(40)))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let t0 = Instant::now();
    layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    assert_eq!(backend.times(t0), [ms(0), ms(40)]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn statuses_and_methods() {
    let layer = builder().classify(HttpClassifier::new()).build().unwrap();
    // 500 is a failure but not retryable by default.
    let backend = then_ok(|| response(500, &[]));
    let res = layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(backend.calls(), 1);
    // 429 without a hint: retried after the backoff.
    let backend = then_ok(|| response(429, &[]));
    let t0 = Instant::now();
    layer.layer(backend.clone()).oneshot(get()).await.unwrap();
    assert_eq!(backend.times(t0), [ms(0), ms(100)]);
    // POST: never retried by the default policy ...
    let backend = then_ok(|| response(503, &[]));
    let post = || Request::post("/").body("w".to_owned()).unwrap();
    let res = layer.layer(backend.clone()).oneshot(post()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(backend.calls(), 1);
    // ... unless opted in.
    let opted = builder()
        .classify(HttpClassifier::new())
        .policy(AnyMethod)
        .build()
        .unwrap();
    let backend = then_ok(|| response(503, &[]));
    let res = opted.layer(backend.clone()).oneshot(post()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        backend.requests(|r| (r.method().clone(), r.body().clone())),
        [
            (Method::POST, "w".to_owned()),
            (Method::POST, "w".to_owned())
        ]
    );
}

fn grpc_layer() -> RetryLayer<Grpc, GrpcClassifier> {
    builder()
        .classify(GrpcClassifier::new())
        .policy(Grpc)
        .max_attempts(4)
        .build()
        .unwrap()
}

fn grpc(status: &'static str, pushback: Option<&'static str>) -> Response<()> {
    let mut h = vec![("grpc-status", status.to_owned())];
    if let Some(p) = pushback {
        h.push(("grpc-retry-pushback-ms", p.to_owned()));
    }
    response(200, &h)
}

fn rpc() -> Req {
    Request::post("/pkg.Svc/Get")
        .body("msg".to_owned())
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_unavailable_is_retried_with_previous_attempts_header() {
    let backend = Backend::<Req, Response<()>>::new(|n| {
        (
            Duration::ZERO,
            Ok(if n < 2 {
                grpc("14", None)
            } else {
                grpc("0", None)
            }),
        )
    });
    let t0 = Instant::now();
    let res = grpc_layer()
        .layer(backend.clone())
        .oneshot(rpc())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(backend.times(t0), [ms(0), ms(100), ms(300)]);
    let header = backend.requests(|r| {
        r.headers()
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_owned())
    });
    assert_eq!(header, [None, Some("1".to_owned()), Some("2".to_owned())]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_pushback_sets_the_wait_and_negative_stops() {
    // RESOURCE_EXHAUSTED with a pushback: retried after exactly the pushback.
    let backend = Backend::<Req, Response<()>>::new(|n| {
        (
            Duration::ZERO,
            Ok(if n == 0 {
                grpc("8", Some("250"))
            } else {
                grpc("0", None)
            }),
        )
    });
    let t0 = Instant::now();
    grpc_layer()
        .layer(backend.clone())
        .oneshot(rpc())
        .await
        .unwrap();
    assert_eq!(backend.times(t0), [ms(0), ms(250)]);

    // UNAVAILABLE with a negative pushback: the server says stop.
    let backend =
        Backend::<Req, Response<()>>::new(|_| (Duration::ZERO, Ok(grpc("14", Some("-1")))));
    let res = grpc_layer()
        .layer(backend.clone())
        .oneshot(rpc())
        .await
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(backend.calls(), 1);

    // RESOURCE_EXHAUSTED without a pushback is not retryable.
    let backend = Backend::<Req, Response<()>>::new(|_| (Duration::ZERO, Ok(grpc("8", None))));
    grpc_layer()
        .layer(backend.clone())
        .oneshot(rpc())
        .await
        .unwrap();
    assert_eq!(backend.calls(), 1);
}

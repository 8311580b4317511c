use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use palisade_core::response::RejectionResponseLayer;
use palisade_core::{BoxError, Overloaded, RateLimited};
use palisade_rate::{response, Quota, RateLimitLayer};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

fn get_root() -> http::Request<Body> {
    http::Request::get("/").body(Body::empty()).unwrap()
}

fn grpc_root() -> http::Request<Body> {
    http::Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn axum_answers_429_with_rounded_up_retry_after_and_ratelimit_fields() {
    // 10 per second, burst 3: the 4th waits 100ms -> Retry-After 1 (never 0).
    let quota =
        Quota::per_second(NonZeroU32::new(10).unwrap()).allow_burst(NonZeroU32::new(3).unwrap());
    let limit = RateLimitLayer::new(quota);
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(
                RejectionResponseLayer::new()
                    .rate_limit_policy(response::policy(&quota))
                    .rate_limit_status(response::status(limit.limiter())),
            )
            .layer(limit),
    );
    for left in (0..3).rev() {
        let res = app.clone().oneshot(get_root()).await.unwrap();
        assert_eq!(res.status(), 200);
        // Successful responses carry the live field: r counts down.
        let expected = format!("\"default\";r={left};t=1");
        assert_eq!(res.headers()["ratelimit"], expected.as_str());
    }
    let res = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["ratelimit"], "\"default\";r=0;t=1");
    assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=3;w=1");
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    // The same stack answers a gRPC request with RESOURCE_EXHAUSTED and pushback.
    let res = app.clone().oneshot(grpc_root()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert_eq!(res.headers()["grpc-retry-pushback-ms"], "100");
    assert!(res.headers().get("ratelimit").is_none());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(app.oneshot(get_root()).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "current_thread")]
async fn other_errors_become_their_status_and_the_service_is_infallible() {
    let failing = |error: fn() -> BoxError| {
        RejectionResponseLayer::new().layer(service_fn(move |_: http::Request<()>| async move {
            Err::<http::Response<String>, BoxError>(error())
        }))
    };
    let req = || http::Request::new(());
    let res: Result<_, Infallible> = failing(|| Overloaded::new().into()).oneshot(req()).await;
    assert_eq!(res.unwrap().status(), 503);
    let res = failing(|| "boom".into()).oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 500);
    // Without a known wait, no header rather than a wrong one.
    let res = failing(|| RateLimited::new().into())
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_none());
}

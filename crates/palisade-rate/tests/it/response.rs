use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use palisade_core::{BoxError, Overloaded, RateLimited};
use palisade_rate::response::{resource_exhausted, too_many_requests, RateLimitResponseLayer};
use palisade_rate::{Quota, RateLimitLayer};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

fn get_root() -> http::Request<Body> {
    http::Request::get("/").body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn axum_answers_429_with_rounded_up_retry_after_and_ratelimit_fields() {
    // 10 per second, burst 3: the 4th waits 100ms -> Retry-After 1 (never 0).
    let quota =
        Quota::per_second(NonZeroU32::new(10).unwrap()).allow_burst(NonZeroU32::new(3).unwrap());
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(RateLimitResponseLayer::http().quota(quota))
            .layer(RateLimitLayer::new(quota)),
    );
    for _ in 0..3 {
        assert_eq!(app.clone().oneshot(get_root()).await.unwrap().status(), 200);
    }
    let res = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["ratelimit"], "\"default\";r=0;t=1");
    assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=3;w=1");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(app.oneshot(get_root()).await.unwrap().status(), 200);
}

#[test]
fn grpc_face_sets_resource_exhausted_and_pushback() {
    let res: http::Response<()> =
        resource_exhausted(&RateLimited::with_retry_after(Duration::from_micros(1500)));
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert_eq!(res.headers()["grpc-retry-pushback-ms"], "2");
    assert_eq!(res.headers()["content-type"], "application/grpc");
    // Without a known wait, no header rather than a wrong one.
    let res: http::Response<()> = too_many_requests(&RateLimited::new(), None);
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn other_errors_become_their_status_and_the_service_is_infallible() {
    let failing = |error: fn() -> BoxError| {
        RateLimitResponseLayer::http().layer(service_fn(move |_: ()| async move {
            Err::<http::Response<()>, BoxError>(error())
        }))
    };
    let res: Result<_, Infallible> = failing(|| Overloaded::new().into()).oneshot(()).await;
    assert_eq!(res.unwrap().status(), 503);
    let res = failing(|| "boom".into()).oneshot(()).await.unwrap();
    assert_eq!(res.status(), 500);
    let grpc = RateLimitResponseLayer::grpc().layer(service_fn(|_: ()| async {
        Err::<http::Response<()>, BoxError>(
            RateLimited::with_retry_after(Duration::from_secs(2)).into(),
        )
    }));
    let res = grpc.oneshot(()).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "8");
    assert_eq!(res.headers()["grpc-retry-pushback-ms"], "2000");
}

//! The concurrency limit around a real axum server and a real hyper client.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::response::RejectionResponseLayer;
use palisade_limit::ConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::support::{serve, Gated};

/// axum clones the service stack per request: one limit must hold across all those clones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_limit_holds_across_axums_clones() {
    const LIMIT: usize = 3;
    const CALLS: usize = 24;
    let gated = Gated::new();
    let app = gated.router().layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(ConcurrencyLimitLayer::new(LIMIT)),
    );
    let addr = serve(app).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let client = client.clone();
        let uri = format!("http://{addr}/");
        calls.push(tokio::spawn(async move {
            let res = client
                .request(Request::get(uri).body(Empty::new()).unwrap())
                .await
                .unwrap();
            let status = res.status();
            res.into_body().collect().await.unwrap();
            status
        }));
    }

    // Exactly LIMIT handlers get in; the rest wait in the limit, not in the handler.
    gated.wait_in_flight(LIMIT).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(gated.gauge.in_flight.load(Ordering::SeqCst), LIMIT);

    gated.gate.add_permits(CALLS);
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(gated.gauge.done.load(Ordering::SeqCst), CALLS);
    assert_eq!(gated.peak(), LIMIT);
}

/// A hyper client cloned per call, behind one limit: the upstream never sees more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_limit_shared_by_every_clone() {
    const LIMIT: usize = 4;
    const CALLS: usize = 40;
    let gated = Gated::new();
    let app = gated.router();
    let addr = serve(app).await;

    let layer = ConcurrencyLimitLayer::new(LIMIT);
    let handle = layer.handle();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let client = client.clone();
        let uri = format!("http://{addr}/");
        calls.push(tokio::spawn(async move {
            let res = client
                .oneshot(Request::get(uri).body(Empty::new()).unwrap())
                .await
                .unwrap();
            res.status()
        }));
    }
    gated.wait_in_flight(LIMIT).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(gated.gauge.in_flight.load(Ordering::SeqCst), LIMIT);
    assert_eq!(handle.in_flight(), LIMIT);

    gated.gate.add_permits(CALLS);
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(gated.peak(), LIMIT);
    assert_eq!(handle.in_flight(), 0);
}

/// Load shedding on a server: past the limit, callers get 503 at once instead of queueing,
/// and the handlers inside finish normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sheds_with_503_past_the_limit() {
    const LIMIT: usize = 2;
    let gated = Gated::new();
    let app = gated.router().layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(
                ConcurrencyLimitLayer::builder(LIMIT)
                    .reject()
                    .build()
                    .unwrap(),
            ),
    );
    let addr = serve(app).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |client: Client<_, Empty<Bytes>>| {
        let uri = format!("http://{addr}/");
        tokio::spawn(async move {
            client
                .request(Request::get(uri).body(Empty::new()).unwrap())
                .await
                .unwrap()
                .status()
        })
    };

    let inside: Vec<_> = (0..LIMIT).map(|_| get(client.clone())).collect();
    gated.wait_in_flight(LIMIT).await;
    for _ in 0..5 {
        assert_eq!(
            get(client.clone()).await.unwrap(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    gated.gate.add_permits(LIMIT);
    for c in inside {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(gated.peak(), LIMIT);
}

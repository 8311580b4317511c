//! Body replay over real loopback HTTP: a hyper client behind the retry layer, an axum
//! server that answers 503 to the first upload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::classify::HttpClassifier;
use palisade_retry::body::{ReplayBody, ReplayBodyLayer};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

use crate::body::Chunks;

/// Starts a server that records every upload and answers 503 to the first one.
async fn server() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/upload",
        put(move |body: Bytes| {
            let log = log.clone();
            async move {
                let mut log = log.lock().unwrap();
                log.push(body);
                if log.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/upload"), seen)
}

async fn upload(cap: usize) -> (StatusCode, Vec<Bytes>) {
    let (url, seen) = server().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Chunks>>();
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(cap))
        .layer(
            RetryLayer::builder()
                .backoff(Backoff::exponential(Duration::from_millis(10)))
                .jitter(Jitter::none())
                .budget(RetryBudget::unlimited())
                .classify(HttpClassifier::new())
                .build()
                .unwrap(),
        )
        .service(client);
    let req = Request::put(url)
        .body(Chunks::new(&["hello ", "over ", "loopback"], false))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (res.status(), seen)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streaming_upload_is_replayed_within_the_cap() {
    let (status, seen) = upload(1024).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen,
        [
            Bytes::from("hello over loopback"),
            Bytes::from("hello over loopback")
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streaming_upload_beyond_the_cap_is_sent_once() {
    let (status, seen) = upload(8).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen, [Bytes::from("hello over loopback")]);
}

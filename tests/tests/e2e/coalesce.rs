//! Coalescing a real hyper client's calls to an axum server on loopback: a response within
//! the buffering cap is shared by every waiter from one server hit; one over the cap is
//! not coalesced, and every waiter gets its whole body (the leader's streamed, the
//! followers' from their own calls).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_coalesce::http::{key, BufferBodyLayer, BufferedOnly};
use palisade_coalesce::CoalesceLayer;
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};

use crate::support::serve;

/// 100 kB: over the 4 kB cap below, and sent by the server in several frames.
fn large() -> String {
    "0123456789".repeat(10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_shares_small_bodies_and_not_large_ones() {
    // Each path's hits wait at its gate, so the test can line the waiters up first.
    let gates = [Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0))];
    let hits = Arc::new(AtomicUsize::new(0));
    let (g1, h1, g2, h2) = (
        Arc::clone(&gates[0]),
        Arc::clone(&hits),
        Arc::clone(&gates[1]),
        Arc::clone(&hits),
    );
    let app = Router::new()
        .route(
            "/small",
            get(move || async move {
                h1.fetch_add(1, SeqCst);
                g1.acquire().await.expect("gate open").forget();
                "small"
            }),
        )
        .route(
            "/large",
            get(move || async move {
                h2.fetch_add(1, SeqCst);
                g2.acquire().await.expect("gate open").forget();
                large()
            }),
        );
    let addr = serve(app).await;

    let layer = CoalesceLayer::builder(key)
        .share_if(BufferedOnly)
        .build()
        .unwrap();
    let handle = layer.handle();
    let client = ServiceBuilder::new()
        .layer(layer)
        .layer(BufferBodyLayer::new(4 * 1024))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    let paths = [("/small", "small".to_owned(), 1), ("/large", large(), 4)];
    for ((path, want, hits_after), gate) in paths.into_iter().zip(gates) {
        let uri: Uri = format!("http://{addr}{path}").parse().unwrap();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let call = client.clone().oneshot(req);
                tokio::spawn(async move {
                    let res = call.await.expect("a response");
                    res.into_body()
                        .collect()
                        .await
                        .expect("a whole body")
                        .to_bytes()
                })
            })
            .collect();
        // All three wait on one call before the server answers it (the time-out only
        // turns a hang into a failure).
        let key = (Method::GET, uri.clone());
        let lined_up = async {
            while handle.waiters(&key) < 3 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), lined_up)
            .await
            .expect("three waiters on one call");
        gate.add_permits(Semaphore::MAX_PERMITS);
        for call in calls {
            assert_eq!(call.await.unwrap(), want.as_bytes(), "{path}");
        }
        assert_eq!(hits.load(SeqCst), hits_after, "{path}");
    }
    // One call led per path; the large one's two followers made their own.
    assert_eq!(
        (handle.led(), handle.joined(), handle.unshared()),
        (2, 4, 1)
    );
    assert_eq!(handle.keys_in_flight(), 0);
}

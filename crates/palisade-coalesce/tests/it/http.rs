use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_coalesce::http::{key, BufferBodyLayer, NotShared};
use palisade_coalesce::CoalesceLayer;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

#[test]
fn the_default_key_takes_safe_methods_only() {
    let req = |m: Method| {
        Request::builder()
            .method(m)
            .uri("http://a/x?y=1")
            .body(())
            .unwrap()
    };
    assert_eq!(
        key(&req(Method::GET)),
        Some((Method::GET, "http://a/x?y=1".parse().unwrap()))
    );
    assert!(key(&req(Method::HEAD)).is_some());
    assert!(key(&req(Method::POST)).is_none());
    assert!(key(&req(Method::DELETE)).is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn bodies_within_the_cap_are_shared_and_over_it_go_to_one_waiter() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::builder(key).build().unwrap())
        .layer(BufferBodyLayer::new(8))
        .service(service_fn(move |req: Request<()>| {
            c.fetch_add(1, SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let body = if req.uri().path() == "/small" {
                    "small"
                } else {
                    "much too large"
                };
                Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from(body))))
            }
        }));
    let get = |path: &str| Request::get(path).body(()).unwrap();

    let (a, b) = tokio::join!(
        svc.clone().oneshot(get("/small")),
        svc.clone().oneshot(get("/small"))
    );
    for res in [a.unwrap(), b.unwrap()] {
        assert_eq!(
            &res.into_body().collect().await.unwrap().to_bytes()[..],
            b"small"
        );
    }
    assert_eq!(calls.load(SeqCst), 1);

    let (a, b) = tokio::join!(
        svc.clone().oneshot(get("/large")),
        svc.clone().oneshot(get("/large"))
    );
    let first = a.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&first[..], b"much too large");
    let err = b.unwrap().into_body().collect().await.unwrap_err();
    assert!(err.is::<NotShared>());
    assert_eq!(calls.load(SeqCst), 2);

    // Writes are never coalesced.
    let mut svc = svc;
    let post = || Request::post("/small").body(()).unwrap();
    let (a, b) = (
        svc.ready().await.unwrap().call(post()),
        svc.ready().await.unwrap().call(post()),
    );
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(calls.load(SeqCst), 4);
}

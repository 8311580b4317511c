use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_coalesce::http::{key, BufferBodyLayer, BufferedOnly, NotShared};
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

/// A body in several frames, as a server streams it.
type Streamed = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>>,
>;

fn streamed(text: &str, frame: usize) -> Streamed {
    let frames: Vec<_> = text
        .as_bytes()
        .chunks(frame)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn over_the_cap_every_waiter_gets_a_whole_body_from_its_own_call() {
    let large = "0123456789".repeat(100); // 1,000 bytes, over the 64-byte cap
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let body = large.clone();
    let layer = CoalesceLayer::builder(key)
        .share_if(BufferedOnly)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(BufferBodyLayer::new(64))
        .service(service_fn(move |req: Request<()>| {
            let n = c.fetch_add(1, SeqCst);
            let text = if req.uri().path() == "/small" {
                format!("small {n}")
            } else {
                body.clone()
            };
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, std::io::Error>(Response::new(streamed(&text, 7)))
            }
        }));
    let get = |path: &str| Request::get(path).body(()).unwrap();

    // Over the cap: the leader's body streams to it intact; the two followers make their
    // own calls and get whole bodies too.
    let (a, b, c) = tokio::join!(
        svc.clone().oneshot(get("/large")),
        svc.clone().oneshot(get("/large")),
        svc.clone().oneshot(get("/large")),
    );
    for res in [a.unwrap(), b.unwrap(), c.unwrap()] {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, large.as_bytes());
    }
    assert_eq!(calls.load(SeqCst), 3, "one call each: not coalesced");
    assert_eq!(
        (handle.led(), handle.joined(), handle.unshared()),
        (1, 2, 1)
    );

    // Within the cap: one call, every waiter gets its bytes.
    let (a, b, c) = tokio::join!(
        svc.clone().oneshot(get("/small")),
        svc.clone().oneshot(get("/small")),
        svc.clone().oneshot(get("/small")),
    );
    for res in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert!(res.body().is_buffered());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"small 3");
    }
    assert_eq!(calls.load(SeqCst), 4);
    assert_eq!(handle.unshared(), 1);
    assert_eq!(handle.keys_in_flight(), 0);
}

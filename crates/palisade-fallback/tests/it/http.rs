use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_core::classify::HttpClassifier;
use palisade_core::BoxError;
use palisade_fallback::http::StaticResponse;
use palisade_fallback::{FallbackLayer, RejectionKind};
use tower::{service_fn, Layer, ServiceExt};

#[tokio::test]
async fn a_503_classified_as_failure_is_answered_with_a_static_body() {
    let upstream = service_fn(|_: Request<()>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"upstream sad")));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, BoxError>(res)
    });
    let layer = FallbackLayer::builder(StaticResponse::new(StatusCode::OK, "static page").header(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    ))
    .on_rejections(&[RejectionKind::CircuitOpen])
    .classify(HttpClassifier::new())
    .build()
    .unwrap();
    let res = layer
        .layer(upstream)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"static page");
}

mod stale {
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use palisade_breaker::{CircuitBreakerLayer, FailureModel, State};
    use palisade_core::{find_rejection, BoxError, Rejection};
    use palisade_fallback::http::StaleCache;
    use palisade_fallback::{FallbackLayer, RejectionKind};
    use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

    /// An upstream answering `"<path> #<n>"`, or failing while `down`; counts its calls.
    fn upstream(
        calls: Arc<AtomicUsize>,
        down: Arc<AtomicBool>,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        service_fn(move |req: Request<()>| {
            let n = calls.fetch_add(1, SeqCst);
            let down = down.load(SeqCst);
            async move {
                if down {
                    return Err::<_, BoxError>("connection reset".into());
                }
                let text = format!("{} #{n}", req.uri().path());
                Ok(Response::new(Full::new(Bytes::from(text))))
            }
        })
    }

    fn get(path: &str) -> Request<()> {
        Request::get(format!("http://api.local{path}"))
            .body(())
            .unwrap()
    }

    async fn text<B>(res: Response<B>) -> String
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_open_breaker_is_answered_stale_without_calling_the_upstream() {
        let calls = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let cache = StaleCache::new(NonZeroUsize::new(16).unwrap(), 1024);
        let breaker = CircuitBreakerLayer::builder()
            .failure_model(FailureModel::Consecutive { failures: 3 })
            .open_duration(Duration::from_secs(60))
            .build()
            .unwrap();
        let breaker_handle = breaker.handle();
        let fallback = FallbackLayer::builder(cache.clone())
            .on_rejections(&[RejectionKind::CircuitOpen])
            .build()
            .unwrap();
        let fallback_handle = fallback.handle();
        let svc = ServiceBuilder::new()
            .layer(fallback)
            .layer(breaker)
            .layer(cache.record())
            .service(upstream(Arc::clone(&calls), Arc::clone(&down)));

        // A good response, read to its end, is cached.
        let res = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(text(res).await, "/items #0");
        assert_eq!(cache.len(), 1);

        // The upstream goes down: its errors are not selected, reach the caller, and trip
        // the breaker.
        down.store(true, SeqCst);
        for _ in 0..3 {
            assert!(svc.clone().oneshot(get("/items")).await.is_err());
        }
        assert_eq!(breaker_handle.state(), State::Open);
        assert_eq!(calls.load(SeqCst), 4);

        // Open: the stale copy answers, marked, and the upstream is not called.
        tokio::time::advance(Duration::from_secs(5)).await;
        let res = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[http::header::AGE], "5");
        assert_eq!(
            res.headers()[http::header::WARNING],
            "110 - \"Response is Stale\""
        );
        assert!(res.body().is_stale());
        assert_eq!(text(res).await, "/items #0");
        assert_eq!(calls.load(SeqCst), 4, "the upstream was not called");
        assert_eq!(fallback_handle.served(), 1);

        // Nothing cached for this one: the breaker's own rejection is reported, untouched,
        // so a server's rejection layer still answers 503.
        let err = svc.clone().oneshot(get("/other")).await.unwrap_err();
        assert!(matches!(
            find_rejection(err.as_ref()),
            Some(Rejection::CircuitOpen(_))
        ));
        assert_eq!(
            (fallback_handle.declined(), fallback_handle.failed()),
            (1, 0)
        );
        assert_eq!(calls.load(SeqCst), 4);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_cache_is_bounded_and_keeps_only_whole_small_successes_to_reads() {
        let calls = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        // Two keys, bodies of at most 9 bytes.
        let cache = StaleCache::new(NonZeroUsize::new(2).unwrap(), 9);
        let fallback = FallbackLayer::builder(cache.clone()).build().unwrap();
        let handle = fallback.handle();
        let svc = ServiceBuilder::new()
            .layer(fallback)
            .layer(cache.record())
            .service(upstream(Arc::clone(&calls), Arc::clone(&down)));

        for path in ["/a", "/b", "/c"] {
            let res = svc.clone().oneshot(get(path)).await.unwrap();
            assert_eq!(text(res).await.len(), 5);
            assert!(cache.len() <= 2);
        }
        // Over the cap (streamed whole to the caller, not cached).
        let res = svc.clone().oneshot(get("/too-long")).await.unwrap();
        assert_eq!(text(res).await, "/too-long #3");
        // Dropped unread: not cached.
        drop(svc.clone().oneshot(get("/unread")).await.unwrap());
        // A write: not cached.
        let post = Request::builder()
            .method(Method::POST)
            .uri("http://api.local/p")
            .body(())
            .unwrap();
        text(svc.clone().oneshot(post).await.unwrap()).await;
        assert_eq!(cache.len(), 2);

        down.store(true, SeqCst);
        // The two stored last are served; "/a", stored first, made room for "/c".
        assert_eq!(
            text(svc.clone().oneshot(get("/b")).await.unwrap()).await,
            "/b #1"
        );
        assert_eq!(
            text(svc.clone().oneshot(get("/c")).await.unwrap()).await,
            "/c #2"
        );
        for path in ["/a", "/too-long", "/unread"] {
            let err = svc.clone().oneshot(get(path)).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                "connection reset",
                "{path}: the call's own error"
            );
        }
        assert_eq!((handle.served(), handle.declined()), (2, 3));
    }
}

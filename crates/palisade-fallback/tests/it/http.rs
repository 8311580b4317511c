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

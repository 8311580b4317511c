use std::convert::Infallible;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_fault::{Aborted, FaultKind, FaultLayer, InvalidFault, Upstream};
use tower::{service_fn, Layer, ServiceExt};

fn req() -> Request<()> {
    Request::new(())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn status_faults_answer_without_calling_the_upstream() {
    let cases = [
        (
            FaultLayer::builder().unavailable(1.0, Some(Duration::from_millis(1_500))),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("2"),
        ),
        (
            FaultLayer::builder().too_many_requests(1.0, Some(Duration::from_secs(3))),
            StatusCode::TOO_MANY_REQUESTS,
            Some("3"),
        ),
        (
            FaultLayer::builder().status(1.0, StatusCode::BAD_GATEWAY),
            StatusCode::BAD_GATEWAY,
            None,
        ),
    ];
    for (builder, status, retry_after) in cases {
        let layer = builder.build_http().unwrap();
        let upstream = service_fn(|_req: Request<()>| async {
            panic!("the upstream must not be called");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let res = layer.layer(upstream).oneshot(req()).await.unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after
        );
        assert!(res
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_unavailable_is_trailers_only() {
    let layer = FaultLayer::builder()
        .grpc_unavailable(1.0)
        .build_http()
        .unwrap();
    let res = layer
        .upstream(Upstream::ok("x"))
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], "14");
    assert!(res.headers().contains_key("grpc-message"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn abort_keeps_the_head_and_fails_the_body() {
    let layer = FaultLayer::builder().abort(1.0).build_http().unwrap();
    let res = layer
        .upstream(Upstream::ok("hello"))
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let err = res.into_body().collect().await.unwrap_err();
    assert!(err.is::<Aborted>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn upstream_passes_its_body_when_no_fault() {
    let layer = FaultLayer::builder()
        .unavailable(0.0, None)
        .build_http()
        .unwrap();
    let res = layer
        .upstream(Upstream::ok("hello"))
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stall_on_http_until_dropped() {
    let layer = FaultLayer::builder().stall(1.0).build_http().unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        layer.upstream(Upstream::ok("x")).oneshot(req()),
    )
    .await;
    assert!(res.is_err());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn server_side_on_an_axum_router() {
    let layer = FaultLayer::builder()
        .unavailable(1.0, Some(Duration::from_secs(1)))
        .enabled(false)
        .build_http()
        .unwrap();
    let handle = layer.handle();
    // `Router::layer` needs an `Infallible` error: the HTTP layer keeps the router's.
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let get = || Request::get("/").body(axum::body::Body::empty()).unwrap();

    let res = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    handle.set_enabled(true);
    let res = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(handle.injected(FaultKind::Unavailable), 1);
}

#[test]
fn the_layers_refuse_each_others_faults() {
    assert_eq!(
        FaultLayer::builder().error(0.5).build_http().unwrap_err(),
        InvalidFault::Unsupported(FaultKind::Error)
    );
    assert_eq!(
        FaultLayer::builder()
            .unavailable(0.5, None)
            .build()
            .unwrap_err(),
        InvalidFault::Unsupported(FaultKind::Unavailable)
    );
}

/// A real axum server on loopback: an aborted response closes the connection without a
/// complete response. Real time; only the outcome is asserted.
#[tokio::test(flavor = "current_thread")]
async fn abort_on_a_real_server_closes_the_connection_mid_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let layer = FaultLayer::builder().abort(1.0).build_http().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "a complete body" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    // Ends only because the server closes the connection (keep-alive otherwise).
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .expect("the server closed the connection")
        .ok();
    // hyper writes the head with the first body frame, so the client gets nothing at all
    // (or, for a body failing later, a cut-off message): never a complete response.
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("a complete body"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the chunked body never ends: {text}"
    );
    server.abort();
}

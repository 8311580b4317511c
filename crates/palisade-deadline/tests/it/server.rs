use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, Request, Response, StatusCode};
use palisade_core::{BoxError, HasDeadline};
use palisade_deadline::ServerDeadlineLayer;
use tokio::time;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, Layer, ServiceExt};

type Seen = Arc<Mutex<Option<Duration>>>;

/// A handler that records the budget it was given, then sleeps `work`.
fn handler(
    seen: Seen,
    work: Duration,
    dropped: Arc<AtomicBool>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<()>| {
        let seen = seen.clone();
        let guard = Flag(dropped.clone());
        async move {
            let _guard = guard;
            *seen.lock().unwrap() = req.deadline().map(|d| d.remaining());
            time::sleep(work).await;
            Ok::<_, BoxError>(Response::new("done".to_owned()))
        }
    })
}

struct Flag(Arc<AtomicBool>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn req(headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut b = Request::builder();
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// A gRPC request (the only kind whose `grpc-timeout` is read) with `headers`.
fn grpc(headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut r = req(headers);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reads_grpc_timeout_and_sets_the_deadline() {
    let seen = Seen::default();
    let svc =
        ServerDeadlineLayer::new().layer(handler(seen.clone(), Duration::ZERO, Default::default()));
    let res = svc
        .oneshot(grpc(&[("grpc-timeout", "250m")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), Some(Duration::from_millis(250)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clamps_huge_inbound_budgets() {
    let seen = Seen::default();
    let svc = ServerDeadlineLayer::new()
        .max(Duration::from_secs(5))
        .layer(handler(seen.clone(), Duration::ZERO, Default::default()));
    svc.oneshot(grpc(&[("grpc-timeout", "99999999H")]))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(Duration::from_secs(5)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn http_header_and_default_and_malformed() {
    let name = HeaderName::from_static("x-timeout-ms");
    let layer = ServerDeadlineLayer::new()
        .header(name)
        .default_timeout(Duration::from_secs(2));

    let seen = Seen::default();
    let svc = layer.layer(handler(seen.clone(), Duration::ZERO, Default::default()));
    svc.clone()
        .oneshot(req(&[("x-timeout-ms", "750")]))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(Duration::from_millis(750)));

    // Malformed values are ignored: the default applies.
    svc.clone()
        .oneshot(req(&[("grpc-timeout", "1.5S"), ("x-timeout-ms", "-3")]))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(Duration::from_secs(2)));

    // Without a default, no deadline at all.
    let seen = Seen::default();
    let svc =
        ServerDeadlineLayer::new().layer(handler(seen.clone(), Duration::ZERO, Default::default()));
    svc.oneshot(req(&[])).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cancels_the_handler_and_answers_504() {
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = ServerDeadlineLayer::new()
        .header(HeaderName::from_static("x-timeout-ms"))
        .layer(handler(
            Seen::default(),
            Duration::from_secs(10),
            dropped.clone(),
        ));
    let mut fut = task::spawn(svc.oneshot(req(&[("x-timeout-ms", "100")])));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(100)).await;
    let res = assert_ready_ok!(fut.poll());
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler must be cancelled"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_requests_get_deadline_exceeded_not_cancelled() {
    let svc = ServerDeadlineLayer::new().layer(handler(
        Seen::default(),
        Duration::from_secs(10),
        Default::default(),
    ));
    let mut fut = task::spawn(svc.oneshot(req(&[
        ("content-type", "application/grpc+proto"),
        ("grpc-timeout", "100m"),
    ])));
    assert_pending!(fut.poll());
    time::advance(Duration::from_millis(100)).await;
    let res = assert_ready_ok!(fut.poll());
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "4");
    assert_eq!(res.headers()["content-type"], "application/grpc");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn zero_budget_is_answered_without_running_the_handler() {
    let seen = Seen::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = ServerDeadlineLayer::new()
        .header(HeaderName::from_static("x-timeout-ms"))
        .layer(handler(seen.clone(), Duration::ZERO, dropped.clone()));
    let res = svc.oneshot(req(&[("x-timeout-ms", "0")])).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(*seen.lock().unwrap(), None, "the handler must not run");
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the handler was never even called"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_timeout_is_read_on_grpc_requests_only() {
    // A plain HTTP request carrying `grpc-timeout` keeps its own rules: here, none, so it
    // runs unbounded instead of being answered 504 by a budget meant for gRPC.
    let seen = Seen::default();
    let svc =
        ServerDeadlineLayer::new().layer(handler(seen.clone(), Duration::ZERO, Default::default()));
    let res = svc
        .clone()
        .oneshot(req(&[("grpc-timeout", "0n")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), None);

    // The same header on a gRPC request is the caller's budget.
    let res = svc.oneshot(grpc(&[("grpc-timeout", "0n")])).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "4");
}

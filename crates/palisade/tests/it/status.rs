//! `StatusLayer` over a mock: each Palisade rejection is its `tonic::Status`, never
//! `UNKNOWN`, and anything after the deadline is `DEADLINE_EXCEEDED`.

use std::time::Duration;

use palisade::{
    BoxError, CircuitOpen, Deadline, DeadlineExceeded, Elapsed, Overloaded, RateLimited,
    ServiceBuilderExt, SetDeadline,
};
use tonic::Code;
use tower::{service_fn, ServiceBuilder, ServiceExt};

async fn status_for(
    err: fn() -> BoxError,
    req: http::Request<()>,
    after: Duration,
) -> tonic::Status {
    let svc = ServiceBuilder::new().grpc_status().service(service_fn(
        move |_req: http::Request<()>| async move {
            tokio::time::sleep(after).await;
            Err::<http::Response<()>, BoxError>(err())
        },
    ));
    tonic::Status::from_error(svc.oneshot(req).await.unwrap_err())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_rejection_has_its_code() {
    let req = || http::Request::new(());
    let s = status_for(|| Box::new(Overloaded::new()), req(), Duration::ZERO).await;
    assert_eq!(s.code(), Code::Unavailable);
    let s = status_for(
        || Box::new(CircuitOpen::with_retry_after(Duration::from_millis(1500))),
        req(),
        Duration::ZERO,
    )
    .await;
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "1500");
    let s = status_for(
        || Box::new(RateLimited::with_retry_after(Duration::from_millis(250))),
        req(),
        Duration::ZERO,
    )
    .await;
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
    let s = status_for(|| Box::new(DeadlineExceeded::new()), req(), Duration::ZERO).await;
    assert_eq!(s.code(), Code::DeadlineExceeded);
    let s = status_for(|| Box::new(Elapsed::new()), req(), Duration::ZERO).await;
    assert_eq!(s.code(), Code::DeadlineExceeded);
    // Not ours, before any deadline: untouched (tonic's own reading).
    let s = status_for(|| "connection reset".into(), req(), Duration::ZERO).await;
    assert_eq!(s.code(), Code::Unknown);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn after_the_deadline_every_error_is_deadline_exceeded() {
    // tonic's Channel enforcing grpc-timeout itself.
    let mut req = http::Request::new(());
    req.headers_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    let s = status_for(
        || Box::new(tonic::TimeoutExpired(())),
        req,
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(s.code(), Code::DeadlineExceeded);

    // A Status CANCELLED from below once the request's own deadline passed.
    let mut req = http::Request::new(());
    req.set_deadline(Deadline::after(Duration::from_millis(50)));
    let s = status_for(
        || Box::new(tonic::Status::cancelled("Timeout expired")),
        req,
        Duration::from_millis(60),
    )
    .await;
    assert_eq!(s.code(), Code::DeadlineExceeded);

    // Any other error after it.
    let mut req = http::Request::new(());
    req.set_deadline(Deadline::after(Duration::from_millis(50)));
    let s = status_for(|| "stream reset".into(), req, Duration::from_millis(60)).await;
    assert_eq!(s.code(), Code::DeadlineExceeded);

    // Before it, CANCELLED stays CANCELLED.
    let mut req = http::Request::new(());
    req.set_deadline(Deadline::after(Duration::from_secs(5)));
    let s = status_for(
        || Box::new(tonic::Status::cancelled("client went away")),
        req,
        Duration::from_millis(60),
    )
    .await;
    assert_eq!(s.code(), Code::Cancelled);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_servers_timeout_answer_is_deadline_exceeded() {
    // A tonic server enforcing the propagated grpc-timeout answers a trailers-only
    // CANCELLED "Timeout expired"; with a deadline on the call, that is its deadline.
    let svc = |deadline: bool| {
        let svc = ServiceBuilder::new().grpc_status().service(service_fn(
            |_req: http::Request<()>| async {
                let mut res = http::Response::new(());
                res.headers_mut()
                    .insert("grpc-status", "1".parse().unwrap());
                res.headers_mut()
                    .insert("grpc-message", "Timeout%20expired".parse().unwrap());
                Ok::<_, BoxError>(res)
            },
        ));
        let mut req = http::Request::new(());
        if deadline {
            req.headers_mut()
                .insert("grpc-timeout", "100m".parse().unwrap());
        }
        svc.oneshot(req)
    };
    assert_eq!(svc(true).await.unwrap().headers()["grpc-status"], "4");
    // Without a deadline the server's word stands.
    assert_eq!(svc(false).await.unwrap().headers()["grpc-status"], "1");
}

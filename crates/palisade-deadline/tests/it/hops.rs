//! Deadline propagation across two real hops over loopback: A calls B calls C, each hop an
//! axum server behind `ServerDeadlineLayer`, each outbound call a hyper client behind
//! `PropagateDeadlineLayer`. Real time and real sockets: the assertions are about order
//! (each hop sees a strictly smaller budget, by at least the safety margin), not speed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::{BoxError, Deadline, HasDeadline, SetDeadline};
use palisade_deadline::{DeadlineLayer, PropagateDeadlineLayer, ServerDeadlineLayer};
use tower::{ServiceBuilder, ServiceExt};

const MARGIN: Duration = Duration::from_millis(25);

type Budgets = Arc<Mutex<Vec<(&'static str, Duration)>>>;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// GET `uri` through a client that propagates the request's deadline in `x-timeout-ms`
/// and `grpc-timeout`, minus the margin.
async fn call(uri: String, deadline: Deadline) -> Result<String, BoxError> {
    let client = ServiceBuilder::new()
        .layer(
            PropagateDeadlineLayer::header(HeaderName::from_static("x-timeout-ms"))
                .with_grpc()
                .safety_margin(MARGIN),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let mut req = Request::get(uri).body(Empty::new())?;
    req.set_deadline(deadline);
    let res = client.oneshot(req).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

fn hop(name: &'static str, budgets: Budgets, next: Option<SocketAddr>) -> Router {
    Router::new()
        .route(
            "/",
            get(move |req: AxumRequest| {
                let budgets = budgets.clone();
                async move {
                    let deadline = req.deadline().expect("the server layer sets it");
                    budgets.lock().unwrap().push((name, deadline.remaining()));
                    match next {
                        Some(addr) => call(format!("http://{addr}/"), deadline)
                            .await
                            .unwrap_or_else(|e| format!("error: {e}")),
                        None => "leaf".to_owned(),
                    }
                }
            }),
        )
        .layer(
            ServerDeadlineLayer::new()
                .header(HeaderName::from_static("x-timeout-ms"))
                .max(Duration::from_secs(30)),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hop_sees_a_smaller_budget() {
    let budgets = Budgets::default();
    let c = serve(hop("C", budgets.clone(), None)).await;
    let b = serve(hop("B", budgets.clone(), Some(c))).await;

    // A: a 5 s overall deadline, applied by DeadlineLayer, then propagated.
    const TOTAL: Duration = Duration::from_secs(5);
    let a = ServiceBuilder::new()
        .layer(DeadlineLayer::new(TOTAL))
        .service(tower::service_fn(move |req: Request<()>| {
            let deadline = req.deadline().expect("DeadlineLayer sets it");
            call(format!("http://{b}/"), deadline)
        }));
    let body = a.oneshot(Request::new(())).await.unwrap();
    assert_eq!(body, "leaf");

    let seen = budgets.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["B", "C"]);
    let (b_budget, c_budget) = (seen[0].1, seen[1].1);
    // Each hop's budget is what the previous hop had left, less at least the margin.
    assert!(b_budget <= TOTAL - MARGIN, "B saw {b_budget:?}");
    assert!(
        c_budget <= b_budget - MARGIN,
        "C saw {c_budget:?} after B's {b_budget:?}"
    );
    assert!(c_budget > Duration::ZERO);
}

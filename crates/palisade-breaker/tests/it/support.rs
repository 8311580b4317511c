use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BoxError, CircuitOpen};
use tower::{Service, ServiceExt};

/// What the test inner service should do with one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Do {
    Ok,
    Fail,
    /// Succeed after sleeping this long.
    Slow(Duration),
}

/// An inner service that counts its calls and does what the request says.
pub(crate) fn inner(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Do,
    Response = (),
    Error = BoxError,
    Future = impl Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send {
    tower::service_fn(move |req: Do| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match req {
                Do::Ok => Ok(()),
                Do::Fail => Err::<(), BoxError>("boom".into()),
                Do::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
            }
        }
    })
}

/// Runs one call; returns `Err(retry_after)` if the breaker rejected it, `Ok(is_ok)` otherwise.
pub(crate) async fn run<S>(svc: &mut S, req: Do) -> Result<bool, Option<Duration>>
where
    S: Service<Do, Response = (), Error = BoxError>,
{
    match svc.ready().await.expect("ready").call(req).await {
        Ok(()) => Ok(true),
        Err(e) => match e.downcast_ref::<CircuitOpen>() {
            Some(open) => Err(open.retry_after()),
            None => Ok(false),
        },
    }
}

//! The response future shared by the local and keyed rate-limit services.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, RateLimited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

pin_project! {
    /// Response future of [`RateLimit`](crate::RateLimit) and
    /// [`KeyedRateLimit`](crate::KeyedRateLimit).
    ///
    /// Either the inner call (admitted at once), a wait for a reserved slot followed by the
    /// inner call, or a rejection. Dropping it while waiting cancels the call; the reserved
    /// slot is not given back (it simply elapses). Only the waiting state allocates (its
    /// timer); admitted and rejected calls do not.
    pub struct ResponseFuture<S, Request>
    where
        S: Service<Request>,
    {
        #[pin]
        state: State<S, Request, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Request, F> {
        // Waiting for the reserved slot; the ready inner service and the request are kept
        // here, so nothing reaches the inner service before the slot is due.
        // The timer is boxed: it is large, and keeping it inline would make every
        // admitted call move a future sized for the rare waiting one.
        Waiting {
            sleep: Pin<Box<Sleep>>,
            call: Option<(S, Request)>,
        },
        Called {
            #[pin]
            future: F,
        },
        Rejected {
            error: Option<RateLimited>,
        },
    }
}

// === impl ResponseFuture ===

impl<S: Service<Request>, Request> ResponseFuture<S, Request> {
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn waiting(sleep: Sleep, service: S, request: Request) -> Self {
        Self {
            state: State::Waiting {
                sleep: Box::pin(sleep),
                call: Some((service, request)),
            },
        }
    }

    pub(crate) fn rejected(error: RateLimited) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Request> Future for ResponseFuture<S, Request>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting { sleep, call } => {
                    ready!(sleep.as_mut().poll(cx));
                    // The slot is due: the service was made ready by the caller's
                    // `poll_ready` before it was moved in here.
                    let (mut service, request) =
                        call.take().expect("polled after the call was made");
                    let future = service.call(request);
                    state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

impl<S: Service<Request>, Request> std::fmt::Debug for ResponseFuture<S, Request> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Overloaded};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower_service::Service;

use super::shared::{Permit, Shared};

type Acquire = Pin<Box<dyn Future<Output = Option<Permit>> + Send + Sync + 'static>>;

pin_project! {
    /// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// Holds the call's permit, so completing, failing or dropping it releases the permit.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    // The life of one call:
    //
    //   Running ───────────────────────────────────────────────▶ done (permit released)
    //   Queued ──permit──▶ Deferred (inner readied, called) ──▶ done (permit released)
    //      └─────timeout / deadline──▶ Overloaded
    //   Rejected ──────────────────────────────────────────────▶ Overloaded
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Admitted at once: the inner call is in flight.
        Running {
            #[pin]
            fut: S::Future,
            permit: Option<Permit>,
        },
        // Queue mode, limit full: waiting for a permit with the ready inner service.
        Queued {
            acquire: Acquire,
            call: Option<(S, Req)>,
            shared: Arc<Shared>,
        },
        // Queue mode, admitted after waiting: the inner service is readied and called.
        Deferred {
            #[pin]
            fut: Oneshot<S, Req>,
            permit: Option<Permit>,
        },
        // Shed; the error is returned on first poll.
        Rejected {
            error: Option<Overloaded>,
        },
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn running(fut: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Running {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn queued(acquire: Acquire, svc: S, req: Req, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Queued {
                acquire,
                call: Some((svc, req)),
                shared,
            },
        }
    }

    /// Whether the call got a permit (so its outcome says something about the dependency),
    /// as opposed to being shed or timing out in the queue.
    pub(crate) fn admitted(&self) -> bool {
        matches!(self.state, State::Running { .. } | State::Deferred { .. })
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Running { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    // Release at completion, not when the caller gets round to dropping us.
                    permit.take();
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Queued {
                    acquire,
                    call,
                    shared,
                } => match ready!(acquire.as_mut().poll(cx)) {
                    Some(permit) => {
                        let (svc, req) = call.take().expect("polled after completion");
                        state.set(State::Deferred {
                            fut: Oneshot::new(svc, req),
                            permit: Some(permit),
                        });
                    }
                    None => {
                        shared.timed_out.increment(1);
                        tracing::debug!(target: "palisade::limit", name = %shared.name, "queue wait exceeded: rejected");
                        return Poll::Ready(Err(Overloaded::new().into()));
                    }
                },
                StateProj::Deferred { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    permit.take();
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "Running",
            State::Queued { .. } => "Queued",
            State::Deferred { .. } => "Deferred",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

//! Wait for admission, then call: the one future behind every layer that makes a request
//! wait (a rate-limit slot, a place in a concurrency queue, a criticality grant).
//!
//! **Waiting never pins.** While a request waits, it holds nothing of the layer below: the
//! inner service that `poll_ready` readied stays in the layer for its next call, and the
//! waiting request carries an *unready clone*, which it drives to readiness only after it
//! is admitted. Moving the ready service into the waiting future instead (the obvious
//! shape) would pin whatever that readiness reserved — a permit of a concurrency limit
//! below, a `Buffer` slot — for as long as the request sleeps.
//!
//! ```text
//!   admitted at once ──────────────────────────────▶ Called ──▶ done (guard released)
//!   must wait ──▶ Waiting ──admitted──▶ Readying ──▶ Called ──▶ done (guard released)
//!                    └──── refused / out of time ──▶ error
//!   refused at once ───────────────────────────────▶ Rejected ──▶ error
//! ```
//!
//! The guard `G` (a permit, or `()`) is held from admission to completion, so completing,
//! failing or dropping the future releases it. Dropping a waiting future drops its
//! admission future, which leaves the queue (each admission future's own `Drop` does that).
//!
//! # Example
//!
//! ```
//! use palisade_core::admission::Admission;
//! use palisade_core::{BoxError, Overloaded};
//! use std::future::ready;
//! use tower::{service_fn, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let svc = service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) });
//! // Admitted after a wait: the unready clone is readied, then called.
//! let admit = ready(Ok::<(), Overloaded>(()));
//! let fut: Admission<_, u32, _, (), Overloaded> = Admission::waiting(admit, svc.clone(), 21);
//! assert_eq!(fut.await?, 42);
//! // Refused after a wait: the clone is never called.
//! let refuse = ready(Err::<(), _>(Overloaded::new()));
//! let fut: Admission<_, u32, _, (), Overloaded> = Admission::waiting(refuse, svc, 21);
//! assert!(fut.await.unwrap_err().is::<Overloaded>());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// What a call does when a bounded resource (a concurrency limit, a thread pool, a worker
/// pool) has no room: the one choice every bounded policy offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Backpressure: `poll_ready` waits for room, first come first served, so the caller
    /// holds its request and nothing queues inside the policy.
    #[default]
    Wait,
    /// Wait in a bounded queue: `poll_ready` is ready; at most `max_queued` calls wait, each
    /// for at most `max_wait` and never past its request's [`Deadline`](crate::Deadline),
    /// then fail with [`Overloaded`](crate::Overloaded). A full queue fails at once.
    Queue {
        /// Most calls that may wait at once; one more fails at once.
        max_queued: usize,
        /// Longest a call waits.
        max_wait: std::time::Duration,
    },
    /// Load shedding: a call that finds no room fails at once with
    /// [`Overloaded`](crate::Overloaded).
    Reject,
}

impl OnFull {
    /// Whether a queue of this configuration can work: `Err("queue")` for 0 places,
    /// `Err("wait")` for a zero wait (both should be [`OnFull::Reject`]). Builders turn this
    /// into their own typed error.
    ///
    /// # Errors
    ///
    /// Which part of the queue cannot work.
    pub fn check_queue(self) -> Result<(), &'static str> {
        match self {
            OnFull::Queue { max_queued: 0, .. } => Err("queue"),
            OnFull::Queue { max_wait, .. } if max_wait.is_zero() => Err("wait"),
            _ => Ok(()),
        }
    }
}

pin_project! {
    /// A call that may wait for admission first; see the [module docs](self).
    ///
    /// `A` resolves to `Ok(guard)` when the request is admitted, or `Err(rejection)`.
    pub struct Admission<S, Req, A, G, E>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, A, G, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, A, G, E>
    where
        S: Service<Req>,
    {
        // Admitted: the inner call is in flight; the guard is released at completion.
        Called {
            #[pin]
            fut: S::Future,
            guard: Option<G>,
        },
        // Waiting for admission with an unready clone of the inner service.
        Waiting {
            #[pin]
            admit: A,
            call: Option<(S, Req)>,
        },
        // Admitted after waiting: the clone is being made ready.
        Readying {
            svc: S,
            req: Option<Req>,
            guard: Option<G>,
        },
        // Refused; the error is returned on first poll.
        Rejected {
            error: Option<E>,
        },
    }
}

// === impl Admission ===

impl<S, Req, A, G, E> Admission<S, Req, A, G, E>
where
    S: Service<Req>,
{
    /// Admitted at once: `fut` is the inner call (made on the service `poll_ready`
    /// readied), and `guard` is held until it completes.
    pub fn called(fut: S::Future, guard: G) -> Self {
        Self {
            state: State::Called {
                fut,
                guard: Some(guard),
            },
        }
    }

    /// Must wait: `admit` decides; `svc` is a clone of the inner service that has *not*
    /// been readied (the ready one stays with the caller's layer).
    pub fn waiting(admit: A, svc: S, req: Req) -> Self {
        Self {
            state: State::Waiting {
                admit,
                call: Some((svc, req)),
            },
        }
    }

    /// Refused at once.
    pub fn rejected(error: E) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }

    /// Whether the request has been admitted (so its outcome says something about the
    /// dependency), as opposed to waiting or refused.
    pub fn is_admitted(&self) -> bool {
        matches!(self.state, State::Called { .. } | State::Readying { .. })
    }

    /// Whether the request is still waiting for admission.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }
}

impl<S, Req, A, G, E> Future for Admission<S, Req, A, G, E>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Future<Output = Result<G, E>>,
    E: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { fut, guard } => {
                    let out = ready!(fut.poll(cx));
                    // Release at completion, not when the caller gets round to dropping us.
                    guard.take();
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Waiting { admit, call } => {
                    let guard = match ready!(admit.poll(cx)) {
                        Ok(guard) => guard,
                        Err(error) => return Poll::Ready(Err(error.into())),
                    };
                    let (svc, req) = call.take().expect("polled after completion");
                    state.set(State::Readying {
                        svc,
                        req: Some(req),
                        guard: Some(guard),
                    });
                }
                StateProj::Readying { svc, req, guard } => {
                    // Only now, admitted, does the request take capacity below: the clone's
                    // readiness (a permit of a lower limit, say) is reserved for this call.
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = req.take().expect("polled after completion");
                    let fut = svc.call(req);
                    let guard = guard.take().expect("polled after completion");
                    state.set(State::Called {
                        fut,
                        guard: Some(guard),
                    });
                }
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

impl<S, Req, A, G, E> fmt::Debug for Admission<S, Req, A, G, E>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "Called",
            State::Waiting { .. } => "Waiting",
            State::Readying { .. } => "Readying",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("Admission").field("state", &state).finish()
    }
}

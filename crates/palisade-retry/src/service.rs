use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError, Classify, ErrorsAsFailures, HasDeadline};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use palisade_core::replay::{Idempotent, ReplayPolicy};
use palisade_core::replay::{Prototype, Replayer};
use palisade_core::stripe::{self, Lanes};

/// Retries failed calls with backoff, within a budget and the request's deadline. See the
/// [crate docs](crate).
///
/// # Errors
/// The inner service's error (boxed) of the last attempt made, when that attempt failed
/// and no retry followed. The retry layer adds no error of its own: a refused retry
/// (attempts, budget, deadline, server hint, unsendable copy) yields the last real
/// result, `Ok` or `Err`.
///
/// Retries go through clones of the service as it was wrapped (its [`Prototype`], taken
/// when the layer wraps it and cloned only when a retry is due), not of `inner` as
/// [`Retry::get_mut`] may have changed it since.
///
/// [`Prototype`]: palisade_core::replay::Prototype
// Derived `Clone`: no reservation to reset (readiness lives in `inner`, whose own
// `Clone` decides), and the shared state is shared through its lanes, never copied.
#[derive(Clone, Debug)]
pub struct Retry<S, P = Idempotent, C = ErrorsAsFailures> {
    inner: S,
    // Per-stripe lanes: a call's future holds its thread's (see `Lanes`).
    own: Lanes<Own<S>>,
    policy: P,
    classify: C,
}

/// What the clones of one retry service share: the layer's state (with its handle and
/// every other service the layer built) and the prototype retries are cloned from. A
/// response future holds one reference to both.
#[derive(Debug)]
pub(crate) struct Own<S> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) prototype: Prototype<S>,
}

// === impl Retry ===

impl<S, P, C> Retry<S, P, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, policy: P, classify: C) -> Self
    where
        S: Clone,
    {
        Self {
            own: Lanes::new(
                Own {
                    shared,
                    prototype: Prototype::new(inner.clone()),
                },
                stripe::stripes(),
            ),
            inner,
            policy,
            classify,
        }
    }
}

impl<S, P, C> Retry<S, P, C> {
    palisade_core::inner_accessors!(S);
}

impl<S, Req, P, C> Service<Req> for Retry<S, P, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
    P: ReplayPolicy<Req> + Clone,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared: &Shared = &self.own.shared;
        shared.first_attempts.increment(1);
        // One stripe for the call: its budget deposit and the lane its future holds.
        let home = stripe::index();
        let deadline = req.deadline();
        // Every request pays into a TTL budget, which dates its deposits once in 16 calls
        // of a stripe: by the clock reading the request's deadline remembers (the deadline
        // layer's, just above; a deposit dated by it expires at most the request's age
        // early), else by reading the clock.
        shared
            .budget
            .deposit_at(home, || shared.date(deadline.and_then(|d| d.reading())));
        // Keep a copy of the request (and a clone of the service to send it with) only
        // when a retry is possible at all: attempts left, time left, and a policy that
        // agrees to copy it. Otherwise the call costs what the inner one does. An empty
        // budget does not stop the copy: waiting out a local rate limit costs no budget,
        // and a budgeted retry is refused (and counted) when it is planned.
        let template = if shared.max_attempts > 1
            // Without a clock read when the deadline knows its bound: a "maybe" only costs
            // the copy, and a retry is planned against the real time left.
            && deadline.is_none_or(|d| d.may_leave_more_than(shared.min_remaining))
        {
            self.policy.clone_request(&req)
        } else {
            None
        };
        // The first attempt uses the service `poll_ready` readied; the retrier clones the
        // prototype, and readies the clone, only when a retry is due (cloning the stack
        // below for every request cost an atomic increment and decrement per shared
        // policy in it). Both are made inside the expression that builds the returned
        // future, so the compiler writes them in place rather than moving them (a profile
        // showed the nested future and the retrier each copied twice per call when they
        // went through locals).
        let span = call_span!("palisade::retry", "palisade.retry", name = %shared.name);
        let _scope = span.scope();
        ResponseFuture::new(
            self.inner.call(req),
            template.map(|t| Replayer::new(t, self.policy.clone())),
            deadline,
            // This thread's lane: the future's reference is counted on its stripe's line.
            self.own.lane_at(home).clone(),
            self.classify.clone(),
            span,
        )
    }
}

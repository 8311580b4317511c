use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{call_span, BoxError, Classify, HasDeadline};
use tower_service::Service;

use super::future::{ResponseFuture, Spare};
use super::layer::Shared;
use palisade_core::replay::{Idempotent, Prototype, ReplayPolicy, Replayer};
use palisade_core::stripe::{self, Lanes};
use palisade_core::ErrorsAsFailures;

/// Sends a request again after a delay if it has not succeeded yet; the first success
/// wins. See the [module docs](super).
///
/// Hedges go through clones of the service as it was wrapped (its [`Prototype`], taken
/// when the layer wraps it and cloned only when a hedge is sent), not of `inner` as
/// [`Hedge::get_mut`] may have changed it since.
///
/// [`Prototype`]: palisade_core::replay::Prototype
// Derived `Clone`: no reservation to reset (readiness lives in `inner`, whose own
// `Clone` decides), and the shared state is shared through its lanes, never copied.
#[derive(Clone, Debug)]
pub struct Hedge<S, P = Idempotent, C = ErrorsAsFailures> {
    inner: S,
    // Per-stripe lanes: a call's future holds its thread's (see `Lanes`).
    own: Lanes<Own<S>>,
    policy: P,
    classify: C,
}

/// What the clones of one hedge service share: the layer's state (with its handle and
/// every other service the layer built) and the prototype hedges are cloned from. A
/// response future holds one reference to both.
#[derive(Debug)]
pub(crate) struct Own<S> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) prototype: Prototype<S>,
}

// === impl Hedge ===

impl<S, P, C> Hedge<S, P, C> {
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

impl<S, P, C> Hedge<S, P, C> {
    palisade_core::inner_accessors!(S);
}

impl<S, Req, P, C> Service<Req> for Hedge<S, P, C>
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
        let deadline = req.deadline();
        // Decide now whether this request could ever hedge, so that ineligible requests
        // (cold window, spent budget, unsafe method, deadline too close) pay nothing more:
        // no copy of the request and no clone of the service.
        let spare = shared.on_request().and_then(|delay| {
            let min_remaining = shared.min_remaining.unwrap_or(delay);
            if let Some(d) = deadline {
                // The first hedge would start at `delay` and needs `min_remaining` after it.
                // Ruled out without a clock read when the deadline knows its bound; a
                // "maybe" costs only the copy, as a hedge is fired against the real time
                // left.
                // (`remaining >= needed` is `remaining > needed - 1ns` at nanosecond grain.)
                let needed = delay.saturating_add(min_remaining);
                if !needed.is_zero()
                    && !d.may_leave_more_than(needed - std::time::Duration::from_nanos(1))
                {
                    return None;
                }
            }
            let template = self.policy.clone_request(&req)?;
            Some((template, delay, min_remaining))
        });
        // The primary uses the service `poll_ready` readied; the spare clones the
        // prototype, and readies the clone, only when a hedge is due (cloning the stack
        // below for every request cost an atomic increment and decrement per shared
        // policy in it). Both are made inside the expression that builds the returned
        // future, so the compiler writes them in place instead of moving them through
        // locals (a copy each per call, in a profile).
        let span = call_span!("palisade::fanout", "palisade.hedge", name = %shared.name);
        let _scope = span.scope();
        ResponseFuture::new(
            self.inner.call(req),
            spare.map(|(template, delay, min_remaining)| {
                Spare::new(
                    Replayer::new(template, self.policy.clone()),
                    shared.max_extra,
                    delay,
                    min_remaining,
                )
            }),
            deadline,
            // This thread's lane: the future's reference is counted on its stripe's line.
            self.own.lane().clone(),
            self.classify.clone(),
            span,
        )
    }
}

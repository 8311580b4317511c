//! [`ResponseFuture`] of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::observe::CallSpan;
use palisade_core::replay::{ReplayPolicy, Replayer};
use palisade_core::stripe::Lane;
use palisade_core::{BoxError, Classify, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::layer::Shared;
use super::service::Own;

/// What a request needs to send extra attempts: core's [`Replayer`] (a clone of the
/// service, readied only when a hedge is due, the request to copy, the policy), and how
/// many attempts are left.
pub(crate) struct Spare<S, Req, P> {
    replayer: Replayer<S, Req, P>,
    left: u32,
    /// Attempts sent so far, the first included (for `grpc-previous-rpc-attempts`).
    sent: u32,
    delay: Duration,
    min_remaining: Duration,
}

impl<S, Req, P> Spare<S, Req, P> {
    pub(crate) fn new(
        replayer: Replayer<S, Req, P>,
        left: u32,
        delay: Duration,
        min_remaining: Duration,
    ) -> Self {
        Self {
            replayer,
            left,
            sent: 1,
            delay,
            min_remaining,
        }
    }
}

/// An extra attempt: boxed, because their number is only known at run time. The box is
/// the only allocation a hedge costs, and only when one fires.
struct Attempt<F> {
    fut: Pin<Box<F>>,
    started: Instant,
}

/// What `try_fire` achieved.
enum Fire {
    /// A new attempt is running.
    Fired,
    /// The spare service is not ready yet; the waker is registered.
    NotReady,
    /// No more attempts for this request (budget, deadline, policy, count, error).
    Done,
}

pin_project! {
    /// Response future of [`Hedge`](super::Hedge).
    ///
    /// Owns every attempt: the first inline, extras boxed. Whichever succeeds first is
    /// returned and the others are dropped (cancelled) with this future.
    pub struct ResponseFuture<S, Req, P, C>
    where
        S: Service<Req>,
    {
        #[pin]
        primary: Option<S::Future>,
        // When the first attempt was first found pending: the clock is read only then,
        // so a call that completes in its first poll reads no clock at all.
        started: Option<Instant>,
        extras: Vec<Attempt<S::Future>>,
        spare: Option<Spare<S, Req, P>>,
        // Created on the first `Pending`, so a call that completes at once never touches
        // the timer wheel.
        #[pin]
        timer: Option<Sleep>,
        deadline: Option<Deadline>,
        // A non-fatal failure asks for the next attempt now (gRPC A6 hedging).
        fire_now: bool,
        last: Option<Result<S::Response, BoxError>>,
        // The layer's state and the prototype hedges are cloned from, through this
        // thread's lane (its reference count is on a line of the stripe's own).
        own: Lane<Own<S>>,
        classify: C,
        // The call's span: the first attempt and every hedge run inside it.
        span: CallSpan,
    }
}

impl<S, Req, P, C> ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        primary: S::Future,
        spare: Option<Spare<S, Req, P>>,
        deadline: Option<Deadline>,
        own: Lane<Own<S>>,
        classify: C,
        span: CallSpan,
    ) -> Self {
        Self {
            primary: Some(primary),
            started: None,
            extras: Vec::new(),
            spare,
            timer: None,
            deadline,
            fire_now: false,
            last: None,
            own,
            classify,
            span,
        }
    }
}

impl<S, Req, P, C> fmt::Debug for ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("primary_running", &self.primary.is_some())
            .field("extras_running", &self.extras.len())
            .field("can_hedge", &self.spare.is_some())
            .finish_non_exhaustive()
    }
}

/// Judges a finished attempt: `Some(result)` if it wins, else it becomes the fallback
/// answer and maybe asks for the next attempt at once.
fn settle<Res, C: Classify<Res, BoxError>>(
    result: Result<Res, BoxError>,
    attempt_started: Option<Instant>,
    is_extra: bool,
    classify: &C,
    shared: &Shared,
    last: &mut Option<Result<Res, BoxError>>,
    fire_now: &mut bool,
) -> Option<Result<Res, BoxError>> {
    let outcome = palisade_core::classify::outcome(classify, &result);
    if outcome.is_success() {
        match attempt_started {
            Some(at) => shared.record_success(at, Instant::now()),
            // Completed in the poll that started it: it never waited.
            None => shared.record_immediate_success(),
        }
        if is_extra {
            shared.hedge_wins.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "palisade::fanout", "hedge attempt won");
        }
        return Some(result);
    }
    // A failure does not end the call while other attempts run. The latest failure is
    // the answer if none succeeds; an ignored outcome only replaces nothing.
    if !outcome.is_ignored() || last.is_none() {
        *last = Some(result);
    }
    // A retryable failure fires the next attempt at once (gRPC A6) — unless the server
    // said when to come back (Retry-After, pushback): a hedge must not answer pushback
    // with more load. With nothing else running, that failure is then the answer, and a
    // retry layer above waits the hint out.
    let hinted = outcome.retry_after().is_some()
        || matches!(
            outcome.pushback(),
            Some(palisade_core::classify::Pushback::After(_))
        );
    if outcome.is_retryable() && !hinted {
        *fire_now = true;
    }
    None
}

impl<S, Req, P, C> Future for ResponseFuture<S, Req, P, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<Req>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            // 1. The first attempt.
            if let Some(fut) = this.primary.as_mut().as_pin_mut() {
                let polled = fut.poll(cx);
                if polled.is_pending() && this.started.is_none() {
                    // The attempt is waiting: start the clock, if anything needs it (a
                    // hedge timer, or a learned delay's latency sample).
                    if this.spare.is_some() || this.own.shared.learns() {
                        *this.started = Some(Instant::now());
                    }
                }
                if let Poll::Ready(result) = polled {
                    this.primary.set(None);
                    let result = result.map_err(Into::into);
                    if let Some(win) = settle(
                        result,
                        *this.started,
                        false,
                        this.classify,
                        &this.own.shared,
                        this.last,
                        this.fire_now,
                    ) {
                        return Poll::Ready(win);
                    }
                }
            }

            // 2. Extra attempts; finished ones are removed (order does not matter).
            let mut i = 0;
            while i < this.extras.len() {
                match this.extras[i].fut.as_mut().poll(cx) {
                    Poll::Pending => i += 1,
                    Poll::Ready(result) => {
                        let attempt = this.extras.swap_remove(i);
                        if let Some(win) = settle(
                            result.map_err(Into::into),
                            Some(attempt.started),
                            true,
                            this.classify,
                            &this.own.shared,
                            this.last,
                            this.fire_now,
                        ) {
                            return Poll::Ready(win);
                        }
                    }
                }
            }

            let in_flight = this.primary.is_some() || !this.extras.is_empty();

            // 3. Is another attempt due? Either a non-fatal failure asked for one, or the
            //    delay elapsed while something is still running. With nothing running
            //    and no such request, the last failure is the answer.
            let due = match this.spare.as_ref() {
                None => false,
                Some(_) if *this.fire_now => true,
                Some(_) if !in_flight => false,
                Some(spare) => {
                    if this.timer.is_none() {
                        // `started` is set: the primary was pending with a spare present.
                        let from = this.started.unwrap_or_else(Instant::now);
                        let at = palisade_core::time::add(from, spare.delay);
                        this.timer.set(Some(tokio::time::sleep_until(at)));
                    }
                    let timer = this.timer.as_mut().as_pin_mut().expect("timer set above");
                    timer.poll(cx).is_ready()
                }
            };
            if due {
                match try_fire(this.spare, this.extras, *this.deadline, this.own, cx) {
                    Fire::Fired => {
                        *this.fire_now = false;
                        // The next extra attempt, if any, one delay from now.
                        if let (Some(spare), Some(timer)) =
                            (this.spare.as_ref(), this.timer.as_mut().as_pin_mut())
                        {
                            timer.reset(palisade_core::time::from_now(spare.delay));
                        }
                        // Poll the new attempt (and re-arm the timer) right away.
                        continue;
                    }
                    Fire::NotReady => return Poll::Pending,
                    Fire::Done => {
                        *this.spare = None;
                        *this.fire_now = false;
                        this.timer.set(None);
                        if in_flight {
                            // Keep waiting for what runs; loop once more to settle state.
                            continue;
                        }
                    }
                }
            }

            if !in_flight {
                let last = this
                    .last
                    .take()
                    .expect("an attempt finished without winning, so it left its result");
                return Poll::Ready(last);
            }
            return Poll::Pending;
        }
    }
}

/// Starts one extra attempt if the deadline, the service, the policy and the budget allow.
fn try_fire<S, Req, P>(
    spare: &mut Option<Spare<S, Req, P>>,
    extras: &mut Vec<Attempt<S::Future>>,
    deadline: Option<Deadline>,
    own: &Own<S>,
    cx: &mut Context<'_>,
) -> Fire
where
    S: Service<Req> + Clone,
    P: ReplayPolicy<Req>,
{
    let Some(s) = spare.as_mut() else {
        return Fire::Done;
    };
    if s.left == 0 {
        return Fire::Done;
    }
    if let Some(d) = deadline {
        if d.remaining() < s.min_remaining {
            tracing::trace!(target: "palisade::fanout", "no hedge: deadline too close");
            return Fire::Done;
        }
    }
    // Readiness before the budget, so a stalled service does not spend it. An error from
    // the spare service ends hedging; the running attempts still decide the answer.
    match s.replayer.poll_ready(cx, &own.prototype) {
        Poll::Pending => return Fire::NotReady,
        Poll::Ready(Err(_)) => return Fire::Done,
        Poll::Ready(Ok(())) => {}
    }
    // A streaming body that outgrew its replay buffer cannot be sent again.
    if !s.replayer.can_replay() {
        return Fire::Done;
    }
    let Some(req) = s.replayer.next_request(s.left == 1, s.sent) else {
        return Fire::Done;
    };
    if !own.shared.try_hedge() {
        tracing::debug!(target: "palisade::fanout", "no hedge: budget spent");
        return Fire::Done;
    }
    tracing::debug!(target: "palisade::fanout", "hedge attempt sent");
    s.left -= 1;
    s.sent += 1;
    extras.push(Attempt {
        fut: Box::pin(s.replayer.call(req)),
        started: Instant::now(),
    });
    if s.left == 0 {
        // Release the spare service (and anything it holds) as soon as it is not needed.
        *spare = None;
    }
    Fire::Fired
}

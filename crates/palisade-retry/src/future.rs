//! [`ResponseFuture`] of [`Retry`](super::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use palisade_core::classify::Pushback;
use palisade_core::observe::CallSpan;
use palisade_core::stripe::Lane;
use palisade_core::{find_rejection, BoxError, Classify, Deadline, Outcome, Rejection};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::layer::Shared;
use super::service::Own;
use palisade_core::replay::{ReplayPolicy, Replayer};

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is running.
        Running { #[pin] fut: F },
        // Waiting out the backoff (or the server's hint) before the next attempt. Boxed:
        // a `Sleep` is larger than everything else here, and only a retry needs one.
        Backoff { sleep: Pin<Box<Sleep>> },
        // The wait is over; the service clone is being readied.
        Readying,
    }
}

pin_project! {
    /// Response future of [`Retry`](super::Retry).
    ///
    /// Runs one attempt at a time. When an attempt fails retryably and the policy, the
    /// attempt count, the server's hint, the deadline and the budget all allow, it waits
    /// and sends a copy; otherwise it returns that attempt's result as it is.
    pub struct ResponseFuture<S, Req, P, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        retrier: Option<Replayer<S, Req, P>>,
        // Attempts started so far (the first included).
        attempts: u32,
        // The previous wait, for decorrelated jitter.
        prev_wait: Duration,
        deadline: Option<Deadline>,
        // The failed result being retried: returned as is if the retry cannot be sent.
        last: Option<Result<S::Response, BoxError>>,
        // The layer's state and the prototype retries are cloned from, through this
        // thread's lane (its reference count is on a line of the stripe's own).
        own: Lane<Own<S>>,
        classify: C,
        // The call's span: every attempt runs inside it.
        span: CallSpan,
    }
}

impl<S, Req, P, C> ResponseFuture<S, Req, P, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        first: S::Future,
        retrier: Option<Replayer<S, Req, P>>,
        deadline: Option<Deadline>,
        own: Lane<Own<S>>,
        classify: C,
        span: CallSpan,
    ) -> Self {
        Self {
            state: State::Running { fut: first },
            retrier,
            attempts: 1,
            prev_wait: Duration::ZERO,
            deadline,
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
        let state = match self.state {
            State::Running { .. } => "running",
            State::Backoff { .. } => "backoff",
            State::Readying => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.attempts)
            .field("can_retry", &self.retrier.is_some())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Why a retryable failure is not retried (for tracing).
#[derive(Debug, Clone, Copy)]
enum GiveUp {
    Attempts,
    HintTooLong,
    Deadline,
    Budget,
}

/// Decides whether to retry after a failed attempt, and how long to wait first.
///
/// The checks, in order: attempts left; the server's hint (`Retry-After`, gRPC pushback)
/// within `max_retry_after`; the wait plus `min_remaining` within the deadline; and last
/// the budget, so a retry that would not be sent anyway does not spend it.
fn plan(
    shared: &Shared,
    outcome: &Outcome,
    local_rate_limit: bool,
    attempts: u32,
    prev_wait: Duration,
    deadline: Option<Deadline>,
) -> Result<Duration, GiveUp> {
    if attempts >= shared.max_attempts {
        return Err(GiveUp::Attempts);
    }
    let backoff = shared
        .backoff
        .delay(attempts - 1, prev_wait, shared.jitter.sample());
    let hint = outcome.retry_after().or(match outcome.pushback() {
        Some(Pushback::After(d)) => Some(d),
        _ => None,
    });
    let wait = match hint {
        Some(h) if h > shared.max_retry_after => return Err(GiveUp::HintTooLong),
        // The server said when: no sooner than that, and no sooner than the backoff's
        // floor (a `Retry-After: 0` must not turn into a tight loop).
        // Our own rate limit's hint is exact: the slot is due then, not later.
        Some(h) if local_rate_limit => h,
        Some(h) => h.max(shared.backoff.min_delay()),
        None => backoff,
    };
    if let Some(d) = deadline {
        // Never sleep past the deadline, and leave `min_remaining` for the attempt.
        let remaining = d.remaining();
        if remaining <= wait || remaining - wait < shared.min_remaining {
            return Err(GiveUp::Deadline);
        }
    }
    // Waiting out our own rate limit's exact slot adds no load the limiter did not
    // already allow: it costs an attempt, not budget.
    if local_rate_limit && outcome.retry_after().is_some() {
        return Ok(wait);
    }
    if !shared.budget.try_withdraw(shared.now()) {
        shared.count_exhausted();
        return Err(GiveUp::Budget);
    }
    Ok(wait)
}

impl<S, Req, P, C> Future for ResponseFuture<S, Req, P, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<Req>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    // The state machine, one attempt at a time:
    //
    //   Running --attempt done, no retry--> Ready(result)
    //   Running --retryable failure, plan Ok(wait)--> Backoff (the result kept in `last`)
    //   Backoff --sleep done--> Readying
    //   Readying --service ready--> Running (a copy of the request, or the template itself
    //                                        for the last attempt)
    //   Readying --service failed / no copy--> Ready(last)
    //
    // The budget is paid in `plan`, before the wait: a future dropped while backing off
    // has spent it (conservative: the budget errs towards fewer retries).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    // Fast path: nothing could retry this and no budget learns from it.
                    if this.retrier.is_none() && !this.own.shared.budget_records() {
                        return Poll::Ready(result);
                    }
                    let outcome = palisade_core::classify::outcome(&*this.classify, &result);
                    // A local rejection is not a server failure: it feeds no budget.
                    if !outcome.is_local() {
                        this.own.shared.budget.record(&outcome);
                    }
                    if outcome.is_success() || !outcome.is_retryable() {
                        return Poll::Ready(result);
                    }
                    let Some(r) = this.retrier.as_ref() else {
                        return Poll::Ready(result);
                    };
                    // The kept copy may have become unsendable (a streaming body that
                    // outgrew its replay buffer while this attempt sent it).
                    if !r.can_replay() {
                        tracing::debug!(target: "palisade::retry", "giving up: request cannot be replayed");
                        return Poll::Ready(result);
                    }
                    let local_rate_limit = outcome.is_local()
                        && result.as_ref().err().is_some_and(|e| {
                            matches!(find_rejection(e.as_ref()), Some(Rejection::RateLimited(_)))
                        });
                    match plan(
                        &this.own.shared,
                        &outcome,
                        local_rate_limit,
                        *this.attempts,
                        *this.prev_wait,
                        *this.deadline,
                    ) {
                        Ok(wait) => {
                            tracing::debug!(target: "palisade::retry", attempt = *this.attempts, ?wait, "retrying");
                            *this.prev_wait = wait;
                            *this.last = Some(result);
                            this.state.set(State::Backoff {
                                sleep: Box::pin(tokio::time::sleep(wait)),
                            });
                        }
                        Err(why) => {
                            tracing::debug!(target: "palisade::retry", attempt = *this.attempts, ?why, "giving up");
                            return Poll::Ready(result);
                        }
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let r = this
                        .retrier
                        .as_mut()
                        .expect("only a request with a retrier waits for a retry");
                    match r.poll_ready(cx, &this.own.prototype) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            // The service cannot take the retry: the last real outcome
                            // is the answer, not the readiness error.
                            tracing::debug!(target: "palisade::retry", "giving up: service not ready");
                            return Poll::Ready(this.last.take().expect("set before waiting"));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    // The last attempt takes the template; earlier ones copy it.
                    let is_last = *this.attempts + 1 >= this.own.shared.max_attempts;
                    let Some(req) = r.next_request(is_last, *this.attempts) else {
                        return Poll::Ready(this.last.take().expect("set before waiting"));
                    };
                    let fut = r.call(req);
                    if is_last {
                        // Release the service clone (and anything it holds) early.
                        *this.retrier = None;
                    }
                    *this.attempts += 1;
                    *this.last = None;
                    this.own.shared.count_retry();
                    this.state.set(State::Running { fut });
                }
            }
        }
    }
}

//! The result of a fan-out, and the pure rules that decide when a gather is done.

use std::fmt;
use std::num::NonZeroUsize;

use palisade_core::BoxError;

/// When a fan-out returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait for every branch; each keeps its own `Result`, so one failure does not throw
    /// away the rest (asyncio's `gather(..., return_exceptions=True)`).
    All,
    /// Return at the first success; cancel the rest.
    FirstSuccess,
    /// Return as soon as this many branches succeeded; cancel the rest. Returns early
    /// too once the quorum can no longer be reached.
    Quorum(NonZeroUsize),
}

/// Why a fan-out returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Every branch finished (successes and failures alike).
    AllFinished,
    /// [`Mode::FirstSuccess`] got its success.
    FirstSuccess,
    /// [`Mode::Quorum`] got its successes.
    QuorumReached,
    /// The mode's goal cannot be met any more: every branch failed (first success), or
    /// too many failed (quorum).
    Unreachable,
    /// The deadline came first: the result is partial.
    DeadlineReached,
}

/// One branch of a [`Gathered`] result.
#[derive(Debug)]
pub enum Branch<Res> {
    /// The branch finished with this result.
    Done(Result<Res, BoxError>),
    /// The branch was running and was cancelled (deadline, or the mode was satisfied).
    Cancelled,
    /// The branch never started (bounded width, and the gather ended first).
    NotStarted,
}

impl<Res> Branch<Res> {
    /// The result, if the branch finished.
    pub fn result(&self) -> Option<&Result<Res, BoxError>> {
        match self {
            Self::Done(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the branch finished (with a success or an error).
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    /// The result, if the branch finished, by value.
    pub fn into_result(self) -> Option<Result<Res, BoxError>> {
        match self {
            Self::Done(r) => Some(r),
            _ => None,
        }
    }

    /// The success, if the branch finished with one.
    pub fn ok(self) -> Option<Res> {
        self.into_result()?.ok()
    }
}

/// What a fan-out gathered: branch `i` is what the `i`-th scattered request produced,
/// or why it did not finish.
pub struct Gathered<Res> {
    branches: Vec<Branch<Res>>,
    completion: Completion,
}

impl<Res> fmt::Debug for Gathered<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gathered")
            .field("completion", &self.completion)
            .field(
                "succeeded",
                &self.successes().map(|(i, _)| i).collect::<Vec<_>>(),
            )
            .field("failed", &self.errors().map(|(i, _)| i).collect::<Vec<_>>())
            .field("unfinished", &self.unfinished().collect::<Vec<_>>())
            .finish()
    }
}

impl<Res> Gathered<Res> {
    pub(crate) fn new(branches: Vec<Branch<Res>>, completion: Completion) -> Self {
        Self {
            branches,
            completion,
        }
    }

    /// Why the fan-out returned.
    pub fn completion(&self) -> Completion {
        self.completion
    }

    /// Number of branches.
    pub fn len(&self) -> usize {
        self.branches.len()
    }

    /// Whether there were no branches at all.
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }

    /// Every branch, by index.
    pub fn branches(&self) -> &[Branch<Res>] {
        &self.branches
    }

    /// Branch `i`.
    pub fn get(&self, i: usize) -> Option<&Branch<Res>> {
        self.branches.get(i)
    }

    /// `(index, response)` of every branch that returned `Ok`.
    pub fn successes(&self) -> impl Iterator<Item = (usize, &Res)> + '_ {
        self.branches
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b {
                Branch::Done(Ok(r)) => Some((i, r)),
                _ => None,
            })
    }

    /// `(index, error)` of every branch that returned `Err`.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &BoxError)> + '_ {
        self.branches
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b {
                Branch::Done(Err(e)) => Some((i, e)),
                _ => None,
            })
    }

    /// Indices of the branches that did not finish (cancelled or never started).
    pub fn unfinished(&self) -> impl Iterator<Item = usize> + '_ {
        self.branches
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_done())
            .map(|(i, _)| i)
    }

    /// Every branch, by index.
    pub fn into_branches(self) -> Vec<Branch<Res>> {
        self.branches
    }

    /// The `Ok` responses with their indices, dropping the rest.
    pub fn into_successes(self) -> Vec<(usize, Res)> {
        self.branches
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| match b {
                Branch::Done(Ok(r)) => Some((i, r)),
                _ => None,
            })
            .collect()
    }

    /// The first `Ok` response by index, or the last error if there is none.
    ///
    /// # Errors
    /// The last branch error, or [`DeadlineExceeded`](palisade_core::DeadlineExceeded) if
    /// no branch finished at all.
    pub fn into_first_success(self) -> Result<Res, BoxError> {
        let mut last_err = None;
        for b in self.branches {
            match b {
                Branch::Done(Ok(r)) => return Ok(r),
                Branch::Done(Err(e)) => last_err = Some(e),
                _ => {}
            }
        }
        Err(last_err.unwrap_or_else(|| palisade_core::DeadlineExceeded::new().into()))
    }
}

/// Counts of a gather in progress; decides when the mode is satisfied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) total: usize,
    pub(crate) finished: usize,
    pub(crate) succeeded: usize,
}

impl Tally {
    pub(crate) fn new(total: usize) -> Self {
        Self {
            total,
            finished: 0,
            succeeded: 0,
        }
    }

    /// Counts one finished branch.
    pub(crate) fn finish(&mut self, success: bool) {
        self.finished += 1;
        if success {
            self.succeeded += 1;
        }
    }

    /// `Some` once `mode` has its answer.
    pub(crate) fn check(&self, mode: Mode) -> Option<Completion> {
        let all_done = self.finished >= self.total;
        match mode {
            Mode::All => all_done.then_some(Completion::AllFinished),
            Mode::FirstSuccess => {
                if self.succeeded >= 1 {
                    Some(Completion::FirstSuccess)
                } else if all_done {
                    Some(Completion::Unreachable)
                } else {
                    None
                }
            }
            Mode::Quorum(k) => {
                let k = k.get();
                let still_possible = self.succeeded + (self.total - self.finished);
                if self.succeeded >= k {
                    Some(Completion::QuorumReached)
                } else if still_possible < k {
                    // Even if every unfinished branch succeeded, k is out of reach.
                    Some(Completion::Unreachable)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn all_waits_for_every_branch() {
        let mut t = Tally::new(3);
        assert_eq!(t.check(Mode::All), None);
        t.finish(false);
        t.finish(true);
        assert_eq!(t.check(Mode::All), None);
        t.finish(false);
        assert_eq!(t.check(Mode::All), Some(Completion::AllFinished));
    }

    #[test]
    fn first_success_or_all_failed() {
        let mut t = Tally::new(2);
        t.finish(false);
        assert_eq!(t.check(Mode::FirstSuccess), None);
        t.finish(true);
        assert_eq!(t.check(Mode::FirstSuccess), Some(Completion::FirstSuccess));
        let mut t = Tally::new(2);
        t.finish(false);
        t.finish(false);
        assert_eq!(t.check(Mode::FirstSuccess), Some(Completion::Unreachable));
    }

    #[test]
    fn quorum_reached_or_out_of_reach() {
        let mut t = Tally::new(5);
        t.finish(true);
        t.finish(true);
        assert_eq!(t.check(Mode::Quorum(nz(3))), None);
        t.finish(true);
        assert_eq!(
            t.check(Mode::Quorum(nz(3))),
            Some(Completion::QuorumReached)
        );

        let mut t = Tally::new(5);
        t.finish(false);
        t.finish(false);
        assert_eq!(
            t.check(Mode::Quorum(nz(3))),
            None,
            "3 of 3 left could still succeed"
        );
        t.finish(false);
        assert_eq!(t.check(Mode::Quorum(nz(3))), Some(Completion::Unreachable));
        // A quorum larger than the fan-out is unreachable from the start.
        assert_eq!(
            Tally::new(2).check(Mode::Quorum(nz(3))),
            Some(Completion::Unreachable)
        );
    }

    #[test]
    fn empty_fan_out_is_done_at_once() {
        let t = Tally::new(0);
        assert_eq!(t.check(Mode::All), Some(Completion::AllFinished));
        assert_eq!(t.check(Mode::FirstSuccess), Some(Completion::Unreachable));
    }
}

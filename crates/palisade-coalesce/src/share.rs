//! Which shared answers may be shared: every one (the default), or those a rule accepts.

use std::fmt;
use std::sync::Arc;

/// A rule saying whether a completed call's response may be shared with the waiters that
/// joined it; see [`CoalesceBuilder::share_if`](crate::CoalesceBuilder::share_if).
///
/// Implemented by closures `Fn(&T) -> bool` and by
/// [`http::BufferedOnly`](crate::http::BufferedOnly) (feature `http`).
pub trait Share<T>: Send + Sync + 'static {
    /// Whether `res` may be cloned for the other waiters; if not, one waiter gets it whole
    /// and every other makes its own call.
    fn share(&self, res: &T) -> bool;
}

impl<T, F> Share<T> for F
where
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn share(&self, res: &T) -> bool {
        self(res)
    }
}

/// Every response is shared (the default mode of a [`CoalesceLayer`](crate::CoalesceLayer)).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareAll;

/// Responses are shared if the rule `P` accepts them; the followers of a refused one make
/// their own calls. Set with [`CoalesceBuilder::share_if`](crate::CoalesceBuilder::share_if).
pub struct ShareIf<P> {
    pub(crate) rule: Arc<P>,
}

impl<P> Clone for ShareIf<P> {
    fn clone(&self) -> Self {
        Self {
            rule: Arc::clone(&self.rule),
        }
    }
}

impl<P> fmt::Debug for ShareIf<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareIf").finish_non_exhaustive()
    }
}

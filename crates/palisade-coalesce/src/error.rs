//! The error every waiter of a failed shared call gets.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use palisade_core::BoxError;

/// A coalesced call failed: every waiter gets one of these, sharing the inner error.
///
/// The inner service's error is boxed once and shared through an `Arc`, so it need not be
/// `Clone`; [`source`](Error::source) is that error, so
/// [`find_rejection`](palisade_core::find_rejection) and `Outcome::from_error` see through
/// it (a breaker or retry above the coalescing layer classifies it as the inner error).
/// To downcast, use [`CoalescedError::inner`].
#[derive(Debug, Clone)]
pub struct CoalescedError {
    inner: Option<Arc<BoxError>>,
}

impl CoalescedError {
    pub(crate) fn shared(inner: Arc<BoxError>) -> BoxError {
        Box::new(Self { inner: Some(inner) })
    }

    /// The shared call was dropped without an answer: polling it panicked.
    pub(crate) fn cancelled() -> BoxError {
        Box::new(Self { inner: None })
    }

    /// The inner service's error, or `None` if the shared call panicked.
    pub fn inner(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.inner.as_deref().map(|e| e.as_ref())
    }
}

impl fmt::Display for CoalescedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(e) => write!(f, "coalesced call failed: {e}"),
            None => f.write_str("coalesced call panicked"),
        }
    }
}

impl Error for CoalescedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner
            .as_deref()
            .map(|e| e.as_ref() as &(dyn Error + 'static))
    }
}

//! The error a failing fallback reports.

use std::error::Error;
use std::fmt;

use palisade_core::BoxError;

/// The call failed and so did its fallback: both are kept.
///
/// [`source`](Error::source) is the fallback's own error; [`original`](Self::original) is
/// the call's error (`None` when the call answered a response classified as a failure).
#[derive(Debug)]
pub struct FallbackFailed {
    fallback: BoxError,
    original: Option<BoxError>,
}

impl FallbackFailed {
    pub(crate) fn new(fallback: BoxError, original: Option<BoxError>) -> Self {
        Self { fallback, original }
    }

    /// The fallback's error.
    pub fn fallback_error(&self) -> &BoxError {
        &self.fallback
    }

    /// The failed call's error, if it failed with one.
    pub fn original(&self) -> Option<&BoxError> {
        self.original.as_ref()
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fallback failed: {}", self.fallback)?;
        if let Some(original) = &self.original {
            write!(f, " (after: {original})")?;
        }
        Ok(())
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.fallback.as_ref())
    }
}

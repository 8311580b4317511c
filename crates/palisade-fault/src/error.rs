//! The errors injected faults produce.

use std::error::Error;
use std::fmt;

/// An error injected by a fault layer ([`FaultKind::Error`](crate::FaultKind::Error)): the
/// inner service was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InjectedError {
    _priv: (),
}

impl InjectedError {
    /// The error.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for InjectedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected fault")
    }
}

impl Error for InjectedError {}

/// The inner service answered, and a fault layer dropped the answer
/// ([`FaultKind::Abort`](crate::FaultKind::Abort)): the caller cannot know whether the
/// request took effect, as after a connection reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aborted {
    _priv: (),
}

impl Aborted {
    /// The error.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response aborted by an injected fault")
    }
}

impl Error for Aborted {}

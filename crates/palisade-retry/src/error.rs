use std::fmt;

/// An invalid retry configuration, reported by [`RetryBuilder::build`](super::RetryBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidRetry {
    /// `max_attempts` was 0 (it counts the first attempt, so it must be at least 1).
    ZeroMaxAttempts,
    /// The backoff's base is zero or its `min` exceeds its `max`.
    Backoff(&'static str),
    /// The budget's parameters are out of range.
    Budget(&'static str),
}

impl fmt::Display for InvalidRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidRetry::ZeroMaxAttempts => f.write_str("max_attempts must be at least 1"),
            InvalidRetry::Backoff(why) | InvalidRetry::Budget(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for InvalidRetry {}

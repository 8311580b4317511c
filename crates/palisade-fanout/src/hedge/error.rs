//! Configuration errors.

use std::fmt;

/// A hedge configuration that cannot work, returned by
/// [`HedgeBuilder::build`](super::HedgeBuilder::build).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum InvalidHedge {
    /// The percentile must be in (0, 1].
    Percentile(f64),
    /// The latency window must be longer than zero.
    ZeroWindow,
    /// The warm-up minimum must be at least one sample.
    ZeroMinSamples,
    /// The budget ratio must be finite and in [0, 1].
    BudgetRatio(f64),
}

impl fmt::Display for InvalidHedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Percentile(p) => write!(f, "hedge percentile must be in (0, 1], got {p}"),
            Self::ZeroWindow => f.write_str("hedge latency window must be longer than zero"),
            Self::ZeroMinSamples => f.write_str("hedge warm-up needs at least one sample"),
            Self::BudgetRatio(r) => write!(f, "hedge budget ratio must be in [0, 1], got {r}"),
        }
    }
}

impl std::error::Error for InvalidHedge {}

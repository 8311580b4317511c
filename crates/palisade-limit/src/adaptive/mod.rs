//! Adaptive concurrency limits: the limit follows what the dependency can take.
//!
//! [`AdaptiveLimitLayer`] is the [concurrency limit](crate::concurrency) (same permit path,
//! same wait / queue / reject modes, shared by all clones) plus a feedback loop: each
//! admitted call's round-trip time, the calls in flight when it started, and whether it was
//! *dropped* (its [`Outcome`](palisade_core::Outcome) is overloaded: 429, 503,
//! `RESOURCE_EXHAUSTED`, a timeout) are recorded into a window of atomics. When the window
//! is due (at least `min_samples` calls and `min_time` elapsed, or at once on a drop from a
//! call sent after the last decrease), the one caller that gets the update lock folds it
//! into a [`Sample`] for the [`Algorithm`], and resizes the limit through its
//! [`LimitHandle`](crate::LimitHandle). Drops from calls already in flight at a decrease
//! are samples without the drop: a burst of 429s backs off once, not once per 429. No lock is taken on the call path
//! (only a `try_lock` at window boundaries).
//!
//! Algorithms ([`Aimd`], [`Vegas`], [`Gradient2`]) are pure and follow Netflix's
//! concurrency-limits; see [`algorithm`].
//!
//! Calls the limit itself shed (reject mode, full queue, queue timeout) are not samples:
//! they say nothing about the dependency.
//!
//! The queue may serve by [criticality](crate::criticality)
//! ([`AdaptiveLimitBuilder::criticality`]): as the algorithm shrinks the limit, fewer
//! permits free up, and the sheddable requests are the ones that wait and are shed.
//!
//! # Example
//!
//! ```
//! use palisade_limit::adaptive::{AdaptiveLimitLayer, Vegas};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! let layer = AdaptiveLimitLayer::builder(Vegas::new(20, 500)).reject().build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) }));
//! assert_eq!(svc.oneshot(41).await?, 42);
//! assert_eq!(handle.limit(), 20);
//! # Ok(()) }
//! ```

pub mod algorithm;
mod service;
mod window;

pub use self::algorithm::{Aimd, Algorithm, Gradient2, InvalidAlgorithm, Sample, Vegas};
pub use self::service::{
    AdaptiveLimit, AdaptiveLimitBuilder, AdaptiveLimitLayer, InvalidAdaptiveLimit,
};

/// Response futures of [`AdaptiveLimit`].
pub mod future {
    pub use super::service::ResponseFuture;
}

//! Hedged requests: if a request has not succeeded after a delay, send it again, and take
//! the first success.
//!
//! "The Tail at Scale" (Dean & Barroso) sent a backup request after the p95 latency and
//! cut BigTable's p99.9 from 1,800 ms to 74 ms for 2% more requests. [`Hedge`] does that
//! for any `Service`:
//!
//! - **Delay**: [`HedgeDelay::fixed`], or [`HedgeDelay::percentile`] of the latencies of
//!   recent successful attempts (a rolling window with a warm-up minimum; recorded into
//!   atomic buckets, so no lock is taken per call).
//! - **Attempts**: up to [`max_extra`](HedgeBuilder::max_extra) extra attempts, each one
//!   delay after the previous. The first *success* (per [`Classify`]) wins; a failure does
//!   not end the call while other attempts run; when all fail, the last failure is
//!   returned. A failure the classifier marks retryable (a non-fatal status such as gRPC
//!   `UNAVAILABLE`, a refused connection) fires the next attempt at once instead of
//!   waiting for the delay (gRPC A6 hedging); a fatal one just waits for the others. A
//!   retryable failure that carries a server hint (`Retry-After`, gRPC pushback) is not
//!   answered with more load: it fires nothing, and with nothing else running it is the
//!   answer, for a retry layer above to wait out. Local rejections from layers below
//!   (see [`Origin`](palisade_core::Origin)) are classified by core's one rule.
//! - **Budget**: extra attempts are at most a fraction of requests (default 10%, burst
//!   10), shared by every clone, like Finagle's `maxExtraLoad`.
//! - **Deadlines**: no attempt starts when the request's [`Deadline`] (read through
//!   [`HasDeadline`]) has less than [`min_remaining`](HedgeBuilder::min_remaining) left.
//! - **Safety**: only requests the [`ReplayPolicy`] can copy are hedged (core's one replay
//!   policy, shared with retries: [`CloneAll`], [`Idempotent`], [`AnyMethod`], [`Grpc`] —
//!   which sets `grpc-previous-rpc-attempts` on each hedge — or a closure). Streaming
//!   bodies wrapped in core's `replay::body::ReplayBody` are hedged like retried ones;
//!   the attempts then read one original stream, and only the latest reader is woken for
//!   new data, so hedge streaming uploads only when they are small. By default
//!   [`Idempotent`] HTTP methods; [`CloneAll`] or a closure for other request types.
//!
//! The clock starts when the first attempt is first found pending (normally the first
//! poll, right after `call`): the delay counts from there, and so does the latency sample
//! a learned delay records. An attempt that completes in its first poll reads no clock
//! and is recorded as taking no time.
//!
//! Losing attempts are futures owned by the [`ResponseFuture`](future::ResponseFuture),
//! dropped (so cancelled) the moment a winner returns or the caller drops it: no task is
//! spawned, and neither responses nor errors need to be `Clone`. A call that no hedge
//! fires for allocates nothing; each extra attempt is one boxed future.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_fanout::hedge::{CloneAll, HedgeDelay, HedgeLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! let hedge = HedgeLayer::builder(HedgeDelay::percentile(0.95).min_samples(50))
//!     .max_extra(2)
//!     .budget(0.05, 10)
//!     .policy(CloneAll)
//!     .build()?;
//! let handle = hedge.handle();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(hedge)
//!     .service(service_fn(|key: &'static str| async move {
//!         Ok::<_, palisade_core::BoxError>(key.len())
//!     }));
//! assert_eq!(svc.oneshot("user:42").await?, 7);
//! assert_eq!(handle.hedges(), 0); // warming up: no hedge before 50 samples
//! # Ok(())
//! # }
//! ```
//!
//! # Differences from `tower::hedge`
//! tower sends one extra request at most, locks a mutex around its histogram on every
//! call, and returns whichever attempt finishes first, even an error. tower-resilience's
//! hedge has fixed delays only, requires `E: Clone` and boxes every call.
//!
//! [`Classify`]: palisade_core::Classify
//! [`Deadline`]: palisade_core::Deadline
//! [`HasDeadline`]: palisade_core::HasDeadline

mod budget;
mod error;
pub mod future;
mod latency;
mod layer;
mod service;

pub use self::error::InvalidHedge;
pub use self::layer::{HedgeBuilder, HedgeDelay, HedgeHandle, HedgeLayer};
pub use self::service::Hedge;
pub use palisade_core::replay::{AnyMethod, CloneAll, Grpc, Idempotent, ReplayPolicy};

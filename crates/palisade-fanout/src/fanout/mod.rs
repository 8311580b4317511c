//! Scatter-gather: send one request to N backends, gather what comes back.
//!
//! A [`FanOut`] turns a request into branches with a [`Scatter`]: [`Broadcast`] sends it
//! to each service of a list, [`Split`] sends N derived requests to one service. It then
//! gathers the branches into a [`Gathered`], which says, branch by branch, what each one
//! returned ([`Branch::Done`]) or that it was cancelled or never started, and why the
//! gather ended ([`Completion`]).
//!
//! - **Modes** ([`Mode`]): [`All`](Mode::All) waits for every branch and keeps each
//!   `Result` (one failure does not throw the rest away);
//!   [`FirstSuccess`](Mode::FirstSuccess) returns at the first success;
//!   [`Quorum(k)`](Mode::Quorum) returns once k succeeded (or k became impossible).
//! - **Partial at the deadline**: with a [`timeout`](FanOut::timeout) or a request
//!   [`Deadline`](palisade_core::Deadline) (read through
//!   [`HasDeadline`](palisade_core::HasDeadline)), the gather returns what finished by then
//!   ([`Completion::DeadlineReached`]), names the rest, and cancels them.
//! - **Bounded width**: at most [`width`](FanOut::width) branches in flight; the others
//!   start in order as slots free.
//! - **Fan-in**: [`reduce`](FanOut::reduce) maps the gathered result (map-reduce), and
//!   [`then`](FanOut::then) feeds it to a second phase, e.g. another fan-out built from
//!   the first one's answers.
//! - **Structured**: branches are futures owned by the response future. When it returns,
//!   what still runs is dropped; when the caller drops it, every branch is dropped.
//!   Nothing is spawned, nothing outlives the call.
//!
//! The branches' own errors are never the fan-out's error: they are in the
//! [`Gathered`], and a reducer decides what to make of them.
//!
//! # Example
//!
//! Eight shards, a 300 ms deadline: the answer holds the shards that made it.
//!
//! ```
//! use std::time::Duration;
//! use palisade_fanout::fanout::{Completion, FanOutLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade_core::BoxError> {
//! let search = ServiceBuilder::new()
//!     .layer(FanOutLayer::split(|q: &'static str| (0..8u64).map(move |shard| (q, shard)))
//!         .timeout(Duration::from_millis(300)))
//!     .service(service_fn(|(q, shard): (&'static str, u64)| async move {
//!         tokio::time::sleep(Duration::from_millis(40 + 50 * shard)).await;
//!         Ok::<_, palisade_core::BoxError>(format!("{q}@{shard}"))
//!     }));
//!
//! let gathered = search.oneshot("rust").await?;
//! assert_eq!(gathered.completion(), Completion::DeadlineReached);
//! assert_eq!(gathered.successes().count(), 6); // 40, 90, ..., 290 ms
//! assert_eq!(gathered.unfinished().collect::<Vec<_>>(), [6, 7]);
//! # Ok(())
//! # }
//! ```

mod compose;
pub mod future;
mod gathered;
mod scatter;
mod service;

pub use self::compose::{Reduce, Then};
pub use self::gathered::{Branch, Completion, Gathered, Mode};
pub use self::scatter::{Broadcast, Scatter, Split};
pub use self::service::{FanOut, FanOutLayer, DEFAULT_WIDTH};

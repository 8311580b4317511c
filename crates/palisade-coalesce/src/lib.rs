//! Request coalescing (singleflight) for Tower services: concurrent requests with the same
//! key share one call to the inner service, and every one of them gets its result.
//!
//! [`CoalesceLayer`] keys each request with a closure (`Some(key)` to coalesce, `None` to
//! call on its own; with feature `http`, [`http::key`] takes method + URI of safe methods).
//! The first request for a key calls the inner service; requests for the same key that
//! arrive while that call is in flight wait for it instead, and all get a clone of its
//! response (`Response: Clone`; wrap it in an `Arc` with `map_response` if cloning is
//! dear). An error reaches every waiter as a [`CoalescedError`] sharing it.
//!
//! - **No spawned task.** The shared call is driven by whichever waiter polls. If the
//!   first waiter is dropped, the others still get the result; if every waiter is dropped,
//!   the call is dropped.
//! - **Bounded.** At most [`max_keys`](CoalesceBuilder::max_keys) keys in flight; a
//!   request for another key calls uncoalesced. The entry is removed when its call
//!   completes, fails, or loses its last waiter, so no stale entry outlives its call.
//! - **Deadline-aware.** A waiter whose request carries a [`Deadline`](palisade_core::Deadline)
//!   leaves with [`DeadlineExceeded`](palisade_core::DeadlineExceeded) when it passes,
//!   without cancelling the call for the others.
//! - **Observable.** [`CoalesceHandle`] reports keys in flight, waiters per key, and calls
//!   led, joined, bypassed and not shared.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use palisade_coalesce::CoalesceLayer;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), palisade_core::BoxError> {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counted = Arc::clone(&calls);
//! let layer = CoalesceLayer::builder(|user: &u64| Some(*user)).max_keys(1_000).build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(move |user: u64| {
//!     counted.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         tokio::time::sleep(Duration::from_millis(20)).await; // a miss going to the database
//!         Ok::<_, std::io::Error>(format!("profile of {user}"))
//!     }
//! }));
//!
//! // Three concurrent misses for user 7 make one call.
//! let (a, b, c) = tokio::join!(
//!     svc.clone().oneshot(7),
//!     svc.clone().oneshot(7),
//!     svc.clone().oneshot(7),
//! );
//! assert_eq!(a? + &b? + &c?, "profile of 7".repeat(3));
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! assert_eq!((handle.led(), handle.joined(), handle.keys_in_flight()), (1, 2, 0));
//! # Ok(()) }
//! ```
//!
//! # Costs and bounds
//!
//! A keyed call with no duplicate in flight hashes its key once (core's
//! [`KeyHasher`](palisade_core::keyed::KeyHasher): foldhash with a random seed per table,
//! since HTTP keys come from untrusted URIs), takes the table lock twice (look up
//! and register; retire on completion) and, once the layer has warmed up, allocates
//! nothing: its entry is a slot in the table, and the box its inner future is pinned in
//! (it must stay pinned while shared) is reused from an earlier call (up to 64 emptied
//! boxes are kept). `cargo bench -p palisade-benches --bench main -- coalesce` measures
//! it. A request without a key costs a call to the key closure. Joining a call allocates
//! the waiters' shared waker list once per contended call. The inner future must be
//! `Send + 'static`, the response `Clone + Send`, and the key `Send + 'static`.
//!
//! One layer coalesces one kind of call: the first service type it serves owns its table,
//! and a service of another future type built from the same layer calls uncoalesced
//! (counted as bypassed). Build one layer per service.
//!
//! # Sharing only what can be shared
//!
//! [`CoalesceBuilder::share_if`] takes a rule ([`Share`]) that may refuse a response: the
//! leader then gets it whole and every other waiter makes its own call with its own
//! request (each follower keeps its request and a clone of the inner service meanwhile).
//! [`http::BufferedOnly`] refuses HTTP bodies over the buffering cap.
//!
//! # Metrics (feature `metrics`)
//!
//! `palisade_decisions_total{policy="coalesce", decision="led"|"joined"|"bypassed"|"unshared"}`,
//! `palisade_in_flight{policy="coalesce"}` (keys in flight) and the histogram
//! `palisade_coalesce_waiters` (waiters per call, recorded when it completes). Tracing
//! events go to target `palisade::coalesce` (`trace` on joins, `debug` on bypasses).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod flight;
pub mod future;
#[cfg(feature = "http")]
pub mod http;
mod layer;
mod registry;
mod service;
mod share;

pub use self::error::CoalescedError;
pub use self::layer::{CoalesceBuilder, CoalesceHandle, CoalesceLayer, InvalidCoalesce};
pub use self::service::Coalesce;
pub use self::share::{Share, ShareAll, ShareIf};

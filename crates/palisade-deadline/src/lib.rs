//! Deadlines that flow hop to hop, and per-attempt timeouts, for Tower services.
//!
//! A call has one overall deadline (an absolute [`palisade_core::Deadline`] riding on the
//! request) and each attempt inside it may have its own timeout:
//!
//! - [`DeadlineLayer`] (client, outermost): sets the request's deadline to
//!   `min(existing, now + timeout)` and fails with
//!   [`DeadlineExceeded`](palisade_core::DeadlineExceeded) when it passes.
//! - [`TimeoutLayer`] (client, innermost): a per-attempt timeout failing with
//!   [`Elapsed`](palisade_core::Elapsed), never longer than the deadline left.
//! - [`PropagateDeadlineLayer`] (client, above the HTTP/gRPC client): sends the remaining
//!   budget as `grpc-timeout` and/or a millisecond header.
//! - [`ServerDeadlineLayer`] (server): reads those headers, clamps them, sets the deadline
//!   for handlers and the calls they make, cancels the handler at the deadline and answers
//!   504 / gRPC `DEADLINE_EXCEEDED`.
//! - [`grpc_timeout`]: the `grpc-timeout` wire format.
//!
//! A client stack, outermost first:
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_deadline::{DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! let client = service_fn(|req: http::Request<()>| async move {
//!     Ok::<_, BoxError>(req.headers().get("grpc-timeout").cloned())
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(1)))   // the whole call
//!     // (retries, hedges, breakers, limits go here)
//!     .layer(TimeoutLayer::new(Duration::from_millis(200))) // each attempt
//!     .layer(PropagateDeadlineLayer::grpc())                // tell the next hop
//!     .service(client);
//! let sent = svc.oneshot(http::Request::new(())).await?;
//! assert_eq!(sent.unwrap(), "1000000u");
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod timer;

pub mod deadline;
pub mod grpc_timeout;
pub mod propagate;
pub mod server;
pub mod timeout;

pub use self::deadline::{ApplyDeadline, DeadlineLayer};
pub use self::propagate::{PropagateDeadline, PropagateDeadlineLayer};
pub use self::server::{ServerDeadline, ServerDeadlineLayer};
pub use self::timeout::{Timeout, TimeoutLayer};

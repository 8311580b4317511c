//! Hedged requests and scatter-gather fan-out for Tower services.
//!
//! - [`hedge`]: send a request again after a delay (fixed or a learned percentile), take
//!   the first success, cancel the rest; budgeted, deadline-aware, idempotent-only.
//! - [`fanout`]: send one request to N backends (a list of services, or one service and a
//!   split function), gather all / the first success / a quorum / what finished by the
//!   deadline, with a bounded width, a reducer and a second phase.
//! - [`join`]: join *different* calls (a tuple of futures, each its own type) under one
//!   deadline, with partial results.
//!
//! Every branch and attempt is a future owned by the response future: dropping it
//! cancels them all, and nothing is spawned.
//!
//! # Features
//! - `http`: the [`hedge::Idempotent`] policy for `http::Request`.
//! - `metrics`: emit `palisade_attempts_total` through the `metrics` facade.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod fanout;
pub mod hedge;
pub mod join;

pub use fanout::{Branch, Completion, FanOut, FanOutLayer, Gathered, Mode};
pub use hedge::{Hedge, HedgeDelay, HedgeLayer};

//! The Palisade policy lab: run a policy stack against a misbehaving upstream and see what
//! it does.
//!
//! Each scenario starts an upstream that misbehaves in one way (a concurrency cap that
//! answers 429, a slow 1 %, an outage window, a capacity that halves, a share of 503s, one
//! slow shard), drives the same load through a few client stacks (nothing, a peer's
//! middleware, Palisade's), and prints what the caller and the upstream saw, each number
//! measured by the run. Two scenarios run over loopback only, outside the tour (`run all`
//! or by name): `gateway` (blocking and CPU work inline on the event loop vs on
//! palisade-offload's pools) and `fleet` (local limits vs one fleet-wide limit in a
//! `redis-server` it starts; skipped with a note when there is none).
//!
//! ```text
//! cargo run --release -p palisade-lab                         # the tour: every scenario
//! cargo run --release -p palisade-lab -- list
//! cargo run --release -p palisade-lab -- run tail-latency --virtual --seed 7
//! cargo run --release -p palisade-lab -- run gateway
//! cargo run --release -p palisade-lab -- run all --virtual --json
//! cargo run --release -p palisade-lab -- run all --virtual --report lab.html
//! ```
//!
//! By default the upstream is an axum server on `127.0.0.1:0` reached by a hyper client,
//! on real time. With `--virtual` it is called in process on paused tokio time: the run is
//! deterministic for a seed and takes a fraction of the simulated time.
//!
//! The pieces are public so tests and other tools can reuse them: [`upstream`] (the
//! misbehaving upstream, built from palisade-fault's layers), [`load`] (open, closed and
//! burst loads, and what they measure), [`scenario`] (the scenarios), [`report`] (tables
//! and JSON) and [`html`] (the self-contained HTML report).

pub mod cli;
pub mod html;
pub mod load;
pub mod report;
pub mod scenario;
pub mod upstream;

use std::fmt;

/// What can go wrong running the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabError {
    /// The command line asked for something that does not exist or is malformed.
    Usage(String),
    /// No scenario has this name.
    UnknownScenario(String),
    /// A stack or the upstream was misconfigured.
    Config(String),
    /// A file or socket could not be used.
    Io(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Usage(msg) | LabError::Config(msg) | LabError::Io(msg) => f.write_str(msg),
            LabError::UnknownScenario(name) => {
                let names: Vec<&str> = scenario::ALL.iter().map(|s| s.name).collect();
                write!(
                    f,
                    "no scenario named {name:?}; the scenarios are: {} (or `all`)",
                    names.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for LabError {}

impl From<palisade_core::BoxError> for LabError {
    fn from(e: palisade_core::BoxError) -> Self {
        LabError::Config(e.to_string())
    }
}

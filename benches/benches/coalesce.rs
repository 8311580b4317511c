//! Request coalescing: the uncontended path (a keyed request with no duplicate in flight,
//! so it leads its own call and removes its entry) against the bare service, an unkeyed
//! request (passes straight through), and tower-resilience's coalescing on the same path.
//! The inner error is `Infallible` because tower-resilience needs a `Clone` error.
//!
//! tower-resilience runs in its best configuration: its `metrics` and `tracing` features
//! off (the workspace takes it without default features) and the key closure its only
//! setting (it has no other). Palisade's layer has its defaults (seeded foldhash keys, a bound of
//! 10,000 keys). Allocations per call are in the table's last column; that Palisade's
//! uncontended call makes none is also asserted by `palisade-coalesce`'s `alloc` test.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;

use criterion::Criterion;
use palisade_benches::{contender, Report};
use palisade_coalesce::CoalesceLayer;
use tower::{service_fn, Layer};
use tower_service::Service;

const GROUP: &str = "coalesce";

fn bare(
) -> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
       + Clone
       + Send
       + 'static {
    service_fn(|r: u64| ready(Ok::<_, Infallible>(r)))
}

pub(crate) fn benches(c: &mut Criterion, report: &mut Report) {
    contender(c, report, GROUP, "bare", true, bare(), || black_box(7u64));
    let keyed = CoalesceLayer::builder(|k: &u64| Some(*k))
        .build()
        .expect("valid");
    contender(
        c,
        report,
        GROUP,
        "palisade-uncontended",
        false,
        keyed.layer(bare()),
        || black_box(7u64),
    );
    let unkeyed = CoalesceLayer::builder(|_: &u64| None::<u64>)
        .build()
        .expect("valid");
    contender(
        c,
        report,
        GROUP,
        "palisade-unkeyed",
        false,
        unkeyed.layer(bare()),
        || black_box(7u64),
    );
    contender(
        c,
        report,
        GROUP,
        "tower-resilience-uncontended",
        false,
        tower_resilience::coalesce::CoalesceLayer::new(|k: &u64| *k).layer(bare()),
        || black_box(7u64),
    );
}

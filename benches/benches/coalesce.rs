//! Request coalescing: the uncontended path (a keyed request with no duplicate in flight,
//! so it leads its own call and removes its entry) against the bare service, and an
//! unkeyed request (passes straight through).

use std::future::{ready, Ready};
use std::hint::black_box;

use criterion::Criterion;
use palisade_benches::{contender, Report};
use palisade_coalesce::CoalesceLayer;
use palisade_core::BoxError;
use tower::{service_fn, Layer};
use tower_service::Service;

const GROUP: &str = "coalesce";

fn bare(
) -> impl Service<u64, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>> + Clone
{
    service_fn(|r: u64| ready(Ok::<_, BoxError>(r)))
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
}

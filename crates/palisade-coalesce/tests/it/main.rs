//! Integration tests of palisade-coalesce.

mod alloc;
mod coalesce;
mod fuzz;
#[cfg(feature = "http")]
mod http;
mod support;

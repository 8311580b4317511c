//! Integration tests of palisade-fault.

mod fault;
#[cfg(feature = "http")]
mod http;

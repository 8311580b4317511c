//! Integration tests of palisade-fallback.

mod breaker;
mod fallback;
#[cfg(feature = "http")]
mod http;

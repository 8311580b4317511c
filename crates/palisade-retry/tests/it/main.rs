//! Integration tests of palisade-retry, on paused time.

mod alloc;
#[cfg(feature = "http")]
mod body;
mod budget;
#[cfg(feature = "http")]
mod http;
mod retry;
mod support;

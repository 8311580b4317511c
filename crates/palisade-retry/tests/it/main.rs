//! Integration tests of palisade-retry, on paused time.

mod alloc;
#[cfg(feature = "http")]
mod body;
mod budget;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod loopback;
mod retry;
mod support;

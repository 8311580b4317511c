//! Integration tests of palisade-retry, on paused time.

mod alloc;
mod budget;
mod http;
mod retry;
mod support;

//! Integration tests of palisade-retry, on paused time.

mod alloc;
mod body;
mod budget;
mod http;
mod retry;
mod support;

//! Integration tests of palisade-breaker: the service, handle and per-key layer on
//! paused time.

mod alloc;
mod keyed;
mod service;
mod support;

//! Integration tests of palisade-fanout, on paused time.

mod alloc;
mod fanout;
mod hedge;
mod support;

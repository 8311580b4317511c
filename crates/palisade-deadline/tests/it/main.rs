//! Integration tests of palisade-deadline (one binary).

mod client;
mod hops;
mod server;

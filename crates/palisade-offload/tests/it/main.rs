//! Integration tests of palisade-offload: one binary, a module per pool.

mod blocking;
#[cfg(feature = "cpu")]
mod cpu;
#[cfg(feature = "process")]
mod process;
mod support;

//! Integration tests of palisade-offload: one binary, a module per pool.

mod blocking;

//! Integration tests of palisade-limit (one binary, a module per policy).

mod concurrency;

//! End-to-end tests over loopback (one binary, a module per policy).

mod limit;
mod support;

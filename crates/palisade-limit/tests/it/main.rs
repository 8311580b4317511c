//! Integration tests of palisade-limit (one binary, a module per policy).

mod adaptive;
mod concurrency;
mod criticality;
mod keyed;
mod throttle;

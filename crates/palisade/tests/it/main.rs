//! The facade's tests: policies from config (every invalid field by path, round trips,
//! a parser that never panics), the stack they build against the same stack written with
//! `ServiceBuilderExt`, and the tonic status mapping over a mock.

mod config;
mod grpc;
mod metrics;
mod stack;
mod status;
mod tracing;

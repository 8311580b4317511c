//! End-to-end tests (one binary, a module per concern): real layers stacked, real axum
//! servers and hyper clients, real tonic servers and channels, over loopback.

mod builders;
mod canonical;
mod coalesce;
mod fleet;
mod fuzz;
mod grpc;
mod limit;
mod redis_support;
mod seams;
mod support;

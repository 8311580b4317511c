//! End-to-end tests of Palisade over loopback: real axum servers and hyper clients on
//! `127.0.0.1:0`. The tests live in `tests/e2e/`; run them with
//! `cargo test -p palisade-tests`.

//! End-to-end tests of Palisade over loopback.

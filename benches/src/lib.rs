//! Benchmarks of Palisade.

//! Palisade fanout policy (work in progress: see the issue tracker).

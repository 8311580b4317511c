//! Palisade retry policy (work in progress: see the issue tracker).

//! Palisade deadline policy (work in progress: see the issue tracker).

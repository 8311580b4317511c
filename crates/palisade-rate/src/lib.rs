//! Palisade rate policy (work in progress: see the issue tracker).

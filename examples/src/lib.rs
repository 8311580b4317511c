//! Runnable examples of Palisade.

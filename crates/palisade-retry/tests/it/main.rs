//! Integration tests of palisade-retry, on paused time.

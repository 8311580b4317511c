//! The lab's integration tests: the scenarios' headline claims on paused time, and the
//! command line's answers to bad input.

mod cli;
mod report;
mod scenarios;

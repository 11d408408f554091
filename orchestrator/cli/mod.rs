//! The command line's work beyond parsing: the embedded local run and the
//! client commands that talk to a running orchestrator.

pub mod client;
pub mod local_run;

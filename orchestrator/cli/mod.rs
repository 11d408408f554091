//! The command line's work beyond parsing: the embedded local run and the
//! client commands that talk to a running orchestrator.

pub mod client;
mod escalation_prompt;
pub mod local_agents;
pub mod local_run;
pub mod plan_printer;
mod progress_display;
mod run_lock;
pub mod split_plan;
mod summary;

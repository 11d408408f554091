//! What the black-box tests (tests/) and the benchmark harness (benches/)
//! share: the real binaries, started on real sockets and stopped (with
//! everything they started) when dropped; hand-driven agent streams and a
//! hand-driven orchestrator for a real agent; a headless browser; and
//! waits on states with deadlines instead of sleeps.
//!
//! Everything is re-exported here, so a test says `use testfleet_testkit::*`.

mod agents;
mod browser;
mod control;
mod flood;
mod http;
mod orchestrator;
mod pki;
mod process;
mod raw_agent;
mod raw_orchestrator;
mod split_suite;
mod suite_run;
mod wait;
mod webhook;
mod workspace;

pub use agents::*;
pub use browser::*;
pub use control::*;
pub use flood::*;
pub use http::*;
pub use orchestrator::*;
pub use pki::*;
pub use process::*;
pub use raw_agent::*;
pub use raw_orchestrator::*;
pub use split_suite::*;
pub use suite_run::*;
pub use wait::*;
pub use webhook::*;
pub use workspace::*;

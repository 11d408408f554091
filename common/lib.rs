//! Shared by the orchestrator and the agent: the wire contract, the suite
//! configuration model and its validation.

pub mod proto {
    //! Generated from proto/testfleet/v1.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("testfleet.v1");

    /// Written by hand, for the report's size: see `report_text`.
    pub use crate::report_text::FinalReport;

    /// Encoded descriptor set for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("testfleet_descriptor");
}

pub mod codec;
pub mod counts;
// `config/` is the testfleet-config crate; this module adds reading files.
#[path = "config_file.rs"]
pub mod config;
pub mod host;
pub mod local_agent;
pub mod logging;
pub mod report_text;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod transport;
pub mod wire_json;

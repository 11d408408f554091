//! Shared by the orchestrator and the agent: the wire contract, the suite
//! configuration model and its validation.

pub mod proto {
    //! Generated from proto/testfleet/v1.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("testfleet.v1");

    /// Encoded descriptor set for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("testfleet_descriptor");
}

pub mod config;
pub mod host;
pub mod logging;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod transport;
pub mod wire_json;

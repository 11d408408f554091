//! Compiles proto/ with protox (pure Rust, no protoc needed) and writes the
//! descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "testfleet/v1/messages.proto",
    "testfleet/v1/services.proto",
    "testfleet/v1/journal.proto",
];

/// Wire timestamps and enums print as the seed writes them ("2025-07-10T10:00:00Z",
/// "calculation_error"), so JSON for humans reads like the specification.
const TIMESTAMP_FIELDS: &[&str] = &[
    "timestamp",
    "estimated_completion",
    "start_time",
    "end_time",
    "started_at",
    "finished_at",
    "last_heartbeat",
    "created_at",
];
const ENUM_FIELDS: &[(&str, &str)] = &[
    (".testfleet.v1.TaskDetails.priority", "priority"),
    (".testfleet.v1.ProgressUpdate.status", "task_status"),
    (".testfleet.v1.TaskCompletion.final_status", "final_status"),
    (".testfleet.v1.FailureDetails.error_type", "error_type"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("testfleet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    // No transport helpers: their `connect` constructor would clash with the
    // `Connect` RPC. Clients are built from a `Channel` instead.
    let mut builder = tonic_prost_build::configure()
        .build_transport(false)
        // Prost's codec, with each message's buffer sized before it is written
        // (common/codec.rs).
        .codec_path("crate::codec::Codec")
        .type_attribute(".testfleet.v1", "#[derive(serde::Serialize)]")
        // Written by hand so the report's tens of MB are shared, not copied
        // (common/report_text.rs); the wire format is the proto's.
        .extern_path(
            ".testfleet.v1.FinalReport",
            "crate::report_text::FinalReport",
        );
    for field in TIMESTAMP_FIELDS {
        builder = builder.field_attribute(
            field,
            "#[serde(serialize_with = \"crate::wire_json::timestamp\")]",
        );
    }
    for (path, func) in ENUM_FIELDS {
        builder = builder.field_attribute(
            path,
            format!("#[serde(serialize_with = \"crate::wire_json::{func}\")]"),
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}

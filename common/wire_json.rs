//! Serde helpers the generated wire types use, so a message printed as JSON
//! carries the seed's field names and values (`"final_status": "success"`).

use serde::Serializer;

use crate::proto::{ErrorType, FinalStatus, Priority, TaskStatus};

pub fn timestamp<S: Serializer>(
    ts: &Option<prost_types::Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ts.as_ref().and_then(crate::time::to_rfc3339) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_none(),
    }
}

/// `PRIORITY_HIGH` -> `high`: the enum's proto name less its type prefix.
fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn priority<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let p = Priority::try_from(*v).unwrap_or_default();
    s.serialize_str(&short_name(p.as_str_name(), "PRIORITY_"))
}

pub fn task_status<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let t = TaskStatus::try_from(*v).unwrap_or_default();
    s.serialize_str(&short_name(t.as_str_name(), "TASK_STATUS_"))
}

pub fn final_status<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    let f = FinalStatus::try_from(*v).unwrap_or_default();
    s.serialize_str(&short_name(f.as_str_name(), "FINAL_STATUS_"))
}

pub fn error_type<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&error_type_name(*v))
}

/// The seed's name of an error type (`calculation_error`).
pub fn error_type_name(v: i32) -> String {
    let e = ErrorType::try_from(v).unwrap_or_default();
    short_name(e.as_str_name(), "ERROR_TYPE_")
}

//! Where a suite's files go under its directory: the report, the merged
//! JUnit XML and each attempt's uploaded artifacts. The report writer, the
//! JUnit merge and the upload edge all read it from here.

use std::path::{Path, PathBuf};

pub const REPORT_FILE: &str = "report.json";
pub const JUNIT_FILE: &str = "junit.xml";

/// Where an attempt's uploaded artifacts live under a suite's directory.
pub fn artifact_dir(suite_dir: &Path, task_id: &str, attempt_number: u32) -> PathBuf {
    suite_dir
        .join("artifacts")
        .join(task_id)
        .join(attempt_number.to_string())
}

/// The prefix and suffix of an upload's temporary file beside its final
/// name `name` (a unique part goes between them). Hidden, and not ending
/// as `name` does, so nothing that reads the directory takes it for the
/// artifact.
pub fn upload_temp_affixes(name: &str) -> (String, String) {
    (format!(".{name}."), ".partial".to_string())
}

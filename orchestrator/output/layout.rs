//! Where a suite's files go under its directory: the report, the merged
//! JUnit XML and each attempt's uploaded artifacts. The report writer, the
//! JUnit merge and the upload edge all read it from here.

use std::path::{Path, PathBuf};

use testfleet::config::ids::{join_inside, OutsideRoot};

pub const REPORT_FILE: &str = "report.json";
pub const JUNIT_FILE: &str = "junit.xml";

/// Where an attempt's uploaded artifacts live under a suite's directory:
/// `artifacts/<task id>/<attempt number>`. Ids are checked when a config is
/// read; a task id that is not one plain file name is refused here all the
/// same, so no id can make the orchestrator write outside the suite's
/// directory.
pub fn artifact_dir(
    suite_dir: &Path,
    task_id: &str,
    attempt_number: u32,
) -> Result<PathBuf, OutsideRoot> {
    Ok(join_inside(&suite_dir.join("artifacts"), task_id)?.join(attempt_number.to_string()))
}

/// The prefix and suffix of an upload's temporary file beside its final
/// name `name` (a unique part goes between them). Hidden, and not ending
/// as `name` does, so nothing that reads the directory takes it for the
/// artifact.
pub fn upload_temp_affixes(name: &str) -> (String, String) {
    (format!(".{name}."), ".partial".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_cannot_leave_the_suite_dir() {
        let suite = Path::new("/data/reports/s1");
        assert_eq!(
            artifact_dir(suite, "A1", 2).unwrap(),
            suite.join("artifacts/A1/2")
        );
        for id in ["..", "../../ESCAPED", "a/b", "/etc", ""] {
            assert!(artifact_dir(suite, id, 1).is_err(), "{id:?}");
        }
    }
}

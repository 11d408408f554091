//! Split pytest suites for tests: a project's files, its suite file, and
//! the split task's tests as the report lists them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{python, task};

/// Writes `text` to `dir/name`, making its directories.
pub fn write_file(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `project/suite.yaml`: one split pytest task `unit` over `tests/` in
/// `project`, with pytest's `args` and more keys of `split` (", key: value").
pub fn split_pytest_suite(project: &Path, args: &[&str], split: &str) -> PathBuf {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "templates:\n  pytest:\n    command: \"{} -m pytest {{args}}\"\norchestrator:\n  task_definitions:\n    tests:\n      - id: unit\n        template: pytest\n        args: [{}]\n        working_directory: {}\n        split: {{runner: pytest, paths: [\"tests/\"]{split}}}\n",
        python(),
        args.join(", "),
        project.display()
    );
    let file = project.join("suite.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// A test of the split task: (id, verdict, its runs as (outcome, agent)).
pub type ReportedTest = (String, String, Vec<(String, String)>);

/// The split task `unit`'s tests, as the report lists them.
pub fn split_tests_of(report: &Value) -> Vec<ReportedTest> {
    task(report, "unit")["split"]["tests"]
        .as_array()
        .expect("the split task lists its tests")
        .iter()
        .map(|t| {
            let runs = t["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["outcome"].as_str().unwrap().to_string(),
                        a["agent_id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                t["id"].as_str().unwrap().to_string(),
                t["verdict"].as_str().unwrap_or("none").to_string(),
                runs,
            )
        })
        .collect()
}

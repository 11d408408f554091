//! `orchestrator run` to its end, and reading what it left.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::orchestrator_bin;

/// `orchestrator run FILE --local-agents N --report-dir DIR`, to its end.
/// Unless `extra` names one, the agents' cache is `DIR/agent-cache`, so
/// tests running one config at once do not share (and lock) the default
/// cache beside it.
pub fn run_suite(config: &Path, agents: u32, report_dir: &Path, extra: &[&str]) -> (Output, Value) {
    let own_cache = (!extra.contains(&"--cache-dir"))
        .then(|| ["--cache-dir".into(), report_dir.join("agent-cache")])
        .into_iter()
        .flatten();
    let out = Command::new(orchestrator_bin())
        .arg("run")
        .arg(config)
        .args(["--local-agents", &agents.to_string()])
        .arg("--report-dir")
        .arg(report_dir)
        .args(own_cache)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run the suite");
    let report = std::fs::read_to_string(report_dir.join("report.json"))
        .map(|t| serde_json::from_str(&t).expect("report.json is JSON"))
        .unwrap_or(Value::Null);
    (out, report)
}

/// A finished command's output, for an assertion's message.
pub fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Task `id` in a report; panics when it has none.
pub fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in the report"))
}

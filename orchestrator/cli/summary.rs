//! The table a local run prints at its end: a line a task (status, attempts,
//! tests, coverage, criteria) and the suite's totals.
//!
//! Read from the report the engine wrote rather than from the scheduler's
//! state, so the table says what report.json says. Only the fields it
//! prints are read; the rest of the document is skipped unparsed.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Deserialize;
use testfleet_core::TaskState;

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    suite_name: String,
    #[serde(default)]
    status: String,
    duration_seconds: Option<f64>,
    #[serde(default)]
    summary: Totals,
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Totals {
    completed_success: u64,
    total_tasks: u64,
    total_tests: u64,
    tests_passed: u64,
    /// Split tasks' flaky tests, `task: test`.
    flaky_tests: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Task {
    task_id: String,
    status: TaskState,
    reason: String,
    criteria: Vec<Criterion>,
    attempts: Vec<Attempt>,
    split: Option<SplitCounts>,
}

/// A split task's counts: its tests are its own, not its attempts'.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SplitCounts {
    collected: u64,
    passed: u64,
    flaky: u64,
    batches: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Criterion {
    criterion: String,
    passed: bool,
    /// Kept as the report wrote it, so it prints as there: `1.0`, `null`.
    actual: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Attempt {
    test_results: Option<TestResults>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TestResults {
    total_tests: u64,
    passed: u64,
    coverage_measured: bool,
    coverage_percentage: f64,
}

/// Prints the summary of `report_json` (the final report) on stdout.
pub fn print_summary(report_json: &str) -> anyhow::Result<()> {
    let report: Report = serde_json::from_str(report_json).context("reading back the report")?;
    print!("{}", summary(&report));
    Ok(())
}

fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "suite {} {}", report.suite_name, report.status);
    let _ = writeln!(
        out,
        "{:<8} {:<18} {:>8} {:>10} {:>9}  criteria",
        "task", "status", "attempts", "tests", "coverage"
    );
    for t in &report.tasks {
        task_line(&mut out, t);
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} of {} tasks succeeded; {} tests, {} passed; {:.1} s",
        s.completed_success,
        s.total_tasks,
        s.total_tests,
        s.tests_passed,
        report.duration_seconds.unwrap_or(0.0)
    );
    if !s.flaky_tests.is_empty() {
        let _ = writeln!(
            out,
            "{} flaky (failed, then passed on a rerun): {}",
            s.flaky_tests.len(),
            s.flaky_tests.join(", ")
        );
    }
    out
}

/// A task's line, and under it why it did not succeed.
fn task_line(out: &mut String, t: &Task) {
    let last = t.attempts.last().and_then(|a| a.test_results.as_ref());
    let tests = match &t.split {
        Some(s) => format!("{}/{}", s.passed + s.flaky, s.collected),
        None => last
            .filter(|r| r.total_tests > 0)
            .map(|r| format!("{}/{}", r.passed, r.total_tests))
            .unwrap_or_else(|| "-".into()),
    };
    let attempts = t.split.as_ref().map_or(t.attempts.len() as u64, |s| {
        t.attempts.len() as u64 + s.batches
    });
    let cov = last
        .filter(|r| r.coverage_measured)
        .map(|r| format!("{:.1}%", r.coverage_percentage))
        .unwrap_or_else(|| "-".into());
    let mut criteria = String::new();
    for c in &t.criteria {
        let mark = if c.passed { "ok" } else { "MISSED" };
        let _ = write!(criteria, "{} {} ({}) ", c.criterion, mark, c.actual);
    }
    let _ = writeln!(
        out,
        "{:<8} {:<18} {:>8} {:>10} {:>9}  {}",
        t.task_id,
        t.status.as_str(),
        attempts,
        tests,
        cov,
        criteria.trim_end()
    );
    if t.status != TaskState::CompletedSuccess && !t.reason.is_empty() {
        let _ = writeln!(out, "         {}", t.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_a_line_a_task_and_the_totals_as_the_report_says() {
        let json = r#"{"suite_name":"s","status":"failed","duration_seconds":2.25,
            "summary":{"completed_success":1,"total_tasks":2,"total_tests":4,"tests_passed":3},
            "tasks":[
              {"task_id":"A1","status":"completed_success","reason":"",
               "criteria":[{"criterion":"pass_rate","passed":true,"actual":1.0,"expected":1.0}],
               "attempts":[{"test_results":{"total_tests":4,"passed":3,"coverage_measured":true,"coverage_percentage":85.25}}]},
              {"task_id":"B1","status":"failed","reason":"exit 1",
               "criteria":[{"criterion":"coverage","passed":false,"actual":null}],
               "attempts":[{"test_results":null},{}]}
            ]}"#;
        let report: Report = serde_json::from_str(json).unwrap();
        assert_eq!(
            summary(&report),
            "\nsuite s failed\n\
             task     status             attempts      tests  coverage  criteria\n\
             A1       completed_success         1        3/4     85.2%  pass_rate ok (1.0)\n\
             B1       failed                    2          -         -  coverage MISSED (null)\n\
             \x20        exit 1\n\
             1 of 2 tasks succeeded; 4 tests, 3 passed; 2.2 s\n"
        );
    }
}

//! The table a local run (and `submit --wait`) prints at its end: a line a
//! task (status, attempts, tests, coverage, criteria with their units),
//! under it why the task ended as it did (each failure, each recovery on
//! the agent and on the orchestrator, the escalation and its resolution),
//! and the suite's totals.
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
    #[serde(default)]
    escalations: Vec<Escalation>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Totals {
    completed_success: u64,
    total_tasks: u64,
    total_tests: u64,
    tests_passed: u64,
    tests_failed: u64,
    tests_skipped: u64,
    tests_xfailed: u64,
    tests_xpassed: u64,
    pass_rate: Option<f64>,
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
    /// Level 2: what the orchestrator did after a failed attempt.
    recoveries: Vec<Recovery>,
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
    expected: f64,
    actual: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Attempt {
    number: u32,
    agent_id: String,
    test_results: Option<TestResults>,
    /// Level 1: what the agent tried within the attempt.
    recovery_attempts: Vec<AgentRecovery>,
    failure: Option<Failure>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TestResults {
    total_tests: u64,
    passed: u64,
    coverage_measured: bool,
    coverage_percentage: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AgentRecovery {
    action: String,
    result: String,
    error_type: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Failure {
    failure_details: Option<FailureDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FailureDetails {
    error_type: String,
    error_message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Recovery {
    after_attempt: u32,
    error_type: String,
    action: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Escalation {
    escalation_id: String,
    task_id: String,
    state: String,
    report: EscalationReport,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EscalationReport {
    context: EscalationContext,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EscalationContext {
    reason: String,
}

/// Prints the summary of `report_json` (the final report) on stdout.
pub fn print_summary(report_json: &str) -> anyhow::Result<()> {
    let report: Report = serde_json::from_str(report_json).context("reading back the report")?;
    print!("{}", summary(&report));
    Ok(())
}

/// The longest status, `completed_success`.
const STATUS_WIDTH: usize = 17;
/// How much of one message a line shows.
const MESSAGE_CHARS: usize = 160;

fn summary(report: &Report) -> String {
    let id_width = report
        .tasks
        .iter()
        .map(|t| t.task_id.chars().count())
        .max()
        .unwrap_or(0)
        .max("task".len());
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "suite {} {}", report.suite_name, report.status);
    let _ = writeln!(
        out,
        "{:<id_width$}  {:<STATUS_WIDTH$} {:>8} {:>10} {:>9}  criteria",
        "task", "status", "attempts", "tests", "coverage"
    );
    for t in &report.tasks {
        task_line(&mut out, t, id_width);
        for why in why_lines(t, &report.escalations) {
            let _ = writeln!(out, "  {why}");
        }
    }
    let _ = writeln!(out, "{}", totals(report));
    let flaky = &report.summary.flaky_tests;
    if !flaky.is_empty() {
        let _ = writeln!(
            out,
            "{} flaky (failed one run, passed another): {}",
            flaky.len(),
            flaky.join(", ")
        );
    }
    out
}

fn totals(report: &Report) -> String {
    let s = &report.summary;
    let mut tests = format!("{} tests: {} passed", s.total_tests, s.tests_passed);
    if s.tests_failed > 0 {
        let _ = write!(tests, ", {} failed", s.tests_failed);
    }
    for (n, what) in [
        (s.tests_skipped, "skipped"),
        (s.tests_xfailed, "xfailed"),
        (s.tests_xpassed, "xpassed"),
    ] {
        if n > 0 {
            let _ = write!(tests, ", {n} {what}");
        }
    }
    if let Some(rate) = s.pass_rate {
        let _ = write!(tests, " (pass rate {})", percent(rate));
    }
    format!(
        "{} of {} tasks succeeded; {tests}; {:.1} s",
        s.completed_success,
        s.total_tasks,
        report.duration_seconds.unwrap_or(0.0)
    )
}

fn task_line(out: &mut String, t: &Task, id_width: usize) {
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
    let criteria: Vec<String> = t.criteria.iter().map(criterion).collect();
    let line = format!(
        "{:<id_width$}  {:<STATUS_WIDTH$} {:>8} {:>10} {:>9}  {}",
        t.task_id,
        t.status.as_str(),
        attempts,
        tests,
        cov,
        criteria.join(", ")
    );
    let _ = writeln!(out, "{}", line.trim_end());
}

/// `memory_max ok 41.0 MB (≤ 512 MB)`: the value with its unit, and the
/// bound it was held to.
fn criterion(c: &Criterion) -> String {
    let mark = if c.passed { "ok" } else { "MISSED" };
    let key = c.criterion.as_str();
    let at_most = matches!(
        key,
        "max_execution_time" | "execution_time_max" | "memory_max"
    ) || key.ends_with("_max");
    let bound = if at_most { "≤" } else { "≥" };
    let show = |v: f64| match key {
        "pass_rate" | "min_pass_rate" | "coverage" | "required_coverage" => percent(v),
        "max_execution_time" | "execution_time_max" => format!("{v:.1} s"),
        "memory_max" => format!("{v:.0} MB"),
        _ => format!("{v}"),
    };
    let actual = c
        .actual
        .map(show)
        .unwrap_or_else(|| "nothing reported".into());
    format!("{key} {mark} {actual} ({bound} {})", show(c.expected))
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// Why the task ended as it did, a line a step: each attempt's failure and
/// what the agent did about it in the same attempt (level 1), what the
/// orchestrator did next (level 2), and a person's decision (level 3).
fn why_lines(t: &Task, escalations: &[Escalation]) -> Vec<String> {
    let mut lines = Vec::new();
    for a in &t.attempts {
        let on = format!("attempt {} on {}", a.number, a.agent_id);
        for r in &a.recovery_attempts {
            lines.push(format!(
                "{on}: {} -> {} on the agent: {}",
                r.error_type, r.action, r.result
            ));
        }
        if let Some(d) = a.failure.as_ref().and_then(|f| f.failure_details.as_ref()) {
            lines.push(format!(
                "{on} failed: {}: {}",
                d.error_type,
                one_line(&d.error_message)
            ));
        }
        for r in t.recoveries.iter().filter(|r| r.after_attempt == a.number) {
            lines.push(format!(
                "then {} by the orchestrator (after {})",
                r.action, r.error_type
            ));
        }
    }
    let mut escalated = false;
    for e in escalations.iter().filter(|e| e.task_id == t.task_id) {
        escalated = true;
        let resolution = match e.state.as_str() {
            "open" => "waiting for a person".to_string(),
            state => format!("resolved: {state}"),
        };
        lines.push(format!(
            "escalated ({}): {}; {resolution}",
            e.escalation_id,
            one_line(&e.report.context.reason)
        ));
    }
    if t.status != TaskState::CompletedSuccess && !escalated && !t.reason.is_empty() {
        lines.push(one_line(&t.reason));
    }
    lines
}

/// A message on one line: its lines joined with ` / `, blanks squeezed,
/// cut at `MESSAGE_CHARS`, so the table keeps its shape.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if joined.chars().count() <= MESSAGE_CHARS {
        return joined;
    }
    let cut: String = joined.chars().take(MESSAGE_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_a_line_a_task_and_the_totals_as_the_report_says() {
        let json = r#"{"suite_name":"s","status":"failed","duration_seconds":2.25,
            "summary":{"completed_success":1,"total_tasks":2,"total_tests":4,"tests_passed":3,
                       "tests_failed":1,"tests_skipped":2,"pass_rate":0.75},
            "tasks":[
              {"task_id":"A1","status":"completed_success","reason":"",
               "criteria":[{"criterion":"pass_rate","passed":true,"actual":1.0,"expected":0.95},
                           {"criterion":"memory_max","passed":true,"actual":41.0,"expected":512},
                           {"criterion":"execution_time_max","passed":true,"actual":0.8,"expected":60}],
               "attempts":[{"number":1,"agent_id":"a1","test_results":{"total_tests":4,"passed":3,"coverage_measured":true,"coverage_percentage":85.25}}]},
              {"task_id":"A_VERY_LONG_TASK_ID","status":"failed","reason":"criteria missed",
               "criteria":[{"criterion":"coverage","passed":false,"actual":null,"expected":0.9}],
               "attempts":[{"number":1,"agent_id":"a1","test_results":null}]}
            ]}"#;
        let report: Report = serde_json::from_str(json).unwrap();
        assert_eq!(
            summary(&report),
            "\nsuite s failed\n\
             task                 status            attempts      tests  coverage  criteria\n\
             A1                   completed_success        1        3/4     85.2%  pass_rate ok 100.0% (≥ 95.0%), memory_max ok 41 MB (≤ 512 MB), execution_time_max ok 0.8 s (≤ 60.0 s)\n\
             A_VERY_LONG_TASK_ID  failed                   1          -         -  coverage MISSED nothing reported (≥ 90.0%)\n\
             \x20 criteria missed\n\
             1 of 2 tasks succeeded; 4 tests: 3 passed, 1 failed, 2 skipped (pass rate 75.0%); 2.2 s\n"
        );
    }

    #[test]
    fn says_why_a_task_ended_on_one_line_a_step() {
        let json = r#"{"suite_name":"s","status":"failed",
            "tasks":[
              {"task_id":"IMPORT","status":"completed_success","attempts":[{"number":1,"agent_id":"a1",
                 "recovery_attempts":[{"action":"reinstall_dependencies","result":"succeeded","error_type":"import_error"}]}]},
              {"task_id":"FLAKY","status":"flaky","reason":"passed on retry after attempt 1 failed (logic_error: AssertionError: cache was cold\nassert not True)",
               "recoveries":[{"after_attempt":1,"error_type":"logic_error","action":"automatic_retry"}],
               "attempts":[{"number":1,"agent_id":"a1","failure":{"failure_details":{"error_type":"logic_error","error_message":"AssertionError: cache was cold\nassert not True"}}},
                           {"number":2,"agent_id":"a2"}]},
              {"task_id":"CALC","status":"skipped","reason":"escalation e1 resolved: skip",
               "attempts":[{"number":1,"agent_id":"a1","failure":{"failure_details":{"error_type":"calculation_error","error_message":"assert 1 == 2"}}}]}
            ],
            "escalations":[{"escalation_id":"e1","task_id":"CALC","state":"skip",
               "report":{"context":{"reason":"calculation_error: assert 1 == 2 (failed again on retry)"}}}]}"#;
        let report: Report = serde_json::from_str(json).unwrap();
        let text = summary(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[3..12],
            [
                "IMPORT  completed_success        1          -         -",
                "  attempt 1 on a1: import_error -> reinstall_dependencies on the agent: succeeded",
                "FLAKY   flaky                    2          -         -",
                "  attempt 1 on a1 failed: logic_error: AssertionError: cache was cold / assert not True",
                "  then automatic_retry by the orchestrator (after logic_error)",
                "  passed on retry after attempt 1 failed (logic_error: AssertionError: cache was cold / assert not True)",
                "CALC    skipped                  1          -         -",
                "  attempt 1 on a1 failed: calculation_error: assert 1 == 2",
                "  escalated (e1): calculation_error: assert 1 == 2 (failed again on retry); resolved: skip",
            ]
        );
    }

    #[test]
    fn a_long_message_is_cut() {
        let long = "x".repeat(500);
        let line = one_line(&long);
        assert_eq!(line.chars().count(), MESSAGE_CHARS);
        assert!(line.ends_with('…'));
    }
}

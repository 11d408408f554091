//! report.html, the page beside report.json: the faults suite's run opened
//! in a real headless Chromium that can reach nothing but the file.

use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

#[test]
fn the_html_report_shows_the_faults_suites_failures_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/faults/orchestrator_config.yaml");
    let report_dir = dir.path().join("report");
    let out = std::process::Command::new(orchestrator_bin())
        .arg("run")
        .arg(&config)
        .args([
            "--local-agents",
            "2",
            "--on-escalation",
            "skip",
            "--report-dir",
        ])
        .arg(&report_dir)
        .env("FAULTS_STATE_DIR", dir.path().join("state"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "failed", "{}", show(&out));
    let html_path = report_dir.join("report.html");
    let html = std::fs::read_to_string(&html_path).expect("report.html beside report.json");
    // Self-contained: nothing to fetch, and nothing allowed to be fetched.
    assert!(html.contains("default-src 'none'"), "its CSP forbids loads");
    for reference in ["src=", "<link", "<script", "url("] {
        assert!(!html.contains(reference), "report.html holds {reference:?}");
    }

    let url = format!("file://{}", html_path.display());
    let mut b = Browser::open(&url, 1280, 900).expect("open the report in chromium");
    b.wait_for(
        "the report to load",
        Duration::from_secs(30),
        "document.readyState === 'complete' && !!document.querySelector('#failures')",
    )
    .unwrap();

    // Every failing attempt is shown with its type and message.
    let failures = b
        .eval("[...document.querySelectorAll('#failures article')].map(a => a.innerText)")
        .unwrap();
    let failures: Vec<String> = serde_json::from_value(failures).unwrap();
    let failed_attempts = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["attempts"].as_array().unwrap())
        .filter(|a| a["outcome"] == "failed" || a["outcome"] == "agent_lost")
        .count();
    assert_eq!(failures.len(), failed_attempts, "{failures:#?}");
    for (task, kind, text) in [
        ("CALC", "calculation_error", "assert 2083.33 == 2083.34"),
        ("CALC", "calculation_error", "test_equity_vesting_precision"),
        (
            "LOGIC",
            "logic_error",
            "test_terminated_employee_is_inactive",
        ),
        ("SYSTEM", "system_error", "killed by signal 11"),
        (
            "EXHAUSTION",
            "resource_exhaustion",
            "No space left on device",
        ),
        ("FLAKY", "logic_error", "cache was cold"),
    ] {
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with(&format!("{task} attempt"))
                    && f.contains(kind)
                    && f.contains(text)),
            "no {task} failure showing {kind} and {text:?}: {failures:#?}"
        );
    }
    let flaky = b
        .eval("document.querySelector('#flaky').innerText")
        .unwrap();
    assert!(
        flaky.as_str().unwrap().contains("test_cache_is_warm"),
        "{flaky}"
    );
    // Recoveries at all three levels, and one timeline bar per attempt.
    let levels = b
        .eval("[...document.querySelectorAll('#recoveries .lvl')].map(e => e.innerText)")
        .unwrap();
    for level in ["1 · agent", "2 · orchestrator", "3 · a person"] {
        assert!(
            levels.as_array().unwrap().iter().any(|l| l == level),
            "{levels}"
        );
    }
    let bars = b
        .eval("document.querySelectorAll('#timeline .track .bar').length")
        .unwrap();
    assert_eq!(bars, report["summary"]["attempts"]);
    let rows = b
        .eval("document.querySelectorAll('#tasks tr[id^=task-]').length")
        .unwrap();
    assert_eq!(rows, report["summary"]["total_tasks"]);

    b.screenshot(&ci_artifacts_dir().join("report-html.png"))
        .unwrap();
    let elsewhere: Vec<&String> = b
        .requests
        .iter()
        .filter(|u| !u.starts_with("file://"))
        .collect();
    assert!(elsewhere.is_empty(), "the report asked for {elsewhere:?}");
}

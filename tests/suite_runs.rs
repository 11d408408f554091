//! Whole suites through `orchestrator run`: real agents, real processes.

use std::collections::HashMap;

use serde_json::Value;
use testfleet_testkit::*;

const TASKS: [&str; 12] = [
    "A1", "A2", "A3", "B1", "B1a", "B1b", "B1c", "B2", "B3", "C1", "C2", "C3",
];

fn ms(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// Every task started after each of its dependencies ended.
fn assert_dependency_order(report: &Value) {
    for t in report["tasks"].as_array().unwrap() {
        let Some(first) = t["attempts"].as_array().unwrap().first() else {
            continue;
        };
        let started = ms(&first["assigned_at_ms"]);
        for dep in t["dependencies"].as_array().unwrap() {
            let ended = ms(&task(report, dep.as_str().unwrap())["ended_at_ms"]);
            assert!(
                started >= ended,
                "{} started at {started} before {dep} ended at {ended}",
                t["task_id"]
            );
        }
    }
}

/// At no instant did an agent hold more reservations than it advertised.
fn assert_capacity_respected(report: &Value) {
    let mut by_agent: HashMap<String, Vec<(u64, u64, f64, u64)>> = HashMap::new();
    for t in report["tasks"].as_array().unwrap() {
        for a in t["attempts"].as_array().unwrap() {
            by_agent
                .entry(a["agent_id"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    ms(&a["assigned_at_ms"]),
                    ms(&a["ended_at_ms"]),
                    a["reserved"]["cpu_cores"].as_f64().unwrap(),
                    a["reserved"]["memory_mb"].as_u64().unwrap(),
                ));
        }
    }
    for agent in report["agents"].as_array().unwrap() {
        let id = agent["agent_id"].as_str().unwrap();
        let cap_cpu = agent["capacity"]["cpu_cores"].as_f64().unwrap();
        let cap_mem = agent["capacity"]["memory_mb"].as_u64().unwrap();
        let attempts = by_agent.remove(id).unwrap_or_default();
        for &(start, _, _, _) in &attempts {
            // Intervals are half-open: a slot freed at t can be taken at t.
            let live: Vec<_> = attempts
                .iter()
                .filter(|(s, e, _, _)| *s <= start && start < *e)
                .collect();
            let cpu: f64 = live.iter().map(|a| a.2).sum();
            let mem: u64 = live.iter().map(|a| a.3).sum();
            assert!(
                cpu <= cap_cpu + 1e-9 && mem <= cap_mem,
                "{id} held {cpu} cores / {mem} MB at {start}, capacity {cap_cpu} / {cap_mem}"
            );
        }
    }
}

#[test]
fn the_cashcow_suite_completes_on_three_agents() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/cashcow/orchestrator_config.yaml");
    let (out, report) = run_suite(&config, 3, dir.path(), &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(report["status"], "completed");
    for id in TASKS {
        assert_eq!(
            task(&report, id)["status"],
            "completed_success",
            "{id}: {}",
            task(&report, id)["reason"]
        );
    }
    assert_eq!(report["summary"]["completed_success"], 12);
    assert!(report["summary"]["total_tests"].as_u64().unwrap() >= 120);
    assert_eq!(report["agents"].as_array().unwrap().len(), 3);
    assert_dependency_order(&report);
    assert_capacity_respected(&report);

    // Criteria were judged on measured values, and C2/C3 reported theirs.
    let c2 = &task(&report, "C2")["criteria"][0];
    assert_eq!(c2["criterion"], "speedup_min");
    assert!(c2["actual"].as_f64().unwrap() >= 2.0, "{c2}");
    let a1 = task(&report, "A1");
    let coverage = a1["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == "coverage")
        .unwrap();
    assert!(coverage["actual"].as_f64().unwrap() >= 0.95);

    // The seed's artifacts arrived, and the merged JUnit holds every task.
    for name in [
        "A1_results.json",
        "A1_coverage.json",
        "A1_agent_report.json",
        "junit.xml",
        "coverage.xml",
    ] {
        assert!(
            dir.path().join("artifacts/A1/1").join(name).is_file(),
            "{name}"
        );
    }
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    for id in ["A1", "B1a", "C3"] {
        assert!(
            junit.contains(&format!("testsuite name=\"{id}/pytest\"")),
            "{id} missing from junit.xml"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("12 of 12 tasks succeeded"), "{stdout}");
}

#[test]
fn the_cashcow_suite_completes_in_phased_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/cashcow/orchestrator_config.yaml");
    let (out, report) = run_suite(&config, 3, dir.path(), &["--scheduling", "phased"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(report["scheduling"], "phased");
    assert_eq!(report["summary"]["completed_success"], 12);
    assert_dependency_order(&report);
    // The seed's phase order: B3 waits for B2, C3 for C2.
    let start = |id: &str| ms(&task(&report, id)["started_at_ms"]);
    let end = |id: &str| ms(&task(&report, id)["ended_at_ms"]);
    assert!(start("B3") >= end("B2"));
    assert!(start("C3") >= end("C2"));
}

#[test]
fn dag_makespan_is_no_longer_than_phased() {
    let config = fixture("seed_shape_sleep.yaml");
    let mut makespan = HashMap::new();
    for mode in ["dag", "phased"] {
        let dir = tempfile::tempdir().unwrap();
        let (out, report) = run_suite(&config, 3, dir.path(), &["--scheduling", mode]);
        assert!(out.status.success(), "{mode}: {}", show(&out));
        assert_dependency_order(&report);
        assert_capacity_respected(&report);
        makespan.insert(mode, report["duration_seconds"].as_f64().unwrap());
    }
    // B2 and B3 (2 s each) overlap in dag mode and not in phased mode.
    assert!(makespan["dag"] <= makespan["phased"], "{makespan:?}");
}

#[test]
fn a_task_past_its_timeout_is_killed_with_its_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = run_suite(&fixture("timeout.yaml"), 1, dir.path(), &[]);
    assert!(!out.status.success(), "the suite must fail");
    assert_eq!(report["status"], "failed");
    let hang = task(&report, "HANG");
    let attempts = hang["attempts"].as_array().unwrap();
    // Level 1: the agent extended the timeout once within each attempt.
    // Level 2: the orchestrator gave a second attempt 1.5× the time and 2× the cores.
    // Level 3: still timing out, it went to a person; with no terminal, `run` aborted.
    assert_eq!(attempts.len(), 2, "{hang}");
    for a in attempts {
        let failure = &a["failure"];
        assert_eq!(
            failure["failure_details"]["error_type"], "timeout_error",
            "{a}"
        );
        let l1 = &failure["recovery_attempts"][0];
        assert_eq!(
            (l1["action"].as_str(), l1["result"].as_str()),
            (Some("extend_timeout"), Some("failed")),
            "{a}"
        );
        // It ignored SIGTERM, so the grace period ran out and SIGKILL ended it.
        assert_eq!(a["signal"], 9, "{a}");
    }
    assert_eq!(attempts[1]["reserved"]["cpu_cores"], 2.0);
    assert_eq!(hang["recoveries"][0]["action"], "resource_reallocation");
    let escalation = &report["escalations"][0];
    assert_eq!(escalation["issue_type"], "timeout_error");
    assert_eq!(escalation["state"], "abort");
    assert_eq!(hang["status"], "cancelled");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no terminal to ask on: aborting"));

    for n in [1, 2] {
        let pids = std::fs::read_to_string(dir.path().join(format!("artifacts/HANG/{n}/pids")))
            .expect("the task's pids were uploaded");
        let pids: Vec<i32> = pids.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(
            pids.len(),
            6,
            "the shell and both children, in each of two runs"
        );
        for pid in pids {
            wait_for(
                &format!("process {pid} to be gone"),
                std::time::Duration::from_secs(10),
                || process_gone(pid).then_some(()),
            );
        }
    }
}

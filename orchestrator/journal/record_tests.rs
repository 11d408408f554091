//! Every event survives the trip through a record unchanged.

use std::collections::BTreeMap;

use testfleet_core::results::{ErrorType, FinalStatus, ProgressReport, ResourceUsage};
use testfleet_core::sim::{self, Assigned};
use testfleet_core::{Event, Resolution};

use super::*;

fn trip(e: &Event, own: &OwnConfig) -> Event {
    let bytes = encode(e, 1_234, &PlanSource::OwnConfig);
    let (back, at) = event(read(&bytes).unwrap(), own).unwrap();
    assert_eq!(at, 1_234);
    back
}

#[test]
fn every_event_reads_back_as_it_was_written() {
    let yaml = sim::seed_yaml("dag");
    let path = Path::new("/suite/suite.yaml");
    let own = OwnConfig {
        text: &yaml,
        path,
        local_run: None,
    };
    let a = Assigned {
        agent: "a1".into(),
        task: "unit_tests".into(),
        attempt: "s.unit_tests.1".into(),
    };
    let mut completion = sim::completion(&a, FinalStatus::Success, 10, 9);
    completion.metrics.insert("x".into(), 1.5);
    let events = vec![
        Event::AgentConnected {
            agent_id: "a1".into(),
            conn: 7,
            host: "h".into(),
            labels: BTreeMap::from([("zone".to_string(), "b".to_string())]),
            capacity: sim::cap(4, 8192),
            running: vec!["s.x.1".into()],
        },
        Event::AgentDisconnected {
            agent_id: "a1".into(),
            conn: 7,
        },
        Event::Heartbeat {
            agent_id: "a1".into(),
            conn: 7,
            usage: Some(ResourceUsage {
                memory_usage_mb: 3,
                cpu_utilization: 0.5,
                disk_usage_mb: 1,
            }),
        },
        Event::Progress(ProgressReport {
            agent_id: "a1".into(),
            attempt_id: "s.x.1".into(),
            timestamp: Some(99),
            ..Default::default()
        }),
        Event::Completed(completion),
        Event::Failed(sim::failure(&a, ErrorType::NetworkError)),
        Event::CancelAcked {
            agent_id: "a1".into(),
            attempt_id: "s.x.1".into(),
        },
        Event::Tick,
        Event::CancelSuite {
            reason: "operator".into(),
        },
        Event::DrainAgent {
            agent_id: "a1".into(),
        },
        Event::ResolveEscalation {
            escalation_id: "esc-1".into(),
            resolution: Resolution::Skip,
        },
    ];
    for e in &events {
        assert_eq!(shown(&trip(e, &own)), shown(e));
    }
}

/// Debug text, with a completion's metrics (a hashed map) in order.
fn shown(e: &Event) -> String {
    match e {
        Event::Completed(c) => {
            let metrics: BTreeMap<_, _> = c.metrics.iter().collect();
            let mut c = c.clone();
            c.metrics.clear();
            format!("{c:?} {metrics:?}")
        }
        e => format!("{e:?}"),
    }
}

#[test]
fn a_submit_is_planned_again_from_its_config() {
    let yaml = sim::seed_yaml("phased");
    let path = Path::new("/suite/suite.yaml");
    let own = OwnConfig {
        text: &yaml,
        path,
        local_run: None,
    };
    let plan = sim::plan(&yaml);
    let submit = Event::SubmitSuite {
        suite_id: "s".into(),
        suite_name: "n".into(),
        plan: plan.clone(),
        timeout_ms: Some(60_000),
    };
    let Event::SubmitSuite {
        suite_id,
        plan: replanned,
        timeout_ms,
        ..
    } = trip(&submit, &own)
    else {
        panic!("a submit");
    };
    assert_eq!((suite_id.as_str(), timeout_ms), ("s", Some(60_000)));
    let ids =
        |p: &testfleet::config::SuitePlan| p.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&replanned), ids(&plan));
    assert_eq!(replanned.mode, plan.mode);
}

#[test]
fn a_submit_keeps_the_test_history_it_was_planned_from() {
    let yaml = sim::seed_yaml("dag");
    let path = Path::new("/suite/suite.yaml");
    let own = OwnConfig {
        text: &yaml,
        path,
        local_run: None,
    };
    let mut plan = (*sim::plan(&yaml)).clone();
    plan.test_history.insert(
        "unit".into(),
        [("t.py::a".to_string(), 120), ("t.py::b".to_string(), 3)].into(),
    );
    let submit = Event::SubmitSuite {
        suite_id: "s".into(),
        suite_name: "n".into(),
        plan: std::sync::Arc::new(plan.clone()),
        timeout_ms: None,
    };
    let Event::SubmitSuite {
        plan: replanned, ..
    } = trip(&submit, &own)
    else {
        panic!("a submit");
    };
    // Replay plans from the history the suite had, whatever the history
    // file says by then.
    assert_eq!(replanned.test_history, plan.test_history);
}

#[test]
fn a_torn_or_damaged_record_is_told_apart() {
    let bytes = encode(&Event::Tick, 5, &PlanSource::OwnConfig);
    assert!(matches!(read(&bytes[..2]), Err(Unreadable::Short(2))));
    assert!(matches!(
        read(&bytes[..bytes.len() - 1]),
        Err(Unreadable::Checksum)
    ));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert!(matches!(read(&flipped), Err(Unreadable::Checksum)));
}

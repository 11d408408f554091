//! Snapshots at a suite boundary: what carries over survives a trip
//! through its serialized form, and a scheduler rebuilt from one handles
//! the next submit exactly as the live one does.

use crate::sim::*;
use crate::{same_carried, Event, Scheduler, Snapshot, SuiteState};

/// A pool suite run to its end: pool records of most kinds, baselines,
/// agents the pool started and stopped, a refused result.
fn finished_pool_suite() -> Sim {
    let yaml = "agent_pool: {min_agents: 0, max_agents: 3, provisioner: {type: local}}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: SMALL, template: t, resources: {cpu_cores: 1, memory_mb: 100}}\n      - {id: BIG, template: t, dependencies: [SMALL], resources: {cpu_cores: 4, memory_mb: 4096}}\n";
    let mut sim = Sim::new();
    sim.join("small", cap(2, 2048));
    sim.submit_as("s1", plan(yaml));
    sim.drain_successfully();
    let out = sim.advance(250);
    let asked = assigned(&out);
    assert!(asked.is_empty());
    let id = sim
        .s
        .pool()
        .history()
        .iter()
        .find(|r| r.decision == "provision")
        .map(|r| r.agent_id.clone())
        .expect("the pool asked for an agent for BIG");
    sim.step(Event::AgentProvisioned {
        agent_id: id.clone(),
    });
    sim.join(&id, cap(4, 4096));
    sim.drain_successfully();
    // A result nobody asked for: refused, and counted.
    let stray = Assigned {
        agent: "small".into(),
        task: "SMALL".into(),
        attempt: "nope".into(),
    };
    sim.succeed(&stray);
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    sim
}

#[test]
fn a_snapshot_survives_its_serialized_form() {
    let sim = finished_pool_suite();
    assert!(sim.s.rejected_results() > 0);
    assert!(
        sim.s.pool().history().len() >= 3,
        "{:?}",
        sim.s.pool().history()
    );
    let text = serde_json::to_vec(&sim.s.snapshot()).unwrap();
    let back: Snapshot = serde_json::from_slice(&text).unwrap();
    let rebuilt = Scheduler::from_snapshot(back);
    same_carried(&sim.s, &rebuilt).unwrap();
    assert!(rebuilt.suite().is_none(), "the suite is not carried over");
}

#[test]
fn a_rebuilt_scheduler_handles_the_next_submit_as_the_live_one() {
    let mut live = finished_pool_suite();
    let mut rebuilt = Sim::new();
    rebuilt.s = Scheduler::from_snapshot(live.s.snapshot());
    rebuilt.now = live.now;
    // One plan for both (its index is hashed: two plans of one text may
    // show it in two orders).
    let next = plan(&seed_yaml("dag"));
    for sim in [&mut live, &mut rebuilt] {
        sim.submit_as("s2", next.clone());
        sim.join("worker", cap(8, 16_384));
        sim.advance(5_000);
    }
    crate::sim::same_state(&live.s, &rebuilt.s).unwrap();
}

#[test]
fn a_difference_in_what_carries_over_is_named() {
    let sim = finished_pool_suite();
    let mut other = Scheduler::from_snapshot(sim.s.snapshot());
    other.fleet.rejected_results += 1;
    let err = same_carried(&sim.s, &other).unwrap_err();
    assert!(err.starts_with("rejected_results differs"), "{err}");
}

#[test]
fn an_unknown_pool_decision_fails_decoding() {
    let sim = finished_pool_suite();
    let text = serde_json::to_string(&sim.s.snapshot()).unwrap();
    let bad = text.replacen("\"decision\":\"provision\"", "\"decision\":\"teleport\"", 1);
    assert_ne!(bad, text);
    let err = serde_json::from_str::<Snapshot>(&bad).unwrap_err();
    assert!(err.to_string().contains("unknown pool decision"), "{err}");
}

//! The seed's alert rules, raised on the scheduler's clock and acted on.

use crate::results::{ErrorType, ExecutionSummary, FinalStatus, ResourceUsage};

use crate::sim::*;
use crate::{Action, Event};

fn alerts_raised(sim: &Sim) -> Vec<String> {
    sim.log
        .iter()
        .filter_map(|a| match a {
            Action::Alert(e) if e.active => Some(e.name.to_string()),
            _ => None,
        })
        .collect()
}

fn suite(tasks: usize, extra: &str) -> std::sync::Arc<testfleet_config::SuitePlan> {
    let mut y = format!("failure_handling: {{retry_delay_seconds: 0}}\nmonitoring: {{metrics_interval: 1}}\n{extra}templates:\n  t: {{command: x}}\norchestrator:\n  task_definitions:\n    u:\n");
    for i in 0..tasks {
        y += &format!("      - {{id: T{i}, template: t}}\n");
    }
    plan(&y)
}

#[test]
fn a_high_failure_rate_pauses_new_tasks() {
    let mut sim = Sim::new();
    sim.submit(suite(
        3,
        "alerts: {high_failure_rate: {min_attempts: 2, pause_seconds: 30}}\n",
    ));
    sim.join("a", cap(1, 1024));
    for _ in 0..2 {
        let r = sim.running()[0].clone();
        sim.fail(&r, ErrorType::SystemError);
    }
    sim.advance(1_000);
    sim.heartbeat("a");
    assert_eq!(alerts_raised(&sim), ["high_failure_rate"]);
    let r = sim.running()[0].clone();
    sim.succeed(&r);
    assert!(sim.running().is_empty(), "no new task while paused");
    for _ in 0..4 {
        sim.advance(8_000);
        sim.heartbeat("a");
    }
    assert_eq!(sim.running().len(), 1, "resumes after pause_seconds");
}

#[test]
fn memory_exhaustion_runs_fewer_tasks_at_once() {
    let mut sim = Sim::new();
    sim.submit(suite(5, ""));
    sim.join("a", cap(3, 4096));
    assert_eq!(sim.running().len(), 3);
    let usage = |mb| Event::Heartbeat {
        agent_id: "a".into(),
        conn: 1,
        usage: Some(ResourceUsage {
            memory_usage_mb: mb,
            ..Default::default()
        }),
    };
    sim.step(usage(3900));
    sim.advance(1_000);
    assert_eq!(alerts_raised(&sim), ["memory_exhaustion"]);
    let r = sim.running()[0].clone();
    sim.succeed(&r);
    assert_eq!(
        sim.running().len(),
        2,
        "the cap is one below what ran when it fired"
    );
    sim.step(usage(100));
    sim.advance(1_000);
    assert_eq!(sim.running().len(), 3, "cleared: back to full use");
    assert!(sim
        .log
        .iter()
        .any(|a| matches!(a, Action::Alert(e) if e.name == "memory_exhaustion" && !e.active)));
}

#[test]
fn an_unresponsive_agent_has_its_tasks_reassigned() {
    let mut sim = Sim::new();
    sim.submit(suite(1, ""));
    sim.join("a", cap(1, 1024));
    sim.join("b", cap(1, 1024));
    let first = sim.running()[0].clone();
    let other = if first.agent == "a" { "b" } else { "a" };
    for _ in 0..13 {
        sim.advance(10_000);
        sim.heartbeat(other);
    }
    assert!(alerts_raised(&sim).contains(&"agent_unresponsive".to_string()));
    assert_eq!(
        sim.running()[0].agent,
        other,
        "moved before agent_timeout (300 s)"
    );
}

#[test]
fn slower_than_twice_the_baseline_is_a_warning() {
    let mut sim = Sim::new();
    sim.join("a", cap(1, 1024));
    let finish = |sim: &mut Sim, seconds: f64| {
        let r = sim.running()[0].clone();
        let mut c = completion(&r, FinalStatus::Success, 1, 1);
        c.execution_summary = Some(ExecutionSummary {
            duration_seconds: seconds,
            ..Default::default()
        });
        sim.step(Event::Completed(c));
    };
    // A first suite sets the baseline: 1 s per task.
    sim.submit(suite(2, ""));
    finish(&mut sim, 1.0);
    finish(&mut sim, 1.0);
    // In the next, a task takes 5 s.
    sim.submit(suite(2, ""));
    finish(&mut sim, 5.0);
    sim.advance(1_000);
    sim.heartbeat("a");
    assert!(alerts_raised(&sim).contains(&"performance_degradation".to_string()));
    assert_eq!(sim.s.alert_history()[0].action, "investigate_bottlenecks");
}

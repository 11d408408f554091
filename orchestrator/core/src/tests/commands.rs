//! Commands are answered after the scheduler decided: carried out, or
//! refused with the reason, and a refusal changes nothing.

use crate::results::ErrorType;
use crate::sim::*;
use crate::{Action, Event, Lifecycle, Refusal, Reply, Resolution, SuiteState, TaskState};

fn reply(out: &[Action]) -> Reply {
    out.iter()
        .find_map(|a| match a {
            Action::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a command is answered")
}

fn one_task_plan() -> std::sync::Arc<testfleet_config::SuitePlan> {
    plan("failure_handling: {retry_delay_seconds: 0}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: T, template: t}\n      - {id: U, template: t, dependencies: [T]}\n")
}

fn submit_as(sim: &mut Sim, suite_id: &str) -> Reply {
    reply(&sim.step(Event::SubmitSuite {
        suite_id: suite_id.into(),
        suite_name: "suite".into(),
        plan: one_task_plan(),
        timeout_ms: None,
    }))
}

#[test]
fn a_second_submit_while_a_suite_runs_is_refused_and_changes_nothing() {
    let mut sim = Sim::new();
    assert_eq!(
        submit_as(&mut sim, "first"),
        Reply::Submitted {
            suite_id: "first".into()
        }
    );
    sim.join("a", cap(1, 1024));
    let before = sim.running();
    let out = sim.step(Event::SubmitSuite {
        suite_id: "second".into(),
        suite_name: "suite".into(),
        plan: one_task_plan(),
        timeout_ms: None,
    });
    assert_eq!(
        reply(&out),
        Reply::Refused(Refusal::SuiteRunning {
            suite_id: "first".into()
        })
    );
    assert_eq!(out.len(), 1, "a refusal does nothing else: {out:?}");
    assert_eq!(sim.s.suite().unwrap().suite_id, "first");
    assert_eq!(sim.running(), before);
}

#[test]
fn a_submit_after_a_suite_ended_starts_the_next() {
    let mut sim = Sim::new();
    submit_as(&mut sim, "first");
    sim.join("a", cap(1, 1024));
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    assert_eq!(
        submit_as(&mut sim, "second"),
        Reply::Submitted {
            suite_id: "second".into()
        }
    );
}

#[test]
fn cancel_is_answered_once_and_refused_when_nothing_runs() {
    let mut sim = Sim::new();
    let idle = sim.step(Event::CancelSuite { reason: "x".into() });
    assert_eq!(reply(&idle), Reply::Refused(Refusal::NoSuiteRunning));
    submit_as(&mut sim, "s");
    let first = sim.step(Event::CancelSuite { reason: "x".into() });
    assert_eq!(reply(&first), Reply::Cancelling);
    assert_eq!(sim.suite_state(), SuiteState::Cancelled);
    let second = sim.step(Event::CancelSuite { reason: "x".into() });
    assert_eq!(reply(&second), Reply::Refused(Refusal::NoSuiteRunning));
}

fn escalated() -> (Sim, String) {
    let mut sim = Sim::new();
    submit_as(&mut sim, "s");
    sim.join("a", cap(1, 1024));
    for _ in 0..2 {
        let a = sim.running()[0].clone();
        sim.fail(&a, ErrorType::CalculationError);
    }
    assert_eq!(sim.state("T"), TaskState::Escalated);
    let id = sim.s.suite().unwrap().escalations[0].escalation_id.clone();
    (sim, id)
}

#[test]
fn an_escalation_is_resolved_once_and_a_second_resolve_is_refused() {
    let (mut sim, id) = escalated();
    let resolve = |sim: &mut Sim, id: &str| {
        reply(&sim.step(Event::ResolveEscalation {
            escalation_id: id.into(),
            resolution: Resolution::Retry,
        }))
    };
    assert_eq!(resolve(&mut sim, &id), Reply::Resolved);
    assert_eq!(sim.state("T"), TaskState::Running);
    let attempts = sim.s.suite().unwrap().tasks[0].attempts.len();
    assert_eq!(
        resolve(&mut sim, &id),
        Reply::Refused(Refusal::EscalationClosed {
            escalation_id: id.clone()
        })
    );
    assert_eq!(
        sim.s.suite().unwrap().tasks[0].attempts.len(),
        attempts,
        "the refused retry started nothing"
    );
    assert_eq!(
        resolve(&mut sim, "esc-nope"),
        Reply::Refused(Refusal::NoSuchEscalation {
            escalation_id: "esc-nope".into()
        })
    );
}

#[test]
fn an_escalation_of_an_ended_suite_cannot_be_resolved() {
    let (mut sim, id) = escalated();
    sim.step(Event::CancelSuite { reason: "x".into() });
    let out = sim.step(Event::ResolveEscalation {
        escalation_id: id.clone(),
        resolution: Resolution::Skip,
    });
    assert_eq!(
        reply(&out),
        Reply::Refused(Refusal::EscalationClosed { escalation_id: id })
    );
}

#[test]
fn the_suite_goes_from_idle_to_running_to_finished_and_the_next_replaces_it() {
    let mut sim = Sim::new();
    assert!(matches!(sim.s.lifecycle(), Lifecycle::Idle));
    submit_as(&mut sim, "first");
    assert!(matches!(sim.s.lifecycle(), Lifecycle::Running(_)));
    sim.join("a", cap(1, 1024));
    sim.drain_successfully();
    assert!(matches!(
        sim.s.lifecycle(),
        Lifecycle::Finished(s) if s.state == SuiteState::Completed && s.suite_id == "first"
    ));
    submit_as(&mut sim, "second");
    assert!(matches!(
        sim.s.lifecycle(),
        Lifecycle::Running(s) if s.suite_id == "second"
    ));
}

#[test]
fn a_drained_agent_finishes_what_it_runs_and_takes_no_new_work() {
    let mut sim = Sim::new();
    let drain = |sim: &mut Sim, agent: &str| {
        reply(&sim.step(Event::DrainAgent {
            agent_id: agent.into(),
        }))
    };
    assert_eq!(
        drain(&mut sim, "a"),
        Reply::Refused(Refusal::NoSuchAgent {
            agent_id: "a".into()
        })
    );
    submit_as(&mut sim, "s");
    sim.join("a", cap(1, 1024));
    let t = sim.running()[0].clone();
    assert_eq!(drain(&mut sim, "a"), Reply::Draining { running: 1 });
    sim.succeed(&t);
    assert_eq!(
        sim.state("T"),
        TaskState::CompletedSuccess,
        "its work finished"
    );
    assert_eq!(
        sim.state("U"),
        TaskState::Ready,
        "U waits: a takes no new work"
    );
    assert!(sim.running().is_empty());
    sim.join("b", cap(1, 1024));
    assert_eq!(sim.running()[0].agent, "b", "U goes to the next agent");
    sim.disconnect("a");
    assert_eq!(
        drain(&mut sim, "a"),
        Reply::Refused(Refusal::AgentLost {
            agent_id: "a".into()
        })
    );
}

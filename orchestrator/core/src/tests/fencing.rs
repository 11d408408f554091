use crate::sim::*;
use crate::{Action, AttemptOutcome, Event, Rejection, SuiteState, TaskState};

#[test]
fn a_closed_stream_requeues_at_once_elsewhere() {
    let (sim, first, second) = superseded();
    assert_ne!(second.agent, first.agent);
    assert_ne!(second.attempt, first.attempt);
    let suite = sim.s.suite().unwrap();
    assert_eq!(
        suite.tasks[0].attempts[0].outcome,
        AttemptOutcome::AgentLost
    );
}

#[test]
fn a_late_result_of_a_superseded_attempt_is_stale_and_changes_nothing() {
    let (mut sim, first, second) = superseded();
    sim.succeed(&first);
    assert_eq!(
        sim.state("T"),
        TaskState::Running,
        "the old attempt's success is not the task's"
    );
    assert_eq!(sim.s.suite().unwrap().tasks[0].attempts[0].stale_results, 1);
    sim.succeed(&second);
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn duplicate_results_are_idempotent() {
    let mut sim = one_task();
    let a = sim.running()[0].clone();
    sim.succeed(&a);
    let out = sim.succeed(&a);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn results_that_do_not_fit_are_refused_and_change_nothing() {
    let mut sim = one_task();
    sim.join("b", cap(0, 0));
    let live = sim.running()[0].clone();
    let refused = |out: &[Action]| -> Vec<Rejection> {
        out.iter()
            .filter_map(|a| match a {
                Action::Reject { rejection, .. } => Some(*rejection),
                _ => None,
            })
            .collect()
    };
    let mut other_agent = live.clone();
    other_agent.agent = "b".into();
    assert_eq!(
        refused(&sim.succeed(&other_agent)),
        [Rejection::NotTheAgentsAttempt]
    );
    let mut unknown = live.clone();
    unknown.attempt = "nonsense".into();
    assert_eq!(refused(&sim.succeed(&unknown)), [Rejection::UnknownAttempt]);
    let mut wrong_task = live.clone();
    wrong_task.task = "NOPE".into();
    assert_eq!(
        refused(&sim.succeed(&wrong_task)),
        [Rejection::TaskMismatch]
    );
    assert_eq!(sim.state("T"), TaskState::Running);
    assert_eq!(sim.running(), std::slice::from_ref(&live));
    assert_eq!(sim.s.rejected_results(), 3);
    sim.succeed(&live);
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn a_silent_agent_is_lost_after_agent_timeout() {
    let mut sim = one_task();
    sim.join("b", cap(1, 1024));
    let first = sim.running()[0].clone();
    let other = if first.agent == "a" { "b" } else { "a" };
    sim.advance(6_000);
    sim.heartbeat(other);
    let out = sim.advance(6_000);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::DropAgent { agent_id, .. } if *agent_id == first.agent)));
    assert_eq!(sim.running()[0].agent, other);
}

#[test]
fn a_reconnecting_agent_keeps_its_live_attempt_and_stops_superseded_ones() {
    let mut sim = one_task();
    let first = sim.running()[0].clone();
    // Reconnects before the old stream's close was seen: the attempt is live.
    let out = sim.join_with("a", cap(1, 1024), vec![first.attempt.clone()]);
    assert!(!out.iter().any(|a| matches!(a, Action::Cancel { .. })));
    assert_eq!(sim.running()[0].attempt, first.attempt);
    // The old stream's close arrives late and is ignored.
    sim.step(Event::AgentDisconnected {
        agent_id: "a".into(),
        conn: 1,
    });
    assert_eq!(sim.running()[0].attempt, first.attempt);
    // Now it really goes away, its attempt is requeued, and it comes back
    // still running the old one: that one must stop.
    sim.disconnect("a");
    let out = sim.join_with("a", cap(1, 1024), vec![first.attempt.clone()]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Cancel { cancel, .. } if cancel.attempt_id == first.attempt)));
    assert_ne!(sim.running()[0].attempt, first.attempt);
}

#[test]
fn cancelling_the_suite_stops_every_attempt_and_ends_every_task() {
    let mut sim = Sim::new();
    sim.submit(plan(&seed_yaml("dag")));
    sim.join("a", cap(8, 16384));
    let running = sim.running();
    let out = sim.step(Event::CancelSuite {
        reason: "operator".into(),
    });
    let cancelled: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { cancel, .. } => Some(cancel.attempt_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled.len(), running.len());
    assert_eq!(sim.suite_state(), SuiteState::Cancelled);
    assert!(sim
        .s
        .suite()
        .unwrap()
        .tasks
        .iter()
        .all(|t| t.state.is_terminal()));
    assert!(sim.s.agents().all(|a| a.reserved == Default::default()));
}

#[test]
fn the_suite_deadline_ends_it_as_failed() {
    let mut sim = Sim::new();
    sim.step(Event::SubmitSuite {
        suite_id: "s".into(),
        suite_name: "x".into(),
        plan: plan(&seed_yaml("dag")),
        timeout_ms: Some(5_000),
    });
    sim.join("a", cap(8, 16384));
    sim.advance(6_000);
    assert_eq!(sim.suite_state(), SuiteState::Failed);
}

#[test]
fn infrastructure_failures_wait_retry_delay_then_go_elsewhere() {
    let mut sim = one_task();
    sim.join("b", cap(1, 1024));
    let a = sim.running()[0].clone();
    sim.fail(&a, crate::results::ErrorType::SystemError);
    assert_eq!(
        sim.state("T"),
        TaskState::Ready,
        "retried after retry_delay"
    );
    for _ in 0..4 {
        sim.advance(8_000);
        sim.heartbeat("a");
        sim.heartbeat("b");
    }
    let b = sim.running()[0].clone();
    assert_ne!(a.attempt, b.attempt);
    assert_ne!(
        a.agent, b.agent,
        "moved away from the agent with the system error"
    );
}

#[test]
fn an_agent_that_heartbeats_but_never_confirms_a_cancel_is_evicted() {
    let mut sim = Sim::new();
    sim.submit(plan(
        "recovery: {cancel_ack_timeout: 5}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: T, template: t}\n",
    ));
    sim.join("a", cap(1, 1024));
    let first = sim.running()[0].clone();
    // It drops away and comes back still running the attempt that was
    // requeued meanwhile; it is told to stop it.
    sim.disconnect("a");
    sim.join("b", cap(1, 1024));
    sim.join_with("a", cap(1, 1024), vec![first.attempt.clone()]);
    assert!(sim.s.fleet.pending_cancels.contains_key(&first.attempt));
    for _ in 0..3 {
        sim.advance(2_000);
        sim.heartbeat("a");
        sim.heartbeat("b");
    }
    let dropped = sim.log.iter().any(|a| matches!(a, Action::DropAgent { agent_id, reason, .. } if agent_id == "a" && reason.contains("cancel")));
    assert!(dropped, "a wedged agent is evicted");
    assert!(!sim.s.agents().any(|a| a.id == "a" && a.connected));
}

#[test]
fn a_confirmed_cancel_is_settled() {
    let mut sim = one_task();
    let first = sim.running()[0].clone();
    sim.disconnect("a");
    sim.join_with("a", cap(1, 1024), vec![first.attempt.clone()]);
    sim.step(Event::CancelAcked {
        agent_id: "a".into(),
        attempt_id: first.attempt.clone(),
    });
    assert!(sim.s.fleet.pending_cancels.is_empty());
    assert!(sim.s.suite().unwrap().tasks[0].attempts[0].cancel_acknowledged);
    sim.advance(60_000);
    assert!(!sim
        .log
        .iter()
        .any(|a| matches!(a, Action::DropAgent { reason, .. } if reason.contains("cancel"))));
}

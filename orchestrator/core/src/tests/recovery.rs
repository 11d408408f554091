//! Levels 2 and 3 driven through the scheduler: what each failure type
//! leads to, flaky passes, escalations and their resolutions.

use crate::results::{ErrorType, FinalStatus};

use crate::sim::*;
use crate::{Action, Assignment, Event, Resolution, SuiteState, TaskState};

fn chain() -> Sim {
    // A -> B -> C, B2 also waits on A; retry_delay 0 keeps retries immediate.
    let mut sim = Sim::new();
    sim.submit(plan(
        "failure_handling: {retry_delay_seconds: 0}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t, resources: {memory_mb: 512, cpu_cores: 1, timeout: 100}}\n      - {id: B, template: t, dependencies: [A]}\n      - {id: C, template: t, dependencies: [B]}\n",
    ));
    sim.join("a1", cap(4, 8192));
    sim.join("a2", cap(4, 8192));
    sim
}

/// A test failure, then the same on the automatic retry: escalated.
fn fail_twice(sim: &mut Sim, error: ErrorType) {
    for _ in 0..2 {
        let a = sim.running()[0].clone();
        sim.fail(&a, error);
    }
}

/// The last assignment made.
fn last_assignment(sim: &Sim) -> Assignment {
    sim.log
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Assign { assignment, .. } => Some((**assignment).clone()),
            _ => None,
        })
        .expect("an assignment")
}

/// Each escalation's id and its report as JSON (as the webhook receives it).
fn escalations(sim: &Sim) -> Vec<(String, serde_json::Value)> {
    sim.log
        .iter()
        .filter_map(|a| match a {
            Action::Escalate { report, .. } => Some((
                report.escalation_id.clone(),
                serde_json::to_value(report).expect("the report is JSON"),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_test_failure_that_passes_on_retry_is_flaky_not_a_silent_pass() {
    let mut sim = chain();
    let first = sim.running()[0].clone();
    sim.fail(&first, ErrorType::LogicError);
    assert_eq!(
        sim.state("A"),
        TaskState::Running,
        "one automatic retry, at once (retry_delay 0)"
    );
    let second = sim.running()[0].clone();
    sim.succeed(&second);
    assert_eq!(sim.state("A"), TaskState::Flaky);
    let suite = sim.s.suite().unwrap();
    let run = &suite.tasks[0];
    assert_eq!(run.attempts.len(), 2, "the failing attempt is kept");
    assert!(
        run.reason.contains("attempt 1 failed (logic_error"),
        "{}",
        run.reason
    );
    assert_eq!(
        sim.state("B"),
        TaskState::Running,
        "a flaky pass lets dependents go on"
    );
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn a_repeated_calculation_error_escalates_and_pauses_dependents() {
    let mut sim = chain();
    fail_twice(&mut sim, ErrorType::CalculationError);
    assert_eq!(sim.state("A"), TaskState::Escalated);
    assert_eq!(sim.state("B"), TaskState::Paused);
    assert_eq!(sim.state("C"), TaskState::Paused);
    let esc = escalations(&sim);
    assert_eq!(esc.len(), 1);
    let report = &esc[0].1;
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
    assert_eq!(report["issue_type"], "calculation_error");
    assert_eq!(report["blocking_tasks"], serde_json::json!(["B", "C"]));
    assert_eq!(report["escalation_id"], esc[0].0.as_str());
    assert_eq!(sim.suite_state(), SuiteState::Running, "waits for a person");

    sim.step(Event::ResolveEscalation {
        escalation_id: esc[0].0.clone(),
        resolution: Resolution::Retry,
    });
    assert_eq!(sim.state("A"), TaskState::Running);
    assert_eq!(sim.state("B"), TaskState::Waiting, "resumed");
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
}

#[test]
fn skipping_an_escalation_lets_dependents_run_but_the_suite_fails() {
    let mut sim = chain();
    fail_twice(&mut sim, ErrorType::LogicError);
    let id = escalations(&sim)[0].0.clone();
    sim.step(Event::ResolveEscalation {
        escalation_id: id.clone(),
        resolution: Resolution::Skip,
    });
    assert_eq!(sim.state("A"), TaskState::Skipped);
    assert_eq!(sim.state("B"), TaskState::Running);
    // A second resolution of the same escalation changes nothing.
    let out = sim.step(Event::ResolveEscalation {
        escalation_id: id,
        resolution: Resolution::Retry,
    });
    assert!(!out.iter().any(|a| matches!(a, Action::Assign { .. })));
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Failed);
}

#[test]
fn aborting_an_escalation_ends_the_suite() {
    let mut sim = chain();
    fail_twice(&mut sim, ErrorType::LogicError);
    let id = escalations(&sim)[0].0.clone();
    sim.step(Event::ResolveEscalation {
        escalation_id: id,
        resolution: Resolution::Abort,
    });
    assert_eq!(sim.suite_state(), SuiteState::Failed);
    assert!(sim
        .s
        .suite()
        .unwrap()
        .tasks
        .iter()
        .all(|t| t.state.is_terminal()));
}

#[test]
fn a_memory_error_doubles_the_memory_of_the_next_attempt() {
    let mut sim = chain();
    let a = sim.running()[0].clone();
    sim.fail(&a, ErrorType::MemoryError);
    let next = last_assignment(&sim);
    assert_eq!(next.resources.memory_mb, 1024);
}

#[test]
fn a_timeout_gets_one_and_a_half_times_the_time_and_twice_the_cores() {
    let mut sim = chain();
    let a = sim.running()[0].clone();
    sim.fail(&a, ErrorType::TimeoutError);
    let d = last_assignment(&sim);
    assert_eq!(d.timeout_ms.div_ceil(1000), 150);
    assert_eq!(d.resources.cpu_cores(), 2.0);
}

#[test]
fn an_import_error_resets_the_environment_once_then_escalates() {
    let mut sim = chain();
    let a = sim.running()[0].clone();
    sim.fail(&a, ErrorType::ImportError);
    assert!(last_assignment(&sim).reset_environment);
    let b = sim.running()[0].clone();
    sim.fail(&b, ErrorType::ImportError);
    assert_eq!(sim.state("A"), TaskState::Escalated);
}

#[test]
fn resource_exhaustion_moves_to_bigger_reservations() {
    let mut sim = chain();
    let a = sim.running()[0].clone();
    sim.fail(&a, ErrorType::ResourceExhaustion);
    let d = last_assignment(&sim);
    assert_eq!(
        (
            d.resources.memory_mb,
            d.resources.cpu_cores(),
            d.timeout_ms.div_ceil(1000)
        ),
        (1024, 2.0, 150)
    );
    let recoveries = &sim.s.suite().unwrap().tasks[0].recoveries;
    assert_eq!(recoveries[0].action, "reallocate_resources");
}

#[test]
fn failures_past_the_threshold_escalate_whatever_their_type() {
    let mut sim = chain();
    for e in [
        ErrorType::NetworkError,
        ErrorType::NetworkError,
        ErrorType::NetworkError,
    ] {
        let a = sim.running()[0].clone();
        sim.fail(&a, e);
        sim.advance(100_000);
        sim.heartbeat("a1");
        sim.heartbeat("a2");
    }
    assert_eq!(sim.state("A"), TaskState::Escalated);
}

#[test]
fn a_completion_reporting_failure_fails_the_task() {
    let mut sim = chain();
    let a = sim.running()[0].clone();
    sim.step(Event::Completed(completion(&a, FinalStatus::Failure, 1, 0)));
    assert_eq!(sim.state("A"), TaskState::Failed);
    assert_eq!(sim.state("C"), TaskState::Skipped);
}

#[test]
fn a_pass_after_a_person_chose_retry_is_not_flaky() {
    let mut sim = chain();
    fail_twice(&mut sim, ErrorType::CalculationError);
    let id = escalations(&sim)[0].0.clone();
    sim.step(Event::ResolveEscalation {
        escalation_id: id,
        resolution: Resolution::Retry,
    });
    let a = sim.running()[0].clone();
    sim.succeed(&a);
    assert_eq!(sim.state("A"), TaskState::CompletedSuccess);
}

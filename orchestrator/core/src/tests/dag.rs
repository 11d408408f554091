use crate::sim::*;
use crate::{SuiteState, TaskState};

fn seed_sim(mode: &str) -> Sim {
    let mut sim = Sim::new();
    sim.submit(plan(&seed_yaml(mode)));
    for a in ["a1", "a2", "a3"] {
        sim.join(a, cap(4, 8192));
    }
    sim
}

#[test]
fn roots_start_first_and_nothing_else() {
    let sim = seed_sim("dag");
    assert_eq!(sim.running_ids(), ["A1", "A2", "A3"]);
    assert_eq!(sim.state("B1"), TaskState::Waiting);
    assert_eq!(sim.state("B1a"), TaskState::Waiting);
}

#[test]
fn subtasks_start_when_the_groups_dependencies_succeed() {
    let mut sim = seed_sim("dag");
    for a in sim.running() {
        sim.succeed(&a);
    }
    assert_eq!(
        sim.state("B1"),
        TaskState::Running,
        "a group runs while its subtasks do"
    );
    // integration_tests allows 2 at once: two subtasks run, the third is ready.
    assert_eq!(sim.running_ids(), ["B1a", "B1b"]);
    assert_eq!(sim.state("B1c"), TaskState::Ready);
    assert_eq!(sim.state("B2"), TaskState::Waiting);
}

#[test]
fn the_whole_seed_suite_completes() {
    let mut sim = seed_sim("dag");
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    let suite = sim.s.suite().unwrap();
    assert!(suite
        .tasks
        .iter()
        .all(|t| t.state == TaskState::CompletedSuccess));
    assert_eq!(
        suite.tasks.iter().map(|t| t.attempts.len()).sum::<usize>(),
        11,
        "groups never run"
    );
}

#[test]
fn a_failed_task_skips_everything_downstream_but_not_its_siblings() {
    let mut sim = seed_sim("dag");
    let r = sim.running();
    // A1 needs a 0.95 pass rate: 9 of 10 misses it, and a criterion is final.
    sim.step(crate::Event::Completed(completion(
        &r[0],
        crate::results::FinalStatus::Success,
        10,
        9,
    )));
    assert_eq!(sim.state("A1"), TaskState::Failed);
    for t in ["B1", "B1a", "B1b", "B1c", "B2", "B3", "C1", "C2", "C3"] {
        assert_eq!(sim.state(t), TaskState::Skipped, "{t}");
    }
    assert_eq!(
        sim.suite_state(),
        SuiteState::Running,
        "A2 and A3 still run"
    );
    sim.succeed(&r[1]);
    sim.succeed(&r[2]);
    assert_eq!(sim.suite_state(), SuiteState::Failed);
}

#[test]
fn a_failed_subtask_fails_its_group() {
    let mut sim = seed_sim("dag");
    for a in sim.running() {
        sim.succeed(&a);
    }
    let b1a = sim.running()[0].clone();
    sim.step(crate::Event::Completed(completion(
        &b1a,
        crate::results::FinalStatus::Failure,
        10,
        10,
    )));
    assert_eq!(sim.state("B1a"), TaskState::Failed);
    assert_eq!(sim.state("B1"), TaskState::Failed);
    assert_eq!(
        sim.state("B1c"),
        TaskState::Skipped,
        "not started: ends with its group"
    );
    assert_eq!(
        sim.state("B1b"),
        TaskState::Running,
        "started: finishes on its own"
    );
    assert_eq!(sim.state("B2"), TaskState::Skipped);
}

#[test]
fn criteria_decide_success() {
    let mut sim = seed_sim("dag");
    let a2 = sim.running()[1].clone();
    // A2 needs pass_rate 1.0; 9 of 10 passing misses it.
    sim.step(crate::Event::Completed(completion(
        &a2,
        crate::results::FinalStatus::Success,
        10,
        9,
    )));
    assert_eq!(sim.state("A2"), TaskState::Failed);
    let suite = sim.s.suite().unwrap();
    let run = &suite.tasks[suite.plan.index["A2"]];
    assert!(
        run.reason.contains("pass_rate expected 1 got 0.9"),
        "{}",
        run.reason
    );
    let c = run
        .criteria
        .iter()
        .find(|c| c.criterion == "pass_rate")
        .unwrap();
    assert!(!c.passed);
    assert_eq!(c.actual, Some(0.9));
}

#[test]
fn skipped_tests_do_not_count_against_the_pass_rate() {
    let mut sim = seed_sim("dag");
    let a2 = sim.running()[1].clone();
    // A2 needs pass_rate 1.0. Every test that ran passed; 372 were skipped
    // (an agent may count them in its own rate: 5,803 of 6,175 is 0.94).
    let mut c = completion(&a2, crate::results::FinalStatus::Success, 6175, 5803);
    if let Some(tr) = c.test_results.as_mut() {
        tr.failed = 0;
        tr.skipped = 372;
    }
    sim.step(crate::Event::Completed(c));
    let suite = sim.s.suite().unwrap();
    let run = &suite.tasks[suite.plan.index["A2"]];
    assert_eq!(
        sim.state("A2"),
        TaskState::CompletedSuccess,
        "{}",
        run.reason
    );
    let c = run
        .criteria
        .iter()
        .find(|c| c.criterion == "pass_rate")
        .unwrap();
    assert_eq!(c.actual, Some(1.0));
}

#[test]
fn higher_priority_goes_first_when_slots_are_short() {
    let yaml = "templates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: L, template: t, priority: low}\n      - {id: H, template: t, priority: critical}\n";
    let mut sim = Sim::new();
    sim.submit(plan(yaml));
    sim.join("a", cap(1, 512));
    assert_eq!(sim.running_ids(), ["H"]);
}

#[test]
fn completion_tells_what_can_proceed() {
    let mut sim = seed_sim("dag");
    let r = sim.running();
    let out = sim.succeed(&r[0]);
    let c = out
        .iter()
        .find_map(|a| match a {
            crate::Action::Publish(notice) => match &**notice {
                crate::Notice::Completion(c) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    assert!(
        c.next_actions
            .contains(&"Task B1 can proceed when A2 and A3 complete".to_string()),
        "{:?}",
        c.next_actions
    );
}

#[test]
fn assignments_carry_a_w3c_traceparent() {
    let tp = crate::dispatch::traceparent("01a20b79-38e8-72db-a105-0355e0a00c57", "x.A1.1");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "01a20b7938e872dba1050355e0a00c57");
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");
    let other = crate::dispatch::traceparent("s", "x.A1.2");
    assert_eq!(
        other.split('-').nth(1).unwrap().len(),
        32,
        "non-uuid suite ids still give a valid trace id"
    );
}

#[test]
fn the_longest_remaining_path_goes_first() {
    // Two slots; five short independent tasks listed before a chain of three.
    let mut yaml =
        "templates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n".to_string();
    for i in 1..=5 {
        yaml += &format!("      - {{id: X{i}, template: t, resources: {{timeout: 20}}}}\n");
    }
    yaml += "      - {id: A, template: t, resources: {timeout: 20}}\n      - {id: B, template: t, dependencies: [A], resources: {timeout: 20}}\n      - {id: C, template: t, dependencies: [B], resources: {timeout: 20}}\n";
    let mut sim = Sim::new();
    sim.submit(plan(&yaml));
    sim.join("a", cap(2, 8192));
    assert!(
        sim.running_ids().contains(&"A".to_string()),
        "the chain's head starts first: {:?}",
        sim.running_ids()
    );
    // Every task takes 10 s: the chain sets the pace, and 8 tasks on 2 slots
    // finish in 4 rounds (file order would need 5).
    let start = sim.now;
    while sim.suite_state() == SuiteState::Running {
        sim.now += 10_000;
        for a in sim.running() {
            sim.succeed(&a);
        }
    }
    assert_eq!(sim.now - start, 40_000);
}

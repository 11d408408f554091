use crate::sim::*;
use crate::{SuiteState, TaskState};

/// Runs the seed suite where every attempt takes 100 ms; returns the sim and
/// the makespan.
fn run_to_end(mode: &str) -> (Sim, u64) {
    let mut sim = Sim::new();
    sim.submit(plan(&seed_yaml(mode)));
    for a in ["a1", "a2", "a3"] {
        sim.join(a, cap(4, 8192));
    }
    let start = sim.now;
    while sim.suite_state() == SuiteState::Running {
        sim.now += 100;
        for a in sim.running() {
            sim.succeed(&a);
        }
    }
    let makespan = sim.now - start;
    (sim, makespan)
}

#[test]
fn phased_runs_the_integration_phase_one_task_at_a_time() {
    let mut sim = Sim::new();
    sim.submit(plan(&seed_yaml("phased")));
    sim.join("a", cap(8, 16384));
    for a in sim.running() {
        sim.succeed(&a);
    }
    // Subtasks of B1 in parallel (max_parallel 2 of integration_tests).
    assert_eq!(sim.running_ids(), ["B1a", "B1b"]);
    sim.drain_until(&["B1a", "B1b", "B1c"]);
    // B2 and B3 both depend only on B1, but the phase is sequential.
    assert_eq!(sim.running_ids(), ["B2"]);
    assert_eq!(sim.state("B3"), TaskState::Waiting);
}

#[test]
fn dag_runs_independent_tasks_together() {
    let mut sim = Sim::new();
    sim.submit(plan(&seed_yaml("dag")));
    sim.join("a", cap(8, 16384));
    for a in sim.running() {
        sim.succeed(&a);
    }
    sim.drain_until(&["B1a", "B1b", "B1c"]);
    assert_eq!(sim.running_ids(), ["B2", "B3"]);
}

#[test]
fn phased_performance_phase_is_sequential() {
    let (sim, _) = run_to_end("phased");
    let suite = sim.s.suite().unwrap();
    let end = |id: &str| suite.tasks[suite.plan.index[id]].ended_at.unwrap();
    let start = |id: &str| suite.tasks[suite.plan.index[id]].started_at.unwrap();
    assert!(
        start("C3") >= end("C2"),
        "C3 after C2 in the sequential phase"
    );
    assert!(start("B1a") >= end("A1").max(end("A2")).max(end("A3")));
}

#[test]
fn dag_makespan_is_no_longer_than_phased() {
    let (dag, dag_ms) = run_to_end("dag");
    let (phased, phased_ms) = run_to_end("phased");
    assert_eq!(dag.suite_state(), SuiteState::Completed);
    assert_eq!(phased.suite_state(), SuiteState::Completed);
    assert!(dag_ms < phased_ms, "dag {dag_ms} ms, phased {phased_ms} ms");
}

impl Sim {
    /// Completes the named running tasks (and whatever they release, if named).
    fn drain_until(&mut self, ids: &[&str]) {
        while let Some(a) = self
            .running()
            .into_iter()
            .find(|a| ids.contains(&a.task.as_str()))
        {
            self.now += 100;
            self.succeed(&a);
        }
    }
}

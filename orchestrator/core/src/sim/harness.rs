use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::results::{
    Completion, ErrorType, ExecutionSummary, Failure, FailureDetails, FinalStatus, ResourceUsage,
    TestResults,
};
use testfleet_config::{ResourceSpec, SuiteConfig, SuitePlan};

use crate::{Action, Event, Scheduler, Snapshot, SuiteRun, SuiteState, TaskState};

pub const SEED: &str = include_str!("../../../../tests/fixtures/seed_orchestrator_config.yaml");

/// The seed's config with a template, so it can run.
pub fn seed_yaml(mode: &str) -> String {
    format!("scheduling: {mode}\ntemplates:\n  template_a: {{command: \"true\"}}\n  template_b: {{command: \"true\"}}\n  template_c: {{command: \"true\"}}\n{SEED}")
}

pub fn plan(yaml: &str) -> Arc<SuitePlan> {
    let cfg = SuiteConfig::parse(yaml, Path::new("t.yaml")).expect("test config is valid");
    Arc::new(cfg.plan(Path::new("/suite")))
}

pub fn cap(cpu: u64, memory_mb: u64) -> ResourceSpec {
    ResourceSpec {
        memory_mb,
        cpu_millis: cpu * 1000,
        disk_mb: 1 << 20,
    }
}

/// A scheduler, a clock, and everything it has said, with the invariants
/// checked after every event.
pub struct Sim {
    pub s: Scheduler,
    pub now: u64,
    pub log: Vec<Action>,
    /// Every event handled, with its time and how long `log` was before it:
    /// what a crash replays (`crash_restart`).
    pub events: Vec<(Event, u64, usize)>,
    /// The snapshots the event log would hold: each taken at a suite
    /// boundary, just before the submit at that index of `events`.
    pub snapshots: Vec<(usize, Snapshot)>,
    /// How many times it crashed and restarted (`crash_restart`).
    pub restarts: u32,
    conns: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    pub agent: String,
    pub task: String,
    pub attempt: String,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            s: Scheduler::new("orch"),
            now: 1_000,
            log: Vec::new(),
            events: Vec::new(),
            snapshots: Vec::new(),
            restarts: 0,
            conns: BTreeMap::new(),
        }
    }

    pub fn step(&mut self, e: Event) -> Vec<Action> {
        let command = e.is_command();
        if matches!(e, Event::SubmitSuite { .. }) && !self.s.is_running() {
            // As the engine does: the state that carries over, checked
            // against the live scheduler before it stands for the log.
            let snapshot = self.s.snapshot();
            let rebuilt = Scheduler::from_snapshot(snapshot.clone());
            if let Err(d) = crate::same_carried(&self.s, &rebuilt) {
                panic!("a snapshot at t={} lost state: {d}", self.now);
            }
            self.snapshots.push((self.events.len(), snapshot));
        }
        self.events.push((e.clone(), self.now, self.log.len()));
        let (tick, revision) = (matches!(e, Event::Tick), self.s.revision());
        let out = self.s.handle(e, self.now);
        if tick && self.s.revision() == revision {
            // As the engine: a tick that changed nothing is not logged.
            self.events.pop();
        }
        if let Err(broken) = self.s.check_invariants() {
            panic!("invariant broken at t={}: {broken}", self.now);
        }
        // A command is answered once, and nothing else is answered.
        let replies = out.iter().filter(|a| matches!(a, Action::Reply(_))).count();
        assert_eq!(replies, usize::from(command), "replies at t={}", self.now);
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn submit(&mut self, plan: Arc<SuitePlan>) -> Vec<Action> {
        self.submit_as("s", plan)
    }

    /// A submit with its own suite id (several suites in a row).
    pub fn submit_as(&mut self, suite_id: &str, plan: Arc<SuitePlan>) -> Vec<Action> {
        self.step(Event::SubmitSuite {
            suite_id: suite_id.into(),
            suite_name: "suite".into(),
            plan,
            timeout_ms: None,
        })
    }

    pub fn join(&mut self, agent: &str, capacity: ResourceSpec) -> Vec<Action> {
        self.join_with(agent, capacity, vec![])
    }

    pub fn join_with(
        &mut self,
        agent: &str,
        capacity: ResourceSpec,
        running: Vec<String>,
    ) -> Vec<Action> {
        let conn = self.conns.entry(agent.to_string()).or_default();
        *conn += 1;
        let conn = *conn;
        self.step(Event::AgentConnected {
            agent_id: agent.into(),
            conn,
            host: "h".into(),
            labels: BTreeMap::new(),
            capacity,
            running,
        })
    }

    pub fn disconnect(&mut self, agent: &str) -> Vec<Action> {
        let conn = self.conns[agent];
        self.step(Event::AgentDisconnected {
            agent_id: agent.into(),
            conn,
        })
    }

    pub fn heartbeat(&mut self, agent: &str) -> Vec<Action> {
        let conn = self.conns[agent];
        self.step(Event::Heartbeat {
            agent_id: agent.into(),
            conn,
            usage: None,
        })
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now += ms;
        self.step(Event::Tick)
    }

    pub fn succeed(&mut self, a: &Assigned) -> Vec<Action> {
        let c = completion(a, FinalStatus::Success, 10, 10);
        self.step(Event::Completed(c))
    }

    pub fn fail(&mut self, a: &Assigned, error: ErrorType) -> Vec<Action> {
        self.step(Event::Failed(failure(a, error)))
    }

    /// The suite submitted last; a test that asks before submitting one is
    /// wrong, and says so.
    fn suite(&self) -> &SuiteRun {
        let Some(suite) = self.s.suite() else {
            panic!("t={}: no suite has been submitted", self.now);
        };
        suite
    }

    pub fn state(&self, task: &str) -> TaskState {
        let suite = self.suite();
        suite.tasks[suite.plan.index[task]].state
    }

    pub fn suite_state(&self) -> SuiteState {
        self.suite().state
    }

    /// Every attempt currently live, as the agents see them.
    pub fn running(&self) -> Vec<Assigned> {
        let suite = self.suite();
        let mut v: Vec<Assigned> = suite
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(t, run)| {
                run.live_attempt().map(|a| Assigned {
                    agent: a.agent_id.clone(),
                    task: suite.plan.tasks[t].id.clone(),
                    attempt: a.attempt_id.clone(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.task.cmp(&b.task));
        v
    }

    pub fn running_ids(&self) -> Vec<String> {
        self.running().into_iter().map(|a| a.task).collect()
    }

    /// Completes whatever runs, in task order, until nothing does.
    pub fn drain_successfully(&mut self) {
        for _ in 0..1000 {
            let r = self.running();
            if r.is_empty() {
                return;
            }
            self.now += 100;
            self.succeed(&r[0]);
        }
        panic!("did not drain");
    }
}

pub fn assigned(actions: &[Action]) -> Vec<Assigned> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign {
                agent_id,
                assignment,
            } => Some(Assigned {
                agent: agent_id.clone(),
                task: assignment.task_id.clone(),
                attempt: assignment.attempt_id.clone(),
            }),
            _ => None,
        })
        .collect()
}

pub fn completion(a: &Assigned, status: FinalStatus, total: u64, passed: u64) -> Completion {
    Completion {
        agent_id: a.agent.clone(),
        task_id: a.task.clone(),
        attempt_id: a.attempt.clone(),
        final_status: status,
        test_results: Some(TestResults {
            total_tests: total,
            passed,
            failed: total - passed,
            pass_rate: if total == 0 {
                0.0
            } else {
                passed as f64 / total as f64
            },
            coverage_percentage: 99.0,
            coverage_measured: true,
            ..Default::default()
        }),
        metrics: [
            ("speedup".to_string(), 3.0),
            ("memory_efficiency".to_string(), 0.9),
        ]
        .into(),
        peak_resources: Some(ResourceUsage {
            memory_usage_mb: 100,
            ..Default::default()
        }),
        execution_summary: Some(ExecutionSummary {
            duration_seconds: 1.0,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn failure(a: &Assigned, error: ErrorType) -> Failure {
    Failure {
        agent_id: a.agent.clone(),
        task_id: a.task.clone(),
        attempt_id: a.attempt.clone(),
        failure_details: Some(FailureDetails {
            error_type: error,
            error_message: "boom".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One task on one agent, `a`.
pub fn one_task() -> Sim {
    let mut sim = Sim::new();
    sim.submit(plan("agent_pool: {agent_timeout: 10}\ntemplates:\n  t: {command: x}\norchestrator:\n  task_definitions:\n    u:\n      - {id: T, template: t}\n"));
    sim.join("a", cap(1, 1024));
    sim
}

/// One task whose first attempt was lost with agent `a`; the second runs on
/// `b`. Returns the first attempt and the second.
pub fn superseded() -> (Sim, Assigned, Assigned) {
    let mut sim = one_task();
    sim.join("b", cap(1, 1024));
    let first = sim.running()[0].clone();
    sim.disconnect(&first.agent);
    let second = sim.running()[0].clone();
    (sim, first, second)
}

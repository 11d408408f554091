//! Deterministic simulation: seeded random schedules of agents joining,
//! dying, going silent and reconnecting, and of results delayed, duplicated,
//! reordered and misaddressed, with DESIGN.md's invariants checked after
//! every step (`Sim::step`). An observer sees the scheduler after every
//! step: the orchestrator's tests use one to check its reports.

use std::collections::BTreeMap;

use crate::results::{ErrorType, FinalStatus, ProgressReport};
use crate::{Action, Event, Notice, Resolution, SuiteState};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::harness::*;

const ERRORS: [ErrorType; 9] = [
    ErrorType::ImportError,
    ErrorType::PermissionError,
    ErrorType::MemoryError,
    ErrorType::TimeoutError,
    ErrorType::NetworkError,
    ErrorType::CalculationError,
    ErrorType::LogicError,
    ErrorType::SystemError,
    ErrorType::ResourceExhaustion,
];

struct World<'o> {
    sim: Sim,
    rng: SmallRng,
    /// Every assignment ever made, for stale and duplicate deliveries.
    issued: Vec<Assigned>,
    /// Results in flight, delivered later and possibly twice.
    in_flight: Vec<Event>,
    agents: Vec<String>,
    silent: BTreeMap<String, bool>,
    trace: Vec<String>,
    observe: &'o mut dyn FnMut(&Sim),
}

impl World<'_> {
    fn step(&mut self, e: Event) {
        self.trace.push(
            format!("t={} {e:?}", self.sim.now)
                .chars()
                .take(240)
                .collect(),
        );
        let out = self.sim.step(e);
        self.issued.extend(assigned(&out));
        (self.observe)(&self.sim);
    }

    fn random_agent(&mut self) -> String {
        let i = self.rng.random_range(0..self.agents.len());
        self.agents[i].clone()
    }

    fn result_for(&mut self, a: &Assigned) -> Event {
        if self.rng.random_bool(0.7) {
            let passed = if self.rng.random_bool(0.9) { 10 } else { 9 };
            Event::Completed(completion(a, FinalStatus::Success, 10, passed))
        } else {
            let e = ERRORS[self.rng.random_range(0..ERRORS.len())];
            Event::Failed(failure(a, e))
        }
    }

    fn random_event(&mut self) {
        match self.rng.random_range(0..100) {
            0..=9 => {
                let id = self.random_agent();
                let running = self
                    .issued
                    .iter()
                    .filter(|a| a.agent == id && self.rng.random_bool(0.5))
                    .map(|a| a.attempt.clone())
                    .collect();
                self.silent.insert(id.clone(), false);
                let c = cap(
                    self.rng.random_range(1..=8),
                    self.rng.random_range(1..=16) * 1024,
                );
                self.trace.push(format!("join {id} {c:?}"));
                let out = self.sim.join_with(&id, c, running);
                self.issued.extend(assigned(&out));
            }
            10..=14 => {
                let id = self.random_agent();
                if self.sim.s.agents().any(|a| a.id == id) {
                    self.trace.push(format!("disconnect {id}"));
                    let out = self.sim.disconnect(&id);
                    self.issued.extend(assigned(&out));
                }
            }
            15..=19 => {
                let id = self.random_agent();
                self.silent.insert(id, true);
            }
            20..=44 => {
                // A running attempt reports, now or later.
                let running = self.sim.running();
                if !running.is_empty() {
                    let a = running[self.rng.random_range(0..running.len())].clone();
                    let e = self.result_for(&a);
                    if self.rng.random_bool(0.3) {
                        self.in_flight.push(e);
                    } else {
                        if self.rng.random_bool(0.1) {
                            self.in_flight.push(e.clone());
                        }
                        self.step(e);
                    }
                }
            }
            45..=54 => {
                // Something delayed arrives, perhaps out of order.
                if !self.in_flight.is_empty() {
                    let i = self.rng.random_range(0..self.in_flight.len());
                    let e = self.in_flight.swap_remove(i);
                    self.step(e);
                }
            }
            55..=62 => {
                // An old or misaddressed attempt reports.
                if !self.issued.is_empty() {
                    let mut a = self.issued[self.rng.random_range(0..self.issued.len())].clone();
                    if self.rng.random_bool(0.3) {
                        a.agent = self.random_agent();
                    }
                    if self.rng.random_bool(0.1) {
                        a.attempt.push('x');
                    }
                    let e = self.result_for(&a);
                    self.step(e);
                }
            }
            63..=72 => {
                let running = self.sim.running();
                if let Some(a) = running.first() {
                    let e = Event::Progress(ProgressReport {
                        agent_id: a.agent.clone(),
                        task_id: a.task.clone(),
                        attempt_id: a.attempt.clone(),
                        ..Default::default()
                    });
                    self.step(e);
                }
            }
            73 => self.step(Event::CancelSuite {
                reason: "operator".into(),
            }),
            74..=77 => self.resolve_one(),
            78..=81 => self.confirm_a_cancel(),
            _ => {
                self.sim.now += self.rng.random_range(100..4_000);
                let awake: Vec<String> = self
                    .agents
                    .iter()
                    .filter(|a| !self.silent.get(*a).copied().unwrap_or(false))
                    .cloned()
                    .collect();
                for id in awake {
                    if self.sim.s.agents().any(|a| a.id == id && a.connected) {
                        self.sim.heartbeat(&id);
                    }
                }
                self.step(Event::Tick);
            }
        }
    }

    /// The orchestrator dies and comes back: the scheduler is rebuilt from
    /// its events (the newest perhaps not yet durable, and lost), and must
    /// come back as it was. Then most agents reconnect, announcing some of
    /// what they were given.
    fn crash(&mut self) {
        let lost = if self.rng.random_bool(0.5) {
            0
        } else {
            self.rng.random_range(1..=3)
        };
        self.trace
            .push(format!("crash and restart ({lost} events not yet durable)"));
        if let Err(broken) = self.sim.crash_restart(lost) {
            panic!("{broken}");
        }
        (self.observe)(&self.sim);
        for id in self.agents.clone() {
            if !self.rng.random_bool(0.7) {
                continue;
            }
            let Some(c) = self.sim.s.agents().find(|a| a.id == id).map(|a| a.capacity) else {
                continue;
            };
            let running = self
                .issued
                .iter()
                .filter(|a| a.agent == id && self.rng.random_bool(0.5))
                .map(|a| a.attempt.clone())
                .collect();
            self.trace.push(format!("rejoin {id}"));
            let out = self.sim.join_with(&id, c, running);
            self.issued.extend(assigned(&out));
            (self.observe)(&self.sim);
        }
    }

    /// An awake agent confirms one of the cancels it was sent.
    fn confirm_a_cancel(&mut self) {
        let pending: Vec<(String, String)> = self
            .sim
            .s
            .fleet
            .pending_cancels
            .iter()
            .filter(|(_, (agent, _))| !self.silent.get(agent).copied().unwrap_or(false))
            .map(|(attempt, (agent, _))| (attempt.clone(), agent.clone()))
            .collect();
        if let Some((attempt_id, agent_id)) = pending.first().cloned() {
            self.step(Event::CancelAcked {
                agent_id,
                attempt_id,
            });
        }
    }

    /// A person answers an open escalation (or a stale one, twice).
    fn resolve_one(&mut self) {
        let open: Vec<String> = self
            .sim
            .s
            .suite()
            .map(|s| {
                s.escalations
                    .iter()
                    .map(|e| e.escalation_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        if open.is_empty() {
            return;
        }
        let id = open[self.rng.random_range(0..open.len())].clone();
        let resolution = match self.rng.random_range(0..10) {
            0..=5 => Resolution::Retry,
            6..=8 => Resolution::Skip,
            _ => Resolution::Abort,
        };
        self.step(Event::ResolveEscalation {
            escalation_id: id,
            resolution,
        });
    }

    /// After the storm: a healthy agent joins and everything finishes.
    fn settle(&mut self) {
        self.trace.push("settle".into());
        let out = self.sim.join("healer", cap(64, 1 << 20));
        self.issued.extend(assigned(&out));
        for _ in 0..10_000 {
            if self.sim.suite_state() != SuiteState::Running {
                return;
            }
            self.sim.now += 40_000;
            let out = self.sim.join("healer", cap(64, 1 << 20));
            self.issued.extend(assigned(&out));
            self.sim.heartbeat("healer");
            self.step(Event::Tick);
            let open: Vec<String> = self
                .sim
                .s
                .suite()
                .map(|s| {
                    s.escalations
                        .iter()
                        .filter(|e| e.resolution.is_none())
                        .map(|e| e.escalation_id.clone())
                        .collect()
                })
                .unwrap_or_default();
            for id in open {
                self.step(Event::ResolveEscalation {
                    escalation_id: id,
                    resolution: Resolution::Retry,
                });
            }
            for a in self.sim.running() {
                let e = Event::Completed(completion(&a, FinalStatus::Success, 10, 10));
                self.step(e);
            }
        }
        let suite = self.sim.s.suite().unwrap();
        let states: Vec<String> = suite
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "{}={}({})",
                    suite.plan.tasks[i].id,
                    t.state.as_str(),
                    t.reason
                )
            })
            .collect();
        panic!("the suite never ended: {}", states.join(", "));
    }
}

/// Each task reaches exactly one terminal state, announced exactly once; the
/// suite finishes once, and its report is written before that is announced.
/// (`since`: where in the log the suite's submit is, for it is one of
/// several in a row.)
fn check_terminal_once(sim: &Sim, since: usize) -> Result<(), String> {
    let suite = sim.s.suite().unwrap();
    let log = &sim.log[since..];
    let mut ends: BTreeMap<String, u32> = BTreeMap::new();
    for a in log {
        let Action::Publish(body) = a else { continue };
        if let Notice::TaskState(s) = &**body {
            if s.status.is_terminal() {
                *ends.entry(s.task_id.clone()).or_default() += 1;
            }
        }
    }
    for t in &suite.plan.tasks {
        if ends.get(&t.id).copied() != Some(1) {
            return Err(format!(
                "{} announced {} terminal states",
                t.id,
                ends.get(&t.id).copied().unwrap_or(0)
            ));
        }
    }
    let finished = log
        .iter()
        .filter(|a| matches!(a, Action::SuiteFinished { .. }))
        .count();
    if finished != 1 {
        return Err(format!("suite finished {finished} times"));
    }
    // The report is written (SuiteFinished) before the finish is announced.
    let written = log
        .iter()
        .position(|a| matches!(a, Action::SuiteFinished { .. }));
    let announced = log.iter().position(
        |a| matches!(a, Action::Publish(b) if matches!(**b, Notice::SuiteFinished { .. })),
    );
    match (written, announced) {
        (Some(w), Some(a)) if w < a => Ok(()),
        _ => Err(format!(
            "the report written at action {written:?}, suite_finished announced at {announced:?}"
        )),
    }
}

/// Runs the schedule of `seed`, calling `observe` after every step. On a
/// broken invariant (or a panic in `observe`) returns what broke and the
/// trace of the steps that led there.
pub fn run_schedule(seed: u64, observe: &mut dyn FnMut(&Sim)) -> Result<(), (String, Vec<String>)> {
    let mut w = World {
        sim: Sim::new(),
        rng: SmallRng::seed_from_u64(seed),
        issued: Vec::new(),
        in_flight: Vec::new(),
        agents: (0..4).map(|i| format!("agent_{i}")).collect(),
        silent: BTreeMap::new(),
        trace: Vec::new(),
        observe,
    };
    let mode = if seed % 2 == 0 { "dag" } else { "phased" };
    let yaml = seed_yaml(mode)
        .replace("retry_delay_seconds: 30", "retry_delay_seconds: 1")
        .replace("agent_timeout: 300", "agent_timeout: 10");
    let plan = plan(&yaml);
    let steps = w.rng.random_range(20..200);
    // One suite, or several in a row on the same scheduler (what carries
    // over between them is what the event log's snapshots hold, and a
    // crash rebuilds from the newest one) in a third of the schedules: the
    // same steps in all, so the schedules take about as long as before
    // (each suite's settling costs a little more).
    let suites = if seed % 3 == 2 {
        w.rng.random_range(2..=3)
    } else {
        1
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for n in 0..suites {
            let since = w.sim.log.len();
            w.trace.push(format!("submit suite s{n}"));
            w.sim.submit_as(&format!("s{n}"), plan.clone());
            for _ in 0..steps / suites {
                if w.rng.random_bool(0.015) {
                    w.crash();
                }
                w.random_event();
            }
            w.settle();
            check_terminal_once(&w.sim, since)?;
        }
        Ok(())
    }));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err((msg, w.trace)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err((msg.unwrap_or_default(), w.trace))
        }
    }
}

//! The real scheduler (testfleet-core, driven by its `sim` harness) in
//! virtual time, each task taking exactly its duration: the makespan the
//! scheduler's policy reaches with no control plane at all. The gap between
//! this and the bound is the policy's (or the bound's); the gap between a
//! measured run and this is the control plane's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use testfleet::config::{SuiteConfig, SuitePlan};
use testfleet_core::results::{Completion, ExecutionSummary, FinalStatus};
use testfleet_core::sim::{assigned, cap, Assigned, Sim};
use testfleet_core::{Event, SuiteState};

use crate::simulated_fleet::{AGENT_CORES, AGENT_MEMORY_MB};
use crate::suites::Suite;

/// The makespan (ms) of `suite` on `agents` agents the size of the
/// simulated ones, the second time it runs.
///
/// The scheduler ranks ready tasks by their remaining path in the durations
/// it has seen each task take in an earlier suite, and by half the task's
/// timeout before it has seen one. The first run teaches it every duration;
/// the second ranks by exact durations, as the measured `with_history` runs
/// do, and is the one reported.
pub fn makespan(suite: &Suite, agents: usize) -> anyhow::Result<f64> {
    let config = SuiteConfig::parse(&suite.yaml, Path::new("suite.yaml"))
        .context("the benchmark's suite")?;
    let plan = Arc::new(config.plan(Path::new("/suite")));
    let mut sim = Sim::new();
    for i in 0..agents {
        sim.join(&format!("sim_{i:05}"), cap(AGENT_CORES, AGENT_MEMORY_MB));
    }
    run_to_end(&mut sim, plan.clone(), &suite.durations_ms).context("the first run")?;
    let ms = run_to_end(&mut sim, plan, &suite.durations_ms).context("the second run")?;
    Ok(ms as f64)
}

/// Submits the suite and completes each assignment at the time it was made
/// plus its task's duration (none given: at once, as a simulated agent
/// does), in time order and, at one time, in the order assigned, until the
/// suite ends. Its makespan, ms.
fn run_to_end(
    sim: &mut Sim,
    plan: Arc<SuitePlan>,
    durations_ms: &HashMap<String, u64>,
) -> anyhow::Result<u64> {
    // (ends at, order assigned) -> the attempt and how long it took.
    let mut due: BTreeMap<(u64, u64), (Assigned, u64)> = BTreeMap::new();
    let mut order = 0;
    let mut out = sim.submit(plan);
    loop {
        for a in assigned(&out) {
            let ms = durations_ms.get(&a.task).copied().unwrap_or(0);
            due.insert((sim.now + ms, order), (a, ms));
            order += 1;
        }
        let Some(((at, _), (a, ms))) = due.pop_first() else {
            break;
        };
        sim.now = at;
        out = sim.step(Event::Completed(success(&a, ms)));
    }
    let suite = sim.s.suite().context("no suite was submitted")?;
    anyhow::ensure!(
        suite.state() == SuiteState::Completed,
        "the suite ended {} with nothing left running",
        suite.state().as_str()
    );
    let finished = suite
        .finished_at()
        .context("a completed suite has an end")?;
    Ok(finished - suite.started_at())
}

/// What a simulated agent sends when a task has passed after `ms`.
fn success(a: &Assigned, ms: u64) -> Completion {
    Completion {
        agent_id: a.agent.clone(),
        task_id: a.task.clone(),
        attempt_id: a.attempt.clone(),
        final_status: FinalStatus::Success,
        execution_summary: Some(ExecutionSummary {
            duration_seconds: ms as f64 / 1000.0,
            ..Default::default()
        }),
        ..Default::default()
    }
}

//! Warming runners while a split task collects.
//!
//! One agent collects a split task's tests; for pytest that process stays
//! on as its agent's resident runner. Every other agent would start its own
//! runner (and pay the same collection) only when its first batch comes,
//! after the collection ended: on a suite whose collection takes seconds
//! that is seconds of an agent's time lost at the start. So while the task
//! collects, each idle agent is told to warm a runner for it: start the
//! same invocation, collect, and wait idle for a batch. It is a hint: it
//! reserves nothing, changes no state here, and an agent that cannot warm
//! one (or a runner that never becomes ready) costs nothing but that batch's
//! own start.

use crate::action::{Action, Assignment};
use crate::dispatch::traceparent;
use crate::fleet::Fleet;
use crate::state::AgentState;
use crate::SuiteRun;

impl SuiteRun {
    /// Warm hints for the split tasks collecting now (or only task `task`,
    /// just assigned): to `agent` (just connected), or to every idle agent;
    /// never to the collector.
    pub(crate) fn warm_runners(
        &self,
        fleet: &Fleet,
        agent: Option<&str>,
        task: Option<usize>,
        out: &mut Vec<Action>,
    ) {
        for t in self
            .collecting_splits()
            .filter(|&t| task.is_none_or(|k| k == t))
        {
            let Some(collecting) = self.collecting_assignment(t) else {
                continue;
            };
            let run = &self.tasks[t];
            let collector = run.live.map(|i| run.attempts[i].agent_id.as_str());
            let agents = fleet
                .agents
                .values()
                .filter(|a| agent.is_none_or(|o| o == a.id))
                .filter(|a| Some(a.id.as_str()) != collector && may_warm(a, &collecting));
            for agent in agents {
                out.push(Action::Warm {
                    agent_id: agent.id.clone(),
                    assignment: Box::new(collecting.clone()),
                });
            }
        }
    }

    /// Split tasks whose live attempt is the collecting one.
    fn collecting_splits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.plan.tasks.len()).filter(|&t| {
            self.plan.tasks[t].split.is_some()
                && !self.splits.contains_key(&t)
                && self.tasks[t].live.is_some()
        })
    }

    /// The collecting attempt's assignment, as its agent got it.
    fn collecting_assignment(&self, t: usize) -> Option<Assignment> {
        let run = &self.tasks[t];
        let attempt = &run.attempts[run.live?];
        let task = &self.plan.tasks[t];
        Some(Assignment {
            task: t,
            task_id: task.id.clone(),
            attempt_id: attempt.attempt_id.clone(),
            number: attempt.number,
            resources: attempt.reserved,
            timeout_ms: run.timeout_ms.unwrap_or(task.timeout_ms),
            reset_environment: false,
            traceparent: traceparent(&self.suite_id, &attempt.attempt_id),
            assigned_at: attempt.assigned_at,
            batch: None,
        })
    }
}

/// An idle agent that could hold the task's batches.
fn may_warm(agent: &AgentState, a: &Assignment) -> bool {
    agent.takes_work() && agent.running.is_empty() && a.resources.fits_within(&agent.capacity)
}

//! DESIGN.md's invariants, checked after every step of the simulation tests.

use testfleet_config::ResourceSpec;

use super::{AttemptOutcome, Scheduler, SuiteState, TaskState};

pub(super) fn check(s: &Scheduler) -> Result<(), String> {
    let mut reserved_by_agent = std::collections::BTreeMap::<String, ResourceSpec>::new();
    if let Some(suite) = s.suite.current() {
        let plan = &suite.plan;
        let mut by_category = std::collections::BTreeMap::<String, u32>::new();
        let mut total = ResourceSpec::default();
        for (t, run) in suite.tasks.iter().enumerate() {
            let task = &plan.tasks[t];
            let running = run
                .attempts
                .iter()
                .filter(|a| a.outcome == AttemptOutcome::Running)
                .count();
            if running > 1 {
                return Err(format!("{} holds {running} live attempts", task.id));
            }
            match run.live {
                Some(i) => {
                    let a = &run.attempts[i];
                    if a.outcome != AttemptOutcome::Running || run.state != TaskState::Running {
                        return Err(format!(
                            "{}: live attempt {} is {:?} in state {:?}",
                            task.id, a.attempt_id, a.outcome, run.state
                        ));
                    }
                    let agent = s
                        .fleet
                        .agents
                        .get(&a.agent_id)
                        .ok_or(format!("{}: runs on unknown agent", task.id))?;
                    if !agent.running.contains(&a.attempt_id) {
                        return Err(format!(
                            "{}: agent {} does not list {}",
                            task.id, a.agent_id, a.attempt_id
                        ));
                    }
                    reserved_by_agent
                        .entry(a.agent_id.clone())
                        .or_default()
                        .add(&a.reserved);
                    *by_category.entry(task.category.clone()).or_default() += 1;
                    total.add(&a.reserved);
                }
                None if running == 1 => {
                    return Err(format!("{}: a running attempt that is not live", task.id))
                }
                None => {}
            }
            let started = matches!(run.state, TaskState::Running | TaskState::CompletedSuccess)
                || !run.attempts.is_empty();
            if started && task.children.is_empty() {
                if let Some(&d) = task
                    .wait_on
                    .iter()
                    .find(|&&d| !suite.tasks[d].satisfies_dependents())
                {
                    return Err(format!(
                        "{} started before {} succeeded",
                        task.id, plan.tasks[d].id
                    ));
                }
            }
        }
        for (&t, split) in &suite.splits {
            for b in split.queue.live.values() {
                if !s
                    .fleet
                    .agents
                    .get(&b.agent_id)
                    .is_some_and(|a| a.running.contains(&b.batch_id))
                {
                    return Err(format!(
                        "{}: agent {} does not list batch {}",
                        plan.tasks[t].id, b.agent_id, b.batch_id
                    ));
                }
                reserved_by_agent
                    .entry(b.agent_id.clone())
                    .or_default()
                    .add(&b.reserved);
                total.add(&b.reserved);
            }
            if suite.tasks[t].state.is_terminal() && !split.queue.live.is_empty() {
                return Err(format!("{} ended with batches running", plan.tasks[t].id));
            }
            split
                .queue
                .check()
                .map_err(|e| format!("{}: {e}", plan.tasks[t].id))?;
        }
        for (c, n) in &by_category {
            if suite.running_by_category.get(c).copied().unwrap_or(0) != *n {
                return Err(format!(
                    "category {c}: counted {:?}, running {n}",
                    suite.running_by_category.get(c)
                ));
            }
            if plan.max_parallel.get(c).is_some_and(|m| n > m) {
                return Err(format!("category {c}: {n} running over max_parallel"));
            }
        }
        if total != suite.reserved_total {
            return Err(format!(
                "fleet reservation {:?} != sum of attempts {total:?}",
                suite.reserved_total
            ));
        }
        if plan
            .limits
            .total_memory_mb
            .is_some_and(|m| total.memory_mb > m)
            || plan
                .limits
                .total_cpu_millis
                .is_some_and(|c| total.cpu_millis > c)
        {
            return Err(format!("fleet reservation {total:?} over agent_limits"));
        }
        let all_terminal = suite.tasks.iter().all(|t| t.state.is_terminal());
        let running = matches!(s.suite, crate::Lifecycle::Running(_));
        if running != (suite.state == SuiteState::Running) {
            return Err(format!(
                "the suite's stage (running: {running}) disagrees with its state {:?}",
                suite.state
            ));
        }
        if (suite.state != SuiteState::Running) != all_terminal {
            return Err(format!(
                "suite is {:?} but all tasks terminal = {all_terminal}",
                suite.state
            ));
        }
    }
    for a in s.fleet.agents.values() {
        let expected = reserved_by_agent.remove(&a.id).unwrap_or_default();
        if a.reserved != expected {
            return Err(format!(
                "agent {} reserves {:?}, its attempts {expected:?}",
                a.id, a.reserved
            ));
        }
        if !a.reserved.fits_within(&a.capacity) {
            return Err(format!(
                "agent {} reserves {:?} over capacity {:?}",
                a.id, a.reserved, a.capacity
            ));
        }
    }
    Ok(())
}

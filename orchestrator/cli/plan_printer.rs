//! The plan as `orchestrator check` prints it: scheduling, phases, and each
//! task with its resources, timeout, what it waits on and its command.

use std::fmt::Write as _;

use testfleet::config::{SuitePlan, TaskKind};

/// The plan as `check` prints it.
pub fn describe_plan(plan: &SuitePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scheduling: {}", plan.mode);
    if let Some(target) = plan.pool.target_duration_ms {
        let pool = &plan.pool;
        let _ = writeln!(
            out,
            "agent pool: target_duration {} s: sized from the timing history (work left over time left; no more agents than the critical path can use), {} to {} agents of {} cores and {} MB, provisioner {}",
            target as f64 / 1000.0,
            pool.min_agents,
            pool.max_agents.map_or("unlimited".to_string(), |m| m.to_string()),
            pool.agent_size.cpu_cores(),
            pool.agent_size.memory_mb,
            pool.provisioner.as_ref().map_or("none", |p| p.name()),
        );
    }
    if plan.mode == "phased" {
        for p in &plan.phases {
            let ids: Vec<&str> = p.tasks.iter().map(|&t| plan.tasks[t].id.as_str()).collect();
            let _ = writeln!(
                out,
                "phase {} ({:?}): {}",
                p.name,
                p.strategy,
                ids.join(", ")
            );
        }
    }
    for t in &plan.tasks {
        let waits: Vec<&str> = t
            .wait_on
            .iter()
            .map(|&w| plan.tasks[w].id.as_str())
            .collect();
        let indent = if t.parent.is_some() { "    " } else { "  " };
        let kind = if t.kind == TaskKind::Group {
            " (group of subtasks)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{indent}{} {}{kind}: {} MB, {} cores, timeout {} s, waits on [{}]",
            t.id,
            t.name,
            t.resources.memory_mb,
            t.resources.cpu_cores(),
            t.timeout_ms / 1000,
            waits.join(", ")
        );
        if t.kind == TaskKind::Runnable && !t.execution.command.is_empty() {
            let _ = writeln!(out, "{indent}    $ {}", t.execution.command);
        }
        if let Some(split) = &t.split {
            let _ = writeln!(
                out,
                "{indent}    {}",
                crate::cli::split_plan::describe(t, split, plan.test_history.get(&t.id))
            );
        }
    }
    out
}

//! The engine's JSON log lines for assignments, pool decisions and
//! completions: field values a log pipeline can query.

use testfleet::proto;
use testfleet::time::now_millis;
use testfleet_core::results::Completion;

pub(super) fn log_assignment(a: &proto::TaskAssignment) {
    // Borrowed, not cloned: this runs for every assignment, logged or not.
    let d = a.task_details.as_ref();
    let r = d.and_then(|d| d.resources).unwrap_or_default();
    tracing::info!(
        event = "task_assigned",
        task_id = d.map_or("", |d| d.task_id.as_str()),
        agent_id = a.target_agent,
        attempt_id = a.attempt_id,
        memory_mb = r.memory_mb,
        cpu_cores = r.cpu_cores,
        timestamp = testfleet::time::millis_to_rfc3339(now_millis()),
        "task_assigned"
    );
}

/// Every pool decision is in the log; the ones a person should act on warn.
pub(super) fn log_pool(r: &testfleet_core::pool::PoolRecord) {
    let warn = matches!(r.decision, "waiting" | "unplaceable" | "provision_failed");
    let join_seconds = r.join_seconds.unwrap_or_default();
    if warn {
        tracing::warn!(
            event = "pool",
            decision = r.decision,
            agent_id = r.agent_id,
            task_id = r.task_id,
            cpu_cores = r.cpu_cores,
            memory_mb = r.memory_mb,
            "{}",
            r.reason
        );
    } else {
        tracing::info!(
            event = "pool",
            decision = r.decision,
            agent_id = r.agent_id,
            task_id = r.task_id,
            cpu_cores = r.cpu_cores,
            memory_mb = r.memory_mb,
            join_seconds,
            "{}",
            r.reason
        );
    }
}

pub(super) fn log_completion(c: &Completion) {
    let tr = c.test_results.unwrap_or_default();
    let s = c.execution_summary.unwrap_or_default();
    tracing::info!(
        event = "task_completed",
        task_id = c.task_id,
        agent_id = c.agent_id,
        attempt_id = c.attempt_id,
        duration_seconds = s.duration_seconds,
        status = c.final_status.as_str(),
        test_pass_rate = tr.pass_rate,
        coverage = tr.coverage_percentage,
        timestamp = testfleet::time::millis_to_rfc3339(now_millis()),
        "task_completed"
    );
}

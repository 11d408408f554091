//! What `status` and `progress` show: the current suite's tasks and counts in
//! the wire shapes of `GetStatus` and `GetProgress` (and their HTTP twins).

use testfleet::proto;

use crate::wire;
use testfleet_core::{Scheduler, TaskState};

pub fn status(s: &Scheduler) -> proto::SuiteStatus {
    let Some(suite) = s.suite() else {
        return proto::SuiteStatus {
            status: "idle".into(),
            ..Default::default()
        };
    };
    proto::SuiteStatus {
        suite_id: suite.suite_id().to_string(),
        suite_name: suite.suite_name().to_string(),
        status: suite.state().as_str().into(),
        tasks: suite
            .tasks()
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let live = run.live_attempt();
                proto::TaskState {
                    task_id: suite.plan().tasks[i].id.clone(),
                    status: run.state().as_str().into(),
                    agent_id: live.map(|a| a.agent_id().to_string()).unwrap_or_default(),
                    attempt_id: live.map(|a| a.attempt_id().to_string()).unwrap_or_default(),
                    attempts: run.attempts().len() as u32,
                    parent: suite.plan().tasks[i]
                        .parent
                        .map(|p| suite.plan().tasks[p].id.clone())
                        .unwrap_or_default(),
                    detail: s
                        .pool()
                        .waiting_reason(i)
                        .map_or_else(|| run.reason().to_string(), str::to_string),
                    failure_type: s.pool().failure_type(i).unwrap_or_default().into(),
                }
            })
            .collect(),
        alerts: s.active_alerts().iter().map(wire::alert).collect(),
        started_at: Some(testfleet::time::to_timestamp(suite.started_at())),
        finished_at: suite.finished_at().map(testfleet::time::to_timestamp),
        detail: String::new(),
    }
}

/// The status once the event log cannot be written: whatever the suite
/// was, the orchestrator takes no new work now, and says why.
pub fn halted(mut status: proto::SuiteStatus, why: &str) -> proto::SuiteStatus {
    status.status = "halted".into();
    status.detail = why.to_string();
    status
}

/// Overall progress counts each runnable task once: ended tasks fully,
/// running ones by their own reported percentage.
pub fn progress(s: &Scheduler) -> proto::SuiteProgress {
    let Some(suite) = s.suite() else {
        return proto::SuiteProgress {
            status: "idle".into(),
            ..Default::default()
        };
    };
    let runnable: Vec<usize> = (0..suite.tasks().len())
        .filter(|&t| suite.plan().tasks[t].children.is_empty())
        .collect();
    let mut done = 0.0;
    let mut latest = Vec::new();
    let mut active = Vec::new();
    for &t in &runnable {
        let run = &suite.tasks()[t];
        if run.state().is_terminal() {
            done += 1.0;
        } else if let Some(a) = run.live_attempt() {
            active.push(suite.plan().tasks[t].id.clone());
            if let Some(p) = &a.last_progress() {
                done += p
                    .progress
                    .as_ref()
                    .map_or(0.0, |p| p.percentage / 100.0)
                    .clamp(0.0, 0.99);
                latest.push(wire::progress_out(p));
            }
        }
    }
    let n = runnable.len().max(1) as f64;
    proto::SuiteProgress {
        suite_id: suite.suite_id().to_string(),
        status: suite.state().as_str().into(),
        overall_progress: (done / n * 1000.0).round() / 10.0,
        active_tasks: active,
        completed_tasks: suite
            .tasks()
            .iter()
            .filter(|t| t.state() == TaskState::CompletedSuccess)
            .count() as u32,
        failed_tasks: suite
            .tasks()
            .iter()
            .filter(|t| t.state() == TaskState::Failed)
            .count() as u32,
        total_tasks: suite.tasks().len() as u32,
        latest,
    }
}

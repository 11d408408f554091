//! What a suite did, as documents: the final report (JSON), the status and
//! progress views the control API and the HTTP API serve, and a merged JUnit
//! XML of every task's last attempt.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use testfleet::config::ResourceSpec;
use testfleet::proto;
use testfleet::time::{millis_to_rfc3339, to_rfc3339};

use crate::scheduler::{Attempt, Scheduler, SuiteRun, TaskState};

pub const REPORT_FILE: &str = "report.json";
pub const JUNIT_FILE: &str = "junit.xml";

/// Where an attempt's uploaded artifacts live under a suite's directory.
pub fn artifact_dir(suite_dir: &Path, task_id: &str, attempt_number: u32) -> PathBuf {
    suite_dir
        .join("artifacts")
        .join(task_id)
        .join(attempt_number.to_string())
}

fn resources(r: &ResourceSpec) -> Value {
    json!({"memory_mb": r.memory_mb, "cpu_cores": r.cpu_cores(), "disk_mb": r.disk_mb})
}

fn ts(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(to_rfc3339)
        .map(Value::from)
        .unwrap_or(Value::Null)
}

fn opt_time(ms: Option<u64>) -> Value {
    ms.map(|m| Value::from(millis_to_rfc3339(m)))
        .unwrap_or(Value::Null)
}

fn attempt_json(a: &Attempt) -> Value {
    let summary = a
        .completion
        .as_ref()
        .and_then(|c| c.execution_summary)
        .or_else(|| a.failure.as_ref().and_then(|f| f.execution_summary));
    let tests = a
        .completion
        .as_ref()
        .and_then(|c| c.test_results)
        .or_else(|| a.failure.as_ref().and_then(|f| f.test_results));
    let artifacts: Vec<String> = a
        .completion
        .as_ref()
        .map(|c| c.artifacts.clone())
        .or_else(|| a.failure.as_ref().map(|f| f.artifacts.clone()))
        .unwrap_or_default();
    let peak = a
        .completion
        .as_ref()
        .and_then(|c| c.peak_resources)
        .or_else(|| a.failure.as_ref().and_then(|f| f.peak_resources));
    json!({
        "attempt_id": a.attempt_id,
        "number": a.number,
        "agent_id": a.agent_id,
        "outcome": a.outcome,
        "assigned_at": millis_to_rfc3339(a.assigned_at),
        "assigned_at_ms": a.assigned_at,
        "ended_at": opt_time(a.ended_at),
        "ended_at_ms": a.ended_at,
        "reserved": resources(&a.reserved),
        "start_time": ts(&summary.as_ref().and_then(|s| s.start_time)),
        "end_time": ts(&summary.as_ref().and_then(|s| s.end_time)),
        "duration_seconds": summary.as_ref().map(|s| s.duration_seconds),
        "exit_code": summary.as_ref().map(|s| s.exit_code),
        "signal": summary.as_ref().map(|s| s.signal).filter(|s| *s != 0),
        "test_results": tests,
        "metrics": a.completion.as_ref().map(|c| c.metrics.clone()),
        "peak_resources": peak,
        // Level 1: what the agent tried within this attempt.
        "recovery_attempts": a
            .completion
            .as_ref()
            .map(|c| c.recovery_attempts.clone())
            .or_else(|| a.failure.as_ref().map(|f| f.recovery_attempts.clone()))
            .unwrap_or_default(),
        "failure": a.failure.as_ref().map(|f| json!({
            "failure_details": f.failure_details,
            "recovery_attempts": f.recovery_attempts,
            "escalation_required": f.escalation_required,
            "recommended_actions": f.recommended_actions,
        })),
        "artifacts": artifacts,
        "stale_results": a.stale_results,
        "cancel_acknowledged": a.cancel_acknowledged,
    })
}

pub fn build(s: &Scheduler) -> Option<Value> {
    let suite = s.suite()?;
    Some(build_suite(s, suite))
}

fn build_suite(s: &Scheduler, suite: &SuiteRun) -> Value {
    let plan = &suite.plan;
    let count = |st: TaskState| suite.tasks.iter().filter(|t| t.state == st).count();
    let (mut total, mut passed, mut failed) = (0u64, 0u64, 0u64);
    let mut tasks = Vec::new();
    for (i, run) in suite.tasks.iter().enumerate() {
        let t = &plan.tasks[i];
        if let Some(tr) = run
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.completion.as_ref().and_then(|c| c.test_results.as_ref()))
        {
            total += tr.total_tests;
            passed += tr.passed;
            failed += tr.failed + tr.errors;
        }
        tasks.push(json!({
            "task_id": t.id,
            "name": t.name,
            "category": t.category,
            "role": t.role,
            "kind": t.kind,
            "parent": t.parent.map(|p| plan.tasks[p].id.clone()),
            "subtasks": t.children.iter().map(|&c| plan.tasks[c].id.clone()).collect::<Vec<_>>(),
            "dependencies": t.dependencies,
            "waits_on": t.wait_on.iter().map(|&w| plan.tasks[w].id.clone()).collect::<Vec<_>>(),
            "status": run.state,
            "reason": run.reason,
            "started_at": opt_time(run.started_at),
            "started_at_ms": run.started_at,
            "ended_at": opt_time(run.ended_at),
            "ended_at_ms": run.ended_at,
            "resources": resources(&t.resources),
            "timeout_seconds": t.timeout_ms as f64 / 1000.0,
            "criteria": run.criteria,
            "infrastructure_retries": run.infra_retries,
            "application_retries": run.app_retries,
            "recoveries": run.recoveries,
            "waived": run.waived,
            "attempts": run.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        }));
    }
    let agents: Vec<Value> = s
        .agents()
        .map(|a| {
            json!({
                "agent_id": a.id,
                "host": a.host,
                "labels": a.labels,
                "capacity": resources(&a.capacity),
                "peak_reserved": suite.peak_reserved.get(&a.id).map(resources),
                "connected": a.connected,
            })
        })
        .collect();
    let attempts: usize = suite.tasks.iter().map(|t| t.attempts.len()).sum();
    let stale: u32 = suite
        .tasks
        .iter()
        .flat_map(|t| &t.attempts)
        .map(|a| a.stale_results)
        .sum();
    json!({
        "suite_id": suite.suite_id,
        "suite_name": suite.suite_name,
        "status": suite.state.as_str(),
        "reason": suite.reason,
        "scheduling": plan.mode,
        "orchestrator_id": plan.orchestrator_id,
        "started_at": millis_to_rfc3339(suite.started_at),
        "finished_at": opt_time(suite.finished_at),
        "duration_seconds": suite.finished_at.map(|f| (f - suite.started_at) as f64 / 1000.0),
        "summary": {
            "total_tasks": suite.tasks.len(),
            "completed_success": count(TaskState::CompletedSuccess),
            "failed": count(TaskState::Failed),
            "skipped": count(TaskState::Skipped),
            "cancelled": count(TaskState::Cancelled),
            "flaky": count(TaskState::Flaky),
            "escalated": count(TaskState::Escalated),
            "paused": count(TaskState::Paused),
            "attempts": attempts,
            "total_tests": total,
            "tests_passed": passed,
            "tests_failed": failed,
            "pass_rate": if total > 0 { Some(passed as f64 / total as f64) } else { None },
            "stale_results": stale,
            "rejected_results": s.rejected_results,
        },
        "agents": agents,
        "alerts": s.alert_history(),
        "escalations": suite.escalations.iter().map(|e| json!({
            "escalation_id": e.escalation_id,
            "task_id": e.task_id,
            "issue_type": e.issue_type,
            "severity": e.severity,
            "state": e.resolution.map_or("open".to_string(), |r| format!("{r:?}").to_lowercase()),
            "created_at": millis_to_rfc3339(e.created_at),
            "resolved_at": opt_time(e.resolved_at),
            "report": e.report,
        })).collect::<Vec<_>>(),
        "tasks": tasks,
    })
}

/// Writes report.json and the merged junit.xml into `dir`.
pub fn write(s: &Scheduler, dir: &Path) -> anyhow::Result<PathBuf> {
    let report = build(s).context("no suite to report on")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(REPORT_FILE);
    let text = serde_json::to_string_pretty(&report)?;
    write_atomically(&path, text.as_bytes())?;
    let suite = s.suite().expect("a report was built");
    let junit = crate::junit_merge::merge(suite, dir)?;
    write_atomically(&dir.join(JUNIT_FILE), junit.as_bytes())?;
    Ok(path)
}

/// A reader never sees half a report: write aside, then rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn status(s: &Scheduler) -> proto::SuiteStatus {
    let Some(suite) = s.suite() else {
        return proto::SuiteStatus {
            status: "idle".into(),
            ..Default::default()
        };
    };
    proto::SuiteStatus {
        suite_id: suite.suite_id.clone(),
        suite_name: suite.suite_name.clone(),
        status: suite.state.as_str().into(),
        tasks: suite
            .tasks
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let live = run.live_attempt();
                proto::TaskState {
                    task_id: suite.plan.tasks[i].id.clone(),
                    status: run.state.as_str().into(),
                    agent_id: live.map(|a| a.agent_id.clone()).unwrap_or_default(),
                    attempt_id: live.map(|a| a.attempt_id.clone()).unwrap_or_default(),
                    attempts: run.attempts.len() as u32,
                    parent: suite.plan.tasks[i]
                        .parent
                        .map(|p| suite.plan.tasks[p].id.clone())
                        .unwrap_or_default(),
                }
            })
            .collect(),
        alerts: s.active_alerts(),
        started_at: Some(testfleet::time::to_timestamp(suite.started_at)),
        finished_at: suite.finished_at.map(testfleet::time::to_timestamp),
    }
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
    let runnable: Vec<usize> = (0..suite.tasks.len())
        .filter(|&t| suite.plan.tasks[t].children.is_empty())
        .collect();
    let mut done = 0.0;
    let mut latest = Vec::new();
    let mut active = Vec::new();
    for &t in &runnable {
        let run = &suite.tasks[t];
        if run.state.is_terminal() {
            done += 1.0;
        } else if let Some(a) = run.live_attempt() {
            active.push(suite.plan.tasks[t].id.clone());
            if let Some(p) = &a.last_progress {
                done += p
                    .progress
                    .as_ref()
                    .map_or(0.0, |p| p.percentage / 100.0)
                    .clamp(0.0, 0.99);
                latest.push(p.clone());
            }
        }
    }
    let n = runnable.len().max(1) as f64;
    proto::SuiteProgress {
        suite_id: suite.suite_id.clone(),
        status: suite.state.as_str().into(),
        overall_progress: (done / n * 1000.0).round() / 10.0,
        active_tasks: active,
        completed_tasks: suite
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::CompletedSuccess)
            .count() as u32,
        failed_tasks: suite
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .count() as u32,
        total_tasks: suite.tasks.len() as u32,
        latest,
    }
}

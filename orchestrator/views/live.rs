//! What the live page shows, as the JSON it is sent: the suite's task graph
//! with each task's state and progress (the snapshot a page starts from),
//! the fleet (agents and their load, open escalations, alerts), each watch
//! event cut to what the page draws, and the finished report's gist.

use serde::Serialize;
use serde_json::{json, Value};
use testfleet::proto::suite_event::Body;
use testfleet_core::Scheduler;

use crate::output::report_html_model::{Outcome, Report};

#[derive(Serialize)]
pub struct Snapshot {
    /// None while no suite has been submitted.
    pub suite: Option<SuiteView>,
    #[serde(flatten)]
    pub fleet: Fleet,
}

#[derive(Serialize)]
pub struct SuiteView {
    pub suite_id: String,
    pub suite_name: String,
    pub status: &'static str,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub tasks: Vec<TaskView>,
}

#[derive(Serialize)]
pub struct TaskView {
    pub id: String,
    pub category: String,
    pub dependencies: Vec<String>,
    pub parent: Option<String>,
    pub state: &'static str,
    pub agent_id: String,
    pub attempts: usize,
    pub percentage: Option<f64>,
    pub current_test: String,
    pub tests_completed: u64,
    pub tests_remaining: u64,
}

#[derive(Serialize)]
pub struct Fleet {
    /// Which suite this describes: a page seeing another id asks for a
    /// new snapshot.
    pub suite_id: String,
    pub agents: Vec<AgentView>,
    pub escalations: Vec<EscalationView>,
    pub alerts: Vec<Value>,
}

#[derive(Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub host: String,
    /// connected | draining | lost
    pub state: &'static str,
    pub capacity_cpu: f64,
    pub capacity_memory_mb: u64,
    pub reserved_cpu: f64,
    pub reserved_memory_mb: u64,
    pub running: Vec<String>,
    /// From its last heartbeat.
    pub cpu_utilization: Option<f64>,
    pub memory_usage_mb: Option<u64>,
    pub last_heartbeat_ms: u64,
}

#[derive(Serialize)]
pub struct EscalationView {
    pub escalation_id: String,
    pub task_id: String,
    pub issue_type: &'static str,
    pub severity: String,
    /// open | retry | skip | abort
    pub state: String,
    pub reason: String,
    pub blocking_tasks: Vec<String>,
    pub created_at_ms: u64,
}

pub fn snapshot(s: &Scheduler) -> Snapshot {
    let suite = s.suite().map(|suite| SuiteView {
        suite_id: suite.suite_id().to_string(),
        suite_name: suite.suite_name().to_string(),
        status: suite.state().as_str(),
        started_at_ms: suite.started_at(),
        finished_at_ms: suite.finished_at(),
        tasks: suite
            .plan()
            .tasks
            .iter()
            .zip(suite.tasks())
            .map(|(t, run)| {
                let live = run.live_attempt();
                let progress = live
                    .and_then(|a| a.last_progress())
                    .and_then(|p| p.progress.as_ref());
                TaskView {
                    id: t.id.clone(),
                    category: t.category.clone(),
                    dependencies: t.dependencies.clone(),
                    parent: t.parent.map(|p| suite.plan().tasks[p].id.clone()),
                    state: run.state().as_str(),
                    agent_id: live.map(|a| a.agent_id().to_string()).unwrap_or_default(),
                    attempts: run.attempts().len(),
                    percentage: progress.map(|p| p.percentage),
                    current_test: progress.map(|p| p.current_test.clone()).unwrap_or_default(),
                    tests_completed: progress.map_or(0, |p| p.tests_completed),
                    tests_remaining: progress.map_or(0, |p| p.tests_remaining),
                }
            })
            .collect(),
    });
    Snapshot {
        suite,
        fleet: fleet(s),
    }
}

pub fn fleet(s: &Scheduler) -> Fleet {
    let suite = s.suite();
    // Attempt ids name their task: `<suite>.<task>.<n>`.
    let task_of = |attempt: &str| -> String {
        let rest = suite
            .and_then(|su| attempt.strip_prefix(su.suite_id()))
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or(attempt);
        rest.rsplit_once('.').map_or(rest, |(t, _)| t).to_string()
    };
    Fleet {
        suite_id: suite.map(|su| su.suite_id().to_string()).unwrap_or_default(),
        agents: s
            .agents()
            .map(|a| AgentView {
                agent_id: a.id().to_string(),
                host: a.host().to_string(),
                state: match (a.connected(), a.draining()) {
                    (true, false) => "connected",
                    (true, true) => "draining",
                    (false, _) => "lost",
                },
                capacity_cpu: a.capacity().cpu_cores(),
                capacity_memory_mb: a.capacity().memory_mb,
                reserved_cpu: a.reserved().cpu_cores(),
                reserved_memory_mb: a.reserved().memory_mb,
                running: a.running().iter().map(|r| task_of(r)).collect(),
                cpu_utilization: a.last_usage().map(|u| u.cpu_utilization),
                memory_usage_mb: a.last_usage().map(|u| u.memory_usage_mb),
                last_heartbeat_ms: a.last_heartbeat(),
            })
            .collect(),
        escalations: suite
            .map(|su| {
                su.escalations()
                    .iter()
                    .map(|e| EscalationView {
                        escalation_id: e.escalation_id.clone(),
                        task_id: e.task_id.clone(),
                        issue_type: e.issue_type.as_str(),
                        severity: e.severity.clone(),
                        state: e
                            .resolution
                            .map_or("open".to_string(), |r| format!("{r:?}").to_lowercase()),
                        reason: e.report.context.reason.clone(),
                        blocking_tasks: e.report.blocking_tasks.clone(),
                        created_at_ms: e.created_at,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        alerts: s
            .active_alerts()
            .iter()
            .map(|a| json!({"name": a.name, "severity": a.severity, "action": a.action, "detail": a.detail}))
            .collect(),
    }
}

/// A watch event as the page's event name and data: only what it draws, so
/// a suite of 20,000 tasks does not send each assignment's whole spec.
pub fn event(body: &Body) -> (&'static str, Value) {
    match body {
        Body::Assignment(a) => (
            "assignment",
            json!({
                "task_id": a.task_details.as_ref().map(|d| d.task_id.as_str()).unwrap_or_default(),
                "agent_id": a.target_agent,
                "attempt_id": a.attempt_id,
                "attempt_number": a.attempt_number,
            }),
        ),
        Body::Progress(p) => {
            let pr = p.progress.clone().unwrap_or_default();
            (
                "progress",
                json!({
                    "task_id": p.task_id, "agent_id": p.agent_id, "attempt_id": p.attempt_id,
                    "percentage": pr.percentage, "current_test": pr.current_test,
                    "tests_completed": pr.tests_completed, "tests_remaining": pr.tests_remaining,
                }),
            )
        }
        Body::Completion(c) => {
            let tr = c.test_results.unwrap_or_default();
            (
                "completion",
                json!({
                    "task_id": c.task_id, "agent_id": c.agent_id, "attempt_id": c.attempt_id,
                    "passed": tr.passed, "total_tests": tr.total_tests,
                    "coverage": tr.coverage_measured.then_some(tr.coverage_percentage),
                    "duration_seconds": c.execution_summary.map(|s| s.duration_seconds),
                }),
            )
        }
        Body::Failure(f) => {
            let d = f.failure_details.clone().unwrap_or_default();
            (
                "failure",
                json!({
                    "task_id": f.task_id, "agent_id": f.agent_id, "attempt_id": f.attempt_id,
                    "error_type": testfleet::wire_json::error_type_name(d.error_type),
                    "error_message": d.error_message,
                }),
            )
        }
        Body::TaskState(t) => ("task_state", json!(t)),
        Body::SuiteFinished(f) => ("suite_finished", json!(f)),
        Body::Alert(a) => ("alert", json!(a)),
        Body::Pool(p) => ("pool", json!(p)),
    }
}

/// The finished report's gist, from its document: the totals, every
/// failure with its message, the flaky tasks. None when the text is not a
/// report.
pub fn report_gist(report_json: &[u8]) -> Option<Value> {
    let r: Report = serde_json::from_slice(report_json).ok()?;
    let failures: Vec<Value> = r
        .tasks
        .iter()
        .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
        .filter(|(_, a)| matches!(a.outcome, Outcome::Failed | Outcome::AgentLost))
        .take(200)
        .map(|(t, a)| {
            let d = a.failure.as_ref().and_then(|f| f.failure_details.as_ref());
            json!({
                "task_id": t.task_id, "attempt": a.number, "agent_id": a.agent_id,
                "task_status": t.status,
                "error_type": d.map_or(a.outcome.as_str(), |d| d.error_type.as_str()),
                "error_message": d.map(|d| d.error_message.as_str()).unwrap_or_default(),
                "failed_tests": d.map(|d| d.failed_tests.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let s = &r.summary;
    Some(json!({
        "suite_id": r.suite_id, "suite_name": r.suite_name, "status": r.status, "reason": r.reason,
        "duration_seconds": r.duration_seconds,
        "summary": {
            "total_tasks": s.total_tasks, "completed_success": s.completed_success, "failed": s.failed,
            "flaky": s.flaky, "skipped": s.skipped, "cancelled": s.cancelled, "attempts": s.attempts,
            "total_tests": s.total_tests, "tests_passed": s.tests_passed, "tests_failed": s.tests_failed,
            "tests_skipped": s.tests_skipped, "tests_xfailed": s.tests_xfailed, "tests_xpassed": s.tests_xpassed,
            "pass_rate": s.pass_rate, "stale_results": s.stale_results,
        },
        "failures": failures,
        "flaky": r.tasks.iter().filter(|t| t.status == "flaky").map(|t| json!({"task_id": t.task_id, "reason": t.reason})).collect::<Vec<_>>(),
    }))
}

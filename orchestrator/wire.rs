//! The one mapping between the scheduler's types and the wire's (proto):
//! agents' reports in, assignments, cancels, alerts and watch events out.
//! Nothing else in the orchestrator builds a wire message from scheduler
//! state or reads one into it.

use std::collections::HashMap;

use testfleet::config::{PriorityName, SuitePlan};
use testfleet::proto::{self, suite_event};
use testfleet::time::{from_timestamp, to_timestamp};
use tonic::{Code, Status};

use crate::observe::watchers::Kind;
use testfleet_core::escalation::EscalationReport;
use testfleet_core::results::{
    AttemptPhase, Collected, Completion, ErrorContext, ErrorType, ExecutionSummary, Failure,
    FailureDetails, FinalStatus, Progress, ProgressReport, RecoveryAttempt, ResourceUsage,
    TestCase, TestOutcome, TestResults,
};
use testfleet_core::time::UnixMillis;
use testfleet_core::{Alert, Assignment, CancelRequest, Notice, Refusal, Rejection};

// ---- in: what agents report --------------------------------------------

fn millis(ts: Option<prost_types::Timestamp>) -> Option<UnixMillis> {
    ts.as_ref().map(from_timestamp)
}

pub fn usage(u: proto::ResourceUsage) -> ResourceUsage {
    ResourceUsage {
        memory_usage_mb: u.memory_usage_mb,
        cpu_utilization: u.cpu_utilization,
        disk_usage_mb: u.disk_usage_mb,
    }
}

pub fn progress(p: proto::ProgressUpdate) -> ProgressReport {
    let status = p.status();
    ProgressReport {
        message_id: p.message_id,
        timestamp: millis(p.timestamp),
        agent_id: p.agent_id,
        task_id: p.task_id,
        attempt_id: p.attempt_id,
        progress: p.progress.map(|g| Progress {
            percentage: g.percentage,
            current_test: g.current_test,
            tests_completed: g.tests_completed,
            tests_remaining: g.tests_remaining,
            estimated_completion: millis(g.estimated_completion),
        }),
        resources: p.resources.map(usage),
        status: match status {
            proto::TaskStatus::Unspecified => AttemptPhase::Unspecified,
            proto::TaskStatus::SettingUp => AttemptPhase::SettingUp,
            proto::TaskStatus::Running => AttemptPhase::Running,
            proto::TaskStatus::Parsing => AttemptPhase::Parsing,
            proto::TaskStatus::Uploading => AttemptPhase::Uploading,
        },
        test_cases: p.test_cases.into_iter().map(test_case).collect(),
    }
}

fn test_case(c: proto::TestCase) -> TestCase {
    TestCase {
        outcome: TestOutcome::parse(&c.outcome),
        duration_ms: (c.duration_seconds.max(0.0) * 1000.0).round() as u64,
        id: c.id,
        message: c.message,
    }
}

fn summary(s: proto::ExecutionSummary) -> ExecutionSummary {
    ExecutionSummary {
        start_time: millis(s.start_time),
        end_time: millis(s.end_time),
        duration_seconds: s.duration_seconds,
        exit_code: s.exit_code,
        signal: s.signal,
    }
}

fn test_results(t: proto::TestResults) -> TestResults {
    TestResults {
        total_tests: t.total_tests,
        passed: t.passed,
        failed: t.failed,
        pass_rate: t.pass_rate,
        coverage_percentage: t.coverage_percentage,
        skipped: t.skipped,
        errors: t.errors,
        coverage_measured: t.coverage_measured,
    }
}

fn recovery_attempt(r: proto::RecoveryAttempt) -> RecoveryAttempt {
    RecoveryAttempt {
        attempt: r.attempt,
        action: r.action,
        result: r.result,
        timestamp: millis(r.timestamp),
        error_type: r.error_type,
    }
}

pub fn completion(c: proto::TaskCompletion) -> Completion {
    let final_status = match c.final_status() {
        proto::FinalStatus::Unspecified => FinalStatus::Unspecified,
        proto::FinalStatus::Success => FinalStatus::Success,
        proto::FinalStatus::Failure => FinalStatus::Failure,
        proto::FinalStatus::Timeout => FinalStatus::Timeout,
        proto::FinalStatus::Cancelled => FinalStatus::Cancelled,
    };
    Completion {
        message_id: c.message_id,
        timestamp: millis(c.timestamp),
        agent_id: c.agent_id,
        task_id: c.task_id,
        attempt_id: c.attempt_id,
        final_status,
        execution_summary: c.execution_summary.map(summary),
        test_results: c.test_results.map(test_results),
        artifacts: c.artifacts,
        next_actions: c.next_actions,
        metrics: c.metrics,
        peak_resources: c.peak_resources.map(usage),
        recovery_attempts: c
            .recovery_attempts
            .into_iter()
            .map(recovery_attempt)
            .collect(),
        test_cases: c.test_cases.into_iter().map(test_case).collect(),
        collected: c.collected.then_some(Collected {
            tests: c.collected_tests,
            root: c.collected_root,
        }),
    }
}

pub fn error_type(e: proto::ErrorType) -> ErrorType {
    match e {
        proto::ErrorType::Unspecified => ErrorType::Unspecified,
        proto::ErrorType::ImportError => ErrorType::ImportError,
        proto::ErrorType::PermissionError => ErrorType::PermissionError,
        proto::ErrorType::MemoryError => ErrorType::MemoryError,
        proto::ErrorType::TimeoutError => ErrorType::TimeoutError,
        proto::ErrorType::NetworkError => ErrorType::NetworkError,
        proto::ErrorType::CalculationError => ErrorType::CalculationError,
        proto::ErrorType::LogicError => ErrorType::LogicError,
        proto::ErrorType::SystemError => ErrorType::SystemError,
        proto::ErrorType::ResourceExhaustion => ErrorType::ResourceExhaustion,
    }
}

pub fn failure(mut f: proto::FailureNotification) -> Failure {
    let test_cases = std::mem::take(&mut f.test_cases);
    Failure {
        test_cases: test_cases.into_iter().map(test_case).collect(),
        message_id: f.message_id,
        timestamp: millis(f.timestamp),
        agent_id: f.agent_id,
        task_id: f.task_id,
        attempt_id: f.attempt_id,
        failure_details: f.failure_details.map(|d| FailureDetails {
            error_type: error_type(d.error_type()),
            error_message: d.error_message,
            failed_tests: d.failed_tests,
            error_context: d.error_context.map(|c| ErrorContext {
                test_file: c.test_file,
                line_number: c.line_number,
                function: c.function,
            }),
        }),
        recovery_attempts: f
            .recovery_attempts
            .into_iter()
            .map(recovery_attempt)
            .collect(),
        escalation_required: f.escalation_required,
        recommended_actions: f.recommended_actions,
        execution_summary: f.execution_summary.map(summary),
        test_results: f.test_results.map(test_results),
        artifacts: f.artifacts,
        peak_resources: f.peak_resources.map(usage),
    }
}

// ---- out: what the orchestrator sends and shows --------------------------

fn stamp(t: Option<UnixMillis>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

fn priority(p: PriorityName) -> proto::Priority {
    match p {
        PriorityName::Low => proto::Priority::Low,
        PriorityName::Medium => proto::Priority::Medium,
        PriorityName::High => proto::Priority::High,
        PriorityName::Critical => proto::Priority::Critical,
    }
}

/// Who sends an assignment, and to whom.
pub struct Route<'a> {
    pub suite_id: &'a str,
    pub orchestrator_id: &'a str,
    pub agent_id: &'a str,
}

/// The assignment (or warm hint) for `agent_id` as it goes on the wire,
/// from the running suite; None when no suite runs.
pub fn assignment_to(
    scheduler: &testfleet_core::Scheduler,
    agent_id: &str,
    a: &Assignment,
) -> Option<proto::TaskAssignment> {
    let suite = scheduler.suite()?;
    let route = Route {
        suite_id: suite.suite_id(),
        orchestrator_id: scheduler.orchestrator_id(),
        agent_id,
    };
    Some(assignment(a, suite.plan(), &route))
}

/// The seed's `TaskAssignment`: the attempt, with its task's definition
/// from the plan.
pub fn assignment(a: &Assignment, plan: &SuitePlan, route: &Route) -> proto::TaskAssignment {
    let task = &plan.tasks[a.task];
    let mut criteria = proto::SuccessCriteria::default();
    let mut other = HashMap::new();
    for (k, &v) in &task.criteria {
        match k.as_str() {
            "pass_rate" | "min_pass_rate" => criteria.min_pass_rate = Some(v),
            "coverage" | "required_coverage" => criteria.required_coverage = Some(v),
            "max_execution_time" | "execution_time_max" => criteria.max_execution_time = Some(v),
            _ => {
                other.insert(k.clone(), v);
            }
        }
    }
    criteria.other = other;
    let e = &task.execution;
    proto::TaskAssignment {
        message_id: format!("{}/assign", a.attempt_id),
        timestamp: Some(to_timestamp(a.assigned_at)),
        orchestrator_id: route.orchestrator_id.to_string(),
        target_agent: route.agent_id.to_string(),
        task_details: Some(proto::TaskDetails {
            task_id: task.id.clone(),
            task_type: task.category.trim_end_matches('s').to_string(),
            role: task.role.clone(),
            priority: priority(task.priority) as i32,
            timeout_seconds: a.timeout_ms.div_ceil(1000),
            resources: Some(proto::Resources {
                memory_mb: a.resources.memory_mb,
                cpu_cores: a.resources.cpu_cores(),
                disk_mb: a.resources.disk_mb,
            }),
            execution_template: task.template.clone(),
            dependencies: task.dependencies.clone(),
            success_criteria: Some(criteria),
        }),
        attempt_id: a.attempt_id.clone(),
        trace_context: HashMap::from([("traceparent".to_string(), a.traceparent.clone())]),
        execution: Some(proto::ExecutionSpec {
            command: e.command.clone(),
            setup_command: e.setup.clone(),
            working_directory: e.working_directory.clone(),
            env: e.env.iter().cloned().collect(),
            progress_parser: e.progress_parser.to_string(),
            junit_path: e.junit.clone(),
            coverage_path: e.coverage.clone(),
            grace_period_seconds: plan.retry.grace_period_ms.div_ceil(1000),
            suite_id: route.suite_id.to_string(),
            reset_environment: a.reset_environment,
            split: task.split.as_ref().map(|sp| proto::SplitSpec {
                runner: sp.runner.to_string(),
                paths: sp.paths.clone(),
                tests: a
                    .batch
                    .as_ref()
                    .map(|b| b.tests.clone())
                    .unwrap_or_default(),
                root: a.batch.as_ref().map(|b| b.root.clone()).unwrap_or_default(),
                granularity: sp.granularity.to_string(),
            }),
        }),
        attempt_number: a.number,
    }
}

pub fn cancel(c: CancelRequest) -> proto::CancelTask {
    proto::CancelTask {
        task_id: c.task_id,
        attempt_id: c.attempt_id,
        reason: c.reason,
        grace_period_seconds: 0,
    }
}

pub fn alert(a: &Alert) -> proto::AlertEvent {
    proto::AlertEvent {
        name: a.name.into(),
        severity: a.severity.into(),
        action: a.action.into(),
        active: a.active,
        detail: a.detail.clone(),
    }
}

pub fn usage_out(u: &ResourceUsage) -> proto::ResourceUsage {
    proto::ResourceUsage {
        memory_usage_mb: u.memory_usage_mb,
        cpu_utilization: u.cpu_utilization,
        disk_usage_mb: u.disk_usage_mb,
    }
}

pub fn progress_out(p: &ProgressReport) -> proto::ProgressUpdate {
    let status = match p.status {
        AttemptPhase::Unspecified => proto::TaskStatus::Unspecified,
        AttemptPhase::SettingUp => proto::TaskStatus::SettingUp,
        AttemptPhase::Running => proto::TaskStatus::Running,
        AttemptPhase::Parsing => proto::TaskStatus::Parsing,
        AttemptPhase::Uploading => proto::TaskStatus::Uploading,
    };
    proto::ProgressUpdate {
        message_id: p.message_id.clone(),
        timestamp: stamp(p.timestamp),
        agent_id: p.agent_id.clone(),
        task_id: p.task_id.clone(),
        progress: p.progress.as_ref().map(|g| proto::Progress {
            percentage: g.percentage,
            current_test: g.current_test.clone(),
            tests_completed: g.tests_completed,
            tests_remaining: g.tests_remaining,
            estimated_completion: stamp(g.estimated_completion),
        }),
        resources: p.resources.as_ref().map(usage_out),
        status: status as i32,
        attempt_id: p.attempt_id.clone(),
        ..Default::default()
    }
}

fn summary_out(s: &ExecutionSummary) -> proto::ExecutionSummary {
    proto::ExecutionSummary {
        start_time: stamp(s.start_time),
        end_time: stamp(s.end_time),
        duration_seconds: s.duration_seconds,
        exit_code: s.exit_code,
        signal: s.signal,
    }
}

fn test_results_out(t: &TestResults) -> proto::TestResults {
    proto::TestResults {
        total_tests: t.total_tests,
        passed: t.passed,
        failed: t.failed,
        pass_rate: t.pass_rate,
        coverage_percentage: t.coverage_percentage,
        skipped: t.skipped,
        errors: t.errors,
        coverage_measured: t.coverage_measured,
    }
}

fn recovery_attempt_out(r: &RecoveryAttempt) -> proto::RecoveryAttempt {
    proto::RecoveryAttempt {
        attempt: r.attempt,
        action: r.action.clone(),
        result: r.result.clone(),
        timestamp: stamp(r.timestamp),
        error_type: r.error_type.clone(),
    }
}

fn final_status_out(s: FinalStatus) -> proto::FinalStatus {
    match s {
        FinalStatus::Unspecified => proto::FinalStatus::Unspecified,
        FinalStatus::Success => proto::FinalStatus::Success,
        FinalStatus::Failure => proto::FinalStatus::Failure,
        FinalStatus::Timeout => proto::FinalStatus::Timeout,
        FinalStatus::Cancelled => proto::FinalStatus::Cancelled,
    }
}

pub fn completion_out(c: &Completion) -> proto::TaskCompletion {
    proto::TaskCompletion {
        message_id: c.message_id.clone(),
        timestamp: stamp(c.timestamp),
        agent_id: c.agent_id.clone(),
        task_id: c.task_id.clone(),
        final_status: final_status_out(c.final_status) as i32,
        execution_summary: c.execution_summary.as_ref().map(summary_out),
        test_results: c.test_results.as_ref().map(test_results_out),
        artifacts: c.artifacts.clone(),
        next_actions: c.next_actions.clone(),
        attempt_id: c.attempt_id.clone(),
        metrics: c.metrics.clone(),
        peak_resources: c.peak_resources.as_ref().map(usage_out),
        recovery_attempts: c
            .recovery_attempts
            .iter()
            .map(recovery_attempt_out)
            .collect(),
        ..Default::default()
    }
}

pub fn error_type_out(e: ErrorType) -> proto::ErrorType {
    match e {
        ErrorType::Unspecified => proto::ErrorType::Unspecified,
        ErrorType::ImportError => proto::ErrorType::ImportError,
        ErrorType::PermissionError => proto::ErrorType::PermissionError,
        ErrorType::MemoryError => proto::ErrorType::MemoryError,
        ErrorType::TimeoutError => proto::ErrorType::TimeoutError,
        ErrorType::NetworkError => proto::ErrorType::NetworkError,
        ErrorType::CalculationError => proto::ErrorType::CalculationError,
        ErrorType::LogicError => proto::ErrorType::LogicError,
        ErrorType::SystemError => proto::ErrorType::SystemError,
        ErrorType::ResourceExhaustion => proto::ErrorType::ResourceExhaustion,
    }
}

pub fn failure_out(f: &Failure) -> proto::FailureNotification {
    proto::FailureNotification {
        message_id: f.message_id.clone(),
        timestamp: stamp(f.timestamp),
        agent_id: f.agent_id.clone(),
        task_id: f.task_id.clone(),
        failure_details: f.failure_details.as_ref().map(|d| proto::FailureDetails {
            error_type: error_type_out(d.error_type) as i32,
            error_message: d.error_message.clone(),
            failed_tests: d.failed_tests.clone(),
            error_context: d.error_context.as_ref().map(|c| proto::ErrorContext {
                test_file: c.test_file.clone(),
                line_number: c.line_number,
                function: c.function.clone(),
            }),
        }),
        recovery_attempts: f
            .recovery_attempts
            .iter()
            .map(recovery_attempt_out)
            .collect(),
        escalation_required: f.escalation_required,
        recommended_actions: f.recommended_actions.clone(),
        attempt_id: f.attempt_id.clone(),
        execution_summary: f.execution_summary.as_ref().map(summary_out),
        test_results: f.test_results.as_ref().map(test_results_out),
        artifacts: f.artifacts.clone(),
        peak_resources: f.peak_resources.as_ref().map(usage_out),
        ..Default::default()
    }
}

/// The watch event kind a notice is shown as.
pub fn notice_kind(n: &Notice) -> Kind {
    match n {
        Notice::Progress(_) => Kind::PROGRESS,
        Notice::Completion(_) => Kind::COMPLETION,
        Notice::Failure(_) => Kind::FAILURE,
        Notice::TaskState(_) => Kind::TASK_STATE,
        Notice::SuiteFinished { .. } => Kind::SUITE_FINISHED,
        Notice::Pool(_) => Kind::POOL,
    }
}

/// A notice as a watch event's body.
pub fn notice(n: &Notice) -> suite_event::Body {
    match n {
        Notice::TaskState(s) => suite_event::Body::TaskState(proto::TaskStateChanged {
            task_id: s.task_id.clone(),
            status: s.status.as_str().into(),
            agent_id: s.agent_id.clone(),
            attempt_id: s.attempt_id.clone(),
            detail: s.detail.clone(),
        }),
        Notice::Progress(p) => suite_event::Body::Progress(progress_out(p)),
        Notice::Completion(c) => suite_event::Body::Completion(completion_out(c)),
        Notice::Failure(f) => suite_event::Body::Failure(failure_out(f)),
        Notice::SuiteFinished { suite_id, status } => {
            suite_event::Body::SuiteFinished(proto::SuiteFinished {
                suite_id: suite_id.clone(),
                status: status.as_str().into(),
            })
        }
        Notice::Pool(r) => suite_event::Body::Pool(pool_event(r)),
    }
}

/// A pool decision as a watch event's body.
pub fn pool_event(r: &testfleet_core::pool::PoolRecord) -> proto::PoolEvent {
    proto::PoolEvent {
        decision: r.decision.into(),
        agent_id: r.agent_id.clone(),
        task_id: r.task_id.clone(),
        reason: r.reason.clone(),
        cpu_cores: r.cpu_cores,
        memory_mb: r.memory_mb,
        join_seconds: r.join_seconds.unwrap_or_default(),
    }
}

/// The escalation report as JSON, keys sorted at every level as the report
/// has always been printed (webhook bodies, `escalations`, report.json).
pub fn escalation_json(r: &EscalationReport) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// The gRPC status a unary call would have answered for a refused result.
pub fn rejection_code(r: Rejection) -> Code {
    match r {
        Rejection::UnknownAttempt => Code::NotFound,
        Rejection::NotTheAgentsAttempt => Code::PermissionDenied,
        Rejection::TaskMismatch => Code::InvalidArgument,
    }
}

/// A refused command, as the status its caller gets.
pub fn refusal(r: &Refusal) -> Status {
    let code = match r {
        Refusal::SuiteRunning { .. } => Code::AlreadyExists,
        Refusal::NoSuiteRunning | Refusal::EscalationClosed { .. } | Refusal::AgentLost { .. } => {
            Code::FailedPrecondition
        }
        Refusal::NoSuchEscalation { .. } | Refusal::NoSuchAgent { .. } => Code::NotFound,
    };
    Status::new(code, r.describe())
}

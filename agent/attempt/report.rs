//! How an attempt's end is told: its artifacts written and uploaded, and the
//! one message (completion, failure or cancel acknowledgement) sent.

use std::path::PathBuf;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context as OtelContext, KeyValue};
use serde_json::json;
use testfleet::proto::{self, agent_message, AgentMessage, ErrorType, FinalStatus};
use testfleet::time::now_timestamp;

use super::layout::Attempt;
use super::results::{Judged, Results};
use super::watch::Outcome;
use super::{child, Context};
use crate::classify;
use crate::limits;

/// Writes the attempt's artifacts, uploads them, and sends the one message
/// that says how the attempt ended.
pub(super) async fn report(
    ctx: &Context,
    at: &Attempt,
    o: &Outcome,
    j: Judged,
    recoveries: Vec<proto::RecoveryAttempt>,
    cx: &OtelContext,
) {
    let mut j = j;
    let split = crate::split::finish(
        &ctx.workdir,
        &at.a,
        o.exit_code,
        o.signal,
        o.runner_gone,
        at.output_log(),
    )
    .await;
    if let Some((kind, problem)) = split.as_ref().and_then(|s| s.collect_problem.clone()) {
        // Errors the collection reports name the file and say what kind of
        // failure it is better than an exit status: they come first. A
        // collection that wrote nothing says less than the runner's output.
        let named = kind != ErrorType::SystemError;
        if j.success || (named && j.classified.error_type == ErrorType::SystemError) {
            j.classified.error_type = kind;
        }
        j.classified.message = match (j.success, named) {
            (true, _) => problem,
            (false, true) => format!("{problem}; {}", j.classified.message),
            (false, false) => format!("{}; {problem}", j.classified.message),
        };
        j.success = false;
    }
    let (test_cases, collected) = split.map(|s| (s.cases, s.collected)).unwrap_or_default();
    let failure = (!j.success).then_some(&j.classified);
    let files = artifact_files(ctx, at, o, &j, failure);
    let unwritten = write_artifacts(files).await;
    let upload_cx = child(cx, "upload");
    // Uploaded before the message that ends the attempt: once that has
    // arrived, the orchestrator takes no more of the attempt's files.
    let artifacts = ctx
        .uploader
        .upload_dir(&at.task_id, &at.a.attempt_id, &at.artifacts, &unwritten)
        .await;
    upload_cx
        .span()
        .set_attribute(KeyValue::new("artifacts", artifacts.len() as i64));
    upload_cx.span().end();
    let msg = if j.success {
        agent_message::Body::Completion(proto::TaskCompletion {
            message_id: uuid::Uuid::new_v4().to_string(),
            timestamp: Some(now_timestamp()),
            agent_id: ctx.agent_id.clone(),
            task_id: at.task_id.clone(),
            final_status: FinalStatus::Success as i32,
            execution_summary: Some(j.summary),
            test_results: Some(j.tests),
            artifacts,
            next_actions: Vec::new(),
            attempt_id: at.a.attempt_id.clone(),
            metrics: j.results.metrics,
            peak_resources: Some(j.peak),
            recovery_attempts: recoveries,
            test_cases,
            collected: collected.is_some(),
            collected_root: collected.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            collected_tests: collected.map(|c| c.0).unwrap_or_default(),
        })
    } else {
        let mut f = failure_message(
            ctx,
            at,
            &j.classified,
            Some(j.summary),
            Some(j.tests),
            artifacts,
            Some(j.peak),
        );
        f.recovery_attempts = recoveries;
        f.test_cases = test_cases;
        agent_message::Body::Failure(f)
    };
    let _ = ctx.outbox.send(AgentMessage { body: Some(msg) }).await;
    tracing::info!(
        task_id = at.task_id,
        attempt_id = at.a.attempt_id,
        success = j.success,
        "result queued"
    );
}

fn failure_message(
    ctx: &Context,
    at: &Attempt,
    c: &classify::Classified,
    summary: Option<proto::ExecutionSummary>,
    tests: Option<proto::TestResults>,
    artifacts: Vec<String>,
    peak: Option<proto::ResourceUsage>,
) -> proto::FailureNotification {
    proto::FailureNotification {
        message_id: uuid::Uuid::new_v4().to_string(),
        timestamp: Some(now_timestamp()),
        agent_id: ctx.agent_id.clone(),
        task_id: at.task_id.clone(),
        failure_details: Some(proto::FailureDetails {
            error_type: c.error_type as i32,
            error_message: limits::text(&c.message, limits::MESSAGE_BYTES),
            failed_tests: c.failed_tests.clone(),
            error_context: Some(proto::ErrorContext {
                test_file: c.test_file.clone(),
                line_number: c.line_number,
                function: c.function.clone(),
            }),
        }),
        recovery_attempts: Vec::new(),
        escalation_required: classify::escalation_required(c.error_type),
        recommended_actions: classify::recommended_actions(c.error_type),
        attempt_id: at.a.attempt_id.clone(),
        execution_summary: summary,
        test_results: tests,
        artifacts,
        peak_resources: peak,
        test_cases: Vec::new(),
    }
}

/// A failure before the command could run (workdir, setup).
pub(super) async fn report_failure(
    ctx: &Context,
    at: &Attempt,
    kind: ErrorType,
    message: String,
    tests: Option<proto::TestResults>,
) {
    tracing::warn!(
        task_id = at.task_id,
        error_type = testfleet::wire_json::error_type_name(kind as i32),
        message,
        "attempt failed before its command ran"
    );
    let c = classify::Classified {
        error_type: kind,
        message,
        failed_tests: Vec::new(),
        test_file: String::new(),
        line_number: 0,
        function: String::new(),
    };
    let artifacts = ctx
        .uploader
        .upload_dir(&at.task_id, &at.a.attempt_id, &at.artifacts, &[])
        .await;
    let f = failure_message(ctx, at, &c, None, tests, artifacts, None);
    let _ = ctx
        .outbox
        .send(AgentMessage {
            body: Some(agent_message::Body::Failure(f)),
        })
        .await;
}

/// An assignment this agent will not lay out (see `Attempt::new`): told
/// as a failure at once, so the orchestrator hears why rather than waiting
/// out the timeout.
pub(super) async fn report_refused(ctx: &Context, a: &proto::TaskAssignment, message: String) {
    let task_id = a
        .task_details
        .as_ref()
        .map(|d| limits::text(&d.task_id, limits::NAME_BYTES))
        .unwrap_or_default();
    tracing::warn!(
        task_id,
        attempt_id = a.attempt_id,
        message,
        "assignment refused"
    );
    let kind = ErrorType::SystemError;
    let f = proto::FailureNotification {
        message_id: uuid::Uuid::new_v4().to_string(),
        timestamp: Some(now_timestamp()),
        agent_id: ctx.agent_id.clone(),
        task_id,
        failure_details: Some(proto::FailureDetails {
            error_type: kind as i32,
            error_message: limits::text(&message, limits::MESSAGE_BYTES),
            ..Default::default()
        }),
        escalation_required: classify::escalation_required(kind),
        recommended_actions: classify::recommended_actions(kind),
        attempt_id: a.attempt_id.clone(),
        ..Default::default()
    };
    let _ = ctx
        .outbox
        .send(AgentMessage {
            body: Some(agent_message::Body::Failure(f)),
        })
        .await;
}

/// The orchestrator asked for the stop; its process group is gone.
pub(super) async fn report_cancelled(ctx: &Context, at: &Attempt, reason: &str) {
    tracing::info!(
        task_id = at.task_id,
        reason,
        "attempt cancelled; its process group is gone"
    );
    let ack = proto::CancelAck {
        task_id: at.task_id.clone(),
        attempt_id: at.a.attempt_id.clone(),
    };
    let _ = ctx
        .outbox
        .send(AgentMessage {
            body: Some(agent_message::Body::CancelAck(ack)),
        })
        .await;
}

/// The attempt's own JSON artifacts: results, coverage and the agent's report.
fn artifact_files(
    ctx: &Context,
    at: &Attempt,
    o: &Outcome,
    j: &Judged,
    failure: Option<&classify::Classified>,
) -> Vec<(PathBuf, serde_json::Value)> {
    let (t, r): (&str, &Results) = (&at.task_id, &j.results);
    let failed_tests: Vec<&str> = r
        .junit
        .iter()
        .flat_map(|j| &j.failures)
        .map(|f| f.test.as_str())
        .collect();
    let files = [
        (
            "_results.json",
            json!({"task_id": t, "attempt_id": at.a.attempt_id, "test_results": j.tests, "failed_tests": failed_tests, "metrics": r.metrics}),
        ),
        (
            "_coverage.json",
            json!({"task_id": t, "attempt_id": at.a.attempt_id, "coverage_measured": r.coverage.is_some(), "coverage_percentage": r.coverage}),
        ),
        (
            "_agent_report.json",
            json!({
                "agent_id": ctx.agent_id,
                "host": ctx.host,
                "task_id": t,
                "attempt_id": at.a.attempt_id,
                "command": at.a.execution.as_ref().map(|e| at.fill_command(&e.command)),
                "working_directory": at.a.execution.as_ref().map(|e| e.working_directory.clone()),
                "execution_summary": j.summary,
                "timed_out": o.timed_out,
                "memory_exceeded": o.memory_exceeded,
                "peak_resources": j.peak,
                "tests_seen_live": o.observed.completed,
                "notes": r.notes,
                "failure": failure.map(|c| json!({
                    "error_type": testfleet::wire_json::error_type_name(c.error_type as i32),
                    "error_message": c.message,
                    "failed_tests": c.failed_tests,
                })),
            }),
        ),
    ];
    files
        .into_iter()
        .map(|(suffix, value)| (at.task_file(suffix), value))
        .collect()
}

/// On the blocking pool, like the rest of the attempt's file work, so that a
/// slow disk holds up only this attempt. Returns the files it could not
/// write whole (on a full disk, say): each is removed, and never uploaded.
async fn write_artifacts(files: Vec<(PathBuf, serde_json::Value)>) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let written = tokio::task::spawn_blocking(move || {
        let mut unwritten = Vec::new();
        for (path, value) in files {
            let bytes = serde_json::to_vec_pretty(&value).unwrap_or_default();
            if let Err(e) = write_whole(&path, &bytes) {
                tracing::warn!(path = %path.display(), error = %e, "could not write an artifact");
                unwritten.push(path);
            }
        }
        unwritten
    })
    .await;
    written.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not write the artifacts");
        paths
    })
}

/// Writes `bytes` to `path` in full, or leaves nothing there: a file cut
/// short must not pass for the artifact.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = std::fs::write(path, bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_fails_to_write_is_removed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (good, full) = (dir.path().join("good.json"), dir.path().join("full.json"));
        // Every write to /dev/full fails as a full disk does.
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let unwritten = write_artifacts(vec![
            (good.clone(), json!({"a": 1})),
            (full.clone(), json!({"b": 2})),
        ])
        .await;
        assert_eq!(unwritten, std::slice::from_ref(&full));
        assert!(good.is_file());
        assert!(
            std::fs::symlink_metadata(&full).is_err(),
            "nothing is left at {full:?}"
        );
    }
}

//! Runs one attempt: setup (once per workdir), the command in its own process
//! group with the task's environment, live progress and resource sampling,
//! the timeout (SIGTERM, grace, SIGKILL of the group), level-1 recovery, then
//! results, artifacts and the one message that says how it ended.
//!
//! - `layout`: the attempt's directories, files, placeholders and environment;
//! - `setup`: the template's setup command, once per workdir;
//! - `process`: the command's process group, its signals and its exit;
//! - `watch`: one run, watched: output, progress, sampling, limits;
//! - `batch`: a pytest batch run by the task's resident runner, watched;
//! - `warm`: a resident runner started on a hint, before its first batch;
//! - `results`: what the run left behind and whether it succeeded;
//! - `report`: artifacts and the message that ends the attempt.
//!
//! File work reached for every attempt or output line runs on the blocking
//! pool (or through tokio::fs), never on the runtime's threads.

mod batch;
mod layout;
mod process;
mod report;
mod results;
mod setup;
mod warm;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use testfleet::proto::{self, AgentMessage, ErrorType};
use tokio::sync::{mpsc, Mutex};

use crate::recovery;
use crate::uploader::Uploader;
use layout::Attempt;

pub use layout::workdir_ok;
pub use process::reap_orphans;
pub use warm::warm;

/// Carries a reason when the orchestrator wants the attempt stopped.
type Cancel = tokio::sync::watch::Receiver<Option<String>>;

/// What every attempt on this agent shares.
pub struct Context {
    pub agent_id: String,
    pub host: String,
    pub workdir: PathBuf,
    pub outbox: mpsc::Sender<AgentMessage>,
    pub uploader: Uploader,
    /// Resident pytest runners of split tasks, idle between batches.
    pub runners: crate::split::resident::Pool,
    setups: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
}

impl Context {
    pub fn new(
        agent_id: String,
        host: String,
        workdir: PathBuf,
        outbox: mpsc::Sender<AgentMessage>,
        uploader: Uploader,
    ) -> Self {
        Context {
            agent_id,
            host,
            workdir,
            outbox,
            uploader,
            runners: Default::default(),
            setups: Mutex::new(HashMap::new()),
        }
    }
}

/// Runs the attempt to its end and reports it.
pub async fn run(ctx: Arc<Context>, a: proto::TaskAssignment, mut cancel: Cancel) {
    // A split task's attempt runs the runner's invocation made for it here.
    let (a, resident) = match crate::split::prepare(&ctx.workdir, a.clone()).await {
        Ok(prepared) => prepared,
        Err(e) => {
            let why = format!("cannot lay out the split task's files: {e:#}");
            return report::report_refused(&ctx, &a, why).await;
        }
    };
    let attempt = match Attempt::new(&ctx.workdir, a.clone()) {
        Ok(attempt) => attempt,
        Err(e) => return report::report_refused(&ctx, &a, format!("{e:#}")).await,
    };
    tracing::info!(
        task_id = attempt.task_id,
        attempt_id = attempt.a.attempt_id,
        "attempt starting"
    );
    // The orchestrator's task span is the parent, across processes.
    let parent = testfleet::telemetry::extract(&attempt.a.trace_context);
    let mut span = testfleet::telemetry::tracer().start_with_context("execute", &parent);
    span.set_attribute(KeyValue::new("task.id", attempt.task_id.clone()));
    span.set_attribute(KeyValue::new("attempt.id", attempt.a.attempt_id.clone()));
    span.set_attribute(KeyValue::new("agent.id", ctx.agent_id.clone()));
    let cx = parent.with_span(span);
    let tail = crate::split::is_batch(&attempt.a).then(|| {
        let p = crate::split::paths(&ctx.workdir, &attempt.a.attempt_id);
        crate::split::tail(
            ctx.outbox.clone(),
            ctx.agent_id.clone(),
            attempt.task_id.clone(),
            attempt.a.attempt_id.clone(),
            p.results,
        )
    });
    execute_attempt(&ctx, &attempt, resident, &mut cancel, &cx).await;
    if let Some(tail) = tail {
        tail.abort();
    }
    cx.span().end();
}

/// A child span of the attempt's `execute` span.
fn child(cx: &OtelContext, name: &'static str) -> OtelContext {
    let span = testfleet::telemetry::tracer().start_with_context(name, cx);
    cx.with_span(span)
}

/// What level-1 recovery changes for a rerun.
#[derive(Debug, Clone)]
struct Tweaks {
    timeout_factor: f64,
    /// Sets TESTFLEET_REDUCED=1: run with the task's smaller data set.
    reduced: bool,
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            timeout_factor: 1.0,
            reduced: false,
        }
    }
}

async fn execute_attempt(
    ctx: &Context,
    at: &Attempt,
    resident: Option<crate::split::Resident>,
    cancel: &mut Cancel,
    cx: &OtelContext,
) {
    if let Err(e) = at.create_dirs().await {
        let msg = format!("cannot create {}: {e}", at.artifacts.display());
        let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
            ErrorType::PermissionError
        } else {
            ErrorType::ResourceExhaustion
        };
        return report::report_failure(ctx, at, kind, msg, None).await;
    }
    let setup_cx = child(cx, "setup");
    let set_up = setup::setup(ctx, at, false).await;
    setup_cx.span().end();
    if let Err((kind, msg)) = set_up {
        return report::report_failure(ctx, at, kind, msg, None).await;
    }
    let mut level1 = recovery::Level1::default();
    let mut tweaks = Tweaks::default();
    loop {
        let run_cx = child(cx, "run");
        let in_resident = match &resident {
            Some(r) => batch::run(ctx, at, cancel, &tweaks, &run_cx, r).await,
            None => Ok(None),
        };
        let ran = match in_resident {
            Ok(Some(o)) => Ok(o),
            Ok(None) => watch::run_command(ctx, at, cancel, &tweaks, &run_cx).await,
            Err(e) => Err(e),
        };
        run_cx.span().end();
        let outcome = match ran {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("could not run the command: {e:#}");
                return report::report_failure(ctx, at, ErrorType::SystemError, msg, None).await;
            }
        };
        if let Some(reason) = &outcome.cancelled {
            return report::report_cancelled(ctx, at, reason).await;
        }
        let parse_cx = child(cx, "parse");
        let mut judged = results::judge(at, &outcome).await;
        parse_cx.span().end();
        level1.settle_last(judged.success);
        // A batch's failed tests are the orchestrator's to rerun, alone.
        let step = if judged.success || crate::split::is_batch(&at.a) {
            None
        } else {
            level1.next(judged.classified.error_type)
        };
        let Some(step) = step else {
            return report::report(ctx, at, &outcome, judged, level1.attempts, cx).await;
        };
        tracing::info!(task_id = at.task_id, action = step.action(), error = %judged.classified.message, "level-1 recovery");
        level1.record(step, judged.classified.error_type);
        cx.span().add_event(
            "recovery",
            vec![
                KeyValue::new("action", step.action()),
                KeyValue::new("error", judged.classified.message.clone()),
            ],
        );
        at.keep_output_log(level1.attempts.len()).await;
        if let Err(msg) = recover(ctx, at, step, &mut tweaks, &level1, cancel).await {
            level1.settle_last(false);
            judged.classified.message = format!(
                "{}; reinstalling failed too: {msg}",
                judged.classified.message
            );
            return report::report(ctx, at, &outcome, judged, level1.attempts, cx).await;
        }
    }
}

/// Takes a level-1 step before the rerun; an error ends the attempt.
async fn recover(
    ctx: &Context,
    at: &Attempt,
    step: recovery::Step,
    tweaks: &mut Tweaks,
    level1: &recovery::Level1,
    cancel: &mut Cancel,
) -> Result<(), String> {
    match step {
        recovery::Step::ReinstallDependencies => {
            setup::setup(ctx, at, true).await.map_err(|(_, msg)| msg)?;
        }
        recovery::Step::RestorePermissions => {
            let dirs = [at.workdir.clone(), at.dir.clone()];
            // A walk of the whole workdir: on the blocking pool.
            let _ = tokio::task::spawn_blocking(move || {
                for dir in &dirs {
                    if let Err(e) = recovery::restore_permissions(dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not restore permissions");
                    }
                }
            })
            .await;
        }
        recovery::Step::ReduceDataset => tweaks.reduced = true,
        recovery::Step::ExtendTimeout => tweaks.timeout_factor = 1.5,
        recovery::Step::RetryWithBackoff => {
            let wait = level1.backoff();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.changed() => {}
            }
        }
    }
    Ok(())
}

//! A pytest batch run by this agent's resident runner for its task
//! (`crate::split::resident`), watched as `watch` watches a process of its
//! own: the runner's output goes to the batch's log, its group is sampled
//! and limited, the timeout and a cancel end it. A runner that ends the
//! batch well goes back to the pool for the next; one that dies under a
//! test names it (`Outcome::runner_gone`) and is not used again.
//!
//! The task's collecting attempt is a runner too: it collects, writes the
//! ids, says "ready", and goes to the pool idle, so this agent's first
//! batch pays no second collection.

use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context as OtelContext, KeyValue};
use testfleet::proto::TaskStatus;
use testfleet::time::now_millis;

use super::layout::{task_env, Attempt};
use super::watch::{disk_mb, push_tail, send_progress, Outcome, OutputLog, Probe};
use super::{Cancel, Context, Tweaks};
use crate::sampler::Usage;
use crate::split::resident::{self, Runner, Said};
use crate::split::Resident;

/// How often usage is sampled and progress sent.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How long a runner whose socket closed has to exit before it is killed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Runs the batch in the task's resident runner, started if there is none
/// idle. `None`: no runner could be started here (it ended before it was
/// ready); the caller runs the batch in a process of its own, and so will
/// every later batch of the task.
pub(super) async fn run(
    ctx: &Context,
    at: &Attempt,
    cancel: &mut Cancel,
    tweaks: &Tweaks,
    cx: &OtelContext,
    r: &Resident,
) -> anyhow::Result<Option<Outcome>> {
    if ctx.runners.refused(&r.key) {
        return Ok(None);
    }
    let (idle, mut stale) = ctx.runners.take(&r.key);
    // A collection is made fresh: an idle runner would not write the ids.
    let idle = match idle {
        Some(runner) if r.collecting => {
            stale.push(runner);
            None
        }
        idle => idle,
    };
    if !stale.is_empty() {
        tokio::spawn(resident::quit_all(stale));
    }
    let mut runner = match idle {
        Some(runner) => runner,
        None => {
            let env = task_env(ctx, at)
                .into_iter()
                .filter(|(k, _)| k != "TESTFLEET_PYTEST_TESTS" && k != "TESTFLEET_PYTEST_RESULTS")
                .collect();
            let exec = at.execution();
            let command = at.fill_command(&r.command);
            Runner::start(&command, &exec.working_directory, env, &at.pgid_file())?
        }
    };
    // Started by a warm hint and not ready yet: if it never is, that says
    // little about a runner started now (its setup may have been running).
    let warm_and_unready = runner.warmed && !runner.ready;
    cx.span()
        .set_attribute(KeyValue::new("runner.resident_pid", runner.pid as i64));
    let details = at.a.task_details.clone().unwrap_or_default();
    let timeout =
        Duration::from_secs(details.timeout_seconds.max(1)).mul_f64(tweaks.timeout_factor);
    let memory_limit = details.resources.as_ref().map_or(0, |r| r.memory_mb);
    let paths = crate::split::paths(&ctx.workdir, &at.a.attempt_id);
    let log = OutputLog::create(at.output_log()).await?;
    let probe = Probe::new(runner.pgid, at.dir.clone());
    let mut o = Outcome::default();
    let mut usage = Usage::default();
    let mut disk: u64;
    let mut asked = false;
    let mut collect_errors = 0;
    if runner.ready && !r.collecting {
        runner
            .control
            .run(&paths.tests, &paths.results, &at.a.attempt_id)
            .await?;
        asked = true;
    }
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut last_progress = Instant::now() - SAMPLE_EVERY;
    // How the batch ended: Some(true) done, Some(false) the runner is gone.
    let ended_well = loop {
        tokio::select! {
            said = runner.control.next() => match said {
                Said::Ready { tests, errors, pid } => {
                    tracing::info!(task_id = at.task_id, tests, errors, pid, "resident runner ready");
                    runner.ready = true;
                    if r.collecting {
                        collect_errors = errors;
                        break true;
                    }
                    if !asked {
                        runner.control.run(&paths.tests, &paths.results, &at.a.attempt_id).await?;
                        asked = true;
                    }
                }
                Said::Done => break true,
                Said::Gone => break false,
            },
            Some(line) = runner.lines.recv() => {
                log.write(line.clone()).await;
                push_tail(&mut o.tail, line);
            }
            _ = tick.tick() => {
                (usage, disk) = probe.measure().await;
                o.peak.memory_mb = o.peak.memory_mb.max(usage.memory_mb);
                o.peak.cpu_percent = o.peak.cpu_percent.max(usage.cpu_percent);
                if memory_limit > 0 && usage.memory_mb > memory_limit {
                    tracing::warn!(task_id = at.task_id, used = usage.memory_mb, limit = memory_limit, "memory limit exceeded: killing the resident runner");
                    o.memory_exceeded = true;
                    runner.kill();
                }
                if last_progress.elapsed() >= SAMPLE_EVERY {
                    send_progress(ctx, at, &o.observed, usage, disk, TaskStatus::Running).await;
                    last_progress = Instant::now();
                }
            }
            _ = &mut deadline, if !o.timed_out => {
                tracing::warn!(task_id = at.task_id, timeout_s = timeout.as_secs(), "timeout: killing the resident runner");
                o.timed_out = true;
                runner.kill();
            }
            changed = cancel.changed(), if o.cancelled.is_none() => {
                let reason = if changed.is_ok() { cancel.borrow().clone() } else { None }
                    .unwrap_or_else(|| "the agent is shutting down".into());
                tracing::info!(task_id = at.task_id, reason, "cancel: killing the resident runner");
                o.cancelled = Some(reason);
                runner.kill();
            }
        }
    };
    if ended_well {
        // What the runner printed up to "done" belongs to this batch.
        while let Ok(line) = runner.lines.try_recv() {
            log.write(line.clone()).await;
            push_tail(&mut o.tail, line);
        }
    }
    if ended_well && r.collecting {
        // The ids are written (`split::finish` reads them); a runner whose
        // collection had errors would find tests missing, so it ends.
        o.exit_code = Some(if collect_errors == 0 { 0 } else { 2 });
        if collect_errors == 0 {
            ctx.runners.put(r.key.clone(), runner);
        } else {
            // pytest prints what went wrong as its session ends: in the log.
            runner.control.ask_quit().await;
            let until = tokio::time::Instant::now() + EXIT_WAIT;
            while let Ok(Some(line)) = tokio::time::timeout_at(until, runner.lines.recv()).await {
                log.write(line.clone()).await;
                push_tail(&mut o.tail, line);
            }
        }
    } else if ended_well {
        let results = paths.results.clone();
        let read = tokio::task::spawn_blocking(move || crate::split::read_results(&results))
            .await
            .unwrap_or_default();
        let failed = read
            .cases
            .iter()
            .any(|c| testfleet_core::results::TestOutcome::parse(&c.outcome).is_failure());
        o.exit_code = Some(i32::from(failed));
        ctx.runners.put(r.key.clone(), runner);
    } else if warm_and_unready && !runner.ready && o.cancelled.is_none() && !o.timed_out {
        runner.kill();
        tracing::warn!(
            task_id = at.task_id,
            "the warmed runner ended before it was ready; this batch runs in a process of its own"
        );
        log.finish().await;
        let kept = at.task_file("_output.resident.log");
        let _ = tokio::fs::rename(at.output_log(), kept).await;
        return Ok(None);
    } else if !runner.ready && o.cancelled.is_none() && !o.timed_out && !o.memory_exceeded {
        // It never got ready: it cannot run here (a wrapper closed fd 3,
        // an old pytest, a crash at import). A process per batch will say
        // why, with the real error in its log.
        runner.kill();
        let status = tokio::time::timeout(EXIT_WAIT, runner.child.wait()).await;
        tracing::warn!(task_id = at.task_id, status = ?status, "the resident runner ended before it was ready; running batches one process each");
        ctx.runners.refuse(r.key.clone());
        log.finish().await;
        let kept = at.task_file("_output.resident.log");
        let _ = tokio::fs::rename(at.output_log(), kept).await;
        return Ok(None);
    } else {
        let status = match tokio::time::timeout(EXIT_WAIT, runner.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                runner.kill();
                runner.child.wait().await.ok()
            }
        };
        // Its last words, for the log and the classification.
        let drain_until = tokio::time::Instant::now() + EXIT_WAIT;
        while let Ok(Some(line)) = tokio::time::timeout_at(drain_until, runner.lines.recv()).await {
            log.write(line.clone()).await;
            push_tail(&mut o.tail, line);
        }
        if let Some(status) = status {
            (o.exit_code, o.signal) = super::process::exit_of(status);
        }
        o.runner_gone = o.cancelled.is_none();
        tracing::info!(
            task_id = at.task_id,
            exit_code = o.exit_code,
            signal = o.signal,
            "the resident runner ended mid-batch"
        );
        drop(runner);
    }
    o.end_ms = now_millis();
    log.finish().await;
    disk = disk_mb(&at.dir).await;
    send_progress(ctx, at, &o.observed, usage, disk, TaskStatus::Parsing).await;
    Ok(Some(o))
}

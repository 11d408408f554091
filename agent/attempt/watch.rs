//! One run of the attempt's command, watched until it ends: its output
//! logged, parsed for live progress and kept for classification; its group
//! sampled for memory and CPU; the timeout, the memory limit and a cancel
//! each ending the group.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context as OtelContext, KeyValue};
use testfleet::proto::{self, agent_message, AgentMessage, TaskStatus};
use testfleet::time::{now_millis, now_timestamp, to_timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::layout::Attempt;
use super::{process, Cancel, Context, Tweaks};
use crate::limits;
use crate::parsers::progress;
use crate::sampler::{self, GroupSampler, Usage};

/// How often usage is sampled and progress sent while nothing else happens.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The least time between two progress messages that output lines trigger.
const LINE_PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Output lines kept for classification.
const TAIL_LINES: usize = 200;

/// How one run of the command ended (`default()`: it has not yet).
#[derive(Default)]
pub(super) struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub memory_exceeded: bool,
    pub cancelled: Option<String>,
    pub observed: progress::Observed,
    pub peak: Usage,
    pub tail: VecDeque<String>,
    pub end_ms: u64,
    /// A resident runner's socket closed mid-batch: it died, whatever its
    /// exit says, under the test it was running.
    pub runner_gone: bool,
}

/// What ends the run from outside the command.
struct Limits {
    timeout: Duration,
    grace: Duration,
    memory_mb: u64,
}

/// Runs the attempt's command once and watches it to its end.
pub(super) async fn run_command(
    ctx: &Context,
    at: &Attempt,
    cancel: &mut Cancel,
    tweaks: &Tweaks,
    cx: &OtelContext,
) -> anyhow::Result<Outcome> {
    let details = at.a.task_details.clone().unwrap_or_default();
    let exec = at.execution();
    let command = at.fill_command(&exec.command);
    let limits = Limits {
        timeout: Duration::from_secs(details.timeout_seconds.max(1)).mul_f64(tweaks.timeout_factor),
        grace: Duration::from_secs(exec.grace_period_seconds),
        memory_mb: details.resources.as_ref().map_or(0, |r| r.memory_mb),
    };
    let process::Group {
        mut child,
        pgid,
        mut lines,
    } = process::spawn(ctx, at, &command, tweaks.reduced).await?;
    let mut w = Watcher {
        ctx,
        at,
        cx,
        kind: progress::Kind::parse(&exec.progress_parser),
        pgid,
        log: OutputLog::create(at.output_log()).await?,
        probe: Probe::new(pgid, at.dir.clone()),
        o: Outcome::default(),
        usage: Usage::default(),
        disk_mb: disk_mb(&at.dir).await,
        killer: None,
        last_progress: Instant::now() - SAMPLE_EVERY,
    };
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    w.send(TaskStatus::Running).await;

    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            Some(line) = lines.recv() => w.line(line).await,
            _ = tick.tick() => w.tick(limits.memory_mb).await,
            _ = &mut deadline, if w.killer.is_none() => w.time_out(&limits),
            changed = cancel.changed(), if w.o.cancelled.is_none() => {
                let reason = if changed.is_ok() { cancel.borrow().clone() } else { None }
                    .unwrap_or_else(|| "the agent is shutting down".into());
                w.cancel(reason, limits.grace);
            }
        }
    };
    if let Some(k) = w.killer.take() {
        k.abort();
    }
    process::end_group(at, pgid).await;
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(line)) = tokio::time::timeout_at(drain_until, lines.recv()).await {
        w.log.write(line.clone()).await;
        progress::feed(w.kind, &mut w.o.observed, &line);
        push_tail(&mut w.o.tail, line);
    }
    (w.o.exit_code, w.o.signal) = process::exit_of(status);
    w.o.end_ms = now_millis();
    // Every line on disk before anything measures or reads the attempt's files.
    w.log.finish().await;
    let disk = disk_mb(&at.dir).await;
    // The last word on progress, however fast the run was.
    let parsing = TaskStatus::Parsing;
    send_progress(ctx, at, &w.o.observed, w.usage, disk, parsing).await;
    tracing::info!(
        task_id = at.task_id,
        exit_code = w.o.exit_code,
        signal = w.o.signal,
        timed_out = w.o.timed_out,
        "command ended"
    );
    Ok(w.o)
}

/// The state of a run while its command runs.
struct Watcher<'a> {
    ctx: &'a Context,
    at: &'a Attempt,
    cx: &'a OtelContext,
    kind: progress::Kind,
    pgid: i32,
    log: OutputLog,
    probe: Probe,
    o: Outcome,
    usage: Usage,
    /// As of the last sample: walking the attempt's directory for every
    /// progress message cost a directory walk per output line.
    disk_mb: u64,
    killer: Option<JoinHandle<()>>,
    last_progress: Instant,
}

impl Watcher<'_> {
    async fn line(&mut self, line: String) {
        self.log.write(line.clone()).await;
        let changed = progress::feed(self.kind, &mut self.o.observed, &line);
        push_tail(&mut self.o.tail, line);
        if changed && self.last_progress.elapsed() >= LINE_PROGRESS_EVERY {
            self.cx.span().add_event(
                "progress",
                vec![
                    KeyValue::new("tests_completed", self.o.observed.completed as i64),
                    KeyValue::new("current_test", self.o.observed.current_test.clone()),
                ],
            );
            self.send(TaskStatus::Running).await;
            self.last_progress = Instant::now();
        }
    }

    async fn tick(&mut self, memory_limit: u64) {
        (self.usage, self.disk_mb) = self.probe.measure().await;
        let usage = self.usage;
        self.o.peak.memory_mb = self.o.peak.memory_mb.max(usage.memory_mb);
        self.o.peak.cpu_percent = self.o.peak.cpu_percent.max(usage.cpu_percent);
        if memory_limit > 0 && usage.memory_mb > memory_limit && self.killer.is_none() {
            tracing::warn!(
                task_id = self.at.task_id,
                used = usage.memory_mb,
                limit = memory_limit,
                "memory limit exceeded"
            );
            self.o.memory_exceeded = true;
            self.killer = Some(process::terminate_group(self.pgid, Duration::ZERO));
        }
        if self.last_progress.elapsed() >= SAMPLE_EVERY {
            self.send(TaskStatus::Running).await;
            self.last_progress = Instant::now();
        }
    }

    fn time_out(&mut self, limits: &Limits) {
        tracing::warn!(
            task_id = self.at.task_id,
            timeout_s = limits.timeout.as_secs(),
            "timeout: terminating the process group"
        );
        self.o.timed_out = true;
        self.killer = Some(process::terminate_group(self.pgid, limits.grace));
    }

    fn cancel(&mut self, reason: String, grace: Duration) {
        tracing::info!(
            task_id = self.at.task_id,
            reason,
            "cancel: terminating the process group"
        );
        self.o.cancelled = Some(reason);
        if let Some(k) = self.killer.take() {
            k.abort();
        }
        let grace = Duration::from_secs(2).min(grace.max(Duration::from_millis(100)));
        self.killer = Some(process::terminate_group(self.pgid, grace));
    }

    async fn send(&self, status: TaskStatus) {
        send_progress(
            self.ctx,
            self.at,
            &self.o.observed,
            self.usage,
            self.disk_mb,
            status,
        )
        .await;
    }
}

pub(super) fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// The attempt's output log, written on the blocking pool: a file write per
/// output line on the runtime's threads stalled every other attempt, the
/// heartbeats and the stream whenever the disk was slow.
pub(super) struct OutputLog {
    lines: mpsc::Sender<String>,
    writer: JoinHandle<()>,
}

impl OutputLog {
    pub(super) async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::fs::File::create(path).await?.into_std().await;
        let (lines, mut rx) = mpsc::channel::<String>(1024);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(line) = rx.blocking_recv() {
                let _ = writeln!(out, "{line}");
                // Flushed whenever nothing more is queued, so the file keeps
                // up with the output as a line-by-line write did.
                if rx.is_empty() {
                    let _ = out.flush();
                }
            }
            let _ = out.flush();
        });
        Ok(OutputLog { lines, writer })
    }

    pub(super) async fn write(&self, line: String) {
        let _ = self.lines.send(line).await;
    }

    /// Waits until every line sent is in the file.
    pub(super) async fn finish(self) {
        drop(self.lines);
        let _ = self.writer.await;
    }
}

/// The group's usage and the attempt's disk use, measured on the blocking
/// pool: the first reads every process's /proc entry, the second walks the
/// attempt's directory, and both grow with what the host and the task hold.
pub(super) struct Probe {
    sampler: Arc<Mutex<GroupSampler>>,
    dir: PathBuf,
}

impl Probe {
    pub(super) fn new(pgid: i32, dir: PathBuf) -> Self {
        Probe {
            sampler: Arc::new(Mutex::new(GroupSampler::new(pgid))),
            dir,
        }
    }

    pub(super) async fn measure(&self) -> (Usage, u64) {
        let (sampler, dir) = (self.sampler.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            let usage = sampler.lock().map(|mut s| s.sample()).unwrap_or_default();
            (usage, sampler::dir_size_mb(&dir))
        })
        .await
        .unwrap_or_default()
    }
}

/// MB under `dir`, walked on the blocking pool.
pub(super) async fn disk_mb(dir: &Path) -> u64 {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || sampler::dir_size_mb(&dir))
        .await
        .unwrap_or(0)
}

pub(super) async fn send_progress(
    ctx: &Context,
    at: &Attempt,
    o: &progress::Observed,
    u: Usage,
    disk_mb: u64,
    status: TaskStatus,
) {
    let pct = o.percentage();
    let elapsed_ms = at.started.elapsed().as_millis() as u64;
    let estimated =
        (pct > 0.0).then(|| to_timestamp(at.start_ms + (elapsed_ms as f64 * 100.0 / pct) as u64));
    let update = proto::ProgressUpdate {
        message_id: uuid::Uuid::new_v4().to_string(),
        timestamp: Some(now_timestamp()),
        agent_id: ctx.agent_id.clone(),
        task_id: at.task_id.clone(),
        attempt_id: at.a.attempt_id.clone(),
        progress: Some(proto::Progress {
            percentage: pct,
            current_test: limits::text(&o.current_test, limits::NAME_BYTES),
            tests_completed: o.completed,
            tests_remaining: o.remaining(),
            estimated_completion: estimated,
        }),
        resources: Some(proto::ResourceUsage {
            memory_usage_mb: u.memory_mb,
            cpu_utilization: (u.cpu_percent * 10.0).round() / 10.0,
            disk_usage_mb: disk_mb,
        }),
        status: status as i32,
        test_cases: Vec::new(),
    };
    // Progress is best effort: a full outbox drops it rather than stall the task.
    let _ = ctx.outbox.try_send(AgentMessage {
        body: Some(agent_message::Body::Progress(update)),
    });
}

//! The one owner of the scheduler. Every edge (agent streams, control calls,
//! HTTP, timers) sends it inputs over a channel; it reads the clock, feeds
//! the scheduler and carries out the actions it returns. No locks: queries
//! run as closures on this task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use testfleet::config::defaults;
use testfleet::proto::{self, orchestrator_message, OrchestratorMessage};
use testfleet::time::now_millis;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::observe::metrics::Metrics;
use crate::observe::refusals::{LogRate, Noted, StreamRefusals, Untold};
use crate::observe::traces::Traces;
use crate::observe::watchers::{Kind, Watch, Watchers};
use crate::output::report::{self, ReportJson};
use crate::pool::PoolEdge;
use crate::wire;
use testfleet_core::results::Completion;
use testfleet_core::{Action, Event, Notice, Reply, Scheduler, SuiteState};

pub type AgentSender = mpsc::Sender<Result<OrchestratorMessage, Status>>;
type Query = Box<dyn FnOnce(&Scheduler) + Send>;

// Events are moved, not boxed: a heap allocation per event would cost more on
// the scheduler's hot path than copying the larger variant through the channel.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Event(Event),
    /// An event that is a command: the scheduler's answer goes to `reply`.
    Command {
        event: Event,
        reply: oneshot::Sender<Reply>,
    },
    /// A new stream: where to send this agent's assignments from now on.
    Attach {
        agent_id: String,
        conn: u64,
        tx: AgentSender,
    },
    Query(Query),
    /// The current suite's report, built only if the scheduler has changed
    /// since the last one.
    Report(oneshot::Sender<Option<Arc<ReportJson>>>),
}

#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Input>,
    watchers: Watchers,
    pub report_dir: ReportDir,
    pub metrics: Metrics,
    /// Starts and stops the agents the scheduler's pool decides on.
    pub pool: PoolEdge,
}

/// Where finished suites' reports go.
#[derive(Clone, Debug)]
pub enum ReportDir {
    /// `<dir>/<suite_id>/report.json` (the daemon).
    PerSuite(PathBuf),
    /// `<dir>/report.json` (an embedded run).
    Flat(PathBuf),
}

impl ReportDir {
    pub fn for_suite(&self, suite_id: &str) -> PathBuf {
        match self {
            ReportDir::PerSuite(d) => d.join(suite_id),
            ReportDir::Flat(d) => d.clone(),
        }
    }
}

impl Engine {
    pub fn start(
        orchestrator_id: String,
        report_dir: ReportDir,
        tick: Duration,
        pool: crate::pool::Context,
    ) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let watchers = Watchers::new(4096);
        let metrics = Metrics::new();
        let to_engine = tx.clone();
        let pool = PoolEdge::new(pool, move |e| {
            let _ = to_engine.send(Input::Event(e));
        });
        let engine = Engine {
            pool: pool.clone(),
            tx,
            metrics: metrics.clone(),
            watchers: watchers.clone(),
            report_dir: report_dir.clone(),
        };
        let ticker = engine.tx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if ticker.send(Input::Event(Event::Tick)).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(run(
            Scheduler::new(orchestrator_id),
            rx,
            watchers,
            report_dir,
            metrics,
            pool,
        ));
        engine
    }

    pub fn send(&self, event: Event) {
        // The loop only stops when the process does.
        let _ = self.tx.send(Input::Event(event));
    }

    /// Sends a command and waits for the scheduler's answer: the command
    /// was carried out, or refused with the reason, never dropped unsaid.
    pub async fn command(&self, event: Event) -> Result<Reply, Status> {
        debug_assert!(event.is_command(), "not a command: {event:?}");
        self.ask(|reply| Input::Command { event, reply }).await
    }

    pub fn attach(&self, agent_id: String, conn: u64, tx: AgentSender) {
        let _ = self.tx.send(Input::Attach { agent_id, conn, tx });
    }

    /// Runs `f` on the scheduler's task and returns what it computed.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Scheduler) -> R + Send + 'static,
    ) -> Result<R, Status> {
        self.ask(|reply| {
            Input::Query(Box::new(move |s| {
                let _ = reply.send(f(s));
            }))
        })
        .await
    }

    /// The current (or last) suite's report; None before any suite has run.
    pub async fn report(&self) -> Result<Option<Arc<ReportJson>>, Status> {
        self.ask(Input::Report).await
    }

    /// Sends the input `ask` makes around a reply channel, and waits for
    /// the reply.
    async fn ask<R>(&self, ask: impl FnOnce(oneshot::Sender<R>) -> Input) -> Result<R, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ask(reply))
            .map_err(|_| Status::unavailable("the orchestrator is shutting down"))?;
        rx.await
            .map_err(|_| Status::internal("the scheduler dropped a query"))
    }

    /// The suite's events of `kinds` (all when empty). Events are shared,
    /// not copied, among watchers, and built only when one wants their kind.
    pub fn subscribe(&self, kinds: &[Kind]) -> Watch {
        self.watchers.subscribe(kinds)
    }
}

struct Streams {
    by_agent: HashMap<String, (u64, AgentSender)>,
    /// Each agent's warnings about its current stream, told at a bounded
    /// rate: from the stream's attach until the agent's side ends, so results
    /// refused after the stream was closed stay quiet too.
    logs: HashMap<String, StreamLogs>,
}

struct StreamLogs {
    conn: u64,
    refused: StreamRefusals,
    unqueued: LogRate,
}

impl Streams {
    fn send(&mut self, agent_id: &str, body: orchestrator_message::Body) {
        if let Some((_, tx)) = self.by_agent.get(agent_id) {
            // A full or closed stream means the agent is going away; the
            // stream's end (or its silence) tells the scheduler.
            if tx
                .try_send(Ok(OrchestratorMessage { body: Some(body) }))
                .is_err()
            {
                let noted = self
                    .logs
                    .get_mut(agent_id)
                    .map(|l| l.unqueued.note(Instant::now()));
                if let Some(untold) = noted.and_then(|n| n.untold) {
                    tell_unqueued(agent_id, untold);
                }
                if noted.is_none_or(|n| n.tell) {
                    tracing::warn!(agent_id, "could not queue a message to the agent");
                }
            }
        }
    }
    fn close(&mut self, agent_id: &str, conn: u64, status: Status) {
        if self.by_agent.get(agent_id).is_some_and(|(c, _)| *c == conn) {
            if let Some((_, tx)) = self.by_agent.remove(agent_id) {
                // A full queue loses the reason, not the close: this was the
                // stream's last sender, so its replies end once drained.
                let _ = tx.try_send(Err(status));
            }
        }
    }
    fn attach(&mut self, agent_id: String, conn: u64, tx: AgentSender) {
        self.forget(&agent_id, None);
        let logs = StreamLogs {
            conn,
            refused: StreamRefusals::default(),
            unqueued: LogRate::default(),
        };
        self.logs.insert(agent_id.clone(), logs);
        self.by_agent.insert(agent_id, (conn, tx));
    }
    /// Tells what is left untold about the agent's stream (`conn`, or
    /// whichever it has) and lets go of its warnings.
    fn forget(&mut self, agent_id: &str, conn: Option<u64>) {
        let Some(logs) = self.logs.get(agent_id) else {
            return;
        };
        if conn.is_some_and(|c| c != logs.conn) {
            return;
        }
        let Some(mut logs) = self.logs.remove(agent_id) else {
            return;
        };
        let now = Instant::now();
        if let Some(untold) = logs.refused.log.flush(now) {
            tell_refused(agent_id, untold);
        }
        if let Some(untold) = logs.unqueued.flush(now) {
            tell_unqueued(agent_id, untold);
        }
    }
    /// Notes a refused result from the agent: whether to tell it, and the
    /// stream to close (with why) when the agent has sent too many.
    fn refused(&mut self, agent_id: &str) -> (Noted, Option<(u64, String)>) {
        let Some(logs) = self.logs.get_mut(agent_id) else {
            let tell_all = Noted {
                tell: true,
                untold: None,
            };
            return (tell_all, None);
        };
        let (noted, give_up) = logs.refused.note(Instant::now());
        let close = give_up.then(|| (logs.conn, logs.refused.reason("results")));
        (noted, close)
    }
}

fn tell_refused(agent_id: &str, untold: Untold) {
    crate::observe::refusals::warn_untold(agent_id, "refused {} more results from", untold);
}

fn tell_unqueued(agent_id: &str, untold: Untold) {
    crate::observe::refusals::warn_untold(agent_id, "could not queue {} more messages to", untold);
}

async fn run(
    mut scheduler: Scheduler,
    mut rx: mpsc::UnboundedReceiver<Input>,
    watchers: Watchers,
    report_dir: ReportDir,
    metrics: Metrics,
    pool: PoolEdge,
) {
    let mut streams = Streams {
        by_agent: HashMap::new(),
        logs: HashMap::new(),
    };
    let mut last_refresh = 0;
    let mut traces = Traces::default();
    let mut reports = Reports::default();
    while let Some(input) = rx.recv().await {
        let (event, mut reply) = match input {
            Input::Event(Event::AgentDisconnected { agent_id, conn }) => {
                // The agent's side is gone: let go of the replies too, so the
                // stream ends whatever the scheduler decides.
                streams.close(
                    &agent_id,
                    conn,
                    Status::unavailable("the agent's stream ended"),
                );
                streams.forget(&agent_id, Some(conn));
                (Event::AgentDisconnected { agent_id, conn }, None)
            }
            Input::Event(e) => (e, None),
            Input::Command { event, reply } => (event, Some(reply)),
            Input::Attach { agent_id, conn, tx } => {
                streams.attach(agent_id, conn, tx);
                continue;
            }
            Input::Query(q) => {
                q(&scheduler);
                continue;
            }
            Input::Report(reply) => {
                let _ = reply.send(reports.current(&scheduler));
                continue;
            }
        };
        let now = now_millis();
        traces.before(&event);
        let actions = scheduler.handle(event, now);
        // Debug builds (every test run) check DESIGN.md's invariants after
        // every real event too, not only in the simulation.
        #[cfg(debug_assertions)]
        if let Err(broken) = scheduler.check_invariants() {
            tracing::error!(broken, "scheduler invariant broken");
            panic!("scheduler invariant broken: {broken}");
        }
        for mut action in actions {
            if let Action::Reply(answer) = action {
                // The caller may have given up waiting; the command stands.
                if let Some(reply) = reply.take() {
                    let _ = reply.send(answer);
                }
                continue;
            }
            metrics.observe(&scheduler, &action);
            traces.on_action(&mut action);
            carry_out(
                action,
                &scheduler,
                &mut streams,
                &watchers,
                &report_dir,
                &mut reports,
                &pool,
            );
        }
        traces.after(&scheduler);
        // Gauges follow the current suite's metrics_interval (its default when idle).
        let interval = scheduler
            .suite()
            .map_or(defaults::ms(defaults::METRICS_INTERVAL), |s| {
                s.plan.metrics_interval_ms
            })
            .max(100);
        if now.saturating_sub(last_refresh) >= interval {
            metrics.refresh(&scheduler);
            last_refresh = now;
        }
    }
}

fn carry_out(
    action: Action,
    scheduler: &Scheduler,
    streams: &mut Streams,
    watchers: &Watchers,
    report_dir: &ReportDir,
    reports: &mut Reports,
    pool: &PoolEdge,
) {
    match action {
        Action::ProvisionAgent {
            agent_id,
            size,
            reason,
        } => {
            let plan = scheduler
                .suite()
                .map(|s| s.plan.pool.clone())
                .unwrap_or_default();
            pool.provision(&plan, agent_id, size, &reason);
        }
        Action::StopAgent { agent_id, reason } => pool.stop(agent_id, &reason),
        Action::Assign {
            agent_id,
            assignment,
        } => {
            let Some(suite) = scheduler.suite() else {
                return;
            };
            let route = wire::Route {
                suite_id: &suite.suite_id,
                orchestrator_id: scheduler.orchestrator_id(),
                agent_id: &agent_id,
            };
            let assignment = wire::assignment(&assignment, &suite.plan, &route);
            log_assignment(&assignment);
            watchers.publish(Kind::ASSIGNMENT, || {
                proto::suite_event::Body::Assignment(assignment.clone())
            });
            streams.send(
                &agent_id,
                orchestrator_message::Body::Assignment(assignment),
            );
        }
        Action::Cancel { agent_id, cancel } => {
            tracing::info!(
                agent_id,
                attempt_id = cancel.attempt_id,
                reason = cancel.reason,
                "cancelling attempt"
            );
            streams.send(
                &agent_id,
                orchestrator_message::Body::Cancel(wire::cancel(cancel)),
            );
        }
        Action::RefuseAgent {
            agent_id,
            conn,
            reason,
        } => {
            tracing::warn!(agent_id, reason, "refusing agent");
            streams.close(&agent_id, conn, Status::resource_exhausted(reason));
        }
        Action::DropAgent {
            agent_id,
            conn,
            reason,
        } => {
            tracing::warn!(agent_id, reason, "agent lost");
            streams.close(&agent_id, conn, Status::unavailable(reason));
        }
        Action::Reject {
            agent_id,
            message_id,
            attempt_id,
            rejection,
        } => {
            let code = wire::rejection_code(rejection);
            let (noted, close) = streams.refused(&agent_id);
            if let Some(untold) = noted.untold {
                tell_refused(&agent_id, untold);
            }
            if noted.tell {
                tracing::warn!(agent_id, message_id, attempt_id, code = ?code, reason = rejection.describe(), "refused a result");
            }
            streams.send(
                &agent_id,
                orchestrator_message::Body::Rejection(proto::Rejection {
                    message_id,
                    attempt_id,
                    code: code as i32,
                    message: rejection.describe().into(),
                }),
            );
            // Kept at the edge while the scheduler is reshaped; the
            // scheduler's `rejected_results` counts the same refusals.
            if let Some((conn, why)) = close {
                tracing::warn!(agent_id, conn, why, "closing the agent's stream");
                streams.close(&agent_id, conn, Status::resource_exhausted(why));
            }
        }
        Action::Alert(alert) => {
            if alert.active && alert.severity == "critical" {
                tracing::error!(
                    event = "alert",
                    alert = alert.name,
                    action = alert.action,
                    detail = alert.detail,
                    "alert raised"
                );
            } else if alert.active {
                tracing::warn!(
                    event = "alert",
                    alert = alert.name,
                    action = alert.action,
                    detail = alert.detail,
                    "alert raised"
                );
            } else {
                tracing::info!(event = "alert", alert = alert.name, "alert cleared");
            }
            watchers.publish(Kind::ALERT, || {
                proto::suite_event::Body::Alert(wire::alert(&alert))
            });
        }
        Action::Escalate { webhook, report } => {
            let escalation_id = report.escalation_id.clone();
            tracing::warn!(
                event = "escalation",
                escalation_id,
                task_id = report.task_id,
                issue_type = report.issue_type.as_str(),
                severity = report.severity,
                blocking_tasks = %serde_json::json!(report.blocking_tasks),
                "escalated to a human: resolve with `orchestrator escalations resolve {escalation_id} --action retry|skip|abort`"
            );
            if let Some(url) = webhook {
                // Never on the scheduler's task: a slow or dead webhook must not stall it.
                tokio::spawn(crate::output::webhook::deliver(url, *report));
            }
        }
        Action::Publish(notice) => {
            match &*notice {
                Notice::Completion(c) => log_completion(c),
                Notice::Pool(r) => log_pool(r),
                _ => {}
            }
            watchers.publish(wire::notice_kind(&notice), || wire::notice(&notice));
        }
        // Answered by the loop, before any other action is carried out.
        Action::Reply(_) => {}
        Action::SuiteFinished { suite_id, state } => {
            let dir = report_dir.for_suite(&suite_id);
            let started = std::time::Instant::now();
            match reports.write(scheduler, &dir) {
                Ok(path) => {
                    let write_ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::info!(suite_id, status = state.as_str(), report = %path.display(), write_ms, "suite finished")
                }
                Err(e) => tracing::error!(
                    suite_id,
                    error = format!("{e:#}"),
                    "could not write the report"
                ),
            }
            if state != SuiteState::Completed {
                tracing::warn!(suite_id, status = state.as_str(), "suite did not succeed");
            }
        }
    }
}

/// The last report built, and the scheduler revision it describes.
#[derive(Default)]
struct Reports {
    last: Option<(u64, Arc<ReportJson>)>,
}

impl Reports {
    fn current(&mut self, scheduler: &Scheduler) -> Option<Arc<ReportJson>> {
        if let Some(kept) = self.kept(scheduler) {
            return Some(kept);
        }
        let report = report::build(scheduler)?;
        Some(self.keep(scheduler, report))
    }

    /// Writes the current report into `dir`, building it as it is written
    /// unless it is kept already.
    fn write(&mut self, scheduler: &Scheduler, dir: &Path) -> anyhow::Result<PathBuf> {
        if let Some(kept) = self.kept(scheduler) {
            return report::write(scheduler, &kept, dir);
        }
        let (report, written) =
            report::build_and_write(scheduler, dir).context("a finished suite has a report")?;
        self.keep(scheduler, report);
        written
    }

    fn keep(&mut self, scheduler: &Scheduler, report: ReportJson) -> Arc<ReportJson> {
        let report = Arc::new(report);
        self.last = Some((scheduler.revision(), report.clone()));
        report
    }

    /// The report last built, if the scheduler has not changed since.
    fn kept(&self, scheduler: &Scheduler) -> Option<Arc<ReportJson>> {
        let (at, report) = self.last.as_ref()?;
        if *at != scheduler.revision() {
            return None;
        }
        #[cfg(debug_assertions)]
        assert_eq!(
            report::build(scheduler).as_ref(),
            Some(&**report),
            "the scheduler changed the report without a new revision"
        );
        Some(report.clone())
    }
}

fn log_assignment(a: &proto::TaskAssignment) {
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
fn log_pool(r: &testfleet_core::pool::PoolRecord) {
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

fn log_completion(c: &Completion) {
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

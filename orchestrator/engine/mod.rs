//! The one owner of the scheduler. Every edge (agent streams, control calls,
//! HTTP, timers) sends it inputs over a channel; it reads the clock, feeds
//! the scheduler and carries out the actions it returns. No locks: queries
//! run as closures on this task. With an event log (`crate::journal`),
//! every event is logged before it is handled, and answers wait for it to be
//! durable (`durable`).

mod durable;
mod log_lines;
mod reports;
pub(crate) mod streams;
mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use testfleet::config::defaults;
use testfleet::proto::{self, orchestrator_message, OrchestratorMessage};
use testfleet::time::now_millis;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::journal::durations::Durations;
use crate::journal::{self, Appender, PlanSource, WebhookKey, Written};
use crate::observe::metrics::Metrics;
use crate::observe::traces::Traces;
use crate::observe::watchers::{Kind, Watch, Watchers};
use crate::output::report::{self, ReportJson};
use crate::pool::PoolEdge;
use crate::wire;
use durable::result_ack;
use log_lines::{log_assignment, log_completion, log_pool};
use reports::Reports;
use streams::{tell_refused, Streams};
use testfleet_core::{Action, Event, Notice, Reply, Scheduler, SuiteState};
use webhooks::{send_webhook, webhook_key};

pub type AgentSender = mpsc::Sender<Result<OrchestratorMessage, Status>>;
type Query = Box<dyn FnOnce(&Scheduler) + Send>;

// Events are moved, not boxed: a heap allocation per event would cost more on
// the scheduler's hot path than copying the larger variant through the channel.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Event(Event),
    /// An event that is a command: the scheduler's answer goes to `reply`,
    /// once the event is durable. A submit's plan came from `source`.
    Command {
        event: Event,
        source: PlanSource,
        reply: durable::ReplyTx,
    },
    /// What the event log's writer has made durable.
    Written(Written),
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
    /// The escalation webhook accepted this escalation.
    Delivered(WebhookKey),
}

#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Input>,
    watchers: Watchers,
    pub report_dir: ReportDir,
    pub metrics: Metrics,
    /// Starts and stops the agents the scheduler's pool decides on.
    pub pool: PoolEdge,
    /// Set once the event log cannot be written: why no new work starts.
    halted: Arc<std::sync::OnceLock<String>>,
    /// Split tasks' measured test durations, kept from run to run: read
    /// into a suite's plan when it is submitted, added to when it ends.
    pub durations: Option<Arc<Durations>>,
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

/// The event log the engine appends to, opened and replayed.
pub struct Journal {
    pub opened: journal::Opened,
    pub path: PathBuf,
}

impl Engine {
    /// Starts the loop: on the scheduler rebuilt from `journal` (logging
    /// every event to it from now on), or on a new one, in memory only.
    pub fn start(
        orchestrator_id: String,
        report_dir: ReportDir,
        tick: Duration,
        journal: Option<Journal>,
        pool: crate::pool::Context,
        durations: Option<Arc<Durations>>,
    ) -> anyhow::Result<Engine> {
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
            halted: Default::default(),
            durations: durations.clone(),
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
        let (scheduler, appender, replayed, delivered) = match journal {
            None => (Scheduler::new(orchestrator_id), None, 0, Default::default()),
            Some(Journal { opened, path }) => {
                let told = engine.tx.clone();
                let appender = Appender::start(
                    opened.db,
                    path,
                    opened.next_seq,
                    opened.from_snapshot,
                    move |w| {
                        let _ = told.send(Input::Written(w));
                    },
                )
                .context("starting the event log's writer")?;
                (
                    opened.scheduler,
                    Some(appender),
                    opened.replayed,
                    opened.delivered,
                )
            }
        };
        let looped = Loop {
            scheduler,
            streams: Streams::new(),
            watchers,
            report_dir,
            metrics,
            last_refresh: 0,
            traces: Traces::default(),
            reports: Reports::default(),
            durability: durable::Durability::new(appender, engine.halted.clone()),
            pool,
            delivered,
            to_self: engine.tx.clone(),
            durations,
        };
        tokio::spawn(looped.run(rx, replayed));
        Ok(engine)
    }

    pub fn send(&self, event: Event) {
        // The loop only stops when the process does.
        let _ = self.tx.send(Input::Event(event));
    }

    /// Sends a command and waits for the scheduler's answer: the command
    /// was carried out, or refused with the reason, never dropped unsaid.
    pub async fn command(&self, event: Event) -> Result<Reply, Status> {
        self.submit(event, PlanSource::OwnConfig).await
    }

    /// A command whose suite (if it submits one) was planned from `source`.
    pub async fn submit(&self, event: Event, source: PlanSource) -> Result<Reply, Status> {
        debug_assert!(event.is_command(), "not a command: {event:?}");
        self.ask(|reply| Input::Command {
            event,
            source,
            reply,
        })
        .await?
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

    /// What `status` shows: the suite's tasks, or, once the event log
    /// cannot be written, that no new work starts and why.
    pub async fn status(&self) -> Result<proto::SuiteStatus, Status> {
        let status = self.query(crate::views::status::status).await?;
        Ok(match self.halted.get() {
            Some(why) => crate::views::status::halted(status, why),
            None => status,
        })
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

/// The loop's state: the scheduler and everything that carries out its
/// actions.
struct Loop {
    scheduler: Scheduler,
    streams: Streams,
    watchers: Watchers,
    report_dir: ReportDir,
    metrics: Metrics,
    last_refresh: u64,
    traces: Traces,
    reports: Reports,
    durability: durable::Durability,
    pool: PoolEdge,
    /// Escalations the webhook has accepted (from the log, then live).
    delivered: std::collections::BTreeSet<WebhookKey>,
    /// For what tasks spawned off the loop report back (webhook deliveries).
    to_self: mpsc::UnboundedSender<Input>,
    durations: Option<Arc<Durations>>,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>, replayed: u64) {
        if replayed > 0 {
            self.resume();
        }
        while let Some(input) = rx.recv().await {
            let (event, reply, source) = match input {
                Input::Event(Event::AgentDisconnected { agent_id, conn }) => {
                    // The agent's side is gone: let go of the replies too, so the
                    // stream ends whatever the scheduler decides.
                    self.streams.close(
                        &agent_id,
                        conn,
                        Status::unavailable("the agent's stream ended"),
                    );
                    self.streams.forget(&agent_id, Some(conn));
                    (
                        Event::AgentDisconnected { agent_id, conn },
                        None,
                        PlanSource::OwnConfig,
                    )
                }
                Input::Event(e) => (e, None, PlanSource::OwnConfig),
                Input::Command {
                    event,
                    source,
                    reply,
                } => (event, Some(reply), source),
                Input::Attach { agent_id, conn, tx } => {
                    self.streams.attach(agent_id, conn, tx);
                    continue;
                }
                Input::Query(q) => {
                    q(&self.scheduler);
                    continue;
                }
                Input::Report(reply) => {
                    let _ = reply.send(self.reports.current(&self.scheduler));
                    continue;
                }
                Input::Delivered(key) => {
                    self.durability.log_delivered(&key, now_millis());
                    self.delivered.insert(key);
                    continue;
                }
                Input::Written(Written::Durable(seq)) => {
                    for d in self.durability.durable(seq) {
                        self.release(d);
                    }
                    continue;
                }
                Input::Written(Written::Failed(why)) => {
                    tracing::error!(
                        why,
                        "the event log cannot be written: no new work is started; what is durable is kept ({why})"
                    );
                    self.durability.failed(why);
                    continue;
                }
            };
            self.step(event, reply, &source);
        }
    }

    /// After a replay: the old process's streams are gone; every agent it
    /// counted as connected gets its full agent_timeout to come back; an
    /// open escalation the webhook had not accepted is sent again (same
    /// idempotency key), and a finished suite whose report was not written
    /// gets it now.
    fn resume(&mut self) {
        for event in self.scheduler.restart_events() {
            self.step(event, None, &PlanSource::OwnConfig);
        }
        let undelivered: Vec<_> = self
            .scheduler
            .suite()
            .filter(|_| self.scheduler.is_running())
            .into_iter()
            .flat_map(|s| {
                let url = s.plan().webhook.clone();
                s.escalations()
                    .iter()
                    .filter(|e| e.resolution.is_none())
                    .filter_map(move |e| Some((url.clone()?, e.report.clone())))
            })
            .filter(|(_, r)| !self.delivered.contains(&webhook_key(r)))
            .collect();
        for (url, report) in undelivered {
            tracing::info!(
                escalation_id = report.escalation_id,
                "sending the escalation to the webhook again: it had not accepted it before the restart"
            );
            send_webhook(&self.to_self, url, report);
        }
        if let Some(suite) = self
            .scheduler
            .suite()
            .filter(|_| !self.scheduler.is_running())
        {
            let dir = self.report_dir.for_suite(suite.suite_id());
            if !dir.join(report::REPORT_FILE).exists() {
                if let Err(e) = self.reports.write(&self.scheduler, &dir) {
                    tracing::error!(error = format!("{e:#}"), "could not write the report");
                }
            }
        }
        self.metrics.refresh(&self.scheduler);
    }

    /// Logs `event`, hands it to the scheduler and carries out its actions;
    /// answers wait for the event to be durable.
    fn step(&mut self, event: Event, reply: Option<durable::ReplyTx>, source: &PlanSource) {
        if let Some(why) = &self.durability.halted {
            // Nothing is handled that cannot be logged: results stay with
            // their agents (unacknowledged), commands are told why.
            if let Some(reply) = reply {
                let _ = reply.send(Err(durable::halted_status(why)));
            }
            if let Some((agent_id, ack)) = result_ack(&event) {
                tracing::warn!(
                    agent_id,
                    attempt_id = ack.attempt_id,
                    "a result was not taken: the event log cannot be written; its agent keeps it (unacknowledged) for the restarted orchestrator"
                );
            }
            return;
        }
        let now = now_millis();
        (self.durability).snapshot_at_boundary(&event, &self.scheduler, &self.delivered, now);
        let tick = matches!(event, Event::Tick);
        let revision = self.scheduler.revision();
        let seq = if tick {
            0
        } else {
            self.durability.log(&event, now, source)
        };
        let acked = result_ack(&event);
        self.traces.before(&event);
        let actions = self.scheduler.handle(event, now);
        // A tick is logged only when it changed something (its actions go
        // out below, after it is in the log): an idle orchestrator's log
        // does not grow by four entries a second.
        let seq = if tick && self.scheduler.revision() != revision {
            self.durability.log(&Event::Tick, now, source)
        } else {
            seq
        };
        // Debug builds (every test run) check DESIGN.md's invariants after
        // every real event too, not only in the simulation.
        #[cfg(debug_assertions)]
        if let Err(broken) = self.scheduler.check_invariants() {
            tracing::error!(broken, "scheduler invariant broken");
            panic!("scheduler invariant broken: {broken}");
        }
        let mut reply = reply;
        let mut refused = false;
        for mut action in actions {
            match action {
                Action::Reply(answer) => {
                    // The caller may have given up waiting; the command stands.
                    if let Some(reply) = reply.take() {
                        self.defer(seq, durable::Deferred::Reply(reply, answer));
                    }
                    continue;
                }
                Action::Reject {
                    ref agent_id,
                    ref attempt_id,
                    ..
                } => {
                    refused |= acked
                        .as_ref()
                        .is_some_and(|(a, ack)| a == agent_id && &ack.attempt_id == attempt_id);
                }
                _ => {}
            }
            self.metrics.observe(&self.scheduler, &action);
            self.traces.on_action(&mut action);
            carry_out(action, seq, self);
        }
        if let Some((agent_id, ack)) = acked.filter(|_| !refused) {
            let body = orchestrator_message::Body::ResultAck(ack);
            self.defer(seq, durable::Deferred::ToAgent(agent_id, Box::new(body)));
        }
        self.traces.after(&self.scheduler);
        // Gauges follow the current suite's metrics_interval (its default when idle).
        let interval = self
            .scheduler
            .suite()
            .map_or(defaults::ms(defaults::METRICS_INTERVAL), |s| {
                s.plan().metrics_interval_ms
            })
            .max(100);
        if now.saturating_sub(self.last_refresh) >= interval {
            self.metrics.refresh(&self.scheduler);
            self.last_refresh = now;
        }
    }

    fn defer(&mut self, seq: u64, d: durable::Deferred) {
        if let Some(now) = self.durability.defer(seq, d) {
            self.release(now);
        }
    }

    fn release(&mut self, d: durable::Deferred) {
        match d {
            durable::Deferred::Reply(tx, answer) => {
                let _ = tx.send(Ok(answer));
            }
            durable::Deferred::ToAgent(agent_id, body) => self.streams.send(&agent_id, *body),
        }
    }
}

/// Carries out one action of the event logged as `seq`.
fn carry_out(action: Action, seq: u64, lp: &mut Loop) {
    let Loop {
        scheduler,
        streams,
        watchers,
        report_dir,
        reports,
        durability,
        pool,
        to_self,
        durations,
        ..
    } = lp;
    let scheduler = &*scheduler;
    match action {
        Action::ProvisionAgent {
            agent_id,
            size,
            reason,
        } => {
            let plan = scheduler
                .suite()
                .map(|s| s.plan().pool.clone())
                .unwrap_or_default();
            pool.provision(&plan, agent_id, size, &reason);
        }
        Action::StopAgent { agent_id, reason } => pool.stop(agent_id, &reason),
        Action::Assign {
            agent_id,
            assignment,
        } => {
            let Some(assignment) = wire::assignment_to(scheduler, &agent_id, &assignment) else {
                return;
            };
            log_assignment(&assignment);
            watchers.publish(Kind::ASSIGNMENT, || {
                proto::suite_event::Body::Assignment(assignment.clone())
            });
            streams.send(
                &agent_id,
                orchestrator_message::Body::Assignment(assignment),
            );
        }
        Action::Warm {
            agent_id,
            assignment,
        } => {
            let Some(assignment) = wire::assignment_to(scheduler, &agent_id, &assignment) else {
                return;
            };
            streams.send(
                &agent_id,
                orchestrator_message::Body::Warm(proto::WarmRunner {
                    assignment: Some(assignment),
                }),
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
                tracing::warn!(
                    agent_id,
                    message_id,
                    attempt_id,
                    code = format!("{code:?}"),
                    reason = rejection.describe(),
                    "refused a result"
                );
            }
            // A refusal, like an acknowledgement, is final for the agent:
            // it waits until the event is durable.
            let body = orchestrator_message::Body::Rejection(proto::Rejection {
                message_id,
                attempt_id,
                code: code as i32,
                message: rejection.describe().into(),
            });
            if let Some(durable::Deferred::ToAgent(a, body)) = durability.defer(
                seq,
                durable::Deferred::ToAgent(agent_id.clone(), Box::new(body)),
            ) {
                streams.send(&a, *body);
            }
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
                send_webhook(to_self, url, *report);
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
            if let (Some(d), Some(suite)) = (durations.as_deref(), scheduler.suite()) {
                // Before the report, so that `run` exits with both written.
                let measured = suite.measured_durations();
                if let Err(e) = d.record(suite.suite_name(), &measured) {
                    tracing::warn!(suite_id, error = format!("{e:#}"), file = %d.path().display(), "could not keep the measured test durations; the next run plans without them");
                }
            }
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
                    dir = %dir.display(),
                    "could not write the report; it is kept, served, and written as soon as it can be"
                ),
            }
            if state != SuiteState::Completed {
                tracing::warn!(suite_id, status = state.as_str(), "suite did not succeed");
            }
        }
    }
}

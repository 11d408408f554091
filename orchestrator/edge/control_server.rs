//! The operators' edge: start, watch, inspect and cancel suites.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use testfleet::config::{SuiteConfig, SuitePlan, TaskKind};
use testfleet::proto::control_server::Control;
use testfleet::proto::*;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::journal::PlanSource;
use crate::observe::watchers::{Kind, Watch, EVENT_KINDS};
use crate::output::report;
use crate::views::status;
use crate::wire;
use testfleet_core::{Event, Reply, Resolution};

/// Where a submitted config's tasks run: the directory the client read it
/// from, or (from a client that names none, such as the HTTP API) this
/// server's working directory.
fn submitted_dir(config_dir: &str) -> Result<PathBuf, Status> {
    if config_dir.is_empty() {
        return Ok(std::env::current_dir().unwrap_or_default());
    }
    let dir = PathBuf::from(config_dir);
    if !dir.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "config_dir {config_dir:?} is not an absolute path"
        )));
    }
    Ok(dir)
}

/// The suite the server was started with.
#[derive(Clone)]
pub struct SuiteSource {
    pub path: PathBuf,
    /// Planned once, when the server starts: the config cannot change
    /// under a running server, and planning 20,000 tasks takes tens of ms.
    plan: Arc<testfleet::config::SuitePlan>,
}

impl SuiteSource {
    pub fn new(config: Arc<SuiteConfig>, path: PathBuf) -> Self {
        let plan = Arc::new(config.plan(&testfleet::config::config_dir(&path)));
        SuiteSource { path, plan }
    }
}

#[derive(Clone)]
pub struct ControlService {
    engine: Engine,
    source: SuiteSource,
    /// Submitted configs being read at once: see `submitted_plan`.
    validating: Arc<Semaphore>,
}

/// The most bytes a refusal's message takes in its `grpc-message` header,
/// half of the 16 KB header list clients accept by default: a longer one
/// reaches them as a reset stream, not as the problems.
const STATUS_MESSAGE_BUDGET: usize = 8 * 1024;

impl ControlService {
    pub fn new(engine: Engine, source: SuiteSource) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ControlService {
            engine,
            source,
            validating: Arc::new(Semaphore::new((cores / 2).max(1))),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a suite; shared with the HTTP API.
    pub async fn execute(&self, req: ExecuteSuiteRequest) -> Result<ExecuteSuiteResponse, Status> {
        let (plan, path, source) = if req.config_yaml.trim().is_empty() {
            let path = self.source.path.clone();
            (self.source.plan.clone(), path, PlanSource::OwnConfig)
        } else {
            let path = PathBuf::from("<submitted config>");
            let dir = submitted_dir(&req.config_dir)?;
            let (plan, source) = self
                .submitted_plan(req.config_yaml, path.clone(), dir)
                .await?;
            (plan, path, source)
        };
        if let Some(t) = plan
            .tasks
            .iter()
            .find(|t| t.kind == TaskKind::Runnable && t.execution.command.is_empty())
        {
            return Err(Status::failed_precondition(format!(
                "{}: task \"{}\" has no command: template \"{}\" is not defined under templates:",
                path.display(),
                t.id,
                t.template
            )));
        }
        let suite_id = uuid::Uuid::now_v7().to_string();
        let suite_name = if req.suite_name.is_empty() {
            plan.name.clone()
        } else {
            req.suite_name.clone()
        };
        let plan = self.with_history(plan, &suite_name).await;
        let scheduling = plan.mode;
        let submit = Event::SubmitSuite {
            suite_id,
            suite_name: suite_name.clone(),
            plan,
            timeout_ms: (req.timeout_seconds > 0).then_some(req.timeout_seconds * 1000),
        };
        match self.engine.submit(submit, source).await? {
            Reply::Submitted { suite_id } => {
                tracing::info!(suite_id, suite_name, config = %path.display(), scheduling, "suite submitted");
                Ok(ExecuteSuiteResponse {
                    suite_id,
                    status: "running".into(),
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// `plan` with its split tasks' measured test durations from earlier
    /// runs of suite `suite_name`. Without them (none kept, or the file
    /// unreadable, said in the log) it plans from the median and defaults.
    async fn with_history(&self, plan: Arc<SuitePlan>, suite_name: &str) -> Arc<SuitePlan> {
        let Some(durations) = self.engine.durations.clone() else {
            return plan;
        };
        if !plan.tasks.iter().any(|t| t.split.is_some()) {
            return plan;
        }
        let (name, read_plan) = (suite_name.to_string(), plan.clone());
        let read = tokio::task::spawn_blocking(move || durations.for_plan(&name, &read_plan)).await;
        match read {
            Ok(Ok(history)) => {
                let mut plan = plan;
                Arc::make_mut(&mut plan).test_history = history;
                plan
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not read the measured test durations; planning without them"
                );
                plan
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the measured test durations; planning without them");
                plan
            }
        }
    }

    /// Reads and plans a submitted config on the blocking pool, at most half
    /// the cores' worth at once: a large config takes a while even read in
    /// linear time, and neither the runtime's threads nor every core may be
    /// taken from the clients and agents being served meanwhile. Callers
    /// beyond that wait here, without holding a thread.
    async fn submitted_plan(
        &self,
        yaml: String,
        path: PathBuf,
        dir: PathBuf,
    ) -> Result<(Arc<SuitePlan>, PlanSource), Status> {
        let permit = self
            .validating
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the orchestrator is shutting down"))?;
        // Kept for the event log, which plans it again on replay.
        let yaml: Arc<str> = yaml.into();
        let source = PlanSource::Submitted {
            yaml: yaml.clone(),
            path: path.clone(),
            dir: dir.clone(),
        };
        let planned = tokio::task::spawn_blocking(move || {
            // Held until the work is done, even if the caller has gone.
            let _permit = permit;
            SuiteConfig::parse(&yaml, &path).map(|cfg| cfg.plan(&dir))
        })
        .await
        .map_err(|e| Status::internal(format!("reading the submitted config: {e}")))?;
        match planned {
            Ok(plan) => Ok((Arc::new(plan), source)),
            Err(e) => Err(Status::invalid_argument(
                e.listing(STATUS_MESSAGE_BUDGET, header_len),
            )),
        }
    }

    pub async fn report_json(&self) -> Result<Arc<report::ReportJson>, Status> {
        self.engine
            .report()
            .await?
            .ok_or_else(|| Status::not_found("no suite has run yet"))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SuiteEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn execute_suite(
        &self,
        r: Request<ExecuteSuiteRequest>,
    ) -> Result<Response<ExecuteSuiteResponse>, Status> {
        self.execute(r.into_inner()).await.map(Response::new)
    }

    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<SuiteStatus>, Status> {
        Ok(Response::new(self.engine.status().await?))
    }

    async fn get_progress(
        &self,
        _: Request<GetProgressRequest>,
    ) -> Result<Response<SuiteProgress>, Status> {
        Ok(Response::new(self.engine.query(status::progress).await?))
    }

    type WatchSuiteStream = EventStream;

    async fn watch_suite(
        &self,
        r: Request<WatchSuiteRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let kinds = event_kinds(&r.into_inner().kinds)?;
        let Watch { events, interest } = self.engine.subscribe(&kinds);
        // The stream holds the interest: it ends when the watcher goes.
        let stream = BroadcastStream::new(events).filter_map(move |e| match e {
            Ok(event) if interest.covers(&event) => Some(Ok(Arc::unwrap_or_clone(event))),
            Ok(_) => None,
            // A watcher that fell behind misses events rather than slowing the
            // scheduler; it can re-read GetStatus.
            Err(_) => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_final_report(
        &self,
        _: Request<GetFinalReportRequest>,
    ) -> Result<Response<FinalReport>, Status> {
        let report = self.report_json().await?;
        // The engine keeps the report; the response shares its pieces.
        Ok(Response::new(FinalReport {
            suite_id: report.suite_id.clone(),
            status: report.status.into(),
            report_json: report.json.clone(),
        }))
    }

    async fn cancel_suite(
        &self,
        r: Request<CancelSuiteRequest>,
    ) -> Result<Response<CancelSuiteResponse>, Status> {
        let reason = r.into_inner().reason;
        let reason = if reason.is_empty() {
            "cancelled by an operator".to_string()
        } else {
            reason
        };
        match self.engine.command(Event::CancelSuite { reason }).await? {
            Reply::Cancelling => Ok(Response::new(CancelSuiteResponse {
                status: "cancelling".into(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_escalations(
        &self,
        _: Request<ListEscalationsRequest>,
    ) -> Result<Response<ListEscalationsResponse>, Status> {
        let escalations = self
            .engine
            .query(|s| {
                s.suite()
                    .map(|suite| suite.escalations().iter().map(escalation_info).collect())
                    .unwrap_or_default()
            })
            .await?;
        Ok(Response::new(ListEscalationsResponse { escalations }))
    }

    async fn resolve_escalation(
        &self,
        r: Request<ResolveEscalationRequest>,
    ) -> Result<Response<ResolveEscalationResponse>, Status> {
        let r = r.into_inner();
        let resolution = match r.action.as_str() {
            "retry" => Resolution::Retry,
            "skip" => Resolution::Skip,
            "abort" => Resolution::Abort,
            other => {
                return Err(Status::invalid_argument(format!(
                    "action {other:?}: use retry, skip or abort"
                )));
            }
        };
        let resolve = Event::ResolveEscalation {
            escalation_id: r.escalation_id.clone(),
            resolution,
        };
        match self.engine.command(resolve).await? {
            Reply::Resolved => {
                tracing::info!(
                    escalation_id = r.escalation_id,
                    action = r.action,
                    "escalation resolved"
                );
                Ok(Response::new(ResolveEscalationResponse { state: r.action }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn drain_agent(
        &self,
        r: Request<DrainAgentRequest>,
    ) -> Result<Response<DrainAgentResponse>, Status> {
        let agent_id = r.into_inner().agent_id;
        match self
            .engine
            .command(Event::DrainAgent {
                agent_id: agent_id.clone(),
            })
            .await?
        {
            Reply::Draining { running } => {
                tracing::info!(agent_id, running, "agent draining");
                Ok(Response::new(DrainAgentResponse {
                    state: "draining".into(),
                    running_attempts: running,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self
            .engine
            .query(|s| {
                s.agents()
                    .map(|a| AgentInfo {
                        agent_id: a.id().to_string(),
                        host: a.host().to_string(),
                        labels: a.labels().clone().into_iter().collect(),
                        capacity: Some(resources(&a.capacity())),
                        reserved: Some(resources(&a.reserved())),
                        running_attempts: a.running().iter().cloned().collect(),
                        state: match (a.connected(), a.draining()) {
                            (true, false) => "connected",
                            (true, true) => "draining",
                            (false, _) => "lost",
                        }
                        .into(),
                        last_heartbeat: Some(testfleet::time::to_timestamp(a.last_heartbeat())),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(ListAgentsResponse { agents }))
    }
}

/// A status message's size in the `grpc-message` header: tonic
/// percent-encodes controls, non-ASCII bytes and ` "#%<>`?{}`.
fn header_len(s: &str) -> usize {
    s.bytes()
        .map(|b| {
            if !(0x20..0x7f).contains(&b) || b" \"#%<>`?{}".contains(&b) {
                3
            } else {
                1
            }
        })
        .sum()
}

/// A refusal as its status; any other answer is the wrong one for the
/// command that was sent.
fn unexpected(reply: Reply) -> Status {
    match reply {
        Reply::Refused(why) => wire::refusal(&why),
        other => Status::internal(format!("the scheduler answered {other:?}")),
    }
}

fn escalation_info(e: &testfleet_core::Escalation) -> EscalationInfo {
    EscalationInfo {
        escalation_id: e.escalation_id.clone(),
        task_id: e.task_id.clone(),
        issue_type: e.issue_type.as_str().into(),
        severity: e.severity.clone(),
        state: match e.resolution {
            None => "open".into(),
            Some(r) => format!("{r:?}").to_lowercase(),
        },
        blocking_tasks: e.report.blocking_tasks.clone(),
        created_at: Some(testfleet::time::to_timestamp(e.created_at)),
        report_json: wire::escalation_json(&e.report).to_string(),
    }
}

fn resources(r: &testfleet::config::ResourceSpec) -> Resources {
    Resources {
        memory_mb: r.memory_mb,
        cpu_cores: r.cpu_cores(),
        disk_mb: r.disk_mb,
    }
}

/// The kinds a watcher asked for, each checked against the known ones.
fn event_kinds(asked: &[String]) -> Result<Vec<Kind>, Status> {
    asked
        .iter()
        .map(|k| {
            Kind::named(k).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown event kind {k:?} in WatchSuiteRequest.kinds (known: {})",
                    EVENT_KINDS.join(", ")
                ))
            })
        })
        .collect()
}

//! A real orchestrator process and simulated agents in this process: each
//! a real gRPC stream of its own that runs `testfleet:noop` and
//! `testfleet:sleep:<ms>` without spawning anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::{heartbeat, raw_agent, wait_for_listed_agents, AgentSender, Serve, Server};
use tonic::transport::Channel;

use crate::suites::Suite;

/// `orchestrator serve` for one suite, in a directory of its own (removed
/// after the orchestrator has stopped).
pub struct Orchestrator {
    pub server: Server,
    _dir: tempfile::TempDir,
}

/// The orchestrator logs at warn, so that logging costs the measured runs
/// nothing, but for the lines that say where it listens.
/// TESTFLEET_BENCH_RUST_LOG replaces this.
const ORCHESTRATOR_LOG: &str =
    "warn,orchestrator::edge::server=info,orchestrator::observe::metrics=info";

pub fn start_orchestrator(suite: &Suite) -> anyhow::Result<Orchestrator> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, &suite.yaml)?;
    let rust_log =
        std::env::var("TESTFLEET_BENCH_RUST_LOG").unwrap_or_else(|_| ORCHESTRATOR_LOG.into());
    // TESTFLEET_BENCH_IN_MEMORY=1: no event log, for what the log costs
    // (BENCHMARKS.md).
    let in_memory = std::env::var_os("TESTFLEET_BENCH_IN_MEMORY").is_some();
    let server = Server::serve_with(
        Serve {
            config: &config,
            dir: dir.path(),
            insecure: true,
            env: &[("RUST_LOG", &rust_log)],
            // TESTFLEET_BENCH_LOG=1 shows the orchestrator's log, for debugging
            // a workload.
            echo_log: std::env::var_os("TESTFLEET_BENCH_LOG").is_some(),
        },
        if in_memory { &["--in-memory"] } else { &[] },
        None,
    )?;
    Ok(Orchestrator { server, _dir: dir })
}

/// A simulated task: when its assignment arrived and its completion left.
struct Record {
    task_id: String,
    assigned: Instant,
    completed: Instant,
}

/// What the simulated agents record as they go: a push a task, so the load
/// generator spends its time on the streams, not on bookkeeping.
type Records = Arc<Mutex<Vec<Record>>>;

/// When each assignment arrived, and when each completion left.
#[derive(Default)]
pub struct Clock {
    pub assigned: HashMap<String, Instant>,
    pub completed: HashMap<String, Instant>,
}

impl Clock {
    fn from_records(records: Vec<Record>) -> Clock {
        let mut clock = Clock::default();
        for r in records {
            clock.completed.insert(r.task_id.clone(), r.completed);
            clock.assigned.insert(r.task_id, r.assigned);
        }
        clock
    }

    /// From the task's assignment received to its completion sent.
    pub fn took_ms(&self, task: &str) -> Option<f64> {
        let done = self.completed.get(task)?;
        Some(done.duration_since(*self.assigned.get(task)?).as_secs_f64() * 1000.0)
    }

    fn first_assigned(&self) -> Option<Instant> {
        self.assigned.values().min().copied()
    }

    fn last_completed(&self) -> Option<Instant> {
        self.completed.values().max().copied()
    }

    /// From the first assignment received to the last completion sent.
    pub fn busy_seconds(&self) -> f64 {
        match (self.first_assigned(), self.last_completed()) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => f64::NAN,
        }
    }
}

/// What each simulated agent announces, as the real core in virtual time
/// (`virtual_time`) is given too.
pub const AGENT_MEMORY_MB: u64 = 1024;
pub const AGENT_CORES: u64 = 4;

/// A simulated agent: a real stream, no processes.
async fn simulated_agent(
    channel: Channel,
    id: String,
    durations: Arc<HashMap<String, u64>>,
    records: Records,
) -> anyhow::Result<()> {
    let (tx, mut inbound) = raw_agent(channel, &id, (AGENT_MEMORY_MB, AGENT_CORES as f64)).await?;
    tokio::spawn(keep_heartbeating(
        tx.clone(),
        id.clone(),
        Duration::from_secs(1),
    ));
    while let Some(msg) = inbound.message().await? {
        let Some(orchestrator_message::Body::Assignment(a)) = msg.body else {
            continue;
        };
        let task_id = a
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        let wait = durations.get(&task_id).copied().unwrap_or(0);
        let assigned = Instant::now();
        let done = Done {
            agent_id: id.clone(),
            task_id,
            attempt_id: a.attempt_id,
            wait,
            assigned,
        };
        if wait == 0 {
            // A no-op completes at once, without a task of its own: the load
            // generator should cost as little as a real agent's stream does.
            done.send(&tx, &records).await;
            continue;
        }
        let (tx, records) = (tx.clone(), records.clone());
        tokio::spawn(async move {
            // tokio's timer fires on a 1 ms wheel, late by about a
            // millisecond per task; a blocking thread's sleep is late by
            // tens of microseconds, so the task takes what the suite says.
            let _ = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(wait));
            })
            .await;
            done.send(&tx, &records).await;
        });
    }
    Ok(())
}

/// A simulated task that has finished.
struct Done {
    agent_id: String,
    task_id: String,
    attempt_id: String,
    wait: u64,
    assigned: Instant,
}

impl Done {
    async fn send(self, tx: &AgentSender, records: &Mutex<Vec<Record>>) {
        let c = proto::TaskCompletion {
            agent_id: self.agent_id,
            task_id: self.task_id.clone(),
            attempt_id: self.attempt_id,
            final_status: proto::FinalStatus::Success as i32,
            execution_summary: Some(proto::ExecutionSummary {
                duration_seconds: self.wait as f64 / 1000.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        records.lock().expect("records").push(Record {
            task_id: self.task_id,
            assigned: self.assigned,
            completed: Instant::now(),
        });
        let _ = tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Completion(c)),
            })
            .await;
    }
}

/// An orchestrator serving one suite, with simulated agents connected.
pub struct Fleet {
    _orch: Orchestrator,
    control: ControlClient<Channel>,
    records: Records,
}

/// What one run of a suite measured.
pub struct Run {
    /// From submit to the final report in hand.
    pub seconds: f64,
    pub phases: Phases,
    pub clock: Clock,
    /// The suite's own duration, from its report.
    pub makespan_ms: f64,
}

/// When, after submit, a run passed each point, ms.
pub struct Phases {
    pub first_assignment_ms: Option<f64>,
    pub last_completion_ms: Option<f64>,
    /// The suite_finished event: report.json and junit.xml are written.
    pub finished_ms: f64,
}

fn ms_since(start: Instant, at: Instant) -> f64 {
    at.duration_since(start).as_secs_f64() * 1000.0
}

impl Fleet {
    pub async fn start(suite: &Suite, agents: usize) -> anyhow::Result<Fleet> {
        let orch = start_orchestrator(suite)?;
        let channel = testfleet::transport::endpoint(&orch.server.endpoint())?
            .connect()
            .await?;
        let records = Records::default();
        let durations = Arc::new(suite.durations_ms.clone());
        for i in 0..agents {
            // A connection each, as real agents on their own hosts have:
            // streams sharing one HTTP/2 connection share its one task on
            // each side.
            let own = testfleet::transport::endpoint(&orch.server.endpoint())?
                .connect()
                .await?;
            tokio::spawn(simulated_agent(
                own,
                format!("sim_{i:05}"),
                durations.clone(),
                records.clone(),
            ));
        }
        let control = control_once_connected(channel, agents, Duration::from_secs(60)).await?;
        Ok(Fleet {
            _orch: orch,
            control,
            records,
        })
    }

    /// Kills the orchestrator (SIGKILL) and starts it again on its data dir:
    /// how long until it listens again, its event log replayed.
    pub fn restart_orchestrator(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        tokio::task::block_in_place(|| self._orch.server.restart())?;
        Ok(start.elapsed())
    }

    /// The orchestrator's log and data dir.
    pub fn server(&self) -> &Server {
        &self._orch.server
    }

    /// Runs the suite once more on the same orchestrator, which keeps the
    /// durations it saw as history.
    pub async fn run(&mut self) -> anyhow::Result<Run> {
        let control = &mut self.control;
        let mut events = control
            .watch_suite(proto::WatchSuiteRequest {
                kinds: vec!["suite_finished".into()],
            })
            .await?
            .into_inner();
        let start = Instant::now();
        control
            .execute_suite(proto::ExecuteSuiteRequest::default())
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(1), events.message()).await {
                Ok(Ok(Some(_))) => break,
                // A dropped watch: the state says whether it has ended.
                Ok(_) | Err(_) => {
                    let s = control
                        .get_status(proto::GetStatusRequest {})
                        .await?
                        .into_inner();
                    if s.status != "running" {
                        break;
                    }
                }
            }
        }
        let finished = start.elapsed().as_secs_f64();
        let report = control
            .get_final_report(proto::GetFinalReportRequest {})
            .await?
            .into_inner();
        let seconds = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.status == "completed",
            "the suite ended {}",
            report.status
        );
        let doc: serde_json::Value = serde_json::from_str(&report.report_json.to_str()?)?;
        let makespan_ms = doc["duration_seconds"].as_f64().context("duration")? * 1000.0;
        let clock =
            Clock::from_records(std::mem::take(&mut *self.records.lock().expect("records")));
        let phases = Phases {
            first_assignment_ms: clock.first_assigned().map(|i| ms_since(start, i)),
            last_completion_ms: clock.last_completed().map(|i| ms_since(start, i)),
            finished_ms: finished * 1000.0,
        };
        Ok(Run {
            seconds,
            phases,
            clock,
            makespan_ms,
        })
    }
}

/// Runs `suite` once on `agents` simulated agents and a fresh orchestrator.
pub async fn run(suite: &Suite, agents: usize) -> anyhow::Result<Run> {
    Fleet::start(suite, agents).await?.run().await
}

/// A control client, once `agents` agents have connected.
pub async fn control_once_connected(
    channel: Channel,
    agents: usize,
    within: Duration,
) -> anyhow::Result<ControlClient<Channel>> {
    let control = ControlClient::new(channel).max_decoding_message_size(1 << 30);
    wait_for_listed_agents(&control, within, "every agent to connect", |a| {
        a.len() >= agents
    })
    .await?;
    Ok(control)
}

/// Heartbeats every second after `first`, until the stream closes.
pub async fn keep_heartbeating(tx: AgentSender, id: String, first: Duration) {
    tokio::time::sleep(first).await;
    loop {
        if tx.send(heartbeat(&id)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

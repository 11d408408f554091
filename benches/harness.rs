//! `testfleet-bench`: the control plane alone, measured. A real orchestrator
//! process; simulated agents in this process, each a real gRPC stream, that
//! run the built-in task kinds `testfleet:noop` and `testfleet:sleep:<ms>`
//! without spawning anything. Each workload prints `name value unit` lines.
//!
//!   testfleet-bench throughput --tasks 20000 --agents 4
//!   testfleet-bench dag --layers 50 --width 200 --agents 100
//!   testfleet-bench dispatch --tasks 2000 --agents 100
//!   testfleet-bench makespan
//!   testfleet-bench detection --trials 5 --agent-timeout 3
//!   testfleet-bench smoke            # tiny versions of all, for CI

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet_testkit::{heartbeat, raw_agent, wait_for_listed_agents, AgentSender, Serve, Server};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "testfleet-bench",
    about = "Benchmarks of testfleet's control plane"
)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Clone)]
enum Workload {
    /// Independent no-op tasks: tasks per second from submit to final report.
    Throughput {
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        agents: usize,
    },
    /// A layered DAG, each task depending on 2 of the layer before.
    Dag {
        #[arg(long, default_value_t = 50)]
        layers: usize,
        #[arg(long, default_value_t = 200)]
        width: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
    },
    /// A chain of no-op tasks: dependency met -> next assignment at an agent.
    Dispatch {
        #[arg(long, default_value_t = 2_000)]
        tasks: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
    },
    /// Makespan over its lower bound, dag and phased, for the seed's suite
    /// and a random DAG with known durations. The random DAG runs twice on
    /// one orchestrator: first with durations estimated from timeouts, then
    /// with the first run's durations as history.
    Makespan {
        #[arg(long, default_value_t = 500)]
        tasks: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// N agents heartbeating every second: the orchestrator's RSS and CPU,
    /// and heartbeat lag (age when it reached the orchestrator) p99.
    Fleet {
        #[arg(long, default_value_t = 1_000)]
        agents: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// An agent dies while running a task: time until the task is assigned
    /// to another agent, after a stream reset and after going silent.
    Detection {
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// agent_timeout in the suite's config, seconds.
        #[arg(long, default_value_t = 3)]
        agent_timeout: u64,
    },
    /// All of the above, tiny, so CI keeps the harness working.
    Smoke,
}

/// The agent with the most free cores that fits `cores` (lowest index on a
/// tie).
fn most_free_fitting(free: &[f64], cores: f64) -> Option<usize> {
    (0..free.len())
        .filter(|&a| free[a] >= cores)
        .max_by(|&a, &b| free[a].total_cmp(&free[b]).then(b.cmp(&a)))
}

/// A suite: its YAML and, for sleeps, each task's duration.
struct Suite {
    yaml: String,
    durations_ms: HashMap<String, u64>,
}

fn independent(n: usize) -> Suite {
    let mut y = header("throughput");
    for i in 0..n {
        let _ = writeln!(y, "      - {{id: T{i}, template: noop}}");
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

fn layered(layers: usize, width: usize) -> Suite {
    let mut y = header("layered");
    for l in 0..layers {
        for w in 0..width {
            if l == 0 {
                let _ = writeln!(y, "      - {{id: L{l}_{w}, template: noop}}");
            } else {
                let (a, b) = (w, (w * 7 + 3) % width);
                let _ = writeln!(
                    y,
                    "      - {{id: L{l}_{w}, template: noop, dependencies: [L{}_{a}, L{}_{b}]}}",
                    l - 1,
                    l - 1
                );
            }
        }
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

fn chain(n: usize) -> Suite {
    let mut y = header("chain");
    for i in 0..n {
        if i == 0 {
            let _ = writeln!(y, "      - {{id: C0, template: noop}}");
        } else {
            let _ = writeln!(
                y,
                "      - {{id: C{i}, template: noop, dependencies: [C{}]}}",
                i - 1
            );
        }
    }
    Suite {
        yaml: y,
        durations_ms: HashMap::new(),
    }
}

fn header(name: &str) -> String {
    format!(
        "agent_pool: {{agent_timeout: 60}}\nmonitoring: {{metrics_interval: 10}}\ntemplates:\n  noop: {{command: \"testfleet:noop\"}}\n  sleep: {{command: \"testfleet:sleep\"}}\nresource_allocation:\n  u: {{memory_mb: 1, cpu_cores: 1, disk_mb: 1, timeout_seconds: 3600}}\norchestrator:\n  name: {name}\n  log_level: warn\n  task_definitions:\n    u:\n"
    )
}

/// A suite's shape for its makespan's lower bounds: each runnable task's
/// duration, cores, category and what it waits on.
struct Shape {
    tasks: Vec<ShapeTask>,
    capacity_cores: f64,
    max_parallel: HashMap<&'static str, u32>,
}

struct ShapeTask {
    ms: f64,
    cores: f64,
    category: &'static str,
    after: Vec<usize>,
}

impl Shape {
    /// Longest path (ms) ending where each task starts, and starting where
    /// it ends. Tasks are in dependency order.
    fn heads_and_tails(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.tasks.len();
        let mut head = vec![0.0f64; n];
        for i in 0..n {
            for &d in &self.tasks[i].after {
                head[i] = head[i].max(head[d] + self.tasks[d].ms);
            }
        }
        let mut tail = vec![0.0f64; n];
        for i in (0..n).rev() {
            for &d in &self.tasks[i].after {
                tail[d] = tail[d].max(tail[i] + self.tasks[i].ms);
            }
        }
        (head, tail)
    }

    /// The same shape with each task's duration from `ms`, where it has one.
    fn with_durations(&self, ms: impl Fn(usize) -> Option<f64>) -> Shape {
        Shape {
            tasks: (0..self.tasks.len())
                .map(|i| ShapeTask {
                    ms: ms(i).unwrap_or(self.tasks[i].ms),
                    after: self.tasks[i].after.clone(),
                    ..self.tasks[i]
                })
                .collect(),
            capacity_cores: self.capacity_cores,
            max_parallel: self.max_parallel.clone(),
        }
    }

    /// The bound: max(critical path, total work / capacity).
    fn bound(&self) -> f64 {
        let (critical, spread) = self.bound_parts();
        critical.max(spread)
    }

    /// The critical path and the total work spread over the capacity, ms.
    fn bound_parts(&self) -> (f64, f64) {
        let (head, _) = self.heads_and_tails();
        let critical = (0..self.tasks.len())
            .map(|i| head[i] + self.tasks[i].ms)
            .fold(0.0, f64::max);
        let work: f64 = self.tasks.iter().map(|t| t.ms * t.cores).sum();
        (critical, work / self.capacity_cores)
    }

    /// The makespan the scheduler's policy reaches with no control plane at
    /// all: an offline list schedule in virtual time, ready tasks by longest
    /// remaining path (exact durations), placed as the scheduler places
    /// them, smaller tasks filling in behind a big one.
    /// Ignores max_parallel. The gap between this and the bound is the
    /// policy's (or the bound's); the gap between a measured run and this is
    /// the control plane's.
    fn offline_list_schedule(&self, agents: usize, cores_each: f64) -> f64 {
        let n = self.tasks.len();
        let (_, tail) = self.heads_and_tails();
        let rank: Vec<f64> = (0..n).map(|i| self.tasks[i].ms + tail[i]).collect();
        let mut waiting: Vec<usize> = self.tasks.iter().map(|t| t.after.len()).collect();
        let mut dependents = vec![Vec::new(); n];
        for (i, t) in self.tasks.iter().enumerate() {
            for &d in &t.after {
                dependents[d].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut free = vec![cores_each; agents];
        let mut running: Vec<(f64, usize, usize)> = Vec::new();
        let mut now = 0.0f64;
        while !ready.is_empty() || !running.is_empty() {
            ready.sort_by(|&a, &b| rank[b].total_cmp(&rank[a]).then(a.cmp(&b)));
            // The scheduler's placement: spread to the agent with the most
            // free cores, unless that would leave a ready task waiting; then
            // best fit.
            let pack = {
                let mut trial = free.clone();
                ready.iter().any(|&t| {
                    let cores = self.tasks[t].cores;
                    match most_free_fitting(&trial, cores) {
                        Some(a) => {
                            trial[a] -= cores;
                            false
                        }
                        None => true,
                    }
                })
            };
            ready.retain(|&t| {
                let cores = self.tasks[t].cores;
                let best = if pack {
                    (0..agents)
                        .filter(|&a| free[a] >= cores)
                        .min_by(|&a, &b| free[a].total_cmp(&free[b]).then(a.cmp(&b)))
                } else {
                    most_free_fitting(&free, cores)
                };
                match best {
                    Some(a) => {
                        free[a] -= cores;
                        running.push((now + self.tasks[t].ms, a, t));
                        false
                    }
                    None => true,
                }
            });
            let Some(next) = running.iter().map(|r| r.0).min_by(f64::total_cmp) else {
                break;
            };
            now = next;
            running.retain(|&(end, a, t)| {
                if end > now {
                    return true;
                }
                free[a] += self.tasks[t].cores;
                for &d in &dependents[t] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 {
                        ready.push(d);
                    }
                }
                false
            });
        }
        now
    }

    /// Also counting each category's max_parallel: its tasks cannot start
    /// before the earliest of them can, run at most k at a time, and leave
    /// the shortest of their tails after them.
    fn bound_with_max_parallel(&self) -> f64 {
        let (head, tail) = self.heads_and_tails();
        let mut bound = self.bound();
        for (cat, k) in &self.max_parallel {
            let members: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| self.tasks[i].category == *cat)
                .collect();
            if members.is_empty() {
                continue;
            }
            let first = members
                .iter()
                .map(|&i| head[i])
                .fold(f64::INFINITY, f64::min);
            let last = members
                .iter()
                .map(|&i| tail[i])
                .fold(f64::INFINITY, f64::min);
            let work: f64 = members.iter().map(|&i| self.tasks[i].ms).sum();
            bound = bound.max(first + work / f64::from(*k) + last);
        }
        bound
    }
}

/// The seed's nine tasks and three subtasks, with these durations (ms), on
/// 3 agents of 4 cores.
fn seed_suite(mode: &str) -> (Suite, Shape) {
    let durations: &[(&str, u64, &[&str], u32)] = &[
        ("A1", 300, &[], 1),
        ("A2", 500, &[], 1),
        ("A3", 200, &[], 1),
        ("B1a", 400, &["A1", "A2", "A3"], 2),
        ("B1b", 300, &["A1", "A2", "A3"], 2),
        ("B1c", 200, &["A1", "A2", "A3"], 2),
        ("B2", 600, &["B1"], 2),
        ("B3", 300, &["B1"], 2),
        ("C1", 500, &["B1", "B2", "B3"], 4),
        ("C2", 400, &["C1"], 4),
        ("C3", 300, &["C1"], 2),
    ];
    let mut y = format!(
        "scheduling: {mode}\nagent_pool: {{agent_timeout: 60}}\ntemplates:\n  sleep: {{command: \"testfleet:sleep\"}}\nresource_allocation:\n  unit_tests: {{memory_mb: 1, timeout_seconds: 600, max_parallel: 3}}\n  integration_tests: {{memory_mb: 1, timeout_seconds: 1800, max_parallel: 2}}\n  performance_tests: {{memory_mb: 1, timeout_seconds: 3600, max_parallel: 1}}\norchestrator:\n  name: seed\n  log_level: warn\n  task_definitions:\n"
    );
    y += "    unit_tests:\n";
    for (id, _, _, cpu) in &durations[0..3] {
        let _ = writeln!(
            y,
            "      - {{id: {id}, template: sleep, resources: {{cpu_cores: {cpu}}}}}"
        );
    }
    y += "    integration_tests:\n      - {id: B1, template: sleep, dependencies: [A1, A2, A3], subtasks: [B1a, B1b, B1c], resources: {cpu_cores: 2}}\n";
    for (id, _, deps, cpu) in &durations[6..8] {
        let _ = writeln!(y, "      - {{id: {id}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cpu}}}}}", deps.join(", "));
    }
    y += "    performance_tests:\n";
    for (id, _, deps, cpu) in &durations[8..] {
        let _ = writeln!(y, "      - {{id: {id}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cpu}}}}}", deps.join(", "));
    }
    let map: HashMap<String, u64> = durations
        .iter()
        .map(|(id, ms, _, _)| (id.to_string(), *ms))
        .collect();
    let index = |id: &str| durations.iter().position(|d| d.0 == id);
    let tasks = durations
        .iter()
        .map(|(id, ms, deps, cpu)| ShapeTask {
            ms: *ms as f64,
            cores: f64::from(*cpu),
            category: match &id[..1] {
                "A" => "unit_tests",
                "B" => "integration_tests",
                _ => "performance_tests",
            },
            // Waiting on the group B1 is waiting on each of its subtasks.
            after: deps
                .iter()
                .flat_map(|d| match index(d) {
                    Some(i) => vec![i],
                    None => (3..6).collect(),
                })
                .collect(),
        })
        .collect();
    let shape = Shape {
        tasks,
        capacity_cores: 12.0,
        max_parallel: [
            ("unit_tests", 3),
            ("integration_tests", 2),
            ("performance_tests", 1),
        ]
        .into(),
    };
    (
        Suite {
            yaml: y,
            durations_ms: map,
        },
        shape,
    )
}

/// A random DAG of `n` tasks (seeded): 20-200 ms each, 1 or 2 cores, each
/// waiting on up to 3 of the 40 tasks before it, on 4 agents of 4 cores.
fn random_dag(n: usize, seed: u64) -> (Suite, Shape) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut y = header("random");
    let mut durations = HashMap::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let ms: u64 = rng.random_range(20..=200);
        let cores: u32 = rng.random_range(1..=2);
        let mut after: Vec<usize> = if i == 0 {
            Vec::new()
        } else {
            (0..rng.random_range(0..=3))
                .map(|_| rng.random_range(i.saturating_sub(40)..i))
                .collect()
        };
        after.sort_unstable();
        after.dedup();
        let deps: Vec<String> = after.iter().map(|d| format!("R{d}")).collect();
        let _ = writeln!(
            y,
            "      - {{id: R{i}, template: sleep, dependencies: [{}], resources: {{cpu_cores: {cores}}}}}",
            deps.join(", ")
        );
        durations.insert(format!("R{i}"), ms);
        tasks.push(ShapeTask {
            ms: ms as f64,
            cores: f64::from(cores),
            category: "u",
            after,
        });
    }
    let shape = Shape {
        tasks,
        capacity_cores: 16.0,
        max_parallel: HashMap::new(),
    };
    (
        Suite {
            yaml: y,
            durations_ms: durations,
        },
        shape,
    )
}

/// `orchestrator serve` for one suite, in a directory of its own (removed
/// after the orchestrator has stopped).
struct Orchestrator {
    server: Server,
    _dir: tempfile::TempDir,
}

/// The orchestrator logs at warn, so that logging costs the measured runs
/// nothing, but for the lines that say where it listens.
/// TESTFLEET_BENCH_RUST_LOG replaces this.
const ORCHESTRATOR_LOG: &str =
    "warn,orchestrator::edge::server=info,orchestrator::observe::metrics=info";

fn start_orchestrator(suite: &Suite) -> anyhow::Result<Orchestrator> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, &suite.yaml)?;
    let rust_log =
        std::env::var("TESTFLEET_BENCH_RUST_LOG").unwrap_or_else(|_| ORCHESTRATOR_LOG.into());
    let server = Server::serve(Serve {
        config: &config,
        dir: dir.path(),
        insecure: true,
        env: &[("RUST_LOG", &rust_log)],
        // TESTFLEET_BENCH_LOG=1 shows the orchestrator's log, for debugging
        // a workload.
        echo_log: std::env::var_os("TESTFLEET_BENCH_LOG").is_some(),
    })?;
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
struct Clock {
    assigned: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
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
    fn took_ms(&self, task: &str) -> Option<f64> {
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
    fn busy_seconds(&self) -> f64 {
        match (self.first_assigned(), self.last_completed()) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => f64::NAN,
        }
    }
}

/// A simulated agent: a real stream, no processes.
async fn simulated_agent(
    channel: Channel,
    id: String,
    durations: Arc<HashMap<String, u64>>,
    records: Records,
) -> anyhow::Result<()> {
    let (tx, mut inbound) = raw_agent(channel, &id, (1024, 4.0)).await?;
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
struct Fleet {
    _orch: Orchestrator,
    control: ControlClient<Channel>,
    records: Records,
}

/// What one run of a suite measured.
struct Run {
    /// From submit to the final report in hand.
    seconds: f64,
    phases: Phases,
    clock: Clock,
    /// The suite's own duration, from its report.
    makespan_ms: f64,
}

/// When, after submit, a run passed each point, ms.
struct Phases {
    first_assignment_ms: Option<f64>,
    last_completion_ms: Option<f64>,
    /// The suite_finished event: report.json and junit.xml are written.
    finished_ms: f64,
}

fn ms_since(start: Instant, at: Instant) -> f64 {
    at.duration_since(start).as_secs_f64() * 1000.0
}

impl Fleet {
    async fn start(suite: &Suite, agents: usize) -> anyhow::Result<Fleet> {
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

    /// Runs the suite once more on the same orchestrator, which keeps the
    /// durations it saw as history.
    async fn run(&mut self) -> anyhow::Result<Run> {
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
async fn run(suite: &Suite, agents: usize) -> anyhow::Result<Run> {
    Fleet::start(suite, agents).await?.run().await
}

/// A control client, once `agents` agents have connected.
async fn control_once_connected(
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

/// Agents that only say hello and heartbeat, one connection per 100.
async fn fleet(agents: usize, seconds: u64) -> anyhow::Result<()> {
    let orch = start_orchestrator(&independent(1))?;
    let mut channels = Vec::new();
    for _ in 0..agents.div_ceil(100) {
        channels.push(
            testfleet::transport::endpoint(&orch.server.endpoint())?
                .connect()
                .await?,
        );
    }
    for i in 0..agents {
        tokio::spawn(heartbeat_only(channels[i / 100].clone(), i));
    }
    control_once_connected(channels[0].clone(), agents, Duration::from_secs(120)).await?;
    let pid = orch.server.proc.child.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = (cpu_ticks(pid)? - c0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmRSS")?
        .parse()?;
    let text = reqwest::get(format!("http://{}/metrics", orch.server.metrics_addr))
        .await?
        .text()
        .await?;
    let mut lag: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("testfleet_agent_communication_latency_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    lag.sort_by(f64::total_cmp);
    println!(
        "fleet_{agents}_agents_orchestrator_rss {:.0} MB",
        rss_kb / 1024.0
    );
    println!("fleet_{agents}_agents_orchestrator_cpu {cpu:.1} percent_of_one_core");
    println!(
        "fleet_{agents}_agents_heartbeat_lag_p99 {:.1} ms",
        percentile(&lag, 0.99)
    );
    Ok(())
}

/// A simulated agent that only says hello and heartbeats every second.
async fn heartbeat_only(channel: Channel, i: usize) {
    let id = format!("fleet_{i:05}");
    let Ok((tx, mut inbound)) = raw_agent(channel, &id, (1024, 1.0)).await else {
        return;
    };
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    // Spread the beats over the second, as independent agents would be.
    keep_heartbeating(tx, id, Duration::from_millis((i as u64 * 7919) % 1000)).await;
}

/// Heartbeats every second after `first`, until the stream closes.
async fn keep_heartbeating(tx: AgentSender, id: String, first: Duration) {
    tokio::time::sleep(first).await;
    loop {
        if tx.send(heartbeat(&id)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How an agent dies in the detection workload.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Its process is gone: the connection closes and the stream ends.
    StreamReset,
    /// It stops heartbeating and answering, with its connection left open
    /// (a frozen process, a partition that drops packets).
    Silent,
}

/// An agent that takes one assignment and never finishes it, on its own
/// connection, so that killing it resets the stream and silencing it stops
/// every message.
struct DoomedAgent {
    task: tokio::task::JoinHandle<()>,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl DoomedAgent {
    async fn start(
        endpoint: &str,
        id: String,
        assigned: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    ) -> anyhow::Result<DoomedAgent> {
        let channel = testfleet::transport::endpoint(endpoint)?.connect().await?;
        let (tx, mut inbound) = raw_agent(channel, &id, (1024, 4.0)).await?;
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quiet = silent.clone();
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(m)) if matches!(m.body, Some(orchestrator_message::Body::Assignment(_))) => {
                            let _ = assigned.send((id.clone(), Instant::now()));
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    },
                    _ = beat.tick() => {
                        if quiet.load(std::sync::atomic::Ordering::SeqCst) {
                            // Holds the connection and sends nothing more.
                            std::future::pending::<()>().await;
                        }
                        if tx.send(heartbeat(&id)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(DoomedAgent { task, silent })
    }

    fn die(&self, how: Death) {
        match how {
            // Dropping the task drops its channel: the connection closes.
            Death::StreamReset => self.task.abort(),
            Death::Silent => self.silent.store(true, std::sync::atomic::Ordering::SeqCst),
        }
    }
}

/// One long task. Each trial starts a spare agent, kills the agent running
/// the task, and times until the spare receives it.
async fn detection(trials: usize, agent_timeout: u64) -> anyhow::Result<()> {
    let mut suite = independent(0);
    // Each trial loses the task's agent once more; a real suite would fail
    // the task after max_retries losses.
    suite.yaml = format!(
        "recovery: {{max_retries: {}}}\n{}",
        trials * 2 + 1,
        suite.yaml.replace(
            "agent_timeout: 60",
            &format!("agent_timeout: {agent_timeout}")
        )
    );
    suite.yaml += "      - {id: LONG, template: sleep}\n";
    let orch = start_orchestrator(&suite)?;
    let (assigned_tx, mut assigned) = tokio::sync::mpsc::unbounded_channel();
    let mut control = ControlClient::new(
        testfleet::transport::endpoint(&orch.server.endpoint())?
            .connect()
            .await?,
    );
    let mut holder = DoomedAgent::start(
        &orch.server.endpoint(),
        "doomed_0".into(),
        assigned_tx.clone(),
    )
    .await?;
    control
        .execute_suite(proto::ExecuteSuiteRequest::default())
        .await?;
    next_assignment(&mut assigned, "doomed_0").await?;
    let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
    for trial in 1..=trials * 2 {
        let how = if trial % 2 == 1 {
            Death::StreamReset
        } else {
            Death::Silent
        };
        let id = format!("doomed_{trial}");
        let spare =
            DoomedAgent::start(&orch.server.endpoint(), id.clone(), assigned_tx.clone()).await?;
        wait_for_listed_agents(&control, Duration::from_secs(30), &id, |a| {
            a.iter().any(|a| a.agent_id == id && a.state != "lost")
        })
        .await?;
        let died = Instant::now();
        holder.die(how);
        let (_, at) = next_assignment(&mut assigned, &id).await?;
        let name = match how {
            Death::StreamReset => "stream_reset",
            Death::Silent => "silent",
        };
        results
            .entry(name)
            .or_default()
            .push(at.duration_since(died).as_secs_f64() * 1000.0);
        holder = spare;
    }
    for name in ["stream_reset", "silent"] {
        let mut ms = results.remove(name).unwrap_or_default();
        ms.sort_by(f64::total_cmp);
        println!("detection_{name}_median {:.1} ms", percentile(&ms, 0.5));
        println!("detection_{name}_max {:.1} ms", percentile(&ms, 1.0));
    }
    println!("detection_agent_timeout {} ms", agent_timeout * 1000);
    Ok(())
}

/// The next assignment, which must go to `to`.
async fn next_assignment(
    assigned: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    to: &str,
) -> anyhow::Result<(String, Instant)> {
    let got = tokio::time::timeout(Duration::from_secs(120), assigned.recv())
        .await
        .context("no reassignment within 120 s")?
        .context("agents gone")?;
    anyhow::ensure!(got.0 == to, "the task went to {}, not {to}", got.0);
    Ok(got)
}

/// User plus system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("a stat line")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn workload(w: Workload) -> anyhow::Result<()> {
    match w {
        Workload::Throughput { tasks, agents } => {
            let Run {
                seconds: s,
                clock,
                phases,
                ..
            } = run(&independent(tasks), agents).await?;
            println!(
                "throughput_{tasks}_tasks_{agents}_agents {:.0} tasks/s",
                tasks as f64 / s
            );
            // The same run without parsing the suite at submit and the final
            // report at the end: the rate of dispatch and completion alone.
            println!(
                "throughput_{tasks}_tasks_{agents}_agents_steady {:.0} tasks/s",
                tasks as f64 / clock.busy_seconds()
            );
            // Where the rest of the time goes: submit to the first
            // assignment; the last completion to the report written (the
            // suite_finished event); and fetching it (GetFinalReport).
            let name = format!("throughput_{tasks}_tasks_{agents}_agents");
            let nan = f64::NAN;
            println!(
                "{name}_submit_to_first_assignment {:.0} ms",
                phases.first_assignment_ms.unwrap_or(nan)
            );
            println!(
                "{name}_last_completion_to_report_written {:.0} ms",
                phases.finished_ms - phases.last_completion_ms.unwrap_or(nan)
            );
            println!(
                "{name}_report_fetch {:.0} ms",
                s * 1000.0 - phases.finished_ms
            );
        }
        Workload::Dag {
            layers,
            width,
            agents,
        } => {
            let s = run(&layered(layers, width), agents).await?.seconds;
            println!(
                "layered_dag_{layers}x{width}_{agents}_agents {:.0} tasks/s",
                (layers * width) as f64 / s
            );
        }
        Workload::Dispatch { tasks, agents } => {
            let clock = run(&chain(tasks), agents).await?.clock;
            let mut lat: Vec<f64> = (1..tasks)
                .filter_map(|i| {
                    let done = clock.completed.get(&format!("C{}", i - 1))?;
                    let next = clock.assigned.get(&format!("C{i}"))?;
                    Some(next.duration_since(*done).as_secs_f64() * 1000.0)
                })
                .collect();
            lat.sort_by(f64::total_cmp);
            println!(
                "dispatch_latency_p50_{agents}_agents {:.3} ms",
                percentile(&lat, 0.5)
            );
            println!(
                "dispatch_latency_p99_{agents}_agents {:.3} ms",
                percentile(&lat, 0.99)
            );
        }
        Workload::Makespan { tasks, seed } => {
            for mode in ["dag", "phased"] {
                let (suite, shape) = seed_suite(mode);
                let r = run(&suite, 3).await?;
                println!(
                    "makespan_seed_{mode} {:.3} ratio_to_lower_bound",
                    r.makespan_ms / shape.bound()
                );
                println!(
                    "makespan_seed_{mode}_counting_max_parallel {:.3} ratio_to_lower_bound",
                    r.makespan_ms / shape.bound_with_max_parallel()
                );
            }
            // One seed's DAG may be kind or unkind to the policy: its offline
            // schedule over the next 30 seeds' DAGs too.
            let mut ratios: Vec<f64> = (seed..seed + 30)
                .map(|sd| {
                    let (_, shape) = random_dag(tasks, sd);
                    shape.offline_list_schedule(4, 4.0) / shape.bound()
                })
                .collect();
            ratios.sort_by(f64::total_cmp);
            println!(
                "makespan_random_{tasks}_offline_list_schedule_30_seeds_median {:.3} ratio_to_lower_bound",
                ratios[ratios.len() / 2]
            );
            println!(
                "makespan_random_{tasks}_offline_list_schedule_30_seeds_max {:.3} ratio_to_lower_bound",
                ratios[ratios.len() - 1]
            );
            for mode in ["dag", "phased"] {
                let (mut suite, shape) = random_dag(tasks, seed);
                suite.yaml = format!("scheduling: {mode}\n{}", suite.yaml);
                let (critical, spread) = shape.bound_parts();
                println!("makespan_random_{tasks}_critical_path {critical:.0} ms");
                println!("makespan_random_{tasks}_work_over_capacity {spread:.0} ms");
                println!(
                    "makespan_random_{tasks}_offline_list_schedule {:.3} ratio_to_lower_bound",
                    shape.offline_list_schedule(4, 4.0) / shape.bound()
                );
                let mut fleet = Fleet::start(&suite, 4).await?;
                let first = fleet.run().await?;
                let again = fleet.run().await?;
                println!(
                    "makespan_random_{tasks}_{mode}_no_history {:.3} ratio_to_lower_bound",
                    first.makespan_ms / shape.bound()
                );
                println!(
                    "makespan_random_{tasks}_{mode}_with_history {:.3} ratio_to_lower_bound",
                    again.makespan_ms / shape.bound()
                );
                // The simulated agents' sleeps overshoot (timer resolution is
                // 1 ms): the same bound over the durations they really took.
                let took = shape.with_durations(|i| again.clock.took_ms(&format!("R{i}")));
                println!(
                    "makespan_random_{tasks}_{mode}_with_history_over_durations_taken {:.3} ratio_to_lower_bound",
                    again.makespan_ms / took.bound()
                );
            }
        }
        Workload::Fleet { agents, seconds } => fleet(agents, seconds).await?,
        Workload::Detection {
            trials,
            agent_timeout,
        } => detection(trials, agent_timeout).await?,
        Workload::Smoke => {
            Box::pin(workload(Workload::Throughput {
                tasks: 200,
                agents: 4,
            }))
            .await?;
            Box::pin(workload(Workload::Dag {
                layers: 5,
                width: 20,
                agents: 10,
            }))
            .await?;
            Box::pin(workload(Workload::Dispatch {
                tasks: 50,
                agents: 10,
            }))
            .await?;
            Box::pin(workload(Workload::Fleet {
                agents: 50,
                seconds: 2,
            }))
            .await?;
            Box::pin(workload(Workload::Makespan { tasks: 30, seed: 1 })).await?;
            Box::pin(workload(Workload::Detection {
                trials: 1,
                agent_timeout: 1,
            }))
            .await?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(workload(args.workload))
}

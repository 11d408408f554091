//! `testfleet-bench`: the control plane alone, measured. A real orchestrator
//! process; simulated agents in this process, each a real gRPC stream, that
//! run the built-in task kinds `testfleet:noop` and `testfleet:sleep:<ms>`
//! without spawning anything. Each workload prints `name value unit` lines.
//!
//!   testfleet-bench throughput --tasks 20000 --agents 4
//!   testfleet-bench dag --layers 50 --width 200 --agents 100
//!   testfleet-bench dispatch --tasks 2000 --agents 100
//!   testfleet-bench makespan
//!   testfleet-bench smoke            # tiny versions of all, for CI

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
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
    /// with known durations.
    Makespan,
    /// N agents heartbeating every second: the orchestrator's RSS and CPU,
    /// and heartbeat lag (age when it reached the orchestrator) p99.
    Fleet {
        #[arg(long, default_value_t = 1_000)]
        agents: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// All of the above, tiny, so CI keeps the harness working.
    Smoke,
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

/// The seed's nine tasks and three subtasks, with these durations (ms).
fn seed_suite(mode: &str) -> (Suite, f64) {
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
    // Lower bound: the critical path (A2 500 + B1a 400 + B2 600 + C1 500 + C2 400)
    // against total work over capacity (3 agents × 4 cores).
    let critical = 500.0 + 400.0 + 600.0 + 500.0 + 400.0;
    let work: f64 = durations
        .iter()
        .map(|(_, ms, _, cpu)| (*ms as f64) * f64::from(*cpu))
        .sum();
    let bound = f64::max(critical, work / 12.0);
    (
        Suite {
            yaml: y,
            durations_ms: map,
        },
        bound,
    )
}

/// `orchestrator serve` on a free port, with its address.
struct Orchestrator {
    child: Child,
    endpoint: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_orchestrator(suite: &Suite) -> anyhow::Result<Orchestrator> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, &suite.yaml)?;
    let bin = std::env::current_exe()?.with_file_name("orchestrator");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env(
            "RUST_LOG",
            "warn,orchestrator::server=info,orchestrator::metrics=info",
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() || metrics.is_none() {
        let line = lines
            .next()
            .context("the orchestrator exited before listening")??;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(a) = v["addr"].as_str() {
            addr = Some(a.to_string());
        }
        if let Some(a) = v["metrics_addr"].as_str() {
            metrics = Some(a.to_string());
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok(Orchestrator {
        child,
        endpoint: format!("http://{}", addr.expect("set above")),
        metrics: metrics.expect("set above"),
        _dir: dir,
    })
}

/// When each assignment arrived, and when each completion left.
#[derive(Default)]
struct Clock {
    assigned: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
}

/// A simulated agent: a real stream, no processes.
async fn simulated_agent(
    channel: Channel,
    id: String,
    durations: Arc<HashMap<String, u64>>,
    clock: Arc<Mutex<Clock>>,
) -> anyhow::Result<()> {
    let (tx, mut inbound) = connect_simulated(channel, &id, 4.0).await?;
    tokio::spawn(heartbeat(tx.clone(), id.clone(), Duration::from_secs(1)));
    while let Some(msg) = inbound.message().await? {
        let Some(orchestrator_message::Body::Assignment(a)) = msg.body else {
            continue;
        };
        let task_id = a
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        clock
            .lock()
            .expect("clock")
            .assigned
            .insert(task_id.clone(), Instant::now());
        let wait = durations.get(&task_id).copied().unwrap_or(0);
        let tx = tx.clone();
        let (clock, agent_id) = (clock.clone(), id.clone());
        tokio::spawn(async move {
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let c = proto::TaskCompletion {
                agent_id,
                task_id: task_id.clone(),
                attempt_id: a.attempt_id,
                final_status: proto::FinalStatus::Success as i32,
                execution_summary: Some(proto::ExecutionSummary {
                    duration_seconds: wait as f64 / 1000.0,
                    ..Default::default()
                }),
                ..Default::default()
            };
            clock
                .lock()
                .expect("clock")
                .completed
                .insert(task_id, Instant::now());
            let _ = tx
                .send(AgentMessage {
                    body: Some(agent_message::Body::Completion(c)),
                })
                .await;
        });
    }
    Ok(())
}

/// Runs `suite` on `agents` simulated agents; returns seconds from submit
/// to the final report, and the clock.
async fn run(suite: &Suite, agents: usize) -> anyhow::Result<(f64, Clock)> {
    let orch = start_orchestrator(suite)?;
    let channel = testfleet::transport::endpoint(&orch.endpoint)?
        .connect()
        .await?;
    let clock = Arc::new(Mutex::new(Clock::default()));
    let durations = Arc::new(suite.durations_ms.clone());
    for i in 0..agents {
        tokio::spawn(simulated_agent(
            channel.clone(),
            format!("sim_{i:05}"),
            durations.clone(),
            clock.clone(),
        ));
    }
    let mut control = ControlClient::new(channel).max_decoding_message_size(1 << 30);
    let deadline = Instant::now() + Duration::from_secs(60);
    while control
        .list_agents(proto::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents
        .len()
        < agents
    {
        anyhow::ensure!(Instant::now() < deadline, "agents did not all connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = control
        .watch_suite(proto::WatchSuiteRequest {})
        .await?
        .into_inner();
    let start = Instant::now();
    control
        .execute_suite(proto::ExecuteSuiteRequest::default())
        .await?;
    loop {
        // Lagging watchers drop events; the final state is read below anyway.
        match tokio::time::timeout(Duration::from_secs(1), events.message()).await {
            Ok(Ok(Some(e)))
                if matches!(e.body, Some(proto::suite_event::Body::SuiteFinished(_))) =>
            {
                break
            }
            Ok(Ok(Some(_))) => {}
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
    let clock = std::mem::take(&mut *clock.lock().expect("clock"));
    Ok((seconds, clock))
}

/// Agents that only say hello and heartbeat, one connection per 100.
async fn fleet(agents: usize, seconds: u64) -> anyhow::Result<()> {
    let orch = start_orchestrator(&independent(1))?;
    let mut channels = Vec::new();
    for _ in 0..agents.div_ceil(100) {
        channels.push(
            testfleet::transport::endpoint(&orch.endpoint)?
                .connect()
                .await?,
        );
    }
    for i in 0..agents {
        tokio::spawn(heartbeat_only(channels[i / 100].clone(), i));
    }
    let mut control = ControlClient::new(channels[0].clone()).max_decoding_message_size(1 << 30);
    let deadline = Instant::now() + Duration::from_secs(120);
    while control
        .list_agents(proto::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents
        .len()
        < agents
    {
        anyhow::ensure!(Instant::now() < deadline, "agents did not all connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = orch.child.id();
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
    let text = reqwest::get(format!("http://{}/metrics", orch.metrics))
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
    let Ok((tx, mut inbound)) = connect_simulated(channel, &id, 1.0).await else {
        return;
    };
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    // Spread the beats over the second, as independent agents would be.
    heartbeat(tx, id, Duration::from_millis((i as u64 * 7919) % 1000)).await;
}

/// Opens a simulated agent's stream: hello with `cores`, then the replies.
async fn connect_simulated(
    channel: Channel,
    id: &str,
    cores: f64,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<AgentMessage>,
    tonic::Streaming<proto::OrchestratorMessage>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(1024);
    let hello = proto::AgentHello {
        agent_id: id.to_string(),
        host: "sim".into(),
        capacity: Some(proto::Resources {
            memory_mb: 1024,
            cpu_cores: cores,
            disk_mb: 1024,
        }),
        ..Default::default()
    };
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(hello)),
    })
    .await?;
    let inbound = proto::agent_gateway_client::AgentGatewayClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// Heartbeats every second after `first`, until the stream closes.
async fn heartbeat(tx: tokio::sync::mpsc::Sender<AgentMessage>, id: String, first: Duration) {
    tokio::time::sleep(first).await;
    loop {
        let hb = proto::Heartbeat {
            agent_id: id.clone(),
            timestamp: Some(testfleet::time::now_timestamp()),
            ..Default::default()
        };
        if tx
            .send(AgentMessage {
                body: Some(agent_message::Body::Heartbeat(hb)),
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
            let (s, _) = run(&independent(tasks), agents).await?;
            println!(
                "throughput_{tasks}_tasks_{agents}_agents {:.0} tasks/s",
                tasks as f64 / s
            );
        }
        Workload::Dag {
            layers,
            width,
            agents,
        } => {
            let (s, _) = run(&layered(layers, width), agents).await?;
            println!(
                "layered_dag_{layers}x{width}_{agents}_agents {:.0} tasks/s",
                (layers * width) as f64 / s
            );
        }
        Workload::Dispatch { tasks, agents } => {
            let (_, clock) = run(&chain(tasks), agents).await?;
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
        Workload::Makespan => {
            for mode in ["dag", "phased"] {
                let (suite, bound_ms) = seed_suite(mode);
                let (s, _) = run(&suite, 3).await?;
                println!(
                    "makespan_seed_{mode} {:.3} ratio_to_lower_bound",
                    s * 1000.0 / bound_ms
                );
            }
        }
        Workload::Fleet { agents, seconds } => fleet(agents, seconds).await?,
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
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(workload(args.workload))
}

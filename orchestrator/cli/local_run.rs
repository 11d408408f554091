//! `orchestrator run FILE --local-agents N`: the whole product on one host.
//! The orchestrator runs in this process on loopback; the agents are real
//! agent processes, exactly as on remote hosts, started by the agent pool's
//! local provisioner (`LocalRun`: exactly `--local-agents` of them, unless
//! the config's `agent_pool` names a provisioner). This is the run's flow;
//! its escalation prompt, progress display and summary are beside it.

use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use testfleet::config::{LocalRun, SchedulingMode, SuiteConfig};
use testfleet::proto::{suite_event, ExecuteSuiteRequest};

use super::escalation_prompt::{handle_escalations, OnEscalation};
use super::local_agents;
use super::progress_display::ProgressDisplay;
use super::run_lock;
use crate::edge::server;
use crate::engine::ReportDir;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The suite config (orchestrator_config.yaml).
    pub file: PathBuf,
    /// How many agent processes to keep on this host while the suite runs
    /// (default 3). A config whose `agent_pool` names a provisioner starts
    /// its own agents instead.
    #[arg(long)]
    pub local_agents: Option<u32>,
    /// Where report.json, junit.xml, artifacts and logs go. One run at a
    /// time may use it.
    #[arg(long, default_value = "testfleet-report")]
    pub report_dir: PathBuf,
    /// Where the local agents' workdirs go (setup's virtualenvs among them),
    /// kept so the next run does not set up again. One run at a time may
    /// use it. Default: .testfleet-cache beside the config file.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Override the config's `scheduling:`.
    #[arg(long, value_parser = ["dag", "phased"])]
    pub scheduling: Option<String>,
    /// Cores each local agent offers. Default: the host's, or the largest
    /// task's if larger (local agents then share the host's cores).
    #[arg(long)]
    pub agent_cpu_cores: Option<f64>,
    /// Memory each local agent offers, MB. Default: the host's divided among
    /// the agents, or the largest task's if larger.
    #[arg(long)]
    pub agent_memory_mb: Option<u64>,
    /// Fail the suite if it runs longer than this many seconds; 0 means no
    /// limit.
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// The agent binary. Default: `agent` beside this executable.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// What to do when a task is escalated to a person: `prompt` asks on the
    /// terminal (and aborts when there is none, as in CI); `wait` waits for
    /// `orchestrator escalations resolve`; or always retry, skip or abort.
    #[arg(long, value_enum, default_value_t = OnEscalation::Prompt)]
    pub on_escalation: OnEscalation,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(&args) else {
        return Ok(ExitCode::FAILURE);
    };
    // Locked before anything is written, so a second run changes nothing.
    let report_dir = run_lock::create(&args.report_dir, "report directory")?;
    let _report_lock = run_lock::lock(&report_dir, "report directory", "--report-dir")?;
    let cache_dir = run_lock::create(&cache_dir(&args), "agent cache")?;
    let _cache_lock = run_lock::lock(&cache_dir, "agent cache", "--cache-dir")?;
    testfleet::logging::init(
        &config.orchestrator.log_level,
        Some(&report_dir.join("orchestrator.log")),
    )?;

    let telemetry = crate::start_telemetry(&config)?;
    let otlp = testfleet::telemetry::endpoint(config.telemetry.otlp_endpoint.as_deref());
    let agent_bin = local_agents::agent_bin(args.agent_bin.as_deref())?;
    if !agent_bin.is_file() {
        anyhow::bail!(
            "the agent binary {} does not exist: build it (`cargo build --release`) or pass --agent-bin",
            agent_bin.display()
        );
    }
    say_who_starts_agents(&config, &args);
    let config = Arc::new(config);
    let running = server::start(server::ServeOptions {
        config: config.clone(),
        config_path: args.file.clone(),
        bind: "127.0.0.1:0".parse()?,
        metrics_bind: Some("127.0.0.1:0".parse()?),
        // Loopback only, between this process and its own children.
        tls: None,
        report_dir: ReportDir::Flat(report_dir.clone()),
        // A run killed mid-suite resumes from here when started again on
        // the same report dir; a finished or another suite's log is replaced.
        journal: Some(crate::journal::Options {
            path: report_dir.join(crate::journal::FILE),
            config_path: args.file.clone(),
            config_text: std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?,
            fresh_unless_running: true,
            local_run: config.local_run.clone(),
        }),
        limits: Default::default(),
        // The pool's local agents: workdirs in the cache (setup's venvs
        // outlive the run), logs with the report.
        pool: crate::pool::Options {
            dir: local_agents::workdirs(&cache_dir),
            log_dir: Some(report_dir.join("agents")),
            agent_bin: Some(agent_bin),
            otlp,
        },
        tls_ca: None,
        // Beside the agents' workdirs: the report dir's event log is
        // replaced every run, the durations must outlive it.
        durations_dir: Some(cache_dir.clone()),
    })
    .await?;
    let endpoint = format!("http://{}", running.addr);
    eprintln!(
        "testfleet: orchestrator on {endpoint}, reports in {}, agent workdirs in {}",
        report_dir.display(),
        cache_dir.display()
    );
    eprintln!(
        "testfleet: live page on {endpoint}{}",
        crate::edge::web_page::PAGE_PATH
    );

    let Some(status) = run_suite(&running, &args, &config, &endpoint).await? else {
        let _ = running.stop().await;
        local_agents::prune_workdirs(&cache_dir);
        return Ok(ExitCode::FAILURE);
    };

    // The report is written by the engine as the suite ends; read it back
    // through the same query the API uses.
    let report = running
        .control
        .report_json()
        .await
        .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    // Stops the pool's agents and waits for them before their workdirs
    // are pruned.
    let _ = running.stop().await;
    local_agents::prune_workdirs(&cache_dir);
    telemetry.shutdown();
    super::summary::print_summary(&report.json.to_str()?)?;
    print_report_paths(&report_dir);
    Ok(if status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--cache-dir`, or `.testfleet-cache` beside the config file: setup's
/// environments belong to the project the config describes (as its
/// `.venv` would), and are found again whatever directory the run starts in.
fn cache_dir(args: &RunArgs) -> PathBuf {
    args.cache_dir
        .clone()
        .unwrap_or_else(|| testfleet::config::config_dir(&args.file).join(DEFAULT_CACHE_DIR))
}

/// The agent cache's name beside the config file.
pub const DEFAULT_CACHE_DIR: &str = ".testfleet-cache";

/// Agents the run keeps unless `--local-agents` says.
pub const DEFAULT_LOCAL_AGENTS: u32 = 3;

/// The suite config, with the run's fleet and `--scheduling` set on it
/// (`LocalRun`); None (said on stderr) when it does not load.
fn load_config(args: &RunArgs) -> Option<SuiteConfig> {
    let mut config = match testfleet::config::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    let agents = args.local_agents.unwrap_or(DEFAULT_LOCAL_AGENTS);
    let (cpu_cores, memory_mb) = agent_capacity(&config, args, agents);
    config.local_run = Some(LocalRun {
        agents,
        cpu_cores,
        memory_mb,
        scheduling: args.scheduling.as_deref().map(|mode| {
            if mode == "phased" {
                SchedulingMode::Phased
            } else {
                SchedulingMode::Dag
            }
        }),
    });
    Some(config)
}

/// Says on stderr which agents the run will have, and from where.
fn say_who_starts_agents(config: &SuiteConfig, args: &RunArgs) {
    let Some(run) = &config.local_run else { return };
    match config.agent_pool.provisioner.as_ref().map(|p| p.kind) {
        None => eprintln!(
            "testfleet: {} local agents ({} cores, {} MB each)",
            run.agents, run.cpu_cores, run.memory_mb
        ),
        Some(kind) => {
            let kind = serde_json::to_string(&kind).unwrap_or_default();
            eprintln!("testfleet: the config's agent_pool provisioner ({kind}) starts the agents");
            if args.local_agents.is_some() {
                eprintln!("testfleet: --local-agents is not used: the config's agent_pool decides how many");
            }
        }
    }
}

/// Submits the suite and shows it to its end: its final status, or None
/// (said on stderr) when it was refused.
async fn run_suite(
    running: &server::Running,
    args: &RunArgs,
    config: &SuiteConfig,
    endpoint: &str,
) -> anyhow::Result<Option<String>> {
    let mut watch = running.engine.subscribe(&[]);
    let plan = config.plan(&testfleet::config::config_dir(&args.file));
    // A run killed mid-suite and started again on its report dir goes on
    // with the suite its event log holds.
    let resumed = running
        .engine
        .query(|s| {
            s.suite()
                .filter(|_| s.is_running())
                .map(|r| r.suite_id().to_string())
        })
        .await
        .ok()
        .flatten();
    let submitted = match resumed {
        Some(suite_id) => {
            eprintln!("testfleet: resuming suite {suite_id} from its event log");
            Ok(testfleet::proto::ExecuteSuiteResponse {
                suite_id,
                status: "running".into(),
            })
        }
        None => {
            running
                .control
                .execute(ExecuteSuiteRequest {
                    timeout_seconds: args.timeout,
                    ..Default::default()
                })
                .await
        }
    };
    let suite_id = match submitted {
        Ok(r) => r.suite_id,
        Err(s) => {
            eprintln!("error: {}", s.message());
            return Ok(None);
        }
    };

    let mut display = ProgressDisplay::new(&plan);
    let mut handled = HashSet::new();
    let status = loop {
        tokio::select! {
            event = watch.events.recv() => match event {
                Ok(e) => {
                    let Some(body) = Arc::unwrap_or_clone(e).body else { continue };
                    display.show(&body);
                    match body {
                        suite_event::Body::SuiteFinished(f) if f.suite_id == suite_id => break f.status,
                        suite_event::Body::TaskState(s) if s.status == "escalated" => {
                            handle_escalations(running, args.on_escalation, endpoint, &mut handled).await?;
                        }
                        _ => {}
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => anyhow::bail!("lost the suite's events: {e}"),
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: cancelling the suite");
                running.engine.send(testfleet_core::Event::CancelSuite { reason: "interrupted (Ctrl-C)".into() });
            }
        }
    };
    display.finish();
    Ok(Some(status))
}

fn print_report_paths(report_dir: &Path) {
    eprintln!(
        "report: {}",
        report_dir
            .join(crate::output::report::REPORT_FILE)
            .display()
    );
    eprintln!(
        "junit:  {}",
        report_dir.join(crate::output::report::JUNIT_FILE).display()
    );
    eprintln!(
        "html:   {}",
        report_dir.join(crate::output::report::HTML_FILE).display()
    );
}

/// Cores and memory each local agent offers: `--agent-cpu-cores` and
/// `--agent-memory-mb`, else the host's (memory shared among the agents),
/// or the largest task's if larger, so that every task fits an agent.
fn agent_capacity(config: &SuiteConfig, args: &RunArgs, agents: u32) -> (f64, u64) {
    let (largest_cpu, largest_mem) = config.largest_task();
    let host = testfleet::host::capacity(&args.report_dir);
    let host_cores = host.cpu_cores;
    let host_mem = host.memory_mb / agents.max(1) as u64;
    let cpu = args.agent_cpu_cores.unwrap_or(host_cores.max(largest_cpu));
    let memory = args.agent_memory_mb.unwrap_or(host_mem.max(largest_mem));
    (cpu, memory)
}

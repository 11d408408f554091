//! `orchestrator run FILE --local-agents N`: the whole product on one host.
//! The orchestrator runs in this process on loopback; the agents are real
//! agent processes, exactly as on remote hosts. This is the run's flow; its
//! agents, escalation prompt, progress display and summary are beside it.

use anyhow::Context;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use testfleet::config::{SchedulingMode, SuiteConfig};
use testfleet::proto::{suite_event, ExecuteSuiteRequest};

use super::escalation_prompt::{handle_escalations, OnEscalation};
use super::local_agents::{self, AgentLaunch};
use super::progress_display::ProgressDisplay;
use super::run_lock;
use crate::edge::server;
use crate::engine::ReportDir;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The suite config (orchestrator_config.yaml).
    pub file: PathBuf,
    /// How many agent processes to start on this host.
    #[arg(long, default_value_t = 3)]
    pub local_agents: u32,
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
    let (cpu, memory) = agent_capacity(&config, &args);
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
        }),
        limits: Default::default(),
        pool_dir: report_dir.join("pool"),
        tls_ca: None,
        // Beside the agents' workdirs: the report dir's event log is
        // replaced every run, the durations must outlive it.
        durations_dir: Some(cache_dir.clone()),
    })
    .await?;
    let endpoint = format!("http://{}", running.addr);
    eprintln!(
        "testfleet: orchestrator on {endpoint}, {} local agents ({cpu} cores, {memory} MB each), reports in {}, agent workdirs in {}",
        args.local_agents,
        report_dir.display(),
        cache_dir.display()
    );
    eprintln!(
        "testfleet: live page on {endpoint}{}",
        crate::edge::web_page::PAGE_PATH
    );

    let agent_bin = local_agents::agent_bin(args.agent_bin.as_deref())?;
    let launch = AgentLaunch {
        bin: &agent_bin,
        endpoint: &endpoint,
        cpu_cores: cpu,
        memory_mb: memory,
        report_dir: &report_dir,
        cache_dir: &cache_dir,
        otlp: otlp.as_deref(),
    };
    let agents = local_agents::start(&launch, args.local_agents)?;
    local_agents::wait_for(&running, args.local_agents).await?;

    let status = match run_suite(&running, &args, &config, &endpoint).await? {
        Some(status) => status,
        None => {
            local_agents::stop(agents).await;
            local_agents::prune_workdirs(&cache_dir);
            return Ok(ExitCode::FAILURE);
        }
    };

    // The report is written by the engine as the suite ends; read it back
    // through the same query the API uses.
    let report = running
        .control
        .report_json()
        .await
        .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    local_agents::stop(agents).await;
    local_agents::prune_workdirs(&cache_dir);
    let _ = running.stop().await;
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

/// The suite config, with `--scheduling` applied; None (said on stderr)
/// when it does not load.
fn load_config(args: &RunArgs) -> Option<SuiteConfig> {
    let mut config = match testfleet::config::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    if let Some(mode) = &args.scheduling {
        config.scheduling = if mode == "phased" {
            SchedulingMode::Phased
        } else {
            SchedulingMode::Dag
        };
    }
    Some(config)
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

fn agent_capacity(config: &SuiteConfig, args: &RunArgs) -> (f64, u64) {
    let (largest_cpu, largest_mem) = config.largest_task();
    let host = testfleet::host::capacity(&args.report_dir);
    let host_cores = host.cpu_cores;
    let host_mem = host.memory_mb / args.local_agents.max(1) as u64;
    let cpu = args.agent_cpu_cores.unwrap_or(host_cores.max(largest_cpu));
    let memory = args.agent_memory_mb.unwrap_or(host_mem.max(largest_mem));
    (cpu, memory)
}

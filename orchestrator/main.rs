//! `orchestrator`: the daemon, the embedded local run, config checks and the
//! client commands.

// mimalloc: the scheduler's hot path is small allocations, and steady-state
// throughput rose about 30% over glibc's malloc. Built without
// transparent huge pages (feature `no_thp`): on a VM, first touches of 2 MB
// pages made writing a 20 MB report three times slower in some runs
// (BENCHMARKS.md). `MIMALLOC_ALLOW_THP=1` turns them back on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The layers, from the outside in: the command line, the edges that speak to
// peers, the engine that owns the scheduler, and what it shows and writes.
mod cli;
mod edge;
mod engine;
mod journal;
mod observe;
mod output;
mod pool;
mod views;
mod wire;
#[cfg(test)]
mod wire_fuzz;

use cli::{client, local_run, plan_printer};
use edge::server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use testfleet::config::{defaults, SuiteConfig};

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "testfleet: run a test suite as a task graph on a fleet of agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator daemon: gRPC and the HTTP API on api_port.
    Serve {
        /// The suite config (orchestrator_config.yaml): its ports, `tls:`
        /// files and the suite `submit` starts. Or give it as --config.
        #[arg(
            value_name = "FILE",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        file: Option<PathBuf>,
        /// The suite config, as a flag (the same as FILE).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where reports and artifacts go.
        #[arg(long, default_value = "testfleet-data")]
        data_dir: PathBuf,
        /// Address to listen on. Default: 0.0.0.0 and the config's api_port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address for Prometheus metrics. Default: 127.0.0.1 and the config's
        /// metrics_port. Under TLS they need an observer or admin certificate.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Serve no metrics port.
        #[arg(long, conflicts_with = "metrics_listen")]
        no_metrics: bool,
        /// Serve without TLS. Required until `tls:` is configured.
        #[arg(long)]
        insecure: bool,
        /// With --insecure, listen on an address other than loopback: anyone
        /// who reaches it may run any command on every agent.
        #[arg(long, requires = "insecure")]
        insecure_allow_remote: bool,
        /// Write the logs (JSON lines) to this file instead of stderr.
        #[arg(long)]
        log_file: Option<PathBuf>,
        /// Keep no event log (DATA_DIR/events.redb): a restart then loses
        /// the running suite. For measuring what the log costs.
        #[arg(long)]
        in_memory: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run a suite here: an orchestrator on loopback, N local agents, live
    /// progress, a report. Exits 0 iff the suite succeeded.
    Run(local_run::RunArgs),
    /// Validate a config and print the plan.
    Check {
        /// The suite config to check (orchestrator_config.yaml).
        file: PathBuf,
        /// Where `run` keeps split tasks' measured test durations, to show
        /// the split they give. Default: .testfleet-cache beside the config.
        #[arg(long, conflicts_with = "data_dir")]
        cache_dir: Option<PathBuf>,
        /// Show the split from the durations `serve --data-dir DIR` keeps.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Start the server's suite (or the one in FILE).
    Submit {
        /// A suite config to run instead of the server's. Its tasks run in
        /// this file's directory (as they would in `run`), so give agents
        /// the same path to the project.
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: client::Conn,
        /// Fail the suite if it runs longer than this many seconds; 0 means
        /// no limit.
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Follow the suite to its end, print its summary, and exit 0 iff it
        /// succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Print the suite's status.
    Status {
        #[command(flatten)]
        conn: client::Conn,
        /// The whole status as JSON (the GetStatus reply).
        #[arg(long)]
        json: bool,
    },
    /// Follow the suite's events until it ends.
    Watch {
        #[command(flatten)]
        conn: client::Conn,
        /// One JSON object per event, with the seed's field names.
        #[arg(long)]
        json: bool,
        /// Only these kinds of event, comma-separated: assignment, progress,
        /// completion, failure, task_state, suite_finished, alert, pool. The
        /// suite's end is always shown. Default: all.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
    },
    /// Print the final report (JSON).
    Report {
        #[command(flatten)]
        conn: client::Conn,
    },
    /// List connected and lost agents.
    Agents {
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Drain an agent: it takes no new work and finishes what it runs.
    Drain {
        /// The agent's id, as `agents` lists it.
        agent_id: String,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Cancel the running suite.
    Cancel {
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Development certificates for mTLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// List escalations, or resolve one.
    Escalations {
        #[command(subcommand)]
        command: Option<EscalationCommand>,
        #[command(flatten)]
        conn: client::Conn,
    },
}

/// The listener's limits (README's "Connection limits"). Flags, not suite
/// keys: they hold for the process's life, while suites come and go.
#[derive(clap::Args)]
struct LimitArgs {
    /// Open connections at most, lowered if the open-file limit leaves less
    /// room.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Open connections from one address at most.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS_PER_PEER)]
    max_connections_per_peer: usize,
    /// Connections of --max-connections only operators may take (an admin
    /// certificate; on plaintext, 127.0.0.1 or ::1).
    #[arg(long, default_value_t = defaults::OPERATOR_RESERVE)]
    operator_reserve: usize,
    /// Seconds a new connection has to finish its TLS handshake, or on
    /// plaintext to send its first bytes.
    #[arg(long, default_value_t = defaults::HANDSHAKE_TIMEOUT.as_secs_f64(), value_parser = testfleet::time::positive_seconds)]
    handshake_timeout: f64,
    /// Seconds a connection may go without a request in flight before it is
    /// closed.
    #[arg(long, default_value_t = defaults::IDLE_TIMEOUT.as_secs_f64(), value_parser = testfleet::time::positive_seconds)]
    idle_timeout: f64,
}

impl LimitArgs {
    fn limits(&self) -> edge::limits::Limits {
        edge::limits::Limits {
            max_connections: self.max_connections,
            max_per_peer: self.max_connections_per_peer,
            operator_reserve: self.operator_reserve,
            handshake_timeout: std::time::Duration::from_secs_f64(self.handshake_timeout),
            idle_timeout: std::time::Duration::from_secs_f64(self.idle_timeout),
        }
    }
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make a dev CA, a server certificate, agent certificates
    /// (agent_001...) and an admin certificate.
    Init {
        /// The directory the certificates and keys are written to.
        #[arg(long)]
        out: PathBuf,
        /// How many agent certificates to make (agent_001, agent_002, ...).
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// Names and addresses the server certificate is valid for.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "localhost,127.0.0.1,orchestrator"
        )]
        names: Vec<String>,
    },
    /// Revoke certificates: add them to DIR/crl.pem (signed with DIR/ca.key).
    /// An orchestrator whose `tls.crl` is that file refuses them within a
    /// second, without a restart.
    Revoke {
        /// The directory `certs init` wrote (ca.pem, ca.key, crl.pem).
        #[arg(long)]
        dir: PathBuf,
        /// The certificates (PEM files) to revoke.
        #[arg(required = true)]
        certs: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EscalationCommand {
    /// List every escalation of the suite (the default).
    List {
        /// Print each escalation's full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decide an open escalation.
    Resolve {
        /// The escalation's id, as `escalations` lists it.
        escalation_id: String,
        /// retry: run the task again; skip: end it and let its dependents go
        /// on; abort: end the suite.
        #[arg(long, value_parser = ["retry", "skip", "abort"])]
        action: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check {
        file,
        cache_dir,
        data_dir,
    } = &cli.command
    {
        let history = data_dir
            .clone()
            .or_else(|| cache_dir.clone())
            .unwrap_or_else(|| {
                testfleet::config::config_dir(file).join(local_run::DEFAULT_CACHE_DIR)
            });
        return check(file, &history);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            file,
            config,
            data_dir,
            listen,
            metrics_listen,
            no_metrics,
            insecure,
            insecure_allow_remote,
            log_file,
            in_memory,
            limits,
        } => {
            // clap makes sure exactly one of the two is given.
            let config = file.or(config).context("no suite config given")?;
            serve(
                &config,
                (data_dir, !in_memory),
                Listen {
                    bind: listen,
                    metrics: metrics_listen,
                    no_metrics,
                    insecure,
                    insecure_allow_remote,
                    limits: limits.limits(),
                },
                log_file.as_deref(),
            )
            .await
        }
        Command::Run(args) => local_run::run(args).await,
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
        Command::Submit {
            file,
            conn,
            timeout,
            wait,
        } => client::submit(&conn, file.as_deref(), timeout, wait).await,
        Command::Status { conn, json } => client::status(&conn, json).await,
        Command::Watch { conn, json, kinds } => client::watch(&conn, json, kinds).await,
        Command::Report { conn } => client::report(&conn).await,
        Command::Agents { conn } => client::agents(&conn).await,
        Command::Drain { agent_id, conn } => client::drain(&conn, &agent_id).await,
        Command::Cancel { conn } => client::cancel(&conn).await,
        Command::Certs {
            command: CertsCommand::Init { out, agents, names },
        } => {
            let files = testfleet::tls::init_dev_pki(&out, agents, &names)?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command: CertsCommand::Revoke { dir, certs },
        } => {
            let serials = testfleet::tls::revoke(&dir, &certs)?;
            println!(
                "{}: {} certificate(s) revoked",
                dir.join("crl.pem").display(),
                serials.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Escalations { command, conn } => match command {
            None => client::escalations(&conn, false).await,
            Some(EscalationCommand::List { json }) => client::escalations(&conn, json).await,
            Some(EscalationCommand::Resolve {
                escalation_id,
                action,
            }) => client::resolve(&conn, &escalation_id, &action).await,
        },
    }
}

/// Traces over OTLP when the config or the environment names a collector.
pub fn start_telemetry(config: &SuiteConfig) -> anyhow::Result<testfleet::telemetry::Telemetry> {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let endpoint = testfleet::telemetry::endpoint(config.telemetry.otlp_endpoint.as_deref());
    testfleet::telemetry::init(
        "orchestrator",
        vec![opentelemetry::KeyValue::new("host.name", host)],
        endpoint,
    )
}

pub fn load_config(path: &Path) -> anyhow::Result<SuiteConfig> {
    testfleet::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn check(file: &Path, history_dir: &Path) -> ExitCode {
    let config = match testfleet::config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: {} problem(s); nothing will run",
                file.display(),
                e.problems.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut plan = config.plan(&testfleet::config::config_dir(file));
    println!("{}: valid", file.display());
    let history = cli::split_plan::read_history(&mut plan, history_dir);
    print!("{}", plan_printer::describe_plan(&plan));
    if let Some(note) = history {
        println!("{note}");
    }
    let missing: Vec<_> = plan
        .tasks
        .iter()
        .filter(|t| {
            t.kind == testfleet::config::TaskKind::Runnable && t.execution.command.is_empty()
        })
        .map(|t| format!("{} (template \"{}\")", t.id, t.template))
        .collect();
    if !missing.is_empty() {
        println!(
            "warning: no `templates:` entry defines how to run: {}",
            missing.join(", ")
        );
        println!("warning: the suite loads, but cannot run until those templates are defined");
    }
    ExitCode::SUCCESS
}

/// Plaintext is for loopback unless asked twice: under --insecure whoever
/// reaches the port is an admin, and an admin runs commands on every agent.
fn refuse_remote_plaintext(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to serve {what} in plaintext on {addr}, which is not a loopback address: \
         anyone who reaches it could run any command on every agent. Configure `tls:`, \
         listen on 127.0.0.1, or add --insecure-allow-remote to accept that"
    );
    Ok(())
}

/// Where and how `serve` listens.
struct Listen {
    bind: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    no_metrics: bool,
    insecure: bool,
    insecure_allow_remote: bool,
    limits: edge::limits::Limits,
}

async fn serve(
    config_path: &Path,
    (data_dir, event_log): (PathBuf, bool),
    listen: Listen,
    log_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    testfleet::logging::init(&config.orchestrator.log_level, log_file)?;
    let telemetry = start_telemetry(&config)?;
    let tls_ca = config.tls.as_ref().map(|f| {
        f.relative_to(&testfleet::config::config_dir(config_path))
            .ca
    });
    let tls = match &config.tls {
        Some(files) => {
            let files = files.relative_to(&testfleet::config::config_dir(config_path));
            let server =
                testfleet::tls::ServerTls::load(files).context("loading the `tls:` files")?;
            let files = server.files();
            tracing::info!(ca = %files.ca.display(), cert = %files.cert.display(), crl = files.crl.as_ref().map(|p| p.display().to_string()), "serving mTLS: peers need a certificate from the CA (SIGHUP reloads the files)");
            Some(Arc::new(server))
        }
        None if listen.insecure => {
            tracing::warn!("serving PLAINTEXT (--insecure): any peer that reaches this port can act as an agent or operator");
            None
        }
        None => anyhow::bail!(
            "refusing to serve without TLS: configure `tls:` (see `orchestrator certs init`) or pass --insecure to accept plaintext"
        ),
    };
    let bind = listen
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], config.orchestrator.api_port)));
    let metrics_bind = (!listen.no_metrics).then(|| {
        listen
            .metrics
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], config.orchestrator.metrics_port)))
    });
    if tls.is_none() && !listen.insecure_allow_remote {
        refuse_remote_plaintext(bind, "the API")?;
        if let Some(metrics) = metrics_bind {
            refuse_remote_plaintext(metrics, "metrics")?;
        }
    }
    // Local pool agents send their traces where this process does.
    let agent_otlp = testfleet::telemetry::endpoint(config.telemetry.otlp_endpoint.as_deref());
    let running = server::start(server::ServeOptions {
        tls,
        config: Arc::new(config),
        config_path: config_path.to_path_buf(),
        bind,
        metrics_bind,
        report_dir: engine::ReportDir::PerSuite(data_dir.join("reports")),
        journal: event_log
            .then(|| -> anyhow::Result<_> {
                Ok(journal::Options {
                    path: data_dir.join(journal::FILE),
                    config_path: config_path.to_path_buf(),
                    config_text: std::fs::read_to_string(config_path)
                        .with_context(|| format!("reading {}", config_path.display()))?,
                    fresh_unless_running: false,
                    local_run: None,
                })
            })
            .transpose()?,
        limits: listen.limits,
        pool: pool::Options {
            otlp: agent_otlp,
            ..pool::Options::under(data_dir.join("pool"))
        },
        tls_ca,
        durations_dir: Some(data_dir.clone()),
    })
    .await?;
    let pool = running.engine.pool.clone();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = shutdown => { r?; tracing::info!("shutting down"); }
        r = running.wait() => { r?; }
    }
    // The agents the pool started go with the orchestrator.
    pool.shutdown().await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

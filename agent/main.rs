//! `agent`: connects to an orchestrator, runs what it assigns, reports back.

mod attempt;
mod classify;
mod connection;
mod finished_attempts;
mod limits;
mod parsers;
mod recovery;
mod sampler;
mod split;
mod uploader;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use testfleet::proto;

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "testfleet agent: runs the tasks an orchestrator assigns"
)]
struct Args {
    /// The orchestrator's address (http:// needs --insecure).
    #[arg(long, env = "TESTFLEET_ORCHESTRATOR")]
    orchestrator_endpoint: String,
    /// This agent's id. Default: agent-<hostname>.
    #[arg(long, env = "TESTFLEET_AGENT_ID")]
    agent_id: Option<String>,
    /// Labels, `k=v,k2=v2`.
    #[arg(long, default_value = "")]
    labels: String,
    /// Where attempts run and setup is cached.
    #[arg(long, default_value = "testfleet-agent")]
    workdir: PathBuf,
    /// Write logs (JSON) to this file instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Allow a plaintext (http://) orchestrator.
    #[arg(long)]
    insecure: bool,
    /// Cores offered. Default: the host's.
    #[arg(long)]
    cpu_cores: Option<f64>,
    /// Memory offered, MB. Default: the host's.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Disk offered, MB. Default: free space under the workdir.
    #[arg(long)]
    disk_mb: Option<u64>,
    /// CA that signed the orchestrator's certificate (mTLS).
    #[arg(long, env = "TESTFLEET_CA")]
    ca: Option<PathBuf>,
    /// This agent's certificate: its name is the agent's id.
    #[arg(long, env = "TESTFLEET_CERT")]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, env = "TESTFLEET_KEY")]
    key: Option<PathBuf>,
    /// OTLP/gRPC collector for traces. Default: OTEL_EXPORTER_OTLP_ENDPOINT, else none.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Exit when the process that started this agent exits.
    #[arg(long)]
    exit_with_parent: bool,
    /// Seconds a split task's resident runner waits for its next batch
    /// before it is ended. Default: 300.
    #[arg(long, value_name = "SECONDS", value_parser = testfleet::time::positive_seconds)]
    runner_idle_timeout: Option<f64>,
}

/// The common name of a PEM certificate.
fn certificate_name(path: &std::path::Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))??;
    testfleet::tls::identity_of(&der)
        .map(|i| i.name)
        .with_context(|| format!("{} has no common name", path.display()))
}

fn parse_labels(s: &str) -> anyhow::Result<HashMap<String, String>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("label {p:?} is not key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.exit_with_parent {
        // If the embedded run dies, its agents must not linger.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    }
    if let Err(e) = testfleet::logging::init("info", args.log_file.as_deref()) {
        eprintln!("agent: cannot set up logging: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            tracing::error!(error = format!("{e:#}"), "agent stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = testfleet::transport::tls_flags(
        args.ca.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
    )?;
    if tls.is_none() && !args.insecure {
        anyhow::bail!(
            "{} needs --ca, --cert and --key (mTLS), or --insecure to connect without TLS",
            args.orchestrator_endpoint
        );
    }
    // Under mTLS the certificate names the agent.
    let certified = match &tls {
        Some(files) => Some(certificate_name(&files.cert)?),
        None => None,
    };
    if let (Some(name), Some(claimed)) = (&certified, &args.agent_id) {
        anyhow::ensure!(
            name == claimed,
            "--agent-id {claimed} does not match the certificate's name {name}"
        );
    }
    attempt::workdir_ok(&args.workdir)?;
    let workdir = std::fs::canonicalize(&args.workdir)?;
    let reaped = attempt::reap_orphans(&workdir);
    if reaped > 0 {
        tracing::warn!(
            reaped,
            "killed tasks an earlier run of this agent left running"
        );
    }
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let agent_id = args
        .agent_id
        .clone()
        .or(certified)
        .unwrap_or_else(|| format!("agent-{host}"));
    let telemetry = testfleet::telemetry::init(
        "agent",
        vec![
            opentelemetry::KeyValue::new("agent.id", agent_id.clone()),
            opentelemetry::KeyValue::new("host.name", host.clone()),
        ],
        testfleet::telemetry::endpoint(args.otlp_endpoint.as_deref()),
    )?;
    let hc = testfleet::host::capacity(&workdir);
    let capacity = proto::Resources {
        memory_mb: args.memory_mb.unwrap_or(hc.memory_mb),
        cpu_cores: args.cpu_cores.unwrap_or(hc.cpu_cores),
        disk_mb: args.disk_mb.unwrap_or(hc.disk_mb),
    };
    let identity = connection::Identity {
        agent_id: agent_id.clone(),
        host: host.clone(),
        labels: parse_labels(&args.labels)?,
        capacity,
    };
    tracing::info!(agent_id, host, cpu_cores = capacity.cpu_cores, memory_mb = capacity.memory_mb, disk_mb = capacity.disk_mb, workdir = %workdir.display(), endpoint = args.orchestrator_endpoint, "agent starting");

    let channel = testfleet::transport::secure_endpoint(&args.orchestrator_endpoint, tls.as_ref())?
        .connect_lazy();
    let (outbox_tx, outbox_rx) = tokio::sync::mpsc::channel(1024);
    let ctx = Arc::new(attempt::Context::new(
        agent_id,
        host,
        workdir,
        outbox_tx,
        uploader::Uploader::new(channel.clone()),
    ));
    let shared = ctx.clone();
    let agent = connection::Agent::new(
        identity,
        channel,
        ctx,
        outbox_rx,
        tls.is_some(),
        &args.orchestrator_endpoint,
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("stopping: cancelling running attempts");
        let _ = stop_tx.send(true);
    });
    let idle_timeout = args.runner_idle_timeout.map_or(
        split::resident::DEFAULT_IDLE_TIMEOUT,
        Duration::from_secs_f64,
    );
    let pool = shared.clone();
    let expiry = tokio::spawn(async move {
        split::resident::expire_idle(&pool.runners, idle_timeout).await;
    });
    agent.run(stop_rx).await;
    expiry.abort();
    // Idle resident runners end with their session fixtures torn down.
    split::resident::quit_all(shared.runners.drain()).await;
    telemetry.shutdown();
    Ok(())
}

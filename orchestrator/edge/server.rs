//! Puts the edges together on one port: AgentGateway, Control, health,
//! reflection (v1 and v1alpha, so every grpcurl works) and the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use testfleet::config::SuiteConfig;
use testfleet::proto::agent_gateway_server::AgentGatewayServer;
use testfleet::proto::control_server::ControlServer;
use testfleet::tls::{Role, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::edge::auth::{self, Mode};
use crate::edge::limits::{self, Limits};

use crate::edge::agent_gateway_server::AgentGatewayService;
use crate::edge::control_server::{ControlService, SuiteSource};
use crate::engine::{Engine, ReportDir};

pub struct ServeOptions {
    pub config: Arc<SuiteConfig>,
    pub config_path: std::path::PathBuf,
    pub bind: SocketAddr,
    /// Where Prometheus metrics are served; None: not served.
    pub metrics_bind: Option<SocketAddr>,
    /// mTLS, for the API and the metrics port alike, reloaded on SIGHUP and
    /// when its CRL changes; None: plaintext (`--insecure`, or the embedded
    /// run on loopback).
    pub tls: Option<Arc<ServerTls>>,
    pub report_dir: ReportDir,
    /// The event log to replay and append to; None: in memory only.
    pub journal: Option<crate::journal::Options>,
    /// The listener's limits, before they are fitted under the process's
    /// open-file limit.
    pub limits: Limits,
    /// Where the agent pool's agents keep their workdirs, logs and minted
    /// certificates, and how local ones are started.
    pub pool: crate::pool::Options,
    /// The CA of `tls:` (absolute), which pool agents are minted from.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Where split tasks' measured test durations are kept from run to run
    /// (`journal::durations`); None: none are kept.
    pub durations_dir: Option<std::path::PathBuf>,
}

pub struct Running {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub control: ControlService,
    shutdown: Option<oneshot::Sender<()>>,
    closing: tokio::sync::watch::Sender<bool>,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.closing.send(true);
        self.engine.pool.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join.await.context("server task")?
    }

    /// Resolves when the server stops by itself (an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.join.await.context("server task")?
    }
}

/// How often the scheduler looks at the clock (heartbeat deadlines, retry delays).
const TICK: Duration = Duration::from_millis(250);

/// Connections the kernel may hold for the accept loop (the kernel caps it
/// at net.core.somaxconn). The standard 128 overflows under a burst of
/// agents reconnecting at once, and an overflowing queue resets peers.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    // Before the port is taken: a log that cannot be used is refused first.
    let orchestrator_id = opts.config.orchestrator.name.clone();
    let journal = match &opts.journal {
        None => None,
        Some(j) => {
            let opened = crate::journal::open(j, &orchestrator_id)?;
            tracing::info!(
                journal = %j.path.display(),
                replayed = opened.replayed,
                from_snapshot = opened.from_snapshot.map_or("none".to_string(), |s| s.to_string()),
                entries = opened.entries,
                next_entry = opened.next_seq,
                replay_ms = opened.took.as_secs_f64() * 1000.0,
                suite_running = opened.scheduler.is_running(),
                "event log replayed"
            );
            Some(crate::engine::Journal {
                opened,
                path: j.path.clone(),
            })
        }
    };
    let listener = listen(opts.bind).with_context(|| {
        format!(
            "cannot listen on {} (is another orchestrator running there?)",
            opts.bind
        )
    })?;
    let addr = listener.local_addr()?;
    // Before anything starts: a busy metrics port stops `serve` as a busy
    // API port does (`--no-metrics` does without them).
    let metrics_listener = opts
        .metrics_bind
        .map(crate::observe::metrics_server::bind)
        .transpose()?;
    let open_files = limits::raise_open_file_limit()?;
    let limits = opts.limits.clone().fitted(open_files);
    if limits.max_connections < opts.limits.max_connections {
        tracing::warn!(
            asked = opts.limits.max_connections,
            open_files,
            "fewer connections than asked: the open-file limit leaves room for {}",
            limits.max_connections
        );
    }
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    // Agents on this host reach a wildcard listener on loopback.
    let reach = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let pool = crate::pool::Context {
        endpoint: format!("{scheme}://{reach}"),
        tls: opts
            .tls
            .is_some()
            .then(|| opts.tls_ca.clone())
            .flatten()
            .map(|ca| crate::pool::TlsContext { ca }),
        agent_bin: crate::cli::local_agents::agent_bin(opts.pool.agent_bin.as_deref())?,
        dir: opts.pool.dir.clone(),
        log_dir: opts.pool.log_dir.clone(),
        otlp: opts.pool.otlp.clone(),
        instance: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
    };
    let durations = opts
        .durations_dir
        .as_deref()
        .map(crate::journal::durations::Durations::open)
        .transpose()?
        .map(Arc::new);
    let engine = Engine::start(
        orchestrator_id.clone(),
        opts.report_dir,
        TICK,
        journal,
        pool,
        durations,
    )?;
    if let Some(listener) = metrics_listener {
        crate::observe::metrics_server::serve(
            engine.metrics.clone(),
            listener,
            opts.tls.clone(),
            limits.handshake_timeout,
        )?;
    }
    if let Some(tls) = &opts.tls {
        crate::edge::tls_reload::spawn(tls)?;
    }
    let control = ControlService::new(
        engine.clone(),
        SuiteSource::new(opts.config.clone(), opts.config_path),
    );

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControlServer<ControlService>>()
        .await;
    health_reporter
        .set_serving::<AgentGatewayServer<AgentGatewayService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(testfleet::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(testfleet::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let mode = if opts.tls.is_some() {
        Mode::Mtls
    } else {
        Mode::Open
    };
    // Every control call needs an admin certificate under mTLS.
    let admin_only = move |req: tonic::Request<()>| {
        auth::require(
            mode,
            req.extensions().get::<crate::edge::listener::PeerInfo>(),
            Role::Admin,
        )?;
        Ok(req)
    };
    // Live pages' event streams never end by themselves: they are told to
    // when the server stops, or its graceful shutdown would wait for them.
    let (closing, pages_closing) = tokio::sync::watch::channel(false);
    let routes = tonic::service::Routes::from(crate::edge::http_api::router(
        control.clone(),
        mode,
        pages_closing,
    ))
    .add_service(AgentGatewayServer::new(AgentGatewayService::new(
        engine.clone(),
        orchestrator_id,
        mode,
        opts.config.storage.limits(),
    )))
    .add_service(ControlServer::with_interceptor(control.clone(), admin_only))
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha);

    let (tx, rx) = oneshot::channel::<()>();
    let tls = opts.tls.clone();
    let shown = limits.clone();
    let join = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(crate::edge::idle::Track)
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .initial_stream_window_size(testfleet::transport::STREAM_WINDOW)
            .initial_connection_window_size(testfleet::transport::CONNECTION_WINDOW)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                ReceiverStream::new(crate::edge::listener::accept(listener, tls, limits)),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .context("gRPC server")
    });
    tracing::info!(
        %addr,
        open_files,
        max_connections = shown.max_connections,
        max_connections_per_peer = shown.max_per_peer,
        operator_reserve = shown.operator_reserve,
        handshake_timeout_s = shown.handshake_timeout.as_secs_f64(),
        idle_timeout_s = shown.idle_timeout.as_secs_f64(),
        "orchestrator listening (gRPC and HTTP)"
    );
    Ok(Running {
        addr,
        engine,
        control,
        shutdown: Some(tx),
        closing,
        join,
    })
}

//! The metrics port: `GET /metrics`, Prometheus text. Under TLS it is held
//! to the API's mTLS (the same CA, CRL and server certificate, reloaded
//! with them), and only a certificate with the `observer` or `admin` role
//! may read it: the metrics name every agent and task. Plaintext only with
//! `--insecure`, like the API.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use testfleet::tls::{identity_of, PeerIdentity, Role, ServerTls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::observe::metrics::Metrics;
use crate::observe::refusals::LogRate;

/// Handshakes the metrics port runs at once; past it a connection is closed.
/// A scraper needs one; the cap keeps a flood from costing more.
const HANDSHAKES_AT_ONCE: usize = 64;

/// Binds the metrics port, or says why not in the sentence a busy API port
/// gets, naming the way to do without metrics.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!(
            "cannot listen on {addr} for metrics (is another orchestrator running there? \
             --metrics-listen chooses another address, --no-metrics serves none)"
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` (from `bind`), over mTLS when `tls`
/// is set, with `handshake_timeout` to finish a handshake. Returns the
/// bound address.
pub fn serve(
    metrics: Metrics,
    listener: std::net::TcpListener,
    tls: Option<Arc<ServerTls>>,
    handshake_timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let secure = tls.is_some();
    match tls {
        None => {
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { text(&m) }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
        Some(tls) => {
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move |ConnectInfo(peer): ConnectInfo<MetricsPeer>| {
                    let m = metrics.clone();
                    async move {
                        match allowed(&peer) {
                            Ok(()) => text(&m),
                            Err(why) => (StatusCode::FORBIDDEN, why).into_response(),
                        }
                    }
                }),
            );
            let incoming = TlsListener::start(listener, tls, handshake_timeout, bound);
            tokio::spawn(async move {
                let served = axum::serve(
                    incoming,
                    app.into_make_service_with_connect_info::<MetricsPeer>(),
                );
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
    }
    tracing::info!(metrics_addr = %bound, mtls = secure, "metrics listening");
    Ok(bound)
}

fn text(m: &Metrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// Whether the peer's certificate may read the metrics.
fn allowed(peer: &MetricsPeer) -> Result<(), String> {
    match &peer.identity {
        Some(PeerIdentity {
            role: Some(Role::Observer | Role::Admin),
            ..
        }) => Ok(()),
        Some(identity) => {
            tracing::warn!(peer = %peer.addr, name = identity.name, "refused a metrics scrape for its role");
            Err(format!(
                "certificate {:?} carries the {} role; the metrics port needs the observer or admin role\n",
                identity.name,
                identity.role.map_or("no", Role::as_str)
            ))
        }
        None => Err("a client certificate is required\n".into()),
    }
}

/// Who scrapes, from its certificate.
#[derive(Clone, Debug)]
pub struct MetricsPeer {
    addr: SocketAddr,
    identity: Option<PeerIdentity>,
}

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for MetricsPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Connections whose TLS handshake is done, each with its peer. Handshakes
/// run beside the accept loop, so a slow peer cannot stall a scrape.
pub struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, MetricsPeer)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        timeout: Duration,
        local: SocketAddr,
    ) -> TlsListener {
        let (tx, done) = mpsc::channel(16);
        let refusals = Arc::new(Mutex::new(LogRate::default()));
        let room = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(error = %e, "metrics accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    continue;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.metrics());
                let (tx, refusals) = (tx.clone(), refusals.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let why = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| identity_of(c));
                            let _ = tx.send((stream, MetricsPeer { addr, identity })).await;
                            return;
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "the handshake timed out".to_string(),
                    };
                    let noted = refusals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .note(Instant::now());
                    if noted.tell {
                        tracing::warn!(peer = %addr, error = why, "refused a TLS handshake on the metrics port");
                    }
                });
            }
        });
        TlsListener { done, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = MetricsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.done.recv().await {
            Some(conn) => conn,
            // The accept loop has ended only if this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<MetricsPeer> {
        Ok(MetricsPeer {
            addr: self.local,
            identity: None,
        })
    }
}

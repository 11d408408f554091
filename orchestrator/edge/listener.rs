//! Incoming connections. Under mTLS the handshake happens here rather than
//! inside tonic, so a refused handshake (no certificate, another CA, an
//! expired one) is logged at WARN with the peer's address, and every
//! request carries the peer's identity from its certificate. Every
//! connection is held to the listener's limits (`edge::limits`): past them
//! it is closed at once, one that does not finish its handshake (or on
//! plaintext send anything) in time is closed, and so is one idle for the
//! idle timeout (`edge::idle`). When the TLS files are reloaded (a new CRL,
//! or SIGHUP), every open connection's certificate is checked again, and
//! one the new configuration refuses (revoked) is closed. Warnings about
//! refused connections are told at a bounded rate, with counts.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use testfleet::config::defaults;
use testfleet::tls::{identity_of, PeerIdentity, Role, ServerTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use crate::edge::idle::{Activity, IdleClock};
use crate::edge::limits::{is_operator_address, Caller, Gate, Limits, Refused, Slot};
use crate::observe::refusals::{LogRate, Untold};

/// What handlers know about the caller (a request extension).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// From the client certificate; None on a plaintext connection.
    pub identity: Option<PeerIdentity>,
    /// The connection's requests in flight, for its idle timeout.
    pub activity: Option<Arc<Activity>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn peer(&self) -> PeerInfo {
        let (tcp, identity) = match self {
            Io::Plain(s) => (s, None),
            Io::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let identity = session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| identity_of(c));
                (tcp, identity)
            }
        };
        PeerInfo {
            remote_addr: tcp.peer_addr().ok(),
            identity,
            activity: None,
        }
    }
}

/// An accepted connection: its stream, who it is, its place under the
/// limits (given back when it closes) and its idle clock.
pub struct Conn {
    io: Io,
    peer: PeerInfo,
    idle: IdleClock,
    /// Set when a reload refuses its certificate (TLS only).
    revoked: Option<Revocable>,
    _slot: Slot,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = self.get_mut();
        if let Some(revocable) = &conn.revoked {
            if revocable.revoked(cx) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "its certificate is no longer accepted (revoked)",
                )));
            }
        }
        let read = match &mut conn.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        // Only while waiting for bytes: hyper always is, between requests.
        if read.is_pending() && conn.idle.poll_expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request for the idle timeout",
            )));
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    // Without these, h2 writes a frame's header and its payload in two
    // calls: two syscalls for every batch of messages to an agent.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections (TLS when `tls` is set, with its configuration as it
/// stands at each handshake) within `limits` and hands them on. A connection past the limits is accepted and closed at once, so
/// the kernel's backlog never fills with peers nobody will answer.
pub fn accept(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: Limits,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let listen = Arc::new(Listen {
        tls,
        gate: Gate::new(limits),
        warnings: Warnings::default(),
        open: Arc::default(),
    });
    tokio::spawn(tell_counts(listen.clone(), tx.clone()));
    if let Some(tls) = &listen.tls {
        tokio::spawn(recheck_on_reload(tls.reloads(), listen.clone(), tx.clone()));
    }
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let accepted = tokio::select! {
                // The server stopped: let go of the port.
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    if listen.warnings.note(Warning::AcceptFailed) {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    if let Some(pause) = pause_after(&e, failures) {
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
            };
            failures = 0;
            let Some(slot) = listen.admit(peer) else {
                drop(tcp);
                continue;
            };
            let (listen, tx) = (listen.clone(), tx.clone());
            // Handshakes run beside the accept loop, so a slow peer cannot stall others.
            tokio::spawn(async move {
                if let Some(conn) = listen.open(tcp, peer, slot).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    rx
}

/// How long to wait before accepting again after `e`, the `failures`th in a
/// row. Out of descriptors (or memory), accepting again at once would only
/// fail again: back off, up to a second. Any other error was about one
/// connection.
fn pause_after(e: &io::Error, failures: u32) -> Option<Duration> {
    use nix::errno::Errno;
    let errno = Errno::from_raw(e.raw_os_error()?);
    let exhausted = matches!(
        errno,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    );
    exhausted.then(|| Duration::from_millis(50 << failures.min(5)).min(Duration::from_secs(1)))
}

/// What every accepted connection shares.
struct Listen {
    tls: Option<Arc<ServerTls>>,
    gate: Arc<Gate>,
    warnings: Warnings,
    /// Open TLS connections, to check again after a reload.
    open: Arc<OpenTls>,
}

impl Listen {
    /// A slot for the peer, or None (and the connection is closed) when the
    /// limits leave it none.
    fn admit(&self, peer: SocketAddr) -> Option<Slot> {
        let ip = peer.ip();
        let caller = match (is_operator_address(ip), self.tls.is_some()) {
            (true, _) => Caller::Operator,
            (false, false) => Caller::Other,
            (false, true) => Caller::Unverified,
        };
        let why = match self.gate.admit(ip, caller) {
            Ok(slot) => return Some(slot),
            Err(why) => why,
        };
        let limits = self.gate.limits();
        match why {
            Refused::PortFull if self.warnings.note(Warning::PortFull) => {
                let open = self.gate.open();
                tracing::warn!(%peer, open, max = limits.max_connections, reserve = limits.operator_reserve, "{}", Warning::PortFull.what());
            }
            Refused::PeerFull if self.warnings.note(Warning::PeerFull) => {
                tracing::warn!(%peer, max_per_peer = limits.max_per_peer, "{}", Warning::PeerFull.what());
            }
            _ => {}
        }
        None
    }

    /// The connection once it has shown who it is: its TLS handshake done,
    /// or on plaintext its first bytes arrived, within the handshake timeout.
    async fn open(&self, tcp: TcpStream, peer: SocketAddr, mut slot: Slot) -> Option<Conn> {
        let _ = tcp.set_nodelay(true);
        let limits = self.gate.limits();
        let deadline = limits.handshake_timeout;
        let io = match &self.tls {
            None => match tokio::time::timeout(deadline, tcp.readable()).await {
                // Bytes, or an error or EOF that hyper will read.
                Ok(_) => Io::Plain(tcp),
                Err(_) => {
                    if self.warnings.note(Warning::Silent) {
                        tracing::warn!(%peer, "{}", Warning::Silent.what());
                    }
                    return None;
                }
            },
            Some(tls) => match tokio::time::timeout(
                deadline,
                tokio_rustls::TlsAcceptor::from(tls.api()).accept(tcp),
            )
            .await
            {
                Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
                Ok(Err(e)) => {
                    if self.warnings.note(Warning::TlsRefused) {
                        tracing::warn!(%peer, error = %e, "{}", Warning::TlsRefused.what());
                    }
                    return None;
                }
                Err(_) => {
                    if self.warnings.note(Warning::TlsTimedOut) {
                        tracing::warn!(%peer, "{}", Warning::TlsTimedOut.what());
                    }
                    return None;
                }
            },
        };
        let revoked = match &io {
            Io::Tls(s) => s.get_ref().1.peer_certificates().map(|chain| {
                self.open
                    .add(chain.iter().map(|c| c.clone().into_owned()).collect())
            }),
            Io::Plain(_) => None,
        };
        let mut info = io.peer();
        let admin = info
            .identity
            .as_ref()
            .is_some_and(|i| i.role == Some(Role::Admin));
        if slot.reserved() && self.tls.is_some() && !admin {
            if self.warnings.note(Warning::NotAnOperator) {
                tracing::warn!(%peer, identity = info.identity.as_ref().map(|i| i.name.as_str()), "{}", Warning::NotAnOperator.what());
            }
            return None;
        }
        slot.verified();
        let activity = Activity::new();
        info.activity = Some(activity.clone());
        Some(Conn {
            io,
            peer: info,
            idle: IdleClock::new(activity, limits.idle_timeout),
            revoked,
            _slot: slot,
        })
    }
}

/// The open TLS connections' certificate chains, by connection.
#[derive(Default)]
struct OpenTls {
    next: std::sync::atomic::AtomicU64,
    conns: Mutex<HashMap<u64, OpenConn>>,
}

/// An open TLS connection: its peer's certificate chain, and its flag.
type OpenConn = (Vec<CertificateDer<'static>>, Arc<Revoke>);

/// One connection's flag, and who to wake when it is set.
#[derive(Default)]
struct Revoke {
    set: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

/// A connection's place in `OpenTls`, given back when it closes.
struct Revocable {
    id: u64,
    open: Arc<OpenTls>,
    revoke: Arc<Revoke>,
}

impl Revocable {
    fn revoked(&self, cx: &mut Context<'_>) -> bool {
        use std::sync::atomic::Ordering;
        if self.revoke.set.load(Ordering::Acquire) {
            return true;
        }
        self.revoke.waker.register(cx.waker());
        self.revoke.set.load(Ordering::Acquire)
    }
}

impl Drop for Revocable {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

impl OpenTls {
    fn add(self: &Arc<Self>, chain: Vec<CertificateDer<'static>>) -> Revocable {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let revoke = Arc::new(Revoke::default());
        self.lock().insert(id, (chain, revoke.clone()));
        Revocable {
            id,
            open: self.clone(),
            revoke,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenConn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// After each reload of the TLS files, closes the open connections whose
/// certificates the new configuration refuses.
async fn recheck_on_reload(
    mut reloads: tokio::sync::watch::Receiver<u64>,
    listen: Arc<Listen>,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    use std::sync::atomic::Ordering;
    let Some(tls) = listen.tls.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            changed = reloads.changed() => if changed.is_err() { return },
        }
        let open: Vec<_> = listen
            .open
            .lock()
            .values()
            .map(|(chain, revoke)| (chain.clone(), revoke.clone()))
            .collect();
        let mut closed = 0usize;
        for (chain, revoke) in open {
            if let Err(e) = tls.verify(&chain) {
                // A few by name; a new CA may refuse thousands at once.
                if closed < defaults::LOG_BURST as usize {
                    let name = chain.first().and_then(|c| identity_of(c)).map(|i| i.name);
                    tracing::warn!(identity = name, error = %e, "closing a connection: after the reload its certificate is refused");
                }
                revoke.set.store(true, Ordering::Release);
                revoke.waker.wake();
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::warn!(
                closed,
                "closed the connections whose certificates the reloaded TLS files refuse"
            );
        }
    }
}

/// Tells, once per interval, how many of each warning were only counted,
/// until the server stops taking connections.
async fn tell_counts(listen: Arc<Listen>, tx: mpsc::Sender<io::Result<Conn>>) {
    let mut every = tokio::time::interval(defaults::LOG_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = every.tick() => listen.warnings.flush(),
        }
    }
}

/// The listener's warnings. Each names no peer in its count: a flood comes
/// from many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Warning {
    PortFull,
    PeerFull,
    NotAnOperator,
    Silent,
    TlsRefused,
    TlsTimedOut,
    AcceptFailed,
}

impl Warning {
    fn what(self) -> &'static str {
        match self {
            Warning::PortFull => "refused a connection: the port is full",
            Warning::PeerFull => "refused a connection: its address has too many open",
            Warning::NotAnOperator => "closed a connection: the port is full and it showed no admin certificate for the operators' reserve",
            Warning::Silent => "closed a connection that sent nothing within the handshake timeout",
            Warning::TlsRefused => "refused a TLS handshake",
            Warning::TlsTimedOut => "TLS handshake timed out",
            Warning::AcceptFailed => "accept failed",
        }
    }
}

/// Rate-limited warnings, by kind.
#[derive(Default)]
struct Warnings {
    rates: Mutex<HashMap<Warning, LogRate>>,
}

impl Warnings {
    /// Whether to tell this one in full (the caller does, with its
    /// details). A past interval's count is told here.
    fn note(&self, warning: Warning) -> bool {
        let noted = self
            .lock()
            .entry(warning)
            .or_default()
            .note(std::time::Instant::now());
        if let Some(untold) = noted.untold {
            tell_untold(warning, untold);
        }
        noted.tell
    }

    fn flush(&self) {
        let now = std::time::Instant::now();
        let untold: Vec<_> = self
            .lock()
            .iter_mut()
            .filter_map(|(w, rate)| Some((*w, rate.flush(now)?)))
            .collect();
        for (warning, count) in untold {
            tell_untold(warning, count);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Warning, LogRate>> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tell_untold(warning: Warning, untold: Untold) {
    tracing::warn!(
        count = untold.count,
        seconds = untold.seconds(),
        "{}: {} more in the last {} s",
        warning.what(),
        untold.count_text(),
        untold.seconds()
    );
}

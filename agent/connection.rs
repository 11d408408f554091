//! The agent's one stream to its orchestrator: hello, heartbeats, results
//! out, assignments and cancels in. Reconnects with backoff and jitter, and
//! re-announces what it still runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use testfleet::proto::agent_gateway_client::AgentGatewayClient;
use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use testfleet::time::now_timestamp;
use tokio::sync::{mpsc, watch, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::attempt::{self, Context};
use crate::finished_attempts::{self, FinishedAttempts, Unacknowledged};
use crate::limits;

pub struct Identity {
    pub agent_id: String,
    pub host: String,
    pub labels: HashMap<String, String>,
    pub capacity: proto::Resources,
}

/// Attempts running here, each with the switch that cancels it.
type Running = Arc<Mutex<HashMap<String, (String, watch::Sender<Option<String>>)>>>;

pub struct Agent {
    /// Whether the stream runs over mTLS (for clearer errors).
    tls: bool,
    /// The orchestrator's address as given, for errors to name.
    endpoint: String,
    /// Whether a session ever got as far as the hello's ack: until then a
    /// failure is "cannot reach", after it "lost".
    connected_once: bool,
    id: Identity,
    channel: Channel,
    ctx: Arc<Context>,
    running: Running,
    /// Attempts run to their end here: never run again.
    finished: Arc<std::sync::Mutex<FinishedAttempts>>,
    /// Results sent and not yet acknowledged: sent again on a reconnect.
    unacked: std::sync::Mutex<Unacknowledged>,
    outbox: mpsc::Receiver<AgentMessage>,
}

enum End {
    /// No session: the dial failed, or what answered is no orchestrator.
    Unreachable(Diagnosis),
    /// The orchestrator closed the stream or the network broke.
    Lost(String),
    /// The orchestrator refused us: retrying soon would not help.
    Refused(String),
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a message may wait for room on the stream before the session
/// counts as dead and the agent reconnects.
const SEND_STALL: Duration = Duration::from_secs(30);

impl Agent {
    pub fn new(
        id: Identity,
        channel: Channel,
        ctx: Arc<Context>,
        outbox: mpsc::Receiver<AgentMessage>,
        tls: bool,
        endpoint: &str,
    ) -> Self {
        Agent {
            tls,
            endpoint: endpoint.to_string(),
            connected_once: false,
            id,
            channel,
            ctx,
            running: Arc::default(),
            finished: Arc::new(std::sync::Mutex::new(FinishedAttempts::new(
                finished_attempts::REMEMBERED,
            ))),
            unacked: std::sync::Mutex::new(Unacknowledged::new(finished_attempts::UNACKNOWLEDGED)),
            outbox,
        }
    }

    /// Connects and serves until `stop` fires; then cancels what runs.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        let mut said_unreachable = false;
        loop {
            let end = tokio::select! {
                end = self.session(&mut backoff) => end,
                _ = stop.changed() => break,
            };
            let wait = match end {
                End::Unreachable(d) if self.connected_once => {
                    tracing::warn!(
                        dialled = self.endpoint,
                        answered = d.answered,
                        likely_cause = d.likely_cause,
                        "lost the orchestrator, and cannot reach it again; retrying"
                    );
                    backoff
                }
                End::Unreachable(d) => {
                    if !said_unreachable {
                        // Once on stderr too: a person starting an agent by
                        // hand watches the terminal, not the log file.
                        eprintln!(
                            "agent {}: cannot reach the orchestrator (retrying). {}",
                            self.id.agent_id,
                            d.sentences(&self.endpoint)
                        );
                        said_unreachable = true;
                    }
                    tracing::warn!(
                        dialled = self.endpoint,
                        answered = d.answered,
                        likely_cause = d.likely_cause,
                        "cannot reach the orchestrator; retrying"
                    );
                    backoff
                }
                End::Lost(why) => {
                    tracing::warn!(
                        dialled = self.endpoint,
                        why,
                        "lost the orchestrator; reconnecting"
                    );
                    backoff
                }
                End::Refused(why) => {
                    tracing::error!(why, "the orchestrator refused this agent");
                    eprintln!(
                        "agent {}: the orchestrator refused this agent: {why}",
                        self.id.agent_id
                    );
                    BACKOFF_MAX
                }
            };
            // Full jitter, so a fleet that lost its orchestrator does not
            // come back in one wave.
            let jittered = rand::rng().random_range(wait / 2..=wait);
            tokio::select! {
                _ = tokio::time::sleep(jittered) => {}
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.cancel_all("the agent is shutting down").await;
        // Leave no process behind: wait for every group to be killed.
        self.wait_idle(Duration::from_secs(15)).await;
    }

    async fn cancel_all(&self, reason: &str) {
        let running = self.running.lock().await;
        for (_, cancel) in running.values() {
            let _ = cancel.send(Some(reason.to_string()));
        }
    }

    /// The hello, and what waited in the outbox while no session was up,
    /// to send after the hello's ack. Each result in it is kept from here as
    /// unacknowledged, so the hello announces its attempt: one that ended
    /// while the orchestrator was down is not counted lost and run again.
    /// The outbox is drained under the lock of `running`: an attempt puts
    /// its result in the outbox before it leaves `running`, so every attempt
    /// is in one of the two.
    async fn hello(&mut self) -> (AgentMessage, Vec<AgentMessage>) {
        let running = self.running.clone();
        let running = running.lock().await;
        let backlog = self.take_outbox();
        // An attempt whose result is not acknowledged is still ours: its
        // result follows the hello.
        let unacked = self
            .unacked
            .lock()
            .map(|u| u.attempts())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !running.contains_key(&r.attempt_id));
        let hello = AgentMessage {
            body: Some(agent_message::Body::Hello(proto::AgentHello {
                agent_id: self.id.agent_id.clone(),
                host: self.id.host.clone(),
                labels: self.id.labels.clone(),
                capacity: Some(self.id.capacity),
                running_attempts: running
                    .iter()
                    .map(|(attempt_id, (task_id, _))| proto::RunningAttempt {
                        task_id: task_id.clone(),
                        attempt_id: attempt_id.clone(),
                    })
                    .chain(unacked)
                    .collect(),
                version: env!("CARGO_PKG_VERSION").into(),
            })),
        };
        (hello, backlog)
    }

    /// Everything in the outbox now, each fitted to a frame; its results
    /// kept until acknowledged.
    fn take_outbox(&mut self) -> Vec<AgentMessage> {
        let mut backlog = Vec::new();
        while let Ok(out) = self.outbox.try_recv() {
            let out = limits::fit(out);
            if let Ok(mut u) = self.unacked.lock() {
                u.keep(&out);
            }
            backlog.push(out);
        }
        backlog
    }

    async fn session(&mut self, backoff: &mut Duration) -> End {
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        // The results kept from earlier sessions, before the backlog adds
        // its own: the backlog is sent after them, in its order.
        let earlier = self.unacked.lock().map(|u| u.pending()).unwrap_or_default();
        let (hello, backlog) = self.hello().await;
        let _ = tx.send(hello).await;
        let mut client = AgentGatewayClient::new(self.channel.clone());
        let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return classify_dial(s, self.tls),
        };
        let ack = match inbound.message().await {
            Ok(Some(proto::OrchestratorMessage {
                body: Some(orchestrator_message::Body::HelloAck(ack)),
            })) => ack,
            Ok(_) => return End::Lost("the orchestrator did not acknowledge our hello".into()),
            Err(s) => return classify_dial(s, self.tls),
        };
        *backoff = BACKOFF_START;
        self.connected_once = true;
        // What the last orchestrator did not acknowledge goes first, then
        // what waited in the outbox.
        let mut resend: std::collections::VecDeque<AgentMessage> =
            earlier.into_iter().chain(backlog).collect();
        tracing::info!(
            orchestrator = ack.orchestrator_id,
            resending = resend.len(),
            "connected"
        );
        let mut host = sysinfo::System::new().ok();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(
            ack.heartbeat_interval_ms.max(100) as u64,
        ));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // One message at a time waits for room on the stream, while replies
        // are still read: a stalled or closed outgoing side ends the session
        // as surely as the incoming one.
        let mut unsent: Option<AgentMessage> = None;
        let stall = tokio::time::sleep(SEND_STALL);
        tokio::pin!(stall);
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.on_message(m).await,
                    Ok(None) => return End::Lost("the orchestrator closed the stream".into()),
                    Err(s) => return classify_status(s, self.tls),
                },
                room = tx.reserve(), if unsent.is_some() => match (room, unsent.take()) {
                    (Ok(room), Some(msg)) => room.send(msg),
                    _ => return End::Lost("the stream closed while sending".into()),
                },
                () = tx.closed(), if unsent.is_none() => {
                    return End::Lost("the orchestrator stopped reading our stream".into());
                }
                () = &mut stall, if unsent.is_some() => {
                    return End::Lost(format!(
                        "the orchestrator took no message for {} s",
                        SEND_STALL.as_secs()
                    ));
                }
                () = std::future::ready(()), if unsent.is_none() && !resend.is_empty() => {
                    unsent = resend.pop_front();
                    stall.as_mut().reset(tokio::time::Instant::now() + SEND_STALL);
                }
                Some(out) = self.outbox.recv(), if unsent.is_none() && resend.is_empty() => {
                    let out = limits::fit(out);
                    if let Ok(mut u) = self.unacked.lock() {
                        u.keep(&out);
                    }
                    unsent = Some(out);
                    stall.as_mut().reset(tokio::time::Instant::now() + SEND_STALL);
                }
                _ = heartbeat.tick(), if unsent.is_none() => {
                    unsent = Some(self.heartbeat(&mut host).await);
                    stall.as_mut().reset(tokio::time::Instant::now() + SEND_STALL);
                }
            }
        }
    }

    async fn heartbeat(&self, host: &mut Option<sysinfo::System>) -> AgentMessage {
        let running: Vec<String> = self.running.lock().await.keys().cloned().collect();
        let hb = proto::Heartbeat {
            agent_id: self.id.agent_id.clone(),
            timestamp: Some(now_timestamp()),
            usage: host_usage(host),
            running_attempt_ids: running,
        };
        AgentMessage {
            body: Some(agent_message::Body::Heartbeat(hb)),
        }
    }

    async fn on_message(&self, m: proto::OrchestratorMessage) {
        match m.body {
            Some(orchestrator_message::Body::Assignment(a)) => self.start(a).await,
            Some(orchestrator_message::Body::Warm(w)) => {
                if let Some(a) = w.assignment {
                    let ctx = self.ctx.clone();
                    tokio::spawn(async move { attempt::warm(&ctx, a).await });
                }
            }
            Some(orchestrator_message::Body::Cancel(c)) => {
                let running = self.running.lock().await;
                match running.get(&c.attempt_id) {
                    Some((_, cancel)) => {
                        let _ = cancel.send(Some(c.reason));
                    }
                    None => {
                        // Nothing to stop: say so, so the orchestrator is not left waiting.
                        let ack = proto::CancelAck {
                            task_id: c.task_id,
                            attempt_id: c.attempt_id,
                        };
                        let _ = self.ctx.outbox.try_send(AgentMessage {
                            body: Some(agent_message::Body::CancelAck(ack)),
                        });
                    }
                }
            }
            Some(orchestrator_message::Body::ResultAck(a)) => {
                if let Ok(mut u) = self.unacked.lock() {
                    u.acknowledged(&a.attempt_id);
                }
            }
            Some(orchestrator_message::Body::Rejection(r)) => {
                // A refused result is final: it is not sent again.
                if let Ok(mut u) = self.unacked.lock() {
                    if u.message_id(&r.attempt_id) == Some(r.message_id.as_str()) {
                        u.acknowledged(&r.attempt_id);
                    }
                }
                tracing::warn!(
                    message_id = r.message_id,
                    attempt_id = r.attempt_id,
                    code = format!("{:?}", tonic::Code::from_i32(r.code)),
                    reason = r.message,
                    "the orchestrator refused a message"
                );
            }
            Some(orchestrator_message::Body::HelloAck(_)) | None => {}
        }
    }

    async fn start(&self, a: proto::TaskAssignment) {
        let attempt_id = a.attempt_id.clone();
        let task_id = a
            .task_details
            .as_ref()
            .map(|d| d.task_id.clone())
            .unwrap_or_default();
        let mut running = self.running.lock().await;
        if running.contains_key(&attempt_id) {
            // A duplicate delivery of an assignment we already run.
            return;
        }
        if self.already_finished(&attempt_id) {
            tracing::warn!(
                task_id,
                attempt_id,
                "refused an assignment of an attempt that already ran here"
            );
            let refusal = finished_attempts::refusal(&self.id.agent_id, &a);
            if self.ctx.outbox.try_send(refusal).is_err() {
                tracing::warn!(attempt_id, "no room to send the refusal");
            }
            return;
        }
        let (cancel_tx, cancel_rx) = watch::channel(None);
        running.insert(attempt_id.clone(), (task_id.clone(), cancel_tx));
        drop(running);
        tracing::info!(task_id, attempt_id, "assignment received");
        let ctx = self.ctx.clone();
        let registry = self.running.clone();
        let finished = self.finished.clone();
        tokio::spawn(async move {
            attempt::run(ctx, a, cancel_rx).await;
            // Finished before it stops running, so that no redelivery
            // finds it in neither.
            if let Ok(mut f) = finished.lock() {
                f.insert(attempt_id.clone());
            }
            registry.lock().await.remove(&attempt_id);
        });
    }

    fn already_finished(&self, attempt_id: &str) -> bool {
        self.finished.lock().is_ok_and(|f| f.contains(attempt_id))
    }

    pub async fn wait_idle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.running.lock().await.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The host's memory and CPU in use, for the fleet's memory alert.
fn host_usage(host: &mut Option<sysinfo::System>) -> Option<proto::ResourceUsage> {
    let sys = host.as_mut()?;
    sys.refresh_memory();
    sys.refresh_cpu_usage();
    Some(proto::ResourceUsage {
        memory_usage_mb: sys.used_memory() / (1024 * 1024),
        cpu_utilization: f64::from(sys.global_cpu_usage()),
        disk_usage_mb: 0,
    })
}

/// Why no session came about: what answered the dial, and what that most
/// likely means. Each a sentence.
#[derive(Debug)]
struct Diagnosis {
    answered: String,
    likely_cause: String,
}

impl Diagnosis {
    fn sentences(&self, endpoint: &str) -> String {
        format!(
            "Dialled {endpoint}. {} Likely cause: {}",
            self.answered, self.likely_cause
        )
    }
}

/// The error's own text and its sources', where the OS's reason is.
fn error_chain(s: &tonic::Status) -> String {
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// What answered a dial that gave no session, from the error tonic gives.
fn diagnose(s: &tonic::Status, tls: bool) -> Diagnosis {
    use tonic::Code;
    let chain = error_chain(s);
    let lower = chain.to_lowercase();
    let (answered, likely_cause) = if lower.contains("dns error")
        || lower.contains("failed to lookup")
    {
        (
            format!("Nothing answered: the host name did not resolve ({chain})."),
            "a typo in the endpoint's host name, or this host's DNS.".to_string(),
        )
    } else if lower.contains("tcp connect error") || lower.contains("connection refused") {
        (
            format!("Nothing answered: the connection was refused ({chain})."),
            "no orchestrator listens there: check that it runs, and that the port is its api_port (8080 by default).".to_string(),
        )
    } else if lower.contains("timed out") || s.code() == Code::DeadlineExceeded {
        (
            format!("Nothing answered in time ({chain})."),
            "a firewall drops the packets, or the host is down.".to_string(),
        )
    } else if let Some(http) = http_status(&chain) {
        let cause = if http == "404" {
            "this is likely the orchestrator's metrics port (metrics_port, 9090 by default): agents dial its api_port (8080 by default).".to_string()
        } else {
            "something other than an orchestrator listens there (a proxy, or another service)."
                .to_string()
        };
        (
            format!("An HTTP server answered with status {http} and no gRPC status."),
            cause,
        )
    } else if !tls && (lower.contains("h2 protocol error") || lower.contains("http2 error")) {
        (
            format!("A server answered, but not in plaintext HTTP/2 ({chain})."),
            "the port expects TLS: dial it with https:// and give --ca, --cert and --key."
                .to_string(),
        )
    } else if !tls
        && ["connection closed", "broken pipe", "connection reset"]
            .iter()
            .any(|w| lower.contains(w))
    {
        (
            format!("A server accepted the connection and closed it ({chain})."),
            "the port likely expects TLS (dial it with https:// and give --ca, --cert and --key), or the orchestrator refused this address (see its log).".to_string(),
        )
    } else {
        (
            format!("The call failed: {chain} ({:?}).", s.code()),
            "see the orchestrator's log for this agent's address.".to_string(),
        )
    };
    Diagnosis {
        answered,
        likely_cause,
    }
}

/// The HTTP status of `grpc-status header missing, mapped from HTTP status
/// code 404`.
fn http_status(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("HTTP status code ")?;
    let code = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    (!code.is_empty()).then_some(code)
}

/// A failure before the session began: a refusal, or why nothing that
/// answered is an orchestrator.
fn classify_dial(s: tonic::Status, tls: bool) -> End {
    let diagnosis = diagnose(&s, tls);
    match classify_status(s, tls) {
        End::Lost(_) => End::Unreachable(diagnosis),
        other => other,
    }
}

fn classify_status(s: tonic::Status, tls: bool) -> End {
    use tonic::Code;
    // Under TLS 1.3 a refused client certificate surfaces as a transport
    // error on the first call; say what it most likely means.
    if tls
        && matches!(
            s.code(),
            Code::Unknown | Code::Unavailable | Code::Cancelled
        )
        && s.message().contains("transport error")
    {
        return End::Refused(format!(
            "the orchestrator refused our certificate, or its own is not signed by our CA ({})",
            s.message()
        ));
    }
    match s.code() {
        Code::InvalidArgument
        | Code::ResourceExhausted
        | Code::PermissionDenied
        | Code::Unauthenticated => End::Refused(s.message().to_string()),
        _ => End::Lost(format!("{} ({:?})", s.message(), s.code())),
    }
}

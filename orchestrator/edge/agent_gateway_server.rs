//! The agents' edge: one bidi stream per agent, and artifact uploads.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{Stream, StreamExt};
use testfleet::config::{ResourceSpec, StorageLimits};
use testfleet::proto::agent_gateway_server::AgentGateway;
use testfleet::proto::{
    agent_message, orchestrator_message, AgentMessage, ArtifactChunk, HelloAck,
    OrchestratorMessage, Rejection, UploadArtifactResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::edge::artifact_upload::Uploads;
use crate::edge::auth::{self, Mode};
use crate::edge::live_agents::{Claim, LiveAgents};
use crate::engine::Engine;
use crate::observe::refusals::{StreamRefusals, Untold};
use crate::wire;
use testfleet::tls::Role;
use testfleet_core::Event;

/// How often agents are asked to heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

pub struct AgentGatewayService {
    engine: Engine,
    orchestrator_id: String,
    next_conn: AtomicU64,
    mode: Mode,
    uploads: Uploads,
    /// One live stream per agent id (`edge::live_agents`).
    live: std::sync::Arc<LiveAgents>,
}

impl AgentGatewayService {
    pub fn new(
        engine: Engine,
        orchestrator_id: String,
        mode: Mode,
        storage: StorageLimits,
    ) -> Self {
        AgentGatewayService {
            engine,
            orchestrator_id,
            next_conn: AtomicU64::new(1),
            mode,
            uploads: Uploads::new(storage),
            live: Default::default(),
        }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<OrchestratorMessage, Status>> + Send>>;

fn capacity_of(r: &Option<testfleet::proto::Resources>) -> Result<ResourceSpec, Status> {
    let r = r
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("hello carries no capacity"))?;
    if r.memory_mb == 0 || r.cpu_cores <= 0.0 || !r.cpu_cores.is_finite() {
        return Err(Status::invalid_argument(
            "hello capacity must have memory_mb > 0 and cpu_cores > 0",
        ));
    }
    Ok(ResourceSpec {
        memory_mb: r.memory_mb,
        cpu_millis: (r.cpu_cores * 1000.0).round() as u64,
        disk_mb: r.disk_mb,
    })
}

#[tonic::async_trait]
impl AgentGateway for AgentGatewayService {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let peer = auth::peer(&request).and_then(|p| p.remote_addr);
        let certified = auth::require(self.mode, auth::peer(&request), Role::Agent)?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("the stream ended before the agent said hello")
        })?;
        let Some(agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument(
                "the first message on a stream must be AgentHello",
            ));
        };
        if hello.agent_id.trim().is_empty() {
            return Err(Status::invalid_argument("AgentHello.agent_id is empty"));
        }
        if let Some(name) = certified.filter(|n| *n != hello.agent_id) {
            tracing::warn!(
                peer = peer.map(|p| p.to_string()),
                certificate = name,
                claimed = hello.agent_id,
                "refused a hello for another agent"
            );
            return Err(Status::permission_denied(format!(
                "this certificate is for agent {name:?}, not {:?}",
                hello.agent_id
            )));
        }
        let capacity = capacity_of(&hello.capacity)?;
        let agent_id = hello.agent_id.clone();
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let claim = self.live.claim(&agent_id, conn, peer)?;
        tracing::info!(
            agent_id,
            host = hello.host,
            peer = peer.map(|p| p.to_string()),
            conn,
            memory_mb = capacity.memory_mb,
            cpu_cores = capacity.cpu_millis as f64 / 1000.0,
            disk_mb = capacity.disk_mb,
            "agent connected"
        );

        let (tx, rx) = mpsc::channel(crate::engine::streams::AGENT_QUEUE);
        tx.send(Ok(OrchestratorMessage {
            body: Some(orchestrator_message::Body::HelloAck(HelloAck {
                orchestrator_id: self.orchestrator_id.clone(),
                heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            })),
        }))
        .await
        .map_err(|_| Status::internal("stream closed"))?;
        // Only the engine holds the stream's sender: when it lets go (the
        // agent lost, or replaced by a newer stream), the replies end.
        let replies = tx.downgrade();
        let (end_tx, end_rx) = oneshot::channel();
        self.engine.attach(agent_id.clone(), conn, tx);
        self.engine.send(Event::AgentConnected {
            agent_id: agent_id.clone(),
            conn,
            host: hello.host,
            labels: hello.labels.into_iter().collect::<BTreeMap<_, _>>(),
            capacity,
            running: hello
                .running_attempts
                .into_iter()
                .map(|r| r.attempt_id)
                .collect(),
        });
        tokio::spawn(read_agent(
            self.engine.clone(),
            agent_id,
            conn,
            inbound,
            replies,
            end_tx,
            claim.handle(),
        ));
        let replies = Replies {
            queued: ReceiverStream::new(rx),
            end: Some(end_rx),
            ended: false,
            claim: Some(claim),
        };
        Ok(Response::new(Box::pin(replies) as OutStream))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        let certified = auth::require(self.mode, auth::peer(&request), Role::Agent)?;
        self.uploads
            .receive(&self.engine, certified, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Forwards one agent's frames until its side of the stream ends, or it
/// has sent too many refused frames to be kept. However it ends, the
/// replies end too and the scheduler hears of it, so neither peer is left
/// holding half a stream.
async fn read_agent(
    engine: Engine,
    agent_id: String,
    conn: u64,
    mut inbound: Streaming<AgentMessage>,
    replies: mpsc::WeakSender<Result<OrchestratorMessage, Status>>,
    end: oneshot::Sender<Status>,
    claim: Claim,
) {
    let mut refusals = StreamRefusals::default();
    let ended = loop {
        let msg = match inbound.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break None,
            Err(e) => break Some(Status::new(e.code(), read_failure(&e))),
        };
        if forward_or_refuse(&engine, &agent_id, conn, msg, &replies, &mut refusals) {
            break Some(Status::resource_exhausted(refusals.reason("frames")));
        }
    };
    drop(claim);
    if let Some(untold) = refusals.log.flush(Instant::now()) {
        tell_untold(&agent_id, untold);
    }
    if let Some(status) = ended {
        tracing::warn!(
            agent_id,
            conn,
            why = status.message(),
            "closing the agent's stream"
        );
        let _ = end.send(status);
    }
    engine.send(Event::AgentDisconnected { agent_id, conn });
}

/// Forwards `msg`, or refuses it (telling the agent, and the log at a
/// bounded rate). True when the stream has been refused too often to keep.
fn forward_or_refuse(
    engine: &Engine,
    agent_id: &str,
    conn: u64,
    msg: AgentMessage,
    replies: &mpsc::WeakSender<Result<OrchestratorMessage, Status>>,
    refusals: &mut StreamRefusals,
) -> bool {
    let message_id = frame_message_id(&msg);
    let Err((code, why)) = forward(engine, agent_id, conn, msg) else {
        return false;
    };
    let (noted, give_up) = refusals.note(Instant::now());
    if let Some(untold) = noted.untold {
        tell_untold(agent_id, untold);
    }
    if noted.tell {
        tracing::warn!(agent_id, message_id, why, "refused a frame from the agent");
    }
    let rejection = Rejection {
        message_id,
        attempt_id: String::new(),
        code: code as i32,
        message: why,
    };
    if let Some(replies) = replies.upgrade() {
        let _ = replies.try_send(Ok(OrchestratorMessage {
            body: Some(orchestrator_message::Body::Rejection(rejection)),
        }));
    }
    give_up
}

fn tell_untold(agent_id: &str, untold: Untold) {
    crate::observe::refusals::warn_untold(agent_id, "refused {} more frames from", untold);
}

/// What went wrong reading an agent's stream, in words the agent's log and
/// ours can both show: tonic's size refusal becomes "a message of 6.7 MB is
/// over the 4.0 MB limit".
fn read_failure(e: &Status) -> String {
    let bytes_after = |key: &str| -> Option<f64> {
        let rest = &e.message()[e.message().find(key)? + key.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    match (bytes_after("found"), bytes_after("the limit is:")) {
        (Some(size), Some(limit)) => format!(
            "the agent's stream is closed: a message of {:.1} MB is over the {:.1} MB limit",
            size / MB,
            limit / MB
        ),
        _ => format!(
            "the agent's stream is closed: it could not be read ({})",
            e.message()
        ),
    }
}

const MB: f64 = 1024.0 * 1024.0;

/// The replies to one agent: what the engine queues, until the engine lets
/// go of the stream, or at once, with the reason, when reading the agent's
/// side failed (however much is still queued: an agent that is not heard
/// must not think it is).
struct Replies {
    queued: ReceiverStream<Result<OrchestratorMessage, Status>>,
    end: Option<oneshot::Receiver<Status>>,
    ended: bool,
    /// The stream's hold on its agent id, let go when the replies end.
    claim: Option<Claim>,
}

impl Stream for Replies {
    type Item = Result<OrchestratorMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(end) = self.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.ended = true;
                    self.claim = None;
                    return Poll::Ready(Some(Err(status)));
                }
                // The reader ended without a reason: the engine's drop of
                // the sender ends the replies.
                Poll::Ready(Err(_)) => self.end = None,
                Poll::Pending => {}
            }
        }
        let next = self.queued.poll_next_unpin(cx);
        if let Poll::Ready(Some(Err(_)) | None) = next {
            self.ended = true;
            self.claim = None;
        }
        next
    }
}

fn frame_message_id(msg: &AgentMessage) -> String {
    match &msg.body {
        Some(agent_message::Body::Progress(p)) => p.message_id.clone(),
        Some(agent_message::Body::Completion(c)) => c.message_id.clone(),
        Some(agent_message::Body::Failure(f)) => f.message_id.clone(),
        _ => String::new(),
    }
}

/// Turns one frame from an agent into a scheduler event. Frames must be
/// about the agent that owns the stream.
fn forward(
    engine: &Engine,
    agent_id: &str,
    conn: u64,
    msg: AgentMessage,
) -> Result<(), (tonic::Code, String)> {
    let mismatch = |claimed: &str| {
        (
            tonic::Code::PermissionDenied,
            format!("frame claims agent {claimed:?} on {agent_id:?}'s stream"),
        )
    };
    match msg.body {
        Some(agent_message::Body::Heartbeat(h)) => {
            engine
                .metrics
                .observe_heartbeat(agent_id, h.timestamp.as_ref());
            engine.send(Event::Heartbeat {
                agent_id: agent_id.to_string(),
                conn,
                usage: h.usage.map(wire::usage),
            });
        }
        Some(agent_message::Body::Progress(p)) => {
            if p.agent_id != agent_id {
                return Err(mismatch(&p.agent_id));
            }
            engine.send(Event::Progress(wire::progress(p)));
        }
        Some(agent_message::Body::Completion(c)) => {
            if c.agent_id != agent_id {
                return Err(mismatch(&c.agent_id));
            }
            engine.send(Event::Completed(wire::completion(c)));
        }
        Some(agent_message::Body::Failure(f)) => {
            if f.agent_id != agent_id {
                return Err(mismatch(&f.agent_id));
            }
            engine.send(Event::Failed(wire::failure(f)));
        }
        Some(agent_message::Body::CancelAck(a)) => {
            engine.send(Event::CancelAcked {
                agent_id: agent_id.to_string(),
                attempt_id: a.attempt_id,
            });
        }
        Some(agent_message::Body::Hello(_)) => {
            return Err((
                tonic::Code::FailedPrecondition,
                "a second hello on one stream".into(),
            ))
        }
        None => return Err((tonic::Code::InvalidArgument, "an empty frame".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_refusal_is_told_in_megabytes() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 7050427 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(
            read_failure(&tonic),
            "the agent's stream is closed: a message of 6.7 MB is over the 4.0 MB limit"
        );
        let other = read_failure(&Status::internal("h2 protocol error"));
        assert!(other.ends_with("(h2 protocol error)"), "{other}");
    }

    #[tokio::test]
    async fn replies_end_with_the_reason_however_much_is_queued() {
        let (tx, rx) = mpsc::channel(2);
        let (end_tx, end_rx) = oneshot::channel();
        let hello = || Ok(OrchestratorMessage { body: None });
        tx.try_send(hello()).unwrap();
        tx.try_send(hello()).unwrap();
        let mut replies = Replies {
            queued: ReceiverStream::new(rx),
            end: Some(end_rx),
            ended: false,
            claim: None,
        };
        end_tx.send(Status::out_of_range("too big")).unwrap();
        let first = replies.next().await.expect("an item");
        assert_eq!(first.unwrap_err().message(), "too big");
        assert!(replies.next().await.is_none(), "and nothing after it");
        drop(tx);
    }
}

//! Hand-driven agent streams: a test (or a simulated agent) says what an
//! agent would, message by message, on a real gRPC stream. The channel
//! decides plaintext or mTLS.

use std::time::Duration;

use testfleet::proto::{self, agent_message, orchestrator_message, AgentMessage};
use tokio::sync::mpsc;

/// What the agent sends on its stream.
pub type AgentSender = mpsc::Sender<AgentMessage>;
/// What the orchestrator sends back.
pub type OrchestratorStream = tonic::Streaming<proto::OrchestratorMessage>;

/// Says `hello` as `agent_id` with `capacity` (memory MB, cores) and
/// returns the sender and what comes back.
pub async fn raw_agent(
    channel: tonic::transport::Channel,
    agent_id: &str,
    capacity: (u64, f64),
) -> Result<(AgentSender, OrchestratorStream), tonic::Status> {
    let hello = proto::AgentHello {
        agent_id: agent_id.into(),
        host: "raw".into(),
        capacity: Some(proto::Resources {
            memory_mb: capacity.0,
            cpu_cores: capacity.1,
            disk_mb: 1024,
        }),
        ..Default::default()
    };
    raw_agent_hello(channel, hello).await
}

/// Says this `hello` (which may re-announce running attempts, as an agent
/// reconnecting does) and returns the sender and what comes back.
pub async fn raw_agent_hello(
    channel: tonic::transport::Channel,
    hello: proto::AgentHello,
) -> Result<(AgentSender, OrchestratorStream), tonic::Status> {
    // Room for a simulated agent's completions to queue up behind a slow
    // stream rather than stall it.
    let (tx, rx) = mpsc::channel(1024);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(hello)),
    })
    .await
    .map_err(|_| tonic::Status::internal("the stream closed before its hello"))?;
    let inbound = proto::agent_gateway_client::AgentGatewayClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// A heartbeat from agent `id`, stamped now.
pub fn heartbeat(id: &str) -> AgentMessage {
    let hb = proto::Heartbeat {
        agent_id: id.to_string(),
        timestamp: Some(testfleet::time::now_timestamp()),
        ..Default::default()
    };
    AgentMessage {
        body: Some(agent_message::Body::Heartbeat(hb)),
    }
}

/// Sends `msg` on a hand-driven agent stream and asserts that the next reply
/// is a rejection with `code`.
pub async fn expect_rejection(
    tx: &AgentSender,
    inbound: &mut OrchestratorStream,
    msg: AgentMessage,
    code: tonic::Code,
) {
    tx.send(msg).await.expect("the stream is open");
    let reply = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("a reply within 5 s")
        .expect("the stream is healthy")
        .expect("the stream is open");
    match reply.body {
        Some(orchestrator_message::Body::Rejection(r)) => {
            assert_eq!(tonic::Code::from_i32(r.code), code, "{r:?}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

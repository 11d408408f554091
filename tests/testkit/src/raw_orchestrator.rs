//! A hand-driven orchestrator: a real AgentGateway on a loopback port that
//! a real agent process connects to. The test reads what the agent says
//! and decides, message by message, what it is told; uploads are taken in
//! whole and acknowledged.

use std::pin::Pin;
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use testfleet::proto::agent_gateway_server::{AgentGateway, AgentGatewayServer};
use testfleet::proto::{
    artifact_chunk, orchestrator_message, AgentMessage, ArtifactChunk, HelloAck,
    OrchestratorMessage, UploadArtifactResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// What reaches a test from the agent, and what it sends it.
pub struct RawOrchestrator {
    /// `http://127.0.0.1:PORT`, for the agent's `--orchestrator-endpoint`.
    pub endpoint: String,
    /// Every message on the agent's stream, hello first.
    pub from_agent: mpsc::Receiver<AgentMessage>,
    /// Sent on the agent's stream, after the HelloAck.
    pub to_agent: mpsc::Sender<OrchestratorMessage>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrchestrator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Listens on a free loopback port. One agent stream is served: the first.
pub async fn raw_orchestrator() -> anyhow::Result<RawOrchestrator> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (from_tx, from_agent) = mpsc::channel(1024);
    let (to_agent, to_rx) = mpsc::channel(1024);
    let gateway = Gateway {
        from_agent: from_tx,
        to_agent: Mutex::new(Some(to_rx)),
    };
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentGatewayServer::new(gateway))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Ok(RawOrchestrator {
        endpoint,
        from_agent,
        to_agent,
        server,
    })
}

struct Gateway {
    from_agent: mpsc::Sender<AgentMessage>,
    to_agent: Mutex<Option<mpsc::Receiver<OrchestratorMessage>>>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<OrchestratorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    type ConnectStream = Replies;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Replies>, Status> {
        let Some(queued) = self.to_agent.lock().expect("not poisoned").take() else {
            return Err(Status::unavailable(
                "this raw orchestrator serves one stream",
            ));
        };
        let mut inbound = request.into_inner();
        let from_agent = self.from_agent.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if from_agent.send(m).await.is_err() {
                    break;
                }
            }
        });
        let ack = OrchestratorMessage {
            body: Some(orchestrator_message::Body::HelloAck(HelloAck {
                orchestrator_id: "raw".into(),
                heartbeat_interval_ms: 1_000,
            })),
        };
        let replies = futures::stream::once(async { ack })
            .chain(ReceiverStream::new(queued))
            .map(Ok);
        Ok(Response::new(Box::pin(replies)))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<UploadArtifactResponse>, Status> {
        let mut chunks = request.into_inner();
        let (mut name, mut size) = (String::new(), 0);
        while let Some(chunk) = chunks.message().await? {
            match chunk.body {
                Some(artifact_chunk::Body::Header(h)) => name = h.name,
                Some(artifact_chunk::Body::Data(d)) => size += d.len() as u64,
                None => {}
            }
        }
        Ok(Response::new(UploadArtifactResponse { name, size }))
    }
}

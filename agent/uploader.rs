//! Sends an attempt's artifacts to the orchestrator over UploadArtifact.

use std::path::Path;

use testfleet::proto::agent_gateway_client::AgentGatewayClient;
use testfleet::proto::{artifact_chunk, ArtifactChunk, ArtifactHeader};
use tonic::transport::Channel;

const CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub struct Uploader {
    client: AgentGatewayClient<Channel>,
}

impl Uploader {
    pub fn new(channel: Channel) -> Self {
        Uploader {
            client: AgentGatewayClient::new(channel),
        }
    }

    /// Uploads every file directly in `dir`; returns the names that arrived.
    /// A failed upload is logged and left out: results still get reported.
    pub async fn upload_dir(&self, task_id: &str, attempt_id: &str, dir: &Path) -> Vec<String> {
        let mut files = files_in(dir).await;
        files.sort_by_key(|e| e.file_name());
        let mut sent = Vec::new();
        for entry in files {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.upload(task_id, attempt_id, &name, &entry.path()).await {
                Ok(()) => sent.push(name),
                Err(e) => {
                    tracing::warn!(task_id, artifact = name, error = %e, "artifact upload failed")
                }
            }
        }
        sent
    }

    async fn upload(
        &self,
        task_id: &str,
        attempt_id: &str,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<()> {
        let data = tokio::fs::read(path).await?;
        let header = ArtifactChunk {
            body: Some(artifact_chunk::Body::Header(ArtifactHeader {
                task_id: task_id.to_string(),
                attempt_id: attempt_id.to_string(),
                name: name.to_string(),
                size: data.len() as u64,
            })),
        };
        let mut chunks = vec![header];
        chunks.extend(data.chunks(CHUNK).map(|c| ArtifactChunk {
            body: Some(artifact_chunk::Body::Data(c.to_vec())),
        }));
        self.client
            .clone()
            .upload_artifact(tokio_stream::iter(chunks))
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        Ok(())
    }
}

/// The regular files directly in `dir`, listed through tokio::fs: this runs
/// for every attempt, on the runtime's threads.
async fn files_in(dir: &Path) -> Vec<tokio::fs::DirEntry> {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return Vec::new();
    };
    let mut files = Vec::new();
    // An error ends the listing, as it ends std's ReadDir.
    while let Ok(Some(e)) = entries.next_entry().await {
        if e.file_type().await.is_ok_and(|t| t.is_file()) {
            files.push(e);
        }
    }
    files
}

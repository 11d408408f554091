//! Sends an attempt's artifacts to the orchestrator over UploadArtifact,
//! each streamed from disk a chunk at a time: an artifact's size costs the
//! agent no memory. A file counts as uploaded only when the orchestrator
//! acknowledged all of it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::{Stream, StreamExt};
use testfleet::proto::agent_gateway_client::AgentGatewayClient;
use testfleet::proto::{artifact_chunk, ArtifactChunk, ArtifactHeader};
use tokio::io::{AsyncRead, AsyncReadExt};
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

    /// Uploads every file directly in `dir` but those in `skip` (files the
    /// agent failed to write); returns the names that arrived whole. A
    /// failed or refused upload (too large, over a quota) is logged and
    /// left out: results still get reported.
    pub async fn upload_dir(
        &self,
        task_id: &str,
        attempt_id: &str,
        dir: &Path,
        skip: &[PathBuf],
    ) -> Vec<String> {
        let mut files = files_in(dir).await;
        files.retain(|e| !skip.contains(&e.path()));
        files.sort_by_key(|e| e.file_name());
        let mut sent = Vec::new();
        for entry in files {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.upload(task_id, attempt_id, &name, &entry.path()).await {
                Ok(()) => sent.push(name),
                Err(e) => {
                    tracing::warn!(
                        task_id,
                        artifact = name,
                        error = format!("{e:#}"),
                        "artifact not uploaded"
                    )
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
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file
            .metadata()
            .await
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        let header = ArtifactChunk {
            body: Some(artifact_chunk::Body::Header(ArtifactHeader {
                task_id: task_id.to_string(),
                attempt_id: attempt_id.to_string(),
                name: name.to_string(),
                size,
            })),
        };
        // Only the size it declared: a file still growing is sent as it was;
        // one that shrinks arrives short, and the orchestrator keeps nothing.
        let data = chunks_of(file.take(size), path.to_path_buf());
        let stream = futures::stream::iter([header]).chain(data);
        let stored = self
            .client
            .clone()
            .upload_artifact(stream)
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
            .into_inner();
        anyhow::ensure!(
            stored.size == size,
            "the orchestrator stored {} of its {size} bytes",
            stored.size
        );
        Ok(())
    }
}

/// The file's bytes as data chunks, read as the stream is polled. A read
/// error ends the stream early, so the upload arrives short and is refused.
fn chunks_of(
    file: impl AsyncRead + Unpin + Send + 'static,
    path: PathBuf,
) -> impl Stream<Item = ArtifactChunk> + Send + 'static {
    futures::stream::unfold((file, path), |(mut file, path)| async move {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                let chunk = ArtifactChunk {
                    body: Some(artifact_chunk::Body::Data(buf)),
                };
                Some((chunk, (file, path)))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not read an artifact");
                None
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_read_in_chunks_as_they_are_taken() {
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| i as u8).collect();
        let chunks: Vec<ArtifactChunk> =
            chunks_of(std::io::Cursor::new(bytes.clone()), PathBuf::from("x"))
                .collect()
                .await;
        let sizes: Vec<usize> = chunks
            .iter()
            .map(|c| match &c.body {
                Some(artifact_chunk::Body::Data(d)) => d.len(),
                _ => panic!("only data"),
            })
            .collect();
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
        let joined: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| match c.body {
                Some(artifact_chunk::Body::Data(d)) => d,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(joined, bytes);
    }
}

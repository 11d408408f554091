//! One artifact upload, from its header to its file: the attempt it names
//! must be live and the agent's; its bytes count against the attempt's and
//! the suite's quotas as they arrive and must leave the disk its floor;
//! they go to a temporary file of the upload's own, renamed into place only
//! once the stream ended cleanly with exactly the bytes the header
//! declared. Anything else removes the temporary file and gives the
//! counted bytes back, however the upload ends (an error, the client gone,
//! the handler dropped).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use testfleet::config::StorageLimits;
use testfleet::proto::{artifact_chunk, ArtifactChunk, ArtifactHeader, UploadArtifactResponse};
use tokio::io::AsyncWriteExt;
use tonic::{Status, Streaming};

use crate::engine::Engine;
use crate::output::layout::{artifact_dir, upload_temp_affixes};
use testfleet_core::AttemptPlace;

/// How often, in bytes received, the free disk is looked at again.
const DISK_CHECK_EVERY: u64 = 4 << 20;
const MIB: u64 = 1 << 20;

/// The uploads of one orchestrator: its limits and what the current suite's
/// uploads hold.
pub struct Uploads {
    limits: StorageLimits,
    ledger: Arc<Mutex<Ledger>>,
}

/// Bytes held by the current suite's uploads, kept or still arriving. A new
/// suite starts from nothing.
#[derive(Default)]
struct Ledger {
    suite_id: String,
    suite: u64,
    attempts: HashMap<String, u64>,
}

impl Uploads {
    pub fn new(limits: StorageLimits) -> Self {
        Uploads {
            limits,
            ledger: Arc::default(),
        }
    }

    /// Takes one upload to its end; `certified` is the agent's certificate
    /// name under mTLS.
    pub async fn receive(
        &self,
        engine: &Engine,
        certified: Option<String>,
        mut chunks: Streaming<ArtifactChunk>,
    ) -> Result<UploadArtifactResponse, Status> {
        let header = first_header(&mut chunks).await?;
        let refused = |s: Status| {
            tracing::warn!(
                attempt_id = header.attempt_id,
                artifact = header.name,
                code = format!("{:?}", s.code()),
                why = s.message(),
                "refused an artifact upload"
            );
            s
        };
        self.store(engine, certified, &header, chunks)
            .await
            .map_err(refused)
    }

    async fn store(
        &self,
        engine: &Engine,
        certified: Option<String>,
        h: &ArtifactHeader,
        mut chunks: Streaming<ArtifactChunk>,
    ) -> Result<UploadArtifactResponse, Status> {
        check_artifact_name(&h.name)?;
        if h.size > self.limits.max_artifact_bytes {
            return Err(Status::resource_exhausted(format!(
                "artifact {} is {} bytes; the limit is {} (storage.max_artifact_mb)",
                h.name,
                h.size,
                size(self.limits.max_artifact_bytes)
            )));
        }
        let place = live_place(engine, h, certified).await?;
        let dir = artifact_dir(
            &engine.report_dir.for_suite(&place.suite_id),
            &place.task_id,
            place.number,
        )
        .map_err(|e| Status::invalid_argument(format!("task {:?}: {e}", place.task_id)))?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
        self.check_free(disk_free(&dir), h.size, &h.name, &dir)?;
        let mut claim = self.claim(&place.suite_id, h)?;
        let mut partial = Partial::create(&dir, &h.name).await?;
        let received = self
            .take_data(h, &mut chunks, &mut claim, &mut partial, &dir)
            .await?;
        // The attempt may have ended, or its suite, while the bytes arrived.
        live_place(engine, h, None).await?;
        partial.commit(&dir.join(&h.name), &h.name).await?;
        claim.keep();
        Ok(UploadArtifactResponse {
            name: h.name.clone(),
            size: received,
        })
    }

    /// Writes the upload's data chunks to `partial`, counting them as they
    /// come; returns how many bytes arrived, which are all it declared.
    async fn take_data(
        &self,
        h: &ArtifactHeader,
        chunks: &mut Streaming<ArtifactChunk>,
        claim: &mut Claim,
        partial: &mut Partial,
        dir: &Path,
    ) -> Result<u64, Status> {
        let mut received = 0u64;
        let mut since_disk_check = 0u64;
        while let Some(chunk) = chunks.next().await {
            let Some(artifact_chunk::Body::Data(data)) = chunk?.body else {
                return Err(Status::invalid_argument(format!(
                    "artifact {}: a second header in one upload",
                    h.name
                )));
            };
            let n = data.len() as u64;
            received += n;
            if received > h.size {
                return Err(Status::invalid_argument(format!(
                    "artifact {} sent more than its declared {} bytes; nothing was kept",
                    h.name, h.size
                )));
            }
            claim.add(n, &self.limits, &h.name)?;
            since_disk_check += n;
            if since_disk_check >= DISK_CHECK_EVERY {
                since_disk_check = 0;
                self.check_free(partial.disk_free(), h.size - received, &h.name, dir)?;
            }
            partial.write(&data, &h.name).await?;
        }
        if received != h.size {
            return Err(Status::data_loss(format!(
                "artifact {} ended after {received} of its declared {} bytes; nothing was kept",
                h.name, h.size
            )));
        }
        Ok(received)
    }

    /// Refuses an upload whose `still_to_come` bytes would take the disk
    /// under its floor.
    fn check_free(
        &self,
        free: std::io::Result<u64>,
        still_to_come: u64,
        name: &str,
        dir: &Path,
    ) -> Result<(), Status> {
        let free = free.map_err(|e| {
            Status::internal(format!(
                "reading the free disk under {}: {e}",
                dir.display()
            ))
        })?;
        let floor = self.limits.min_free_disk_bytes;
        if free.saturating_sub(still_to_come) < floor {
            return Err(Status::resource_exhausted(format!(
                "artifact {name} refused: {} has {} free, and the floor is {} (storage.min_free_disk_mb)",
                dir.display(),
                size(free),
                size(floor)
            )));
        }
        Ok(())
    }

    /// Counts the upload against its attempt and suite, refusing it at once
    /// when what it declares would not fit.
    fn claim(&self, suite_id: &str, h: &ArtifactHeader) -> Result<Claim, Status> {
        let mut ledger = self
            .ledger
            .lock()
            .expect("the ledger is never left poisoned");
        if ledger.suite_id != suite_id {
            *ledger = Ledger {
                suite_id: suite_id.to_string(),
                ..Ledger::default()
            };
        }
        let attempt = ledger.attempts.get(&h.attempt_id).copied().unwrap_or(0);
        check_quota(
            &self.limits,
            &h.name,
            &h.attempt_id,
            suite_id,
            attempt + h.size,
            ledger.suite + h.size,
        )?;
        Ok(Claim {
            ledger: self.ledger.clone(),
            suite_id: suite_id.to_string(),
            attempt_id: h.attempt_id.clone(),
            bytes: 0,
            kept: false,
        })
    }
}

/// The bytes one upload has counted: given back when it is dropped unkept.
struct Claim {
    ledger: Arc<Mutex<Ledger>>,
    suite_id: String,
    attempt_id: String,
    bytes: u64,
    kept: bool,
}

impl Claim {
    fn add(&mut self, n: u64, limits: &StorageLimits, name: &str) -> Result<(), Status> {
        let mut ledger = self
            .ledger
            .lock()
            .expect("the ledger is never left poisoned");
        if ledger.suite_id != self.suite_id {
            return Err(Status::failed_precondition(format!(
                "artifact {name} refused: suite {} has ended",
                self.suite_id
            )));
        }
        let attempt = ledger.attempts.get(&self.attempt_id).copied().unwrap_or(0) + n;
        let suite = ledger.suite + n;
        check_quota(
            limits,
            name,
            &self.attempt_id,
            &self.suite_id,
            attempt,
            suite,
        )?;
        ledger.attempts.insert(self.attempt_id.clone(), attempt);
        ledger.suite = suite;
        self.bytes += n;
        Ok(())
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.kept || self.bytes == 0 {
            return;
        }
        let Ok(mut ledger) = self.ledger.lock() else {
            return;
        };
        if ledger.suite_id != self.suite_id {
            return;
        }
        ledger.suite = ledger.suite.saturating_sub(self.bytes);
        if let Some(a) = ledger.attempts.get_mut(&self.attempt_id) {
            *a = a.saturating_sub(self.bytes);
        }
    }
}

fn check_quota(
    limits: &StorageLimits,
    name: &str,
    attempt_id: &str,
    suite_id: &str,
    attempt: u64,
    suite: u64,
) -> Result<(), Status> {
    if attempt > limits.max_attempt_bytes {
        return Err(Status::resource_exhausted(format!(
            "artifact {name} refused: attempt {attempt_id}'s artifacts would pass their limit of {} (storage.max_attempt_artifacts_mb)",
            size(limits.max_attempt_bytes)
        )));
    }
    if suite > limits.max_suite_bytes {
        return Err(Status::resource_exhausted(format!(
            "artifact {name} refused: suite {suite_id}'s artifacts would pass their limit of {} (storage.max_suite_artifacts_mb)",
            size(limits.max_suite_bytes)
        )));
    }
    Ok(())
}

/// An upload's temporary file beside its final name: removed when dropped,
/// unless renamed into place.
struct Partial {
    temp: tempfile::NamedTempFile,
    file: tokio::fs::File,
}

impl Partial {
    async fn create(dir: &Path, name: &str) -> Result<Partial, Status> {
        let (prefix, suffix) = upload_temp_affixes(name);
        let dir = dir.to_path_buf();
        let temp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(&suffix)
                .tempfile_in(&dir)
                .map_err(|e| format!("creating a temporary file in {}: {e}", dir.display()))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
        let file = temp
            .as_file()
            .try_clone()
            .map_err(|e| Status::internal(format!("opening {}: {e}", temp.path().display())))?;
        Ok(Partial {
            temp,
            file: tokio::fs::File::from_std(file),
        })
    }

    async fn write(&mut self, data: &[u8], name: &str) -> Result<(), Status> {
        self.file
            .write_all(data)
            .await
            .map_err(|e| write_failure(name, &e))
    }

    fn disk_free(&self) -> std::io::Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(self.temp.as_file())?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Flushes the file and renames it to `path`, replacing what was there.
    async fn commit(self, path: &Path, name: &str) -> Result<(), Status> {
        let Partial { temp, mut file } = self;
        file.flush().await.map_err(|e| write_failure(name, &e))?;
        drop(file);
        let to: PathBuf = path.to_path_buf();
        tokio::task::spawn_blocking(move || temp.persist(&to).map(drop))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                Status::internal(format!("moving artifact {name} into place: {}", e.error))
            })
    }
}

fn write_failure(name: &str, e: &std::io::Error) -> Status {
    let msg = format!("writing artifact {name}: {e}; nothing was kept");
    if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        Status::resource_exhausted(msg)
    } else {
        Status::internal(msg)
    }
}

fn disk_free(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

async fn first_header(chunks: &mut Streaming<ArtifactChunk>) -> Result<ArtifactHeader, Status> {
    match chunks.next().await.transpose()?.and_then(|c| c.body) {
        Some(artifact_chunk::Body::Header(h)) => Ok(h),
        _ => Err(Status::invalid_argument(
            "the first chunk of an upload must be its header",
        )),
    }
}

/// Where the header's attempt belongs, found through the scheduler's index,
/// once it is known to be live, of the header's task, and (under mTLS) the
/// certified agent's.
async fn live_place(
    engine: &Engine,
    h: &ArtifactHeader,
    certified: Option<String>,
) -> Result<AttemptPlace, Status> {
    let id = h.attempt_id.clone();
    let found = engine
        .query(move |s| {
            s.attempt_place(&id)
                .map(|p| (p, s.attempt_is_live(&id), s.is_running()))
        })
        .await?;
    let (place, live, suite_running) = found.ok_or_else(|| {
        Status::not_found(format!(
            "artifact {} refused: no attempt {} in the current suite",
            h.name, h.attempt_id
        ))
    })?;
    if certified.is_some_and(|name| name != place.agent_id) {
        return Err(Status::permission_denied(format!(
            "attempt {} belongs to agent {:?}",
            h.attempt_id, place.agent_id
        )));
    }
    if h.task_id != place.task_id {
        return Err(Status::invalid_argument(format!(
            "artifact {} refused: attempt {} is of task {}, not {:?}",
            h.name, h.attempt_id, place.task_id, h.task_id
        )));
    }
    if !suite_running {
        return Err(Status::failed_precondition(format!(
            "artifact {} refused: the suite of attempt {} has ended",
            h.name, h.attempt_id
        )));
    }
    if !live {
        return Err(Status::failed_precondition(format!(
            "artifact {} refused: attempt {} has ended",
            h.name, h.attempt_id
        )));
    }
    Ok(place)
}

/// Artifact names are plain file names: nothing that could climb out of the
/// attempt's directory.
pub fn check_artifact_name(name: &str) -> Result<(), Status> {
    let p = Path::new(name);
    let plain =
        p.components().count() == 1 && matches!(p.components().next(), Some(Component::Normal(_)));
    if name.is_empty() || !plain || name.len() > 200 {
        return Err(Status::invalid_argument(format!(
            "artifact name {name:?} is not a plain file name"
        )));
    }
    Ok(())
}

/// "4 MiB" when whole, else bytes.
fn size(bytes: u64) -> String {
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_cannot_escape() {
        assert!(check_artifact_name("A1_results.json").is_ok());
        for bad in ["", "../x", "a/b", "/etc/passwd", ".."] {
            assert!(check_artifact_name(bad).is_err(), "{bad}");
        }
    }

    fn limits(attempt: u64, suite: u64) -> StorageLimits {
        StorageLimits {
            max_artifact_bytes: u64::MAX,
            max_attempt_bytes: attempt,
            max_suite_bytes: suite,
            min_free_disk_bytes: 0,
        }
    }

    fn header(attempt_id: &str, size: u64) -> ArtifactHeader {
        ArtifactHeader {
            task_id: "T".into(),
            attempt_id: attempt_id.into(),
            name: "x".into(),
            size,
        }
    }

    #[test]
    fn bytes_count_as_they_arrive_and_come_back_unless_kept() {
        let uploads = Uploads::new(limits(10, 15));
        // Two uploads of attempt A at once: each fits alone, not both, and
        // the one whose bytes pass the limit is refused.
        let mut a = uploads.claim("S", &header("A", 6)).unwrap();
        a.add(3, &uploads.limits, "x").unwrap();
        let mut b = uploads.claim("S", &header("A", 6)).unwrap();
        b.add(6, &uploads.limits, "x").unwrap();
        let err = a.add(3, &uploads.limits, "x").unwrap_err();
        assert!(err.message().contains("attempt A"), "{err:?}");
        drop(a);
        b.keep();
        let mut c = uploads.claim("S", &header("B", 9)).unwrap();
        c.add(9, &uploads.limits, "x").unwrap();
        assert!(
            uploads.claim("S", &header("C", 1)).is_err(),
            "the suite is full"
        );
        drop(c);
        assert!(
            uploads.claim("S", &header("C", 9)).is_ok(),
            "B's unkept bytes came back"
        );
        // A new suite starts from nothing.
        assert!(uploads.claim("S2", &header("A", 10)).is_ok());
    }

    #[test]
    fn the_disk_floor_counts_what_is_still_to_come() {
        let mut l = limits(u64::MAX, u64::MAX);
        l.min_free_disk_bytes = 100;
        let uploads = Uploads::new(l);
        let dir = Path::new("/r");
        assert!(uploads.check_free(Ok(150), 50, "x", dir).is_ok());
        let err = uploads.check_free(Ok(150), 51, "x", dir).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("x refused"), "{err:?}");
    }

    #[test]
    fn sizes_are_told_in_mib_when_whole() {
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}

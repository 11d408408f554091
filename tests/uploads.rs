//! Artifact uploads into a real orchestrator: each upload writes a file of
//! its own and is renamed into place only once every byte it declared has
//! arrived; whatever is refused, cut short or dropped leaves nothing; the
//! per-attempt and per-suite quotas and the free-disk floor hold; an
//! attempt that has ended, or whose suite has, takes no more; and the real
//! agent streams a large file from disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use testfleet::proto::agent_gateway_client::AgentGatewayClient;
use testfleet::proto::{
    artifact_chunk, orchestrator_message, ArtifactChunk, ArtifactHeader, UploadArtifactResponse,
};
use testfleet_testkit::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

const MIB: usize = 1 << 20;

type Uploaded = Result<UploadArtifactResponse, tonic::Status>;

/// Where an attempt's uploads go.
struct Target {
    task_id: String,
    attempt_id: String,
    dir: PathBuf,
}

impl Target {
    fn header(&self, name: &str, size: usize) -> ArtifactChunk {
        ArtifactChunk {
            body: Some(artifact_chunk::Body::Header(ArtifactHeader {
                task_id: self.task_id.clone(),
                attempt_id: self.attempt_id.clone(),
                name: name.into(),
                size: size as u64,
            })),
        }
    }
}

fn data(bytes: &[u8]) -> ArtifactChunk {
    ArtifactChunk {
        body: Some(artifact_chunk::Body::Data(bytes.to_vec())),
    }
}

/// Chunks of 256 KiB, as the agent sends them.
fn chunked(bytes: &[u8]) -> Vec<ArtifactChunk> {
    bytes.chunks(256 * 1024).map(data).collect()
}

async fn upload(channel: &Channel, chunks: Vec<ArtifactChunk>) -> Uploaded {
    AgentGatewayClient::new(channel.clone())
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .map(tonic::Response::into_inner)
}

/// An upload fed by hand: what the test sends it, and the call.
fn upload_by_hand(channel: &Channel) -> (mpsc::Sender<ArtifactChunk>, JoinHandle<Uploaded>) {
    let (tx, rx) = mpsc::channel(64);
    let mut client = AgentGatewayClient::new(channel.clone());
    let call = tokio::spawn(async move {
        client
            .upload_artifact(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    (tx, call)
}

/// Every file in `dir` (temporary ones too), with its size.
fn entries(dir: &Path) -> Vec<(String, u64)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut all: Vec<(String, u64)> = read
        .filter_map(Result::ok)
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    all.sort();
    all
}

/// Waits until some file in `dir` holds `bytes`: the orchestrator has
/// written that much of an upload still under way.
async fn wait_for_written(dir: &Path, bytes: usize) {
    let what = format!("{bytes} bytes written under {}", dir.display());
    poll_until(
        &what,
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let big = entries(dir).iter().any(|(_, len)| *len >= bytes as u64);
            async move { Ok(big.then_some(())) }
        },
    )
    .await
    .unwrap();
}

fn refused(got: Uploaded, code: Code, says: &[&str]) {
    let status = got.expect_err("the upload is refused");
    assert_eq!(status.code(), code, "{status:?}");
    for s in says {
        assert!(status.message().contains(s), "{s:?} in {status:?}");
    }
}

/// An orchestrator serving a suite of `tasks` (each `sleep 600`, never run)
/// to a hand-driven agent, which holds every task's attempt live.
struct LiveAttempts {
    server: Server,
    channel: Channel,
    targets: Vec<Target>,
    _agent: (AgentSender, OrchestratorStream),
}

async fn live_attempts(dir: &Path, storage: &str, tasks: &[&str]) -> LiveAttempts {
    let config = dir.join("suite.yaml");
    let defs: String = tasks
        .iter()
        .map(|t| format!("      - {{id: \"{t}\", template: t, resources: {{memory_mb: 64, timeout: 600}}}}\n"))
        .collect();
    std::fs::write(
        &config,
        format!("{storage}\ntemplates:\n  t: {{command: \"sleep 600\"}}\norchestrator:\n  task_definitions:\n    u:\n{defs}"),
    )
    .unwrap();
    let server = Server::start(&config, dir);
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent(channel.clone(), "raw_uploader", (4096, 8.0))
        .await
        .unwrap();
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    let mut assigned = Vec::new();
    while assigned.len() < tasks.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("assigned within 10 s")
            .expect("the stream is healthy")
            .expect("the stream is open");
        if let Some(orchestrator_message::Body::Assignment(a)) = msg.body {
            assigned.push(a);
        }
    }
    let suite_id = server.status()["suite_id"].as_str().unwrap().to_string();
    let suite_dir = server.data_dir.join("reports").join(suite_id);
    let targets = assigned
        .into_iter()
        .map(|a| {
            let task_id = a.task_details.unwrap().task_id;
            Target {
                dir: suite_dir
                    .join("artifacts")
                    .join(&task_id)
                    .join(a.attempt_number.to_string()),
                task_id,
                attempt_id: a.attempt_id,
            }
        })
        .collect();
    LiveAttempts {
        server,
        channel,
        targets,
        _agent: (tx, inbound),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_of_one_name_at_once_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_attempts(dir.path(), "", &["T"]).await;
    let t = &live.targets[0];
    let (a, b) = (vec![b'A'; 4 * MIB], vec![b'B'; 4 * MIB]);
    // A is half written when B starts, runs and ends; then A ends.
    let (tx_a, call_a) = upload_by_hand(&live.channel);
    tx_a.send(t.header("junit.xml", a.len())).await.unwrap();
    for c in chunked(&a[..2 * MIB]) {
        tx_a.send(c).await.unwrap();
    }
    wait_for_written(&t.dir, 2 * MIB).await;
    let mut whole_b = vec![t.header("junit.xml", b.len())];
    whole_b.extend(chunked(&b));
    let got_b = upload(&live.channel, whole_b).await;
    assert_eq!(got_b.expect("B is stored").size, b.len() as u64);
    for c in chunked(&a[2 * MIB..]) {
        tx_a.send(c).await.unwrap();
    }
    drop(tx_a);
    let got_a = call_a.await.unwrap();
    assert_eq!(got_a.expect("A is stored").size, a.len() as u64);
    // The last to finish is what stays, whole.
    let kept = std::fs::read(t.dir.join("junit.xml")).unwrap();
    assert!(kept == a, "junit.xml is A's upload, unmixed");
    assert_eq!(entries(&t.dir), [("junit.xml".to_string(), a.len() as u64)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_short_or_overlong_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_attempts(dir.path(), "", &["T"]).await;
    let t = &live.targets[0];
    // 8 MiB of a declared 20 MiB, and the stream ends cleanly.
    let mut short = vec![t.header("junit.xml", 20 * MIB)];
    short.extend(chunked(&vec![b'x'; 8 * MIB]));
    refused(
        upload(&live.channel, short).await,
        Code::DataLoss,
        &["junit.xml", "8388608", "20971520"],
    );
    // 2 MiB where 1 MiB was declared.
    let mut long = vec![t.header("coverage.xml", MIB)];
    long.extend(chunked(&vec![b'y'; 2 * MIB]));
    refused(
        upload(&live.channel, long).await,
        Code::InvalidArgument,
        &["coverage.xml", "1048576"],
    );
    assert_eq!(entries(&t.dir), [], "nothing is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_dropped_midway_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_attempts(dir.path(), "", &["T"]).await;
    let t = &live.targets[0];
    let (tx, call) = upload_by_hand(&live.channel);
    tx.send(t.header("junit.xml", 20 * MIB)).await.unwrap();
    for c in chunked(&vec![b'x'; 8 * MIB]) {
        tx.send(c).await.unwrap();
    }
    wait_for_written(&t.dir, 8 * MIB).await;
    // The client goes away (its stream is reset), not a clean end.
    call.abort();
    let _ = call.await;
    drop(tx);
    poll_until(
        "the dropped upload's file to be removed",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let left = entries(&t.dir);
            async move { Ok(left.is_empty().then_some(())) }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_attempt_or_suite_quota_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = "storage: {max_attempt_artifacts_mb: 4, max_suite_artifacts_mb: 5}";
    let live = live_attempts(dir.path(), storage, &["T1", "T2"]).await;
    let (one, two) = (&live.targets[0], &live.targets[1]);
    let file = |t: &Target, name: &str, mib: usize| {
        let mut chunks = vec![t.header(name, mib * MIB)];
        chunks.extend(chunked(&vec![b'z'; mib * MIB]));
        chunks
    };
    upload(&live.channel, file(one, "a.bin", 3))
        .await
        .expect("3 MiB fits the attempt's 4");
    refused(
        upload(&live.channel, file(one, "b.bin", 2)).await,
        Code::ResourceExhausted,
        &["b.bin", "attempt", "4 MiB"],
    );
    refused(
        upload(&live.channel, file(two, "c.bin", 3)).await,
        Code::ResourceExhausted,
        &["c.bin", "suite", "5 MiB"],
    );
    // Refused bytes are not counted: 2 MiB more still fits the suite's 5.
    upload(&live.channel, file(two, "d.bin", 2))
        .await
        .expect("the suite has 2 MiB left");
    assert_eq!(entries(&one.dir), [("a.bin".into(), 3 * MIB as u64)]);
    assert_eq!(entries(&two.dir), [("d.bin".into(), 2 * MIB as u64)]);
    drop(live.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_under_the_free_disk_floor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // More free disk than any host has.
    let storage = "storage: {min_free_disk_mb: 1000000000000}";
    let live = live_attempts(dir.path(), storage, &["T"]).await;
    let t = &live.targets[0];
    let chunks = vec![t.header("small.txt", 5), data(b"hello")];
    refused(
        upload(&live.channel, chunks).await,
        Code::ResourceExhausted,
        &["small.txt", "free"],
    );
    assert_eq!(entries(&t.dir), []);
}

fn task_status(server: &Server, id: &str) -> String {
    server.status()["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task_id"] == id))
        .map(|t| t["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_or_suite_that_has_ended_takes_no_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    let gate = dir.path().join("go");
    std::fs::write(
        &config,
        format!(
            "templates:\n  quick: {{command: \"echo quick\"}}\n  gated: {{command: \"while [ ! -e '{}' ]; do sleep 0.05; done\"}}\norchestrator:\n  task_definitions:\n    u:\n      - {{id: \"QUICK\", template: quick, resources: {{memory_mb: 64, timeout: 60}}}}\n      - {{id: \"GATED\", template: gated, resources: {{memory_mb: 64, timeout: 60}}}}\n",
            gate.display()
        ),
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_001", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    wait_for("QUICK done, GATED running", Duration::from_secs(20), || {
        (task_status(&server, "QUICK") == "completed_success"
            && task_status(&server, "GATED") == "running")
            .then_some(())
    });
    let suite_id = server.status()["suite_id"].as_str().unwrap().to_string();
    let quick_dir = server
        .data_dir
        .join("reports")
        .join(&suite_id)
        .join("artifacts/QUICK/1");
    let results = quick_dir.join("QUICK_results.json");
    let real = std::fs::read(&results).expect("QUICK uploaded its results");
    let attempt_id = serde_json::from_slice::<Value>(&real).unwrap()["attempt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = Target {
        task_id: "QUICK".into(),
        attempt_id: attempt_id.clone(),
        dir: quick_dir.clone(),
    };
    let forged = br#"{"task_id": "QUICK", "test_results": {"failed": 99}}"#;
    let channel = testfleet::transport::connect(&server.endpoint())
        .await
        .unwrap();
    let forge = || {
        vec![
            target.header("QUICK_results.json", forged.len()),
            data(forged),
        ]
    };
    // The attempt has ended; its suite still runs.
    refused(
        upload(&channel, forge()).await,
        Code::FailedPrecondition,
        &["QUICK_results.json", &attempt_id],
    );
    std::fs::write(&gate, "").unwrap();
    server.wait_for_status(&["completed"], Duration::from_secs(20));
    // The suite has ended.
    refused(
        upload(&channel, forge()).await,
        Code::FailedPrecondition,
        &["QUICK_results.json", &attempt_id],
    );
    assert_eq!(
        std::fs::read(&results).unwrap(),
        real,
        "the real file stays"
    );
    assert!(
        entries(&quick_dir)
            .iter()
            .all(|(n, _)| !n.contains("partial")),
        "{:?}",
        entries(&quick_dir)
    );
}

/// The peak resident memory of a process, from /proc, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_streams_a_large_artifact_from_disk() {
    const SIZE: u64 = 200 * MIB as u64;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        "storage: {max_artifact_mb: 256, max_attempt_artifacts_mb: 512}\ntemplates:\n  big: {command: \"truncate -s 200M {artifacts_dir}/big.bin\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: \"BIG\", template: big, resources: {memory_mb: 64, timeout: 120}}\n",
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let agent = start_agent(&server.endpoint(), "agent_001", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    server.wait_for_status(&["completed", "failed"], Duration::from_secs(90));
    let (_, report) = server.http_get("/api/v1/final-report");
    let big = task(&report, "BIG");
    assert_eq!(big["status"], "completed_success", "{big}");
    let listed = &big["attempts"][0]["artifacts"];
    assert!(
        listed.as_array().unwrap().iter().any(|a| a == "big.bin"),
        "{listed}"
    );
    let stored = server
        .data_dir
        .join("reports")
        .join(report["suite_id"].as_str().unwrap())
        .join("artifacts/BIG/1/big.bin");
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), SIZE);
    let peak = peak_rss(agent.pid());
    assert!(
        peak < 100 * MIB as u64,
        "the agent peaked at {} MiB uploading 200 MiB",
        peak / MIB as u64
    );
}

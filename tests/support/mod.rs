//! What every black-box test needs: the real binaries, started on real
//! sockets, stopped (with everything they started) when the test ends, and
//! waits on states with deadlines instead of sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn orchestrator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"))
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// Polls `check` until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (with its process group) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), limit, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `orchestrator serve` on a free loopback port.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn start(config: &Path, dir: &Path) -> Server {
        Server::start_with(config, dir, true)
    }

    /// With `insecure` false, the config's `tls:` section decides.
    pub fn start_with(config: &Path, dir: &Path, insecure: bool) -> Server {
        Server::start_env(config, dir, insecure, &[])
    }

    /// With extra environment for the orchestrator.
    pub fn start_env(config: &Path, dir: &Path, insecure: bool, env: &[(&str, &str)]) -> Server {
        let data_dir = dir.join("data");
        let log = dir.join("orchestrator.log");
        let mut child = Command::new(orchestrator_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(insecure.then_some("--insecure"))
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the orchestrator");
        // Its JSON log says where it listens; keep copying the rest to a file.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).expect("log file");
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    for key in ["metrics_addr", "addr"] {
                        if let Some(addr) = v[key].as_str() {
                            let _ = tx.send((key, addr.to_string()));
                        }
                    }
                }
            }
        });
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            let (key, value) = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the orchestrator reports its addresses");
            let parsed: SocketAddr = value.parse().expect("an address");
            if key == "addr" {
                addr = Some(parsed);
            } else {
                metrics_addr = Some(parsed);
            }
        }
        Server {
            proc: Proc {
                child,
                name: "orchestrator".into(),
            },
            addr: addr.expect("set above"),
            metrics_addr: metrics_addr.expect("set above"),
            data_dir,
            log,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs an `orchestrator` client subcommand against this server.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new(orchestrator_bin())
            .args(args)
            .args(["--endpoint", &self.endpoint(), "--insecure"])
            .output()
            .expect("run the client")
    }

    /// The Prometheus text the metrics port serves.
    pub fn metrics_text(&self) -> String {
        let mut s = std::net::TcpStream::connect(self.metrics_addr).expect("connect to metrics");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        }
    }

    pub fn http_get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, "")
    }

    pub fn http_post(&self, path: &str, body: &str) -> (u16, Value) {
        http(self.addr, "POST", path, body)
    }

    pub fn status(&self) -> Value {
        self.http_get("/api/v1/status").1
    }

    pub fn wait_for_status(&self, want: &[&str], limit: Duration) -> String {
        wait_for(&format!("suite status in {want:?}"), limit, || {
            let s = self.status()["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            want.contains(&s.as_str()).then_some(s)
        })
    }

    pub fn wait_for_agents(&self, n: usize) {
        wait_for(
            &format!("{n} agents connected"),
            Duration::from_secs(20),
            || {
                let out = self.client(&["agents"]);
                let text = String::from_utf8_lossy(&out.stdout);
                (text.matches(" connected ").count() >= n).then_some(())
            },
        );
    }
}

/// A minimal HTTP/1.1 client: enough for the seed's JSON API.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A real agent process.
pub fn start_agent(endpoint: &str, id: &str, dir: &Path, extra: &[&str]) -> Proc {
    let child = Command::new(agent_bin())
        .args([
            "--orchestrator-endpoint",
            endpoint,
            "--insecure",
            "--agent-id",
            id,
            "--cpu-cores",
            "4",
            "--memory-mb",
            "8192",
        ])
        .arg("--workdir")
        .arg(dir.join(id))
        .arg("--log-file")
        .arg(dir.join(format!("{id}.log")))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start an agent");
    Proc {
        child,
        name: id.into(),
    }
}

/// `orchestrator run FILE --local-agents N --report-dir DIR`, to its end.
pub fn run_suite(config: &Path, agents: u32, report_dir: &Path, extra: &[&str]) -> (Output, Value) {
    let out = Command::new(orchestrator_bin())
        .arg("run")
        .arg(config)
        .args(["--local-agents", &agents.to_string()])
        .arg("--report-dir")
        .arg(report_dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run the suite");
    let report = std::fs::read_to_string(report_dir.join("report.json"))
        .map(|t| serde_json::from_str(&t).expect("report.json is JSON"))
        .unwrap_or(Value::Null);
    (out, report)
}

pub fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in the report"))
}

/// Whether a process is gone (or only a zombie awaiting its reaper).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A Python with pytest and pytest-cov (CI's venv, or the developer's).
pub fn python() -> String {
    std::env::var("TESTFLEET_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A hand-driven agent stream, for wire tests: says `hello` as `agent_id`
/// with the given capacity, and returns the sender and what comes back.
pub async fn raw_agent(
    channel: tonic::transport::Channel,
    agent_id: &str,
    capacity: (u64, f64),
) -> Result<
    (
        tokio::sync::mpsc::Sender<testfleet::proto::AgentMessage>,
        tonic::Streaming<testfleet::proto::OrchestratorMessage>,
    ),
    tonic::Status,
> {
    use testfleet::proto::{self, agent_message, AgentMessage};
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let hello = proto::AgentHello {
        agent_id: agent_id.into(),
        host: "h".into(),
        capacity: Some(proto::Resources {
            memory_mb: capacity.0,
            cpu_cores: capacity.1,
            disk_mb: 1024,
        }),
        ..Default::default()
    };
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(hello)),
    })
    .await
    .expect("the stream is open");
    let inbound = testfleet::proto::agent_gateway_client::AgentGatewayClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// Sends `msg` on a hand-driven agent stream and asserts that the next reply
/// is a rejection with `code`.
pub async fn expect_rejection(
    tx: &tokio::sync::mpsc::Sender<testfleet::proto::AgentMessage>,
    inbound: &mut tonic::Streaming<testfleet::proto::OrchestratorMessage>,
    msg: testfleet::proto::AgentMessage,
    code: tonic::Code,
) {
    tx.send(msg).await.expect("the stream is open");
    let reply = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("a reply within 5 s")
        .expect("the stream is healthy")
        .expect("the stream is open");
    match reply.body {
        Some(testfleet::proto::orchestrator_message::Body::Rejection(r)) => {
            assert_eq!(tonic::Code::from_i32(r.code), code, "{r:?}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

pub type ControlClient = testfleet::proto::control_client::ControlClient<tonic::transport::Channel>;

/// `n` calls of `call` at once, each on its own client of one connection.
pub async fn at_once<T, F, Fut>(
    channel: &tonic::transport::Channel,
    n: usize,
    call: F,
) -> Vec<Result<T, tonic::Status>>
where
    F: Fn(ControlClient) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let calls = (0..n).map(|_| call(ControlClient::new(channel.clone())));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.map(tonic::Response::into_inner))
        .collect()
}

/// The one success among `results`, and that every other call was refused
/// with `code` and a message containing `says`.
pub fn exactly_one_ok<T: std::fmt::Debug>(
    results: Vec<Result<T, tonic::Status>>,
    code: tonic::Code,
    says: &str,
) -> T {
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(ok.len(), 1, "exactly one call is carried out: {ok:?}");
    for r in refused {
        let status = r.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    ok.into_iter().next().unwrap().unwrap()
}

/// Asks for the final report. On a large suite, building it holds the
/// scheduler's task: commands sent at the same time queue behind it.
pub async fn final_report_call(
    channel: tonic::transport::Channel,
) -> Result<tonic::Response<testfleet::report_text::FinalReport>, tonic::Status> {
    ControlClient::new(channel)
        .get_final_report(testfleet::proto::GetFinalReportRequest::default())
        .await
}

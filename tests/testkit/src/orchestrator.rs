//! `orchestrator serve` on free loopback ports, as a test or bench sees it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::{http, http_text, orchestrator_bin, wait_for, Proc};

/// How to start one.
pub struct Serve<'a> {
    pub config: &'a Path,
    /// Its data dir (`data/`) and log (`orchestrator.log`) go here.
    pub dir: &'a Path,
    /// Plaintext; otherwise the config's `tls:` section decides.
    pub insecure: bool,
    /// Extra environment; a RUST_LOG here replaces the default `info`.
    pub env: &'a [(&'a str, &'a str)],
    /// Also copy its log to stderr, to watch a run.
    pub echo_log: bool,
}

/// A running `orchestrator serve`, stopped when dropped.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// What it was started with, to start it again (`restart`).
    config: PathBuf,
    insecure: bool,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    echo_log: bool,
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
        Server::serve(Serve {
            config,
            dir,
            insecure,
            env,
            echo_log: false,
        })
        .expect("start the orchestrator")
    }

    /// Starts it and waits (20 s at most) until its log says where it
    /// listens.
    pub fn serve(how: Serve) -> anyhow::Result<Server> {
        Server::serve_with(how, &[], None)
    }

    /// With extra `serve` flags, and when `open_files` is set, that
    /// open-file limit (soft and hard, at most this process's hard limit),
    /// as a host would give it.
    pub fn serve_with(
        how: Serve,
        flags: &[&str],
        open_files: Option<u64>,
    ) -> anyhow::Result<Server> {
        Server::spawn(how, flags, (open_files, None), None)
    }

    /// With no file it writes allowed past `bytes` (RLIMIT_FSIZE, its
    /// SIGXFSZ ignored so a write past it fails with EFBIG instead of
    /// killing it): a disk that fills up, for this process alone.
    pub fn serve_with_file_size(how: Serve, bytes: u64) -> anyhow::Result<Server> {
        Server::spawn(how, &[], (None, Some(bytes)), None)
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would: nothing
    /// is flushed or closed on its way out.
    pub fn kill9(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    /// Kills it (SIGKILL) if it still runs, and starts it again with the
    /// same config, flags, environment and data dir, on the same gRPC port
    /// (so agents find it again); its log goes on in the same file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.proc.child.try_wait()?.is_none() {
            self.kill9();
        }
        let dir = self
            .data_dir
            .parent()
            .context("the data dir is in the test's dir")?
            .to_path_buf();
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let config = self.config.clone();
        let env_owned = self.env.clone();
        let env: Vec<(&str, &str)> = env_owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let how = Serve {
            config: &config,
            dir: &dir,
            insecure: self.insecure,
            env: &env,
            echo_log: self.echo_log,
        };
        *self = Server::spawn(how, &flags, (None, None), Some(self.addr))?;
        Ok(())
    }

    /// Starts one; on `addr` (its log appended to) when given, else on a
    /// free port.
    fn spawn(
        how: Serve,
        flags: &[&str],
        (open_files, file_size): (Option<u64>, Option<u64>),
        addr: Option<SocketAddr>,
    ) -> anyhow::Result<Server> {
        let data_dir = how.dir.join("data");
        let log = how.dir.join("orchestrator.log");
        let bin = orchestrator_bin();
        let listen = addr.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let mut command = Command::new(&bin);
        if let Some(n) = open_files {
            limit_open_files(&mut command, n)?;
        }
        if let Some(n) = file_size {
            limit_file_size(&mut command, n);
        }
        let mut child = command
            .args([
                "serve",
                "--listen",
                &listen,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(how.insecure.then_some("--insecure"))
            .args(flags)
            .arg("--config")
            .arg(how.config)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info")
            .envs(how.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("its stderr")?;
        let proc = Proc {
            child,
            name: "orchestrator".into(),
        };
        let addresses = copy_log(stderr, &log, how.echo_log, addr.is_some())?;
        let (addr, metrics_addr) = listening(&addresses)
            .with_context(|| format!("the orchestrator's log: {}", log.display()))?;
        Ok(Server {
            proc,
            addr,
            metrics_addr,
            data_dir,
            log,
            config: how.config.to_path_buf(),
            insecure: how.insecure,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            env: how
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            echo_log: how.echo_log,
        })
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
        http_text(self.metrics_addr, "GET", "/metrics", "").1
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

    /// Waits (20 s at most) until `orchestrator agents` lists `n` connected.
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

/// Gives the command's process an open-file limit of `n` (no more than
/// this process's hard limit, which it may not raise).
fn limit_open_files(command: &mut Command, n: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("the open-file limit")?;
    let n = n.min(hard);
    // SAFETY: setrlimit is a system call, async-signal-safe as the child
    // requires between fork and exec; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(std::io::Error::from)
        });
    }
    Ok(())
}

/// Lets the command's process write no file past `bytes`; a write past it
/// fails (EFBIG) rather than raising SIGXFSZ, which is ignored.
fn limit_file_size(command: &mut Command, bytes: u64) {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::sys::signal::{signal, SigHandler, Signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit and signal are system calls, async-signal-safe as
    // the child requires between fork and exec; nothing is allocated. An
    // ignored signal stays ignored across exec.
    unsafe {
        command.pre_exec(move || {
            signal(Signal::SIGXFSZ, SigHandler::SigIgn).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_FSIZE, bytes, bytes).map_err(std::io::Error::from)
        });
    }
}

/// Copies the orchestrator's JSON log to `log` (and stderr, if `echo`) on a
/// thread of its own, so it never blocks on a full pipe; sends on what each
/// line that gives an address says (`addr`, `metrics_addr`).
fn copy_log(
    stderr: std::process::ChildStderr,
    log: &Path,
    echo: bool,
    append: bool,
) -> anyhow::Result<mpsc::Receiver<(&'static str, String)>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if echo {
                eprintln!("{line}");
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                for key in ["metrics_addr", "addr"] {
                    if let Some(addr) = v[key].as_str() {
                        let _ = tx.send((key, addr.to_string()));
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// The gRPC and metrics addresses, once the log has given both.
fn listening(
    addresses: &mpsc::Receiver<(&'static str, String)>,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let (mut addr, mut metrics_addr) = (None, None);
    while addr.is_none() || metrics_addr.is_none() {
        let (key, value) = addresses.recv_timeout(Duration::from_secs(20)).context(
            "the orchestrator did not say where it listens (within 20 s, or before it exited)",
        )?;
        let parsed: SocketAddr = value
            .parse()
            .with_context(|| format!("its {key} {value:?}"))?;
        if key == "addr" {
            addr = Some(parsed);
        } else {
            metrics_addr = Some(parsed);
        }
    }
    Ok((addr.expect("set above"), metrics_addr.expect("set above")))
}

/// `orchestrator serve ARGS --config CONFIG --data-dir DIR/data` as a bare
/// process (no readiness wait: for tests of how `serve` starts or refuses
/// to), its stderr at INFO in `log`.
pub fn serve_logged(dir: &Path, config: &Path, args: &[&str], log: &Path) -> Proc {
    let child = Command::new(orchestrator_bin())
        .arg("serve")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the serve log"))
        .spawn()
        .expect("start orchestrator serve");
    Proc {
        child,
        name: "orchestrator".into(),
    }
}

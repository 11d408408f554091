//! The resident pytest runner: one long-lived pytest process per split
//! task on this agent that collects once and runs batch after batch
//! (`pytest_plugin/testfleet_runner.py`, resident mode), so a batch pays
//! neither interpreter start, imports, collection nor session fixtures.
//!
//! The agent and the runner talk over a socket pair whose other end is the
//! runner's fd 3 (stdin is pytest's to redirect, stdout and stderr carry
//! the suite's output): one JSON object a line each way. Results go to the
//! batch's results file as in a per-batch run, so the same tail and finish
//! read them; the socket says only "ready" and "done".
//!
//! A runner is taken out of the pool for one batch and put back when the
//! batch ended well; one that died, timed out or was cancelled is dropped
//! (its group killed), and the next batch starts a new one.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use testfleet::proto;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The runner's end of the socket pair, as the plugin finds it.
const CONTROL_FD: i32 = 3;
/// How long a quitting runner has to tear its session down.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// Which runner a batch may use: the same suite, task, invocation,
/// environment, directory and paths, so that what it collected is what the
/// batch's ids come from.
pub fn key(a: &proto::TaskAssignment) -> String {
    let exec = a.execution.clone().unwrap_or_default();
    let task = a.task_details.as_ref().map(|d| d.task_id.as_str());
    let mut env: Vec<_> = exec.env.iter().collect();
    env.sort();
    let paths = exec.split.map(|s| s.paths).unwrap_or_default();
    serde_json::json!([
        exec.suite_id,
        task,
        exec.command,
        env,
        exec.working_directory,
        paths
    ])
    .to_string()
}

fn suite_of(key: &str) -> String {
    serde_json::from_str::<serde_json::Value>(key)
        .ok()
        .and_then(|v| v.get(0).and_then(|s| s.as_str()).map(String::from))
        .unwrap_or_default()
}

/// What the runner said.
#[derive(Debug, PartialEq)]
pub enum Said {
    Ready {
        tests: u64,
        /// Collection errors: its batches would find tests missing.
        errors: u64,
        pid: u32,
    },
    Done,
    /// The socket closed: the runner is gone or going.
    Gone,
}

/// A started runner.
pub struct Runner {
    pub child: Child,
    pub pgid: i32,
    pub pid: u32,
    pub lines: mpsc::Receiver<String>,
    pub control: Control,
    /// It has collected and said "ready": it reads what it is asked.
    pub ready: bool,
    /// A warm hint started it, not a batch (`attempt/warm.rs`).
    pub warmed: bool,
}

/// The agent's end of the runner's socket.
pub struct Control {
    said: Lines<BufReader<OwnedReadHalf>>,
    ask: OwnedWriteHalf,
}

impl Runner {
    /// Starts `command` under `sh -c` in `dir` with `env`, leader of its own
    /// group, its fd 3 the control socket. Returns before it has collected.
    pub fn start(
        command: &str,
        dir: &str,
        env: Vec<(String, String)>,
        pgid_file: &Path,
    ) -> anyhow::Result<Runner> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().context("creating the runner's socket pair")?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(dir)
            .envs(env)
            .env("TESTFLEET_PYTEST_CONTROL", CONTROL_FD.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: dup2, fcntl and prctl are async-signal-safe and touch only
        // the child; their_fd stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if their_fd != CONTROL_FD {
                    if nix::libc::dup2(their_fd, CONTROL_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if nix::libc::fcntl(CONTROL_FD, nix::libc::F_SETFD, 0) < 0 {
                    // Same fd: dup2 is a no-op and would leave CLOEXEC set.
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning the resident runner `{command}` in {dir}"))?;
        drop(theirs);
        let pid = child.id().context("the runner has no pid")?;
        let pgid = pid as i32;
        let _ = std::fs::write(pgid_file, pgid.to_string());
        ours.set_nonblocking(true)?;
        let (read, ask) = tokio::net::UnixStream::from_std(ours)?.into_split();
        let (tx, lines) = mpsc::channel::<String>(1024);
        spawn_lines(child.stdout.take().context("stdout")?, tx.clone());
        spawn_lines(child.stderr.take().context("stderr")?, tx);
        tracing::info!(pgid, command, "resident runner started");
        Ok(Runner {
            child,
            pgid,
            pid,
            lines,
            ready: false,
            warmed: false,
            control: Control {
                said: BufReader::new(read).lines(),
                ask,
            },
        })
    }

    /// Kills the runner's whole group at once.
    pub fn kill(&self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }

    /// Asks the runner to end (its session fixtures torn down), and kills
    /// its group if it has not within the grace.
    pub async fn quit(mut self) {
        self.control.ask_quit().await;
        let mut lines = std::mem::replace(&mut self.lines, mpsc::channel(1).1);
        let drain = tokio::spawn(async move { while lines.recv().await.is_some() {} });
        let ended = tokio::time::timeout(QUIT_GRACE, self.child.wait()).await;
        if ended.is_err() {
            tracing::warn!(
                pgid = self.pgid,
                "the resident runner did not quit; killing it"
            );
        }
        self.kill();
        drain.abort();
    }
}

impl Control {
    /// The next thing the runner says; `Gone` once the socket closes.
    /// Cancel-safe: a line half read stays buffered.
    pub async fn next(&mut self) -> Said {
        loop {
            let Ok(Some(line)) = self.said.next_line().await else {
                return Said::Gone;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                tracing::warn!(line, "the resident runner said something unreadable");
                continue;
            };
            if let Some(n) = v.get("ready").and_then(|n| n.as_u64()) {
                let pid = v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as u32;
                let errors = v.get("errors").and_then(|e| e.as_u64()).unwrap_or(0);
                return Said::Ready {
                    tests: n,
                    errors,
                    pid,
                };
            }
            if v.get("done").is_some() {
                return Said::Done;
            }
        }
    }

    /// Asks the runner to end its session and exit.
    pub async fn ask_quit(&mut self) {
        let _ = self.ask.write_all(b"{\"quit\": true}\n").await;
        let _ = self.ask.shutdown().await;
    }

    /// Asks for one batch: the ids in `tests`, results to `results`.
    pub async fn run(&mut self, tests: &Path, results: &Path, batch: &str) -> std::io::Result<()> {
        let ask = serde_json::json!({"run": {
            "tests": tests.display().to_string(),
            "results": results.display().to_string(),
            "batch": batch,
        }});
        self.ask.write_all(format!("{ask}\n").as_bytes()).await?;
        self.ask.flush().await
    }
}

impl Drop for Runner {
    /// A runner let go of takes its whole group with it (`kill_on_drop`
    /// reaches only the shell that leads it).
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_lines<R: AsyncRead + Unpin + Send + 'static>(r: R, tx: mpsc::Sender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
}

/// The idle runners of this agent, by key, and the keys whose runner
/// could not start (their batches run one process each).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    refused: Mutex<HashSet<String>>,
}

/// A runner waiting for a batch, since when.
struct Idle {
    runner: Runner,
    since: Instant,
}

/// How long a runner may wait for its next batch before it is ended
/// (`agent --runner-idle-timeout`). A suite's runners get no word that the
/// suite ended, and a warmed one may never get a batch; each holds a Python
/// process with the suite imported. Long enough for one agent's collection
/// to end while the others wait warmed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Pool {
    /// An idle runner for `key`, if any. Idle runners of other suites are
    /// ended: a new suite means their code may have changed.
    pub fn take(&self, key: &str) -> (Option<Runner>, Vec<Runner>) {
        let Ok(mut idle) = self.idle.lock() else {
            return (None, Vec::new());
        };
        let suite = suite_of(key);
        let stale: Vec<String> = idle
            .keys()
            .filter(|k| suite_of(k) != suite)
            .cloned()
            .collect();
        let old = stale
            .iter()
            .filter_map(|k| idle.remove(k))
            .flatten()
            .map(|i| i.runner)
            .collect();
        let runner = idle.get_mut(key).and_then(|v| v.pop()).map(|i| i.runner);
        (runner, old)
    }

    /// Whether a runner for `key` waits idle here.
    pub fn has(&self, key: &str) -> bool {
        self.idle
            .lock()
            .is_ok_and(|i| i.get(key).is_some_and(|v| !v.is_empty()))
    }

    pub fn put(&self, key: String, runner: Runner) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.entry(key).or_default().push(Idle {
                runner,
                since: Instant::now(),
            });
        }
    }

    pub fn refuse(&self, key: String) {
        if let Ok(mut r) = self.refused.lock() {
            r.insert(key);
        }
    }

    pub fn refused(&self, key: &str) -> bool {
        self.refused.lock().is_ok_and(|r| r.contains(key))
    }

    /// Every idle runner, to end (the agent is stopping).
    pub fn drain(&self) -> Vec<Runner> {
        self.expired(Instant::now(), Duration::ZERO)
    }

    /// The runners idle for `timeout` or longer at `now`, taken out to end.
    pub fn expired(&self, now: Instant, timeout: Duration) -> Vec<Runner> {
        let Ok(mut idle) = self.idle.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for waiting in idle.values_mut() {
            let (old, fresh): (Vec<Idle>, Vec<Idle>) = std::mem::take(waiting)
                .into_iter()
                .partition(|i| now.saturating_duration_since(i.since) >= timeout);
            *waiting = fresh;
            out.extend(old.into_iter().map(|i| i.runner));
        }
        idle.retain(|_, v| !v.is_empty());
        out
    }
}

/// Ends the runners that waited `timeout` for a batch, looking every tenth
/// of `timeout` (between 100 ms and 10 s apart), for as long as it runs.
pub async fn expire_idle(pool: &Pool, timeout: Duration) {
    let every = (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        let ended = pool.expired(Instant::now(), timeout);
        if !ended.is_empty() {
            tracing::info!(
                runners = ended.len(),
                idle_s = timeout.as_secs_f64(),
                "ending resident runners no batch came for"
            );
            quit_all(ended).await;
        }
    }
}

/// Ends runners, each given its grace, all at once.
pub async fn quit_all(runners: Vec<Runner>) {
    let ends: Vec<_> = runners
        .into_iter()
        .map(|r| tokio::spawn(r.quit()))
        .collect();
    for e in ends {
        let _ = e.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(suite: &str, task: &str, paths: &[&str]) -> proto::TaskAssignment {
        proto::TaskAssignment {
            task_details: Some(proto::TaskDetails {
                task_id: task.into(),
                ..Default::default()
            }),
            execution: Some(proto::ExecutionSpec {
                suite_id: suite.into(),
                command: "python -m pytest".into(),
                split: Some(proto::SplitSpec {
                    runner: "pytest".into(),
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                    tests: vec!["t::a".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn batches_share_a_runner_only_within_one_suite_task_and_collection() {
        let k = key(&batch("s1", "unit", &["tests/"]));
        let mut other_tests = batch("s1", "unit", &["tests/"]);
        other_tests
            .execution
            .as_mut()
            .unwrap()
            .split
            .as_mut()
            .unwrap()
            .tests = vec!["t::b".into()];
        assert_eq!(k, key(&other_tests), "the batch's own ids do not matter");
        assert_ne!(k, key(&batch("s2", "unit", &["tests/"])));
        assert_ne!(k, key(&batch("s1", "other", &["tests/"])));
        assert_ne!(k, key(&batch("s1", "unit", &["tests/a"])));
        assert_eq!(suite_of(&k), "s1");
    }
}

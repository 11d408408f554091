//! The agent processes of `orchestrator run --local-agents N`: started as on
//! any host, but against this process's loopback orchestrator, and stopped
//! (or killed, if they will not stop) when the run ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use testfleet::local_agent::LocalAgent;
use tokio::process::{Child, Command};

use crate::edge::server;

/// How the run's agents are started.
pub struct AgentLaunch<'a> {
    pub bin: &'a Path,
    pub endpoint: &'a str,
    pub cpu_cores: f64,
    pub memory_mb: u64,
    /// Their logs go under `agents/` here.
    pub report_dir: &'a Path,
    /// Their workdirs (setup's venvs among them) go under `agents/` here,
    /// kept from run to run so setup runs once.
    pub cache_dir: &'a Path,
    pub otlp: Option<&'a str>,
}

/// The agent binary: `--agent-bin`, or `agent` beside this executable.
pub fn agent_bin(chosen: Option<&Path>) -> anyhow::Result<PathBuf> {
    match chosen {
        Some(b) => Ok(b.to_path_buf()),
        None => Ok(std::env::current_exe()
            .context("finding this executable")?
            .with_file_name("agent")),
    }
}

/// Starts agents `agent_001` to `agent_N`.
pub fn start(launch: &AgentLaunch, n: u32) -> anyhow::Result<Vec<Child>> {
    (1..=n).map(|i| spawn(launch, i)).collect()
}

fn spawn(launch: &AgentLaunch, i: u32) -> anyhow::Result<Child> {
    let id = format!("agent_{i:03}");
    let args = LocalAgent {
        endpoint: launch.endpoint,
        agent_id: &id,
        dir: &workdirs(launch.cache_dir),
        cpu_cores: launch.cpu_cores,
        memory_mb: launch.memory_mb,
    }
    .args_logging_to(&launch.report_dir.join("agents"));
    let mut cmd = Command::new(launch.bin);
    cmd.args(args)
        .arg("--exit-with-parent")
        .args(
            launch
                .otlp
                .map(|e| ["--otlp-endpoint", e])
                .into_iter()
                .flatten(),
        )
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting the agent {}", launch.bin.display()))
}

/// Where the agents' workdirs are, under a cache dir.
fn workdirs(cache_dir: &Path) -> PathBuf {
    cache_dir.join("agents")
}

/// Removes what the agents' last run left in their workdirs beyond setup's
/// cache: each attempt's directory (its files were uploaded to the report)
/// and the fresh workdirs of environment resets. Called once the agents
/// have stopped, so the cache does not grow with every run.
pub fn prune_workdirs(cache_dir: &Path) {
    let Ok(agents) = std::fs::read_dir(workdirs(cache_dir)) else {
        return;
    };
    for agent in agents.flatten() {
        for leftover in ["attempts", "fresh"] {
            let dir = agent.path().join(leftover);
            if dir.is_dir() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not prune the agent cache");
                }
            }
        }
    }
}

/// Waits until `n` agents are connected, for at most 30 s.
pub async fn wait_for(running: &server::Running, n: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connected = running
            .engine
            .query(|s| s.agents().filter(|a| a.connected()).count())
            .await?;
        if connected as u32 >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("only {connected} of {n} local agents connected within 30 s (see their logs under the report dir)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM to each agent, and SIGKILL to one still there after 10 s.
pub async fn stop(agents: Vec<Child>) {
    for mut child in agents {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

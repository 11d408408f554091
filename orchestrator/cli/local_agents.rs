//! The agent processes on this host (`orchestrator run`'s, started by the
//! pool's local provisioner): which binary, where their workdirs are kept,
//! and what is pruned from them after a run.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The agent binary: `--agent-bin`, or `agent` beside this executable.
pub fn agent_bin(chosen: Option<&Path>) -> anyhow::Result<PathBuf> {
    match chosen {
        Some(b) => Ok(b.to_path_buf()),
        None => Ok(std::env::current_exe()
            .context("finding this executable")?
            .with_file_name("agent")),
    }
}

/// Where the agents' workdirs are, under a cache dir.
pub fn workdirs(cache_dir: &Path) -> PathBuf {
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

//! `type: command`: a user's shell commands start and stop an agent
//! elsewhere (ssh, a cloud CLI). Each runs under `sh -c` in the config's
//! directory with `{agent_id}`, `{cpu_cores}`, `{memory_mb}`, `{endpoint}`,
//! `{ca}`, `{cert}` and `{key}` filled in (quoted for the shell) and the same
//! values in the environment (`TESTFLEET_AGENT_ID`, ...). The start command
//! must return once the agent is on its way; the agent joins by itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use testfleet::config::substitute::fill_command;
use testfleet::config::CommandProvisioner;
use tokio::process::Command;

use super::Request;

/// How long the start or stop command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Running {
    stop: String,
    dir: PathBuf,
    values: Vec<(&'static str, String)>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        run("stop", &self.stop, &self.dir, &self.values).await
    }
}

fn values(req: &Request) -> Vec<(&'static str, String)> {
    let path = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let certs = req.certs.as_ref();
    vec![
        ("agent_id", req.agent_id.clone()),
        ("cpu_cores", req.cpu_cores()),
        ("memory_mb", req.size.memory_mb.to_string()),
        ("endpoint", req.endpoint.clone()),
        ("ca", path(certs.map(|c| &c.ca))),
        ("cert", path(certs.map(|c| &c.cert))),
        ("key", path(certs.map(|c| &c.key))),
        ("workdir", req.dir.display().to_string()),
    ]
}

pub async fn start(p: &CommandProvisioner, req: &Request) -> anyhow::Result<Running> {
    let values = values(req);
    run("start", &p.start, &p.dir, &values).await?;
    Ok(Running {
        stop: p.stop.clone(),
        dir: p.dir.clone(),
        values,
    })
}

async fn run(
    what: &str,
    template: &str,
    dir: &PathBuf,
    values: &[(&'static str, String)],
) -> anyhow::Result<()> {
    let filled: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let command = fill_command(template, &filled);
    // Its output goes to a file, not a pipe: an agent it leaves running in
    // the background would hold a pipe open, and waiting for the pipe's end
    // would wait for the agent's.
    let workdir = values
        .iter()
        .find(|(k, _)| *k == "workdir")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| dir.clone());
    let log = workdir.join(format!("{what}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&command)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
    for (k, v) in values {
        cmd.env(format!("TESTFLEET_{}", k.to_ascii_uppercase()), v);
    }
    let status = tokio::time::timeout(COMMAND_TIMEOUT, cmd.status())
        .await
        .with_context(|| {
            format!(
                "agent_pool.provisioner.{what} did not finish within {} s",
                COMMAND_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("running agent_pool.provisioner.{what}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        anyhow::bail!(
            "agent_pool.provisioner.{what} exited with {status}: {tail} (output in {})",
            log.display()
        );
    }
    Ok(())
}

//! `type: local`: agent processes on the orchestrator's host, started with
//! the same command line as any agent (`testfleet::local_agent`) and
//! stopped with SIGTERM, then SIGKILL. One that exits before it joined is
//! a failed start, said at once (with its log), not after
//! `placement_timeout`.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testfleet::local_agent::LocalAgent;
use tokio::process::Command;
use tokio::sync::watch;

use super::{Context, Request};

/// How long a stopped agent has to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Running {
    pid: Pid,
    /// True once the process has exited (and been reaped).
    exited: watch::Receiver<bool>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if *self.exited.borrow() {
            return Ok(());
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(STOP_GRACE, self.exited.wait_for(|e| *e)).await;
        }
        Ok(())
    }
}

/// Starts the agent; `exited_early` hears why, should it exit by itself
/// (the pool takes that as a failed start only while it waits for it to
/// join).
pub fn start(
    ctx: &Context,
    req: &Request,
    exited_early: impl FnOnce(String) + Send + 'static,
) -> anyhow::Result<Running> {
    let agent = LocalAgent {
        endpoint: &req.endpoint,
        agent_id: &req.agent_id,
        dir: &ctx.dir,
        cpu_cores: req.size.cpu_cores(),
        memory_mb: req.size.memory_mb,
    };
    let log = ctx.log_dir.as_deref().unwrap_or(&ctx.dir);
    let mut args = agent.args_logging_to(log);
    if let Some(otlp) = &ctx.otlp {
        args.extend(["--otlp-endpoint".into(), otlp.into()]);
    }
    if let Some(certs) = &req.certs {
        // mTLS: the minted certificate instead of plaintext.
        args.retain(|a| a != "--insecure");
        for (flag, path) in [
            ("--ca", &certs.ca),
            ("--cert", &certs.cert),
            ("--key", &certs.key),
        ] {
            args.push(OsString::from(flag));
            args.push(path.into());
        }
    }
    let mut child = Command::new(&ctx.agent_bin)
        .args(args)
        .arg("--exit-with-parent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the agent {}", ctx.agent_bin.display()))?;
    let pid = Pid::from_raw(child.id().context("the agent's pid")? as i32);
    let (tx, exited) = watch::channel(false);
    let log_file = log.join(format!("{}.log", req.agent_id));
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = tx.send(true);
        let how = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("could not be waited for: {e}"),
        };
        exited_early(format!(
            "the agent process {how} (its log: {})",
            log_file.display()
        ));
    });
    Ok(Running { pid, exited })
}

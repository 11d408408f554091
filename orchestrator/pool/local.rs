//! `type: local`: agent processes on the orchestrator's host, started with
//! the same command line as `orchestrator run`'s agents
//! (`testfleet::local_agent`) and stopped as they are
//! (`cli::local_agents::stop`: SIGTERM, then SIGKILL).

use std::ffi::OsString;

use anyhow::Context as _;
use testfleet::local_agent::LocalAgent;
use tokio::process::{Child, Command};

use super::{Context, Request};

pub struct Running {
    child: Child,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        crate::cli::local_agents::stop(vec![self.child]).await;
        Ok(())
    }
}

pub fn start(ctx: &Context, req: &Request) -> anyhow::Result<Running> {
    let agent = LocalAgent {
        endpoint: &req.endpoint,
        agent_id: &req.agent_id,
        dir: &ctx.dir,
        cpu_cores: req.size.cpu_cores(),
        memory_mb: req.size.memory_mb,
    };
    let mut args = match &ctx.log_dir {
        Some(logs) => agent.args_logging_to(logs),
        None => agent.args(),
    };
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
    let child = Command::new(&ctx.agent_bin)
        .args(args)
        .arg("--exit-with-parent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the agent {}", ctx.agent_bin.display()))?;
    Ok(Running { child })
}

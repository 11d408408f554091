//! Real agent processes, and waiting until the orchestrator lists agents.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testfleet::local_agent::LocalAgent;
use testfleet::proto::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::{agent_bin, poll_until, Proc};

/// A real agent process with 4 cores and 8 GB, its workdir and log under
/// `dir`, started with the command line `orchestrator run` gives its local
/// agents, and `extra` arguments.
pub fn start_agent(endpoint: &str, id: &str, dir: &Path, extra: &[&str]) -> Proc {
    start_agent_sized(endpoint, id, dir, 4.0, 8192, extra)
}

/// An agent process offering `cpu_cores` and `memory_mb`, quiet.
pub fn start_agent_sized(
    endpoint: &str,
    id: &str,
    dir: &Path,
    cpu_cores: f64,
    memory_mb: u64,
    extra: &[&str],
) -> Proc {
    let args = LocalAgent {
        endpoint,
        agent_id: id,
        dir,
        cpu_cores,
        memory_mb,
    }
    .args();
    let child = Command::new(agent_bin())
        .args(args)
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

/// Polls ListAgents (every 10 ms, for at most `limit`) until `ready` holds
/// for the agents it lists.
pub async fn wait_for_listed_agents(
    control: &ControlClient<Channel>,
    limit: Duration,
    what: &str,
    ready: impl Fn(&[proto::AgentInfo]) -> bool,
) -> anyhow::Result<()> {
    poll_until(what, limit, Duration::from_millis(10), || {
        let (mut control, ready) = (control.clone(), &ready);
        async move {
            let agents = control
                .list_agents(proto::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            Ok(ready(&agents).then_some(()))
        }
    })
    .await
}

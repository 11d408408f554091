//! `type: docker`: agent containers on the Docker engine, from the image
//! deploy/build-images.sh builds, with the agent's cores and memory as the
//! container's limits. Driven through the docker CLI, which negotiates the
//! API version with the engine (this machine's engine speaks 1.41 to a newer
//! client). Each container is named and labelled for this orchestrator, and
//! removed when stopped, when its start fails, and at shutdown.

use anyhow::Context as _;
use testfleet::config::DockerProvisioner;
use tokio::process::Command;

use super::{Context, Request};

/// The label every pool container carries, with the orchestrator's instance.
pub const LABEL: &str = "testfleet.pool";

pub struct Running {
    name: String,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        remove(&self.name).await
    }
}

async fn docker(args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running docker (is the docker CLI installed?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "docker {} failed: {}",
            args.first().map_or("", String::as_str),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn remove(name: &str) -> anyhow::Result<()> {
    docker(&["rm".into(), "-f".into(), name.into()])
        .await
        .map(|_| ())
}

pub async fn start(p: &DockerProvisioner, ctx: &Context, req: &Request) -> anyhow::Result<Running> {
    let name = format!("testfleet-{}-{}", ctx.instance, req.agent_id).replace('_', "-");
    let mount = format!("{}:/pool", req.dir.display());
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{LABEL}={}", ctx.instance),
        "--network",
        &p.network,
        "--cpus",
        &req.cpu_cores(),
        "--memory",
        &format!("{}m", req.size.memory_mb),
        "-v",
        &mount,
        &p.image,
        "agent",
        "--orchestrator-endpoint",
        &req.endpoint,
        "--agent-id",
        &req.agent_id,
        "--cpu-cores",
        &req.cpu_cores(),
        "--memory-mb",
        &req.size.memory_mb.to_string(),
        "--workdir",
        "/tmp/testfleet-agent",
    ]
    .map(String::from)
    .into();
    match &req.certs {
        Some(certs) => {
            // The container sees the agent's directory at /pool: the CA goes
            // there beside the minted certificate.
            std::fs::copy(&certs.ca, req.dir.join("ca.pem"))
                .with_context(|| format!("copying {}", certs.ca.display()))?;
            let file = |p: &std::path::Path| {
                format!(
                    "/pool/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            };
            args.extend([
                "--ca".into(),
                "/pool/ca.pem".into(),
                "--cert".into(),
                file(&certs.cert),
                "--key".into(),
                file(&certs.key),
            ]);
        }
        None => args.push("--insecure".into()),
    }
    if let Err(e) = docker(&args).await {
        // `docker run` may have created the container before it failed.
        let _ = remove(&name).await;
        return Err(e);
    }
    Ok(Running { name })
}

/// Removes any container of this orchestrator's still there.
pub async fn remove_leftovers(instance: &str) {
    let filter = format!("label={LABEL}={instance}");
    let Ok(ids) = docker(&["ps".into(), "-aq".into(), "--filter".into(), filter]).await else {
        return;
    };
    for id in ids.lines().filter(|l| !l.is_empty()) {
        if let Err(e) = remove(id).await {
            tracing::warn!(
                container = id,
                error = format!("{e:#}"),
                "could not remove a pool container"
            );
        }
    }
}

//! The agent pool's edge: carries out the scheduler's `ProvisionAgent` and
//! `StopAgent` with the suite's provisioner (local processes, a user's
//! command, Docker containers) and reports back `AgentProvisioned` or
//! `ProvisionFailed`. Never on the scheduler's task: starting an agent
//! takes seconds.
//!
//! Every agent it starts is stopped again: when the scheduler says, when a
//! start finishes after a stop was asked for, and when the orchestrator
//! shuts down (`PoolEdge::shutdown`).

mod certs;
mod command;
mod docker;
mod local;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use testfleet::config::{PoolPlan, Provisioner, ResourceSpec};
use testfleet_core::Event;

/// What every provisioner needs to know about this orchestrator.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where agents connect, unless the config says (`agent_pool.provisioner.endpoint`).
    pub endpoint: String,
    /// Whether the orchestrator requires mTLS: then each agent gets a
    /// certificate minted for it.
    pub tls: Option<TlsContext>,
    /// The agent binary, for the local provisioner.
    pub agent_bin: PathBuf,
    /// Agents' workdirs, logs and certificates go under this.
    pub dir: PathBuf,
    /// Local agents' logs go here as `ID.log`; None: in their workdirs.
    pub log_dir: Option<PathBuf>,
    /// Where local agents send traces.
    pub otlp: Option<String>,
    /// Names this orchestrator's containers (and labels them), so a
    /// leftover can be told from another orchestrator's.
    pub instance: String,
}

/// Where the pool's agents go, and how local ones are started, as the
/// orchestrator was started (`serve`, or `run` with its cache and report
/// dirs).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    /// Default: `agent` beside this executable.
    pub agent_bin: Option<PathBuf>,
    pub otlp: Option<String>,
}

impl Options {
    /// Everything of each agent under `dir/ID`.
    pub fn under(dir: PathBuf) -> Options {
        Options {
            dir,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsContext {
    /// The CA certificate agents trust (and are signed by).
    pub ca: PathBuf,
}

/// One agent to start, as the scheduler sized it.
#[derive(Debug, Clone)]
pub struct Request {
    pub agent_id: String,
    pub size: ResourceSpec,
    pub endpoint: String,
    /// The minted certificate, when mTLS is on.
    pub certs: Option<certs::AgentCerts>,
    pub dir: PathBuf,
}

impl Request {
    pub fn cpu_cores(&self) -> String {
        let c = self.size.cpu_cores();
        if c.fract() == 0.0 {
            format!("{c:.0}")
        } else {
            c.to_string()
        }
    }
}

/// A started agent: how to stop it.
enum Handle {
    Local(local::Running),
    Command(command::Running),
    Docker(docker::Running),
}

impl Handle {
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Handle::Local(r) => r.stop().await,
            Handle::Command(r) => r.stop().await,
            Handle::Docker(r) => r.stop().await,
        }
    }
}

enum Slot {
    /// Being started; stop it as soon as it is, if asked meanwhile.
    Starting {
        stop: bool,
    },
    Running(Handle),
}

#[derive(Clone)]
pub struct PoolEdge {
    ctx: Arc<Context>,
    agents: Arc<Mutex<HashMap<String, Slot>>>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    /// Whether a container was ever asked for: only then is the engine
    /// asked for leftovers at shutdown.
    used_docker: Arc<AtomicBool>,
    /// Stops under way, which shutdown waits for: the process must not end
    /// (and `run` must not prune workdirs) while an agent is still stopping.
    stops: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl PoolEdge {
    pub fn new(ctx: Context, events: impl Fn(Event) + Send + Sync + 'static) -> PoolEdge {
        PoolEdge {
            ctx: Arc::new(ctx),
            agents: Arc::default(),
            events: Arc::new(events),
            used_docker: Arc::default(),
            stops: Arc::default(),
        }
    }

    /// Starts `agent_id` with the plan's provisioner, on its own task.
    pub fn provision(&self, plan: &PoolPlan, agent_id: String, size: ResourceSpec, reason: &str) {
        let Some(provisioner) = plan.provisioner.clone() else {
            (self.events)(Event::ProvisionFailed {
                agent_id,
                error: "no provisioner is configured".into(),
            });
            return;
        };
        tracing::info!(
            event = "pool_provision",
            agent_id,
            provisioner = provisioner.name(),
            cpu_cores = size.cpu_cores(),
            memory_mb = size.memory_mb,
            reason,
            "starting an agent"
        );
        self.lock()
            .insert(agent_id.clone(), Slot::Starting { stop: false });
        let edge = self.clone();
        let plan = plan.clone();
        tokio::spawn(async move {
            let started = edge.start(&provisioner, &plan, &agent_id, size).await;
            // Decided under the lock, carried out after it.
            let stop_now = {
                let mut agents = edge.lock();
                let stop_asked =
                    !matches!(agents.get(&agent_id), Some(Slot::Starting { stop: false }));
                match started {
                    Ok(handle) if stop_asked => {
                        agents.remove(&agent_id);
                        Some(handle)
                    }
                    Ok(handle) => {
                        agents.insert(agent_id.clone(), Slot::Running(handle));
                        (edge.events)(Event::AgentProvisioned {
                            agent_id: agent_id.clone(),
                        });
                        None
                    }
                    Err(e) => {
                        agents.remove(&agent_id);
                        let error = format!("{e:#}");
                        tracing::warn!(
                            event = "pool_provision_failed",
                            agent_id,
                            error,
                            "could not start an agent"
                        );
                        (edge.events)(Event::ProvisionFailed {
                            agent_id: agent_id.clone(),
                            error,
                        });
                        None
                    }
                }
            };
            if let Some(handle) = stop_now {
                tracing::info!(agent_id, "stopping an agent asked to stop while it started");
                if let Err(e) = handle.stop().await {
                    tracing::warn!(
                        agent_id,
                        error = format!("{e:#}"),
                        "could not stop the agent"
                    );
                }
            }
        });
    }

    async fn start(
        &self,
        provisioner: &Provisioner,
        plan: &PoolPlan,
        agent_id: &str,
        size: ResourceSpec,
    ) -> anyhow::Result<Handle> {
        let dir = self.ctx.dir.join(agent_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let certs = match &self.ctx.tls {
            Some(tls) => Some(certs::mint(
                agent_id,
                &tls.ca,
                plan.ca_key.as_deref(),
                &dir,
            )?),
            None => None,
        };
        let request = Request {
            agent_id: agent_id.to_string(),
            size,
            endpoint: plan
                .endpoint
                .clone()
                .unwrap_or_else(|| self.ctx.endpoint.clone()),
            certs,
            dir,
        };
        Ok(match provisioner {
            Provisioner::Local(_) => {
                let (events, id) = (self.events.clone(), agent_id.to_string());
                Handle::Local(local::start(&self.ctx, &request, move |error| {
                    events(Event::ProvisionFailed {
                        agent_id: id,
                        error,
                    })
                })?)
            }
            Provisioner::Command(c) => Handle::Command(command::start(c, &request).await?),
            Provisioner::Docker(d) => {
                self.used_docker.store(true, Ordering::Relaxed);
                Handle::Docker(docker::start(d, &self.ctx, &request).await?)
            }
        })
    }

    /// Stops the agent (or, if it is still starting, as soon as it has).
    pub fn stop(&self, agent_id: String, reason: &str) {
        tracing::info!(event = "pool_stop", agent_id, reason, "stopping an agent");
        let handle = {
            let mut agents = self.lock();
            match agents.remove(&agent_id) {
                Some(Slot::Running(h)) => h,
                Some(Slot::Starting { .. }) => {
                    agents.insert(agent_id, Slot::Starting { stop: true });
                    return;
                }
                None => return,
            }
        };
        let stopping = tokio::spawn(async move {
            if let Err(e) = handle.stop().await {
                tracing::warn!(
                    agent_id,
                    error = format!("{e:#}"),
                    "could not stop the agent"
                );
            }
        });
        let mut stops = self.stops.lock().unwrap_or_else(|e| e.into_inner());
        stops.retain(|s| !s.is_finished());
        stops.push(stopping);
    }

    /// Stops every agent it started (the orchestrator is going away).
    pub async fn shutdown(&self) {
        let handles: Vec<(String, Handle)> = {
            let mut agents = self.lock();
            let ids: Vec<String> = agents.keys().cloned().collect();
            ids.into_iter()
                .filter_map(|id| match agents.remove(&id) {
                    Some(Slot::Running(h)) => Some((id, h)),
                    Some(Slot::Starting { .. }) => {
                        agents.insert(id, Slot::Starting { stop: true });
                        None
                    }
                    None => None,
                })
                .collect()
        };
        for (id, h) in handles {
            if let Err(e) = h.stop().await {
                tracing::warn!(
                    agent_id = id,
                    error = format!("{e:#}"),
                    "could not stop the agent"
                );
            }
        }
        let under_way = std::mem::take(&mut *self.stops.lock().unwrap_or_else(|e| e.into_inner()));
        for stopping in under_way {
            let _ = stopping.await;
        }
        if self.used_docker.load(Ordering::Relaxed) {
            docker::remove_leftovers(&self.ctx.instance).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding it leaves a map that is still consistent.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! Seeded schedules for the agent pool: a provisioner that is slow, fails,
//! or never delivers; agents that die; tasks that fit no agent the pool may
//! start. After every step: never more agents than `max_agents`; after
//! every tick of a running suite, never fewer than `min_agents` unless the
//! pool is backing off failed provisions; and every suite ends, however its
//! unplaceable tasks fare, with no pool agent left behind. Half the
//! schedules set `target_duration`, whose sizing must stay within
//! `min_agents` and `max_agents` too.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::harness::*;
use crate::results::FinalStatus;
use crate::{Action, Event};

/// What the simulated provisioner will do with a request.
enum Fate {
    Join { at: u64 },
    Fail { at: u64 },
    Never,
}

struct Request {
    agent_id: String,
    cpu: u64,
    memory_mb: u64,
    fate: Fate,
}

fn yaml(min: u32, max: u32, target: Option<u32>) -> String {
    let target = target.map_or(String::new(), |t| format!("target_duration: {t}, "));
    format!(
        "agent_pool: {{{target}min_agents: {min}, max_agents: {max}, placement_timeout: 20, scale_down_grace: 5, provisioner: {{type: local, cpu_cores: 1, memory_mb: 1024, max_cpu_cores: 8}}}}
failure_handling: {{retry_delay_seconds: 1}}
templates:
  t: {{command: x}}
orchestrator:
  task_definitions:
    u:
      - {{id: U1, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}
      - {{id: U2, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}
      - {{id: U3, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}
      - {{id: BIG, template: t, dependencies: [U1], resources: {{cpu_cores: 4, memory_mb: 4096}}}}
      - {{id: HUGE, template: t, resources: {{cpu_cores: 16, memory_mb: 1024}}}}
      - {{id: AFTER, template: t, dependencies: [BIG, HUGE], resources: {{cpu_cores: 1, memory_mb: 256}}}}
"
    )
}

/// One schedule; Err carries what broke and the steps that led there.
pub fn run_pool_schedule(seed: u64) -> Result<(), (String, Vec<String>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let min = rng.random_range(0..=2u32);
    let max = rng.random_range(min.max(1)..=4u32);
    let target = rng.random_bool(0.5).then(|| rng.random_range(1..=120u32));
    let mut sim = Sim::new();
    if target.is_some() {
        // History for some tasks, so sizing meets both the median and
        // known durations.
        for (id, s) in [("U1", 30.0), ("U2", 5.0), ("BIG", 60.0)] {
            if rng.random_bool(0.5) {
                sim.s.fleet.alerting.baselines.insert(id.into(), s);
            }
        }
    }
    let mut trace = vec![format!(
        "seed {seed}: min_agents {min}, max_agents {max}, target_duration {target:?}"
    )];
    let mut requests: Vec<Request> = Vec::new();
    let mut out = sim.submit(plan(&yaml(min, max, target)));
    for step in 0..20_000 {
        for a in &out {
            match a {
                Action::ProvisionAgent { agent_id, size, .. } => {
                    let delay = rng.random_range(0..4_000);
                    let fate = match rng.random_range(0..10) {
                        0..=5 => Fate::Join {
                            at: sim.now + delay,
                        },
                        6..=7 => Fate::Fail {
                            at: sim.now + delay,
                        },
                        _ => Fate::Never,
                    };
                    trace.push(format!("t={} provision {agent_id} {size:?}", sim.now));
                    requests.push(Request {
                        agent_id: agent_id.clone(),
                        cpu: size.cpu_millis / 1000,
                        memory_mb: size.memory_mb,
                        fate,
                    });
                }
                Action::StopAgent { agent_id, reason } => {
                    trace.push(format!("t={} stop {agent_id}: {reason}", sim.now));
                    // Whatever it was doing, it never joins now.
                    requests.retain(|r| &r.agent_id != agent_id);
                    let connected = sim.s.agents().any(|x| &x.id == agent_id && x.connected);
                    if connected {
                        let more = sim.disconnect(agent_id);
                        check(&sim, max, &trace)?;
                        assert!(more
                            .iter()
                            .all(|a| !matches!(a, Action::ProvisionAgent { .. })));
                    }
                }
                _ => {}
            }
        }
        if !sim.s.is_running() {
            if sim.s.pool().holds_agents() {
                return Err((
                    "the suite ended but the pool still holds agents".into(),
                    trace,
                ));
            }
            if sim
                .s
                .agents()
                .any(|a| a.connected && sim.s.pool().started(&a.id))
            {
                return Err(("a pool agent is still connected".into(), trace));
            }
            return Ok(());
        }
        // The provisioner's answers that are due.
        let now = sim.now;
        if let Some(i) = requests.iter().position(|r| match r.fate {
            Fate::Join { at } | Fate::Fail { at } => at <= now,
            Fate::Never => false,
        }) {
            let r = requests.remove(i);
            trace.push(format!(
                "t={now} {} {}",
                r.agent_id,
                if matches!(r.fate, Fate::Join { .. }) {
                    "joins"
                } else {
                    "fails"
                }
            ));
            out = match r.fate {
                Fate::Join { .. } => {
                    sim.step(Event::AgentProvisioned {
                        agent_id: r.agent_id.clone(),
                    });
                    sim.join(&r.agent_id, cap(r.cpu, r.memory_mb))
                }
                _ => sim.step(Event::ProvisionFailed {
                    agent_id: r.agent_id,
                    error: "simulated".into(),
                }),
            };
            check(&sim, max, &trace)?;
            continue;
        }
        let running = sim.running();
        match rng.random_range(0..100) {
            0..=29 if !running.is_empty() => {
                let a = running[rng.random_range(0..running.len())].clone();
                trace.push(format!("t={now} result for {}", a.attempt));
                // Passes or fails its tests; failures that call a person
                // are the escalation schedules' subject, not the pool's.
                let passed = if rng.random_bool(0.85) { 10 } else { 9 };
                out = sim.step(Event::Completed(completion(
                    &a,
                    FinalStatus::Success,
                    10,
                    passed,
                )));
            }
            30..=31 => {
                let connected: Vec<String> = sim
                    .s
                    .agents()
                    .filter(|a| a.connected)
                    .map(|a| a.id.clone())
                    .collect();
                if connected.is_empty() {
                    out = Vec::new();
                } else {
                    let id = connected[rng.random_range(0..connected.len())].clone();
                    trace.push(format!("t={now} {id} dies"));
                    out = sim.disconnect(&id);
                }
            }
            _ => {
                out = sim.advance(250);
                check(&sim, max, &trace)?;
                let fleet =
                    sim.s.agents().filter(|a| a.takes_work()).count() + sim.s.pool().pending();
                if sim.s.is_running()
                    && (fleet as u32) < min
                    && sim.s.pool().failures_in_a_row() == 0
                {
                    return Err((
                        format!("t={} fleet {fleet} below min_agents {min}", sim.now),
                        trace,
                    ));
                }
            }
        }
        check(&sim, max, &trace)?;
        if step == 19_999 {
            return Err((format!("the suite did not end by t={}", sim.now), trace));
        }
    }
    Err(("the suite did not end".into(), trace))
}

fn check(sim: &Sim, max: u32, trace: &[String]) -> Result<(), (String, Vec<String>)> {
    if let Some(s) = sim.s.pool().sizing().filter(|s| s.agents > max) {
        return Err((
            format!(
                "t={} target_duration chose {} agents over max_agents {max}: {}",
                sim.now, s.agents, s.reason
            ),
            trace.to_vec(),
        ));
    }
    let fleet = sim.s.agents().filter(|a| a.takes_work()).count() + sim.s.pool().pending();
    if fleet as u32 > max {
        return Err((
            format!("t={} fleet {fleet} over max_agents {max}", sim.now),
            trace.to_vec(),
        ));
    }
    Ok(())
}

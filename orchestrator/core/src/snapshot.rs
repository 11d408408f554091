//! What carries over from one suite to the next, so the event log need
//! not replay every suite ever run. A snapshot is taken at a suite
//! boundary: a new suite is submitted while none runs, so the finished one
//! is about to be replaced. What the submit keeps, and so what the
//! snapshot holds, is everything but the suite and what a submit resets:
//!
//! - the agents, the results refused so far, the cancels still awaited and
//!   the revision: a submit keeps them as they are;
//! - the duration baselines: a submit keeps them and resets every other
//!   alert field (`Scheduler::submit`);
//! - the pool, whole: a submit resets it (but for its agent counter and the
//!   agents it is stopping) only once the new suite runs; a suite that ends
//!   within its submit (no task to run) is ended with the old pool's state;
//! - not the attempt index: a submit clears it.
//!
//! Rebuilding from a snapshot and handling the submit gives the state that
//! handling the submit on the live scheduler gave. Pure: encoding the
//! snapshot as bytes is the event log's (serde derives here, nothing more).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::fleet::Fleet;
use crate::time::UnixMillis;
use crate::{alerting, pool, AgentId, AgentState, AttemptId, Lifecycle, Scheduler};

/// The scheduler minus its suite, at a suite boundary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    orchestrator_id: String,
    agents: BTreeMap<AgentId, AgentState>,
    rejected_results: u64,
    pending_cancels: BTreeMap<AttemptId, (AgentId, UnixMillis)>,
    baselines: BTreeMap<String, f64>,
    pool: pool::PoolState,
    revision: u64,
}

impl Scheduler {
    /// What carries over to the next suite (see the module's comment).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            orchestrator_id: self.orchestrator_id.clone(),
            agents: self.fleet.agents.clone(),
            rejected_results: self.fleet.rejected_results,
            pending_cancels: self.fleet.pending_cancels.clone(),
            baselines: self.fleet.alerting.baselines.clone(),
            pool: self.pool.clone(),
            revision: self.revision,
        }
    }

    /// A scheduler with no suite holding what `s` carried over: the same
    /// state, after the next submit, as the one the snapshot was taken of.
    pub fn from_snapshot(s: Snapshot) -> Scheduler {
        Scheduler {
            orchestrator_id: s.orchestrator_id,
            suite: Lifecycle::Idle,
            fleet: Fleet {
                agents: s.agents,
                attempt_index: Default::default(),
                rejected_results: s.rejected_results,
                pending_cancels: s.pending_cancels,
                alerting: alerting::Alerting {
                    baselines: s.baselines,
                    ..Default::default()
                },
            },
            pool: s.pool,
            revision: s.revision,
        }
    }
}

/// Whether two schedulers agree on everything a snapshot carries over
/// (their suites, and what a submit resets, aside): the check a snapshot
/// passes before the log it stands for may be compacted. Fields are
/// compared as their Debug text (the state's types derive Debug; a float's
/// Debug text is exact), and the first difference is named.
pub fn same_carried(a: &Scheduler, b: &Scheduler) -> Result<(), String> {
    let fields: [(&str, String, String); 7] = [
        (
            "orchestrator_id",
            dbg(&a.orchestrator_id),
            dbg(&b.orchestrator_id),
        ),
        ("agents", dbg(&a.fleet.agents), dbg(&b.fleet.agents)),
        (
            "rejected_results",
            dbg(&a.fleet.rejected_results),
            dbg(&b.fleet.rejected_results),
        ),
        (
            "pending_cancels",
            dbg(&a.fleet.pending_cancels),
            dbg(&b.fleet.pending_cancels),
        ),
        (
            "baselines",
            dbg(&a.fleet.alerting.baselines),
            dbg(&b.fleet.alerting.baselines),
        ),
        ("pool", dbg(&a.pool), dbg(&b.pool)),
        ("revision", dbg(&a.revision), dbg(&b.revision)),
    ];
    first_difference(fields)
}

/// The first of `fields` whose two texts differ, shown around where.
pub(crate) fn first_difference<const N: usize>(
    fields: [(&str, String, String); N],
) -> Result<(), String> {
    for (name, x, y) in fields {
        if x != y {
            let at = x
                .chars()
                .zip(y.chars())
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            let from = at.saturating_sub(80);
            let show = |s: &str| s.chars().skip(from).take(240).collect::<String>();
            return Err(format!(
                "{name} differs at char {at}:\n before: …{}\n  after: …{}",
                show(&x),
                show(&y)
            ));
        }
    }
    Ok(())
}

pub(crate) fn dbg(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// Every decision the pool records (`pool_record`'s first argument).
/// `PoolRecord::decision` is a `&'static str`, so a snapshot's text is
/// mapped back onto these; a decision missing here fails the snapshot's
/// decoding, so the snapshot fails its check and nothing is compacted.
const POOL_DECISIONS: [&str; 9] = [
    "provision",
    "started",
    "joined",
    "lost",
    "provision_failed",
    "stop",
    "unplaceable",
    "waiting",
    "target",
];

/// A `PoolRecord` as a snapshot's text holds it (its `decision` owned).
#[derive(Deserialize)]
struct PoolRecordText {
    at: UnixMillis,
    decision: String,
    agent_id: String,
    task_id: String,
    reason: String,
    cpu_cores: f64,
    memory_mb: u64,
    join_seconds: Option<f64>,
}

pub(crate) fn pool_history<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<pool::PoolRecord>, D::Error> {
    Vec::<PoolRecordText>::deserialize(d)?
        .into_iter()
        .map(|r| {
            let decision = POOL_DECISIONS
                .iter()
                .find(|k| **k == r.decision)
                .copied()
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown pool decision {:?}", r.decision))
                })?;
            Ok(pool::PoolRecord {
                at: r.at,
                decision,
                agent_id: r.agent_id,
                task_id: r.task_id,
                reason: r.reason,
                cpu_cores: r.cpu_cores,
                memory_mb: r.memory_mb,
                join_seconds: r.join_seconds,
            })
        })
        .collect()
}

//! One entry of the event log: a scheduler event and the time it was
//! handled, as protobuf (proto/testfleet/v1/journal.proto) behind a CRC32.
//! Agents' reports are kept as the wire messages they came in as (through
//! `crate::wire`, both ways); a submitted suite as its config text, planned
//! again on replay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use testfleet::config::{LocalRun, ResourceSpec, SuiteConfig};
use testfleet::proto::{self, journal_entry::Event as Entry, JournalEntry};
use testfleet_core::time::UnixMillis;
use testfleet_core::{Event, Resolution};

use crate::wire;

/// Where a submitted suite's plan came from, so replay can plan it again.
#[derive(Clone, Debug)]
pub enum PlanSource {
    /// The orchestrator's own config (kept in the log's header).
    OwnConfig,
    /// A config sent with the request, planned with `{config_dir}` = `dir`.
    Submitted {
        yaml: Arc<str>,
        path: PathBuf,
        dir: PathBuf,
    },
}

/// The orchestrator's config, as the log's header keeps it.
pub struct OwnConfig<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    /// `orchestrator run`'s fleet and scheduling, applied to it as the run
    /// applied them.
    pub local_run: Option<&'a LocalRun>,
}

/// Why an entry cannot be read: its bytes are not a whole record.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{0} bytes, shorter than a record's checksum")]
    Short(usize),
    #[error("its checksum does not match its bytes (torn or corrupt)")]
    Checksum,
    #[error("its bytes are not a journal entry: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("it holds no event")]
    Empty,
}

/// An entry that reads as a whole record but cannot be replayed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unplayable(pub String);

/// The bytes stored for `event`, handled at `at`.
pub fn encode(event: &Event, at: UnixMillis, source: &PlanSource) -> Vec<u8> {
    checked(JournalEntry {
        at_ms: at,
        event: Some(entry(event, source)),
    })
}

/// The bytes stored when the webhook accepted escalation `key`.
pub fn encode_delivered(key: &WebhookKey, at: UnixMillis) -> Vec<u8> {
    checked(JournalEntry {
        at_ms: at,
        event: Some(Entry::WebhookDelivered(proto::JournalWebhookDelivered {
            suite_id: key.suite_id.clone(),
            escalation_id: key.escalation_id.clone(),
        })),
    })
}

/// One escalation's webhook delivery: its idempotency key is
/// `<suite id>/<escalation id>`, stable across restarts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WebhookKey {
    pub suite_id: String,
    pub escalation_id: String,
}

impl WebhookKey {
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.suite_id, self.escalation_id)
    }
}

/// The webhook delivery an entry records, if that is what it holds (it
/// is then no scheduler event).
pub fn delivered(entry: &JournalEntry) -> Option<WebhookKey> {
    match &entry.event {
        Some(Entry::WebhookDelivered(d)) => Some(WebhookKey {
            suite_id: d.suite_id.clone(),
            escalation_id: d.escalation_id.clone(),
        }),
        _ => None,
    }
}

/// An entry's bytes: its CRC32, then its protobuf.
pub(super) fn checked(entry: JournalEntry) -> Vec<u8> {
    let body = entry.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The entry in `bytes`, checked but not yet turned into an event.
pub fn read(bytes: &[u8]) -> Result<JournalEntry, Unreadable> {
    if bytes.len() < 4 {
        return Err(Unreadable::Short(bytes.len()));
    }
    let (crc, body) = bytes.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(Unreadable::Checksum);
    }
    let entry = JournalEntry::decode(body)?;
    if entry.event.is_none() {
        return Err(Unreadable::Empty);
    }
    Ok(entry)
}

fn entry(event: &Event, source: &PlanSource) -> Entry {
    match event {
        Event::SubmitSuite {
            suite_id,
            suite_name,
            plan,
            timeout_ms,
        } => {
            let (config_yaml, config_path, config_dir) = match source {
                PlanSource::OwnConfig => Default::default(),
                PlanSource::Submitted { yaml, path, dir } => (
                    yaml.to_string(),
                    path.display().to_string(),
                    dir.display().to_string(),
                ),
            };
            Entry::Submit(proto::JournalSubmit {
                suite_id: suite_id.clone(),
                suite_name: suite_name.clone(),
                timeout_ms: *timeout_ms,
                config_yaml,
                config_path,
                config_dir,
                test_history: plan
                    .test_history
                    .iter()
                    .flat_map(|(task, tests)| {
                        tests.iter().map(|(test, &ms)| proto::JournalTestDuration {
                            task_id: task.clone(),
                            test_id: test.clone(),
                            ms,
                        })
                    })
                    .collect(),
            })
        }
        Event::AgentConnected {
            agent_id,
            conn,
            host,
            labels,
            capacity,
            running,
        } => Entry::AgentConnected(proto::JournalAgentConnected {
            agent_id: agent_id.clone(),
            conn: *conn,
            host: host.clone(),
            labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            capacity: Some(proto::JournalResources {
                memory_mb: capacity.memory_mb,
                cpu_millis: capacity.cpu_millis,
                disk_mb: capacity.disk_mb,
            }),
            running: running.clone(),
        }),
        Event::AgentDisconnected { agent_id, conn } => {
            Entry::AgentDisconnected(proto::JournalAgentConn {
                agent_id: agent_id.clone(),
                conn: *conn,
            })
        }
        Event::Heartbeat {
            agent_id,
            conn,
            usage,
        } => Entry::Heartbeat(proto::JournalHeartbeat {
            agent_id: agent_id.clone(),
            conn: *conn,
            usage: usage.as_ref().map(wire::usage_out),
        }),
        Event::Progress(p) => Entry::Progress(wire::progress_out(p)),
        Event::Completed(c) => Entry::Completed(wire::completion_out(c)),
        Event::Failed(f) => Entry::Failed(wire::failure_out(f)),
        Event::CancelAcked {
            agent_id,
            attempt_id,
        } => Entry::CancelAcked(proto::JournalCancelAcked {
            agent_id: agent_id.clone(),
            attempt_id: attempt_id.clone(),
        }),
        Event::Tick => Entry::Tick(proto::JournalTick {}),
        Event::CancelSuite { reason } => Entry::CancelSuite(proto::JournalCancelSuite {
            reason: reason.clone(),
        }),
        Event::DrainAgent { agent_id } => Entry::Drain(proto::JournalDrain {
            agent_id: agent_id.clone(),
        }),
        Event::AgentProvisioned { agent_id } => Entry::AgentProvisioned(proto::JournalDrain {
            agent_id: agent_id.clone(),
        }),
        Event::ProvisionFailed { agent_id, error } => {
            Entry::ProvisionFailed(proto::JournalProvisionFailed {
                agent_id: agent_id.clone(),
                error: error.clone(),
            })
        }
        Event::ResolveEscalation {
            escalation_id,
            resolution,
        } => Entry::Resolve(proto::JournalResolve {
            escalation_id: escalation_id.clone(),
            resolution: match resolution {
                Resolution::Retry => "retry",
                Resolution::Skip => "skip",
                Resolution::Abort => "abort",
            }
            .into(),
        }),
    }
}

/// The event an entry holds, and when it was handled. A submit is planned
/// again from its config text.
pub fn event(entry: JournalEntry, own: &OwnConfig) -> Result<(Event, UnixMillis), Unplayable> {
    let at = entry.at_ms;
    let Some(body) = entry.event else {
        return Err(Unplayable("it holds no event".into()));
    };
    let event = match body {
        Entry::Submit(s) => {
            let (text, path, dir, local_run) = if s.config_yaml.is_empty() {
                let dir = testfleet::config::config_dir(own.path);
                let run = own.local_run.cloned();
                (own.text.to_string(), own.path.to_path_buf(), dir, run)
            } else {
                (
                    s.config_yaml,
                    PathBuf::from(s.config_path),
                    PathBuf::from(s.config_dir),
                    None,
                )
            };
            let mut config = SuiteConfig::parse(&text, &path).map_err(|e| {
                Unplayable(format!(
                    "suite {} was submitted with a config this orchestrator no longer reads: {e}",
                    s.suite_id
                ))
            })?;
            config.local_run = local_run;
            let mut plan = config.plan(&dir);
            for d in s.test_history {
                plan.test_history
                    .entry(d.task_id)
                    .or_default()
                    .insert(d.test_id, d.ms);
            }
            Event::SubmitSuite {
                suite_id: s.suite_id,
                suite_name: s.suite_name,
                plan: Arc::new(plan),
                timeout_ms: s.timeout_ms,
            }
        }
        Entry::AgentConnected(a) => {
            let c = a.capacity.unwrap_or_default();
            Event::AgentConnected {
                agent_id: a.agent_id,
                conn: a.conn,
                host: a.host,
                labels: a.labels.into_iter().collect::<BTreeMap<_, _>>(),
                capacity: ResourceSpec {
                    memory_mb: c.memory_mb,
                    cpu_millis: c.cpu_millis,
                    disk_mb: c.disk_mb,
                },
                running: a.running,
            }
        }
        Entry::AgentDisconnected(a) => Event::AgentDisconnected {
            agent_id: a.agent_id,
            conn: a.conn,
        },
        Entry::Heartbeat(h) => Event::Heartbeat {
            agent_id: h.agent_id,
            conn: h.conn,
            usage: h.usage.map(wire::usage),
        },
        Entry::Progress(p) => Event::Progress(wire::progress(p)),
        Entry::Completed(c) => Event::Completed(wire::completion(c)),
        Entry::Failed(f) => Event::Failed(wire::failure(f)),
        Entry::CancelAcked(c) => Event::CancelAcked {
            agent_id: c.agent_id,
            attempt_id: c.attempt_id,
        },
        Entry::Tick(_) => Event::Tick,
        Entry::CancelSuite(c) => Event::CancelSuite { reason: c.reason },
        Entry::Drain(d) => Event::DrainAgent {
            agent_id: d.agent_id,
        },
        Entry::AgentProvisioned(d) => Event::AgentProvisioned {
            agent_id: d.agent_id,
        },
        Entry::ProvisionFailed(f) => Event::ProvisionFailed {
            agent_id: f.agent_id,
            error: f.error,
        },
        Entry::WebhookDelivered(_) => {
            return Err(Unplayable(
                "a webhook delivery is the edge's record, not a scheduler event".into(),
            ))
        }
        Entry::Snapshot(_) => {
            return Err(Unplayable(
                "a snapshot is where a replay starts, not a scheduler event".into(),
            ))
        }
        Entry::Resolve(r) => Event::ResolveEscalation {
            escalation_id: r.escalation_id,
            resolution: match r.resolution.as_str() {
                "retry" => Resolution::Retry,
                "skip" => Resolution::Skip,
                "abort" => Resolution::Abort,
                other => return Err(Unplayable(format!("unknown resolution {other:?}"))),
            },
        },
    };
    Ok((event, at))
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;

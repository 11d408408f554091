//! Snapshots in the event log, so a restart replays the suite running (and
//! the one before it), not every suite ever run. At a suite boundary (a
//! suite submitted while none runs) the engine writes what carries over to
//! the next suite (`Scheduler::snapshot`, and the webhook deliveries) as an
//! entry of its own, just before the submit's.
//!
//! Once that entry is durable the writer reads it back, rebuilds a
//! scheduler from it and checks it against the live one as it was when the
//! snapshot was taken (`same_carried`); only a snapshot that passes lets
//! the log be compacted, and then only up to the snapshot before it: the
//! log keeps the last two snapshots and everything after the older, so a
//! newest snapshot found damaged on open falls back to the older one and
//! the entries after it. A snapshot that fails its check deletes nothing.
//!
//! Which entries are snapshots is also kept in a table of its own
//! (`SNAPSHOTS`, written in the entry's commit): a damaged entry there is a
//! snapshot to pass over, not the start of a damaged tail to cut.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use testfleet::proto::{self, journal_entry::Event as Entry, JournalEntry};
use testfleet_core::time::UnixMillis;
use testfleet_core::{same_carried, Scheduler, Snapshot};

use super::record::{self, WebhookKey};
use super::EVENTS;

/// The sequence numbers of the entries that are snapshots.
pub(super) const SNAPSHOTS: TableDefinition<u64, ()> = TableDefinition::new("snapshots");

/// A snapshot ready to append: its entry's bytes, and what the writer
/// checks it against once it is durable.
pub struct Taken {
    pub bytes: Vec<u8>,
    pub check: Check,
}

/// What a snapshot must rebuild: the live scheduler's carried-over state
/// (as a scheduler with no suite) and the deliveries, as they were taken.
pub struct Check {
    expected: Scheduler,
    delivered: BTreeSet<WebhookKey>,
}

/// The snapshot of `s` (handled up to `at`) and the webhook deliveries, as
/// an entry; refused if a scheduler rebuilt from it would differ from `s`
/// in what carries over (a field the snapshot misses).
pub fn take(
    s: &Scheduler,
    delivered: &BTreeSet<WebhookKey>,
    at: UnixMillis,
) -> Result<Taken, String> {
    let snapshot = s.snapshot();
    let state = serde_json::to_vec(&snapshot).map_err(|e| format!("cannot encode it: {e}"))?;
    let expected = Scheduler::from_snapshot(snapshot);
    same_carried(s, &expected)?;
    let entry = JournalEntry {
        at_ms: at,
        event: Some(Entry::Snapshot(proto::JournalSnapshot {
            state,
            delivered: delivered
                .iter()
                .map(|k| proto::JournalWebhookDelivered {
                    suite_id: k.suite_id.clone(),
                    escalation_id: k.escalation_id.clone(),
                })
                .collect(),
        })),
    };
    Ok(Taken {
        bytes: record::checked(entry),
        check: Check {
            expected,
            delivered: delivered.clone(),
        },
    })
}

/// Whether the entry is a snapshot (and so no event to replay).
pub(super) fn is_snapshot(entry: &JournalEntry) -> bool {
    matches!(entry.event, Some(Entry::Snapshot(_)))
}

/// The scheduler and deliveries a snapshot entry's bytes hold.
pub(super) fn decode(bytes: &[u8]) -> Result<(Scheduler, BTreeSet<WebhookKey>), String> {
    let entry = record::read(bytes).map_err(|e| e.to_string())?;
    let Some(Entry::Snapshot(s)) = entry.event else {
        return Err("it is not a snapshot".into());
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&s.state).map_err(|e| format!("its state does not decode: {e}"))?;
    let delivered = s
        .delivered
        .into_iter()
        .map(|d| WebhookKey {
            suite_id: d.suite_id,
            escalation_id: d.escalation_id,
        })
        .collect();
    Ok((Scheduler::from_snapshot(snapshot), delivered))
}

/// Reads snapshot `seq` back from the log and checks that it rebuilds what
/// it was taken of.
pub(super) fn verify(db: &Database, seq: u64, check: &Check) -> Result<(), String> {
    let read = db.begin_read().map_err(|e| e.to_string())?;
    let table = read.open_table(EVENTS).map_err(|e| e.to_string())?;
    let bytes = table
        .get(seq)
        .map_err(|e| e.to_string())?
        .ok_or("it is not in the log")?;
    let (rebuilt, delivered) = decode(bytes.value())?;
    same_carried(&check.expected, &rebuilt)?;
    if delivered != check.delivered {
        return Err("its webhook deliveries differ".into());
    }
    Ok(())
}

/// Deletes every entry (and snapshot mark) before `before`; how many.
pub(super) fn compact(db: &Database, before: u64) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let mut deleted = 0;
    {
        let mut events = txn.open_table(EVENTS)?;
        events.retain_in(..before, |_, _| {
            deleted += 1;
            false
        })?;
        let mut marks = txn.open_table(SNAPSHOTS)?;
        marks.retain_in(..before, |_, _| false)?;
    }
    txn.commit()?;
    Ok(deleted)
}

/// After the writer committed snapshot `seq`: checks it, then compacts up
/// to `previous` (the last snapshot that passed, or that the log was
/// replayed from). Whether it passed.
pub(super) fn after_commit(
    db: &Database,
    path: &Path,
    seq: u64,
    check: &Check,
    previous: Option<u64>,
) -> bool {
    if let Err(why) = verify(db, seq, check) {
        tracing::warn!(
            journal = %path.display(),
            entry = seq,
            why,
            "the event log's snapshot at entry {seq} does not rebuild the state it was taken of ({why}): nothing is compacted"
        );
        return false;
    }
    if let Some(before) = previous {
        match compact(db, before) {
            Ok(deleted) => tracing::info!(
                journal = %path.display(),
                snapshot = seq,
                kept_from = before,
                deleted,
                "compacted the event log: {deleted} entries before the previous snapshot (entry {before}) deleted"
            ),
            Err(e) => tracing::warn!(
                journal = %path.display(),
                error = %e,
                "could not compact the event log (it keeps its older entries; the next snapshot tries again)"
            ),
        }
    }
    true
}

/// The snapshot entries to start a replay from, newest first: marked in
/// `SNAPSHOTS`, and followed by a whole entry (a snapshot whose submit
/// never became durable stands for no boundary the log crossed).
pub(super) fn candidates(db: &Database) -> Result<Vec<u64>, redb::Error> {
    let read = db.begin_read()?;
    let marks = match read.open_table(SNAPSHOTS) {
        Ok(t) => t,
        // A log written before snapshots, or with none yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let events = read.open_table(EVENTS)?;
    let mut out = Vec::new();
    for mark in redb::ReadableTable::iter(&marks)?.rev() {
        let seq = mark?.0.value();
        let followed = events
            .get(seq + 1)?
            .is_some_and(|next| record::read(next.value()).is_ok());
        if followed {
            out.push(seq);
        }
    }
    Ok(out)
}

/// All marked snapshot entries (damaged ones included), for the replay to
/// pass over.
pub(super) fn marked(db: &Database) -> Result<BTreeSet<u64>, redb::Error> {
    let read = db.begin_read()?;
    let marks = match read.open_table(SNAPSHOTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = BTreeSet::new();
    for mark in redb::ReadableTable::iter(&marks)? {
        out.insert(mark?.0.value());
    }
    Ok(out)
}

/// Bytes a test can break a snapshot with while keeping its checksum: the
/// state replaced by text that is no snapshot.
#[cfg(test)]
pub(super) fn undecodable(bytes: &[u8]) -> Vec<u8> {
    let mut entry = record::read(bytes).expect("a whole entry");
    if let Some(Entry::Snapshot(s)) = &mut entry.event {
        s.state = b"{\"not\": \"a snapshot\"}".to_vec();
    }
    record::checked(entry)
}

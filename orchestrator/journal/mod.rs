//! The write-ahead event log: every event the scheduler handles, with the
//! time it was handled, in an embedded store in the data dir (`serve`) or
//! the report dir (`run`). The scheduler is deterministic, so replaying the
//! log through it on start gives back the state it had (`open`).
//!
//! The store is redb: pure Rust (no C to build), ACID, and its commits are
//! checksummed, so a commit torn by a crash or power loss is rolled back on
//! open rather than read half-written. Each entry carries its own CRC32 too,
//! so an entry damaged some other way is found, and the log is cut before
//! it. Entries are written by one thread, many per commit (group commit):
//! see `writer`.
//!
//! Replaying every suite ever run would make restarts ever slower, so at
//! each suite boundary the engine writes a snapshot of what carries over
//! to the next suite (`snapshot`); once it has passed its check, the
//! entries before the snapshot before it are deleted. `open` replays from
//! the newest snapshot that reads (the older one if the newest is
//! damaged), then the entries after it.

pub mod durations;
mod record;
pub mod snapshot;
mod writer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use testfleet_core::Scheduler;

pub use record::{encode, encode_delivered, PlanSource, WebhookKey};
pub use writer::{Appender, Written};

/// Entries by sequence number, from 1, without gaps.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// What the log was written by and for.
const HEADER: TableDefinition<&str, &str> = TableDefinition::new("header");

/// The log's layout. A log of a newer format is refused, never guessed at.
pub const FORMAT: u64 = 1;
/// The log's name in its directory.
pub const FILE: &str = "events.redb";

/// Where the log lives and what it must have been written for.
pub struct Options {
    pub path: PathBuf,
    /// The orchestrator's config file and its text: a log written with
    /// another config is refused (`serve`), or set aside (`run`).
    pub config_path: PathBuf,
    pub config_text: String,
    /// `run`: a log whose suite has ended, or that was written for another
    /// config, is replaced by a new one instead of resumed or refused.
    pub fresh_unless_running: bool,
    /// `orchestrator run`'s fleet and `--scheduling`: part of what the log
    /// was written for, as the config is.
    pub local_run: Option<testfleet::config::LocalRun>,
}

/// A log opened and replayed: the scheduler it gave back, and where the
/// next entries go.
pub struct Opened {
    pub scheduler: Scheduler,
    pub db: Database,
    pub next_seq: u64,
    /// Entries replayed (after the snapshot the replay started from).
    pub replayed: u64,
    /// The snapshot entry the replay started from; None: from the start.
    pub from_snapshot: Option<u64>,
    /// Entries the log holds (snapshots included): after compactions, the
    /// last two suites', far fewer than `next_seq - 1`, every entry written.
    pub entries: u64,
    pub took: Duration,
    /// Escalations the webhook has accepted: not sent again.
    pub delivered: BTreeSet<WebhookKey>,
}

/// Opens (or creates) the log and replays it. Refuses, naming the file, a
/// log of a newer format or another config; cuts, and says so, a damaged
/// tail.
pub fn open(opts: &Options, orchestrator_id: &str) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let db = open_db(&opts.path)?;
    let fresh = match check_header(&db, opts) {
        Ok(fresh) => fresh,
        Err(refusal) if opts.fresh_unless_running && refusal.config_differs => {
            tracing::warn!(
                journal = %opts.path.display(),
                why = refusal.message,
                "starting a new event log: the old one was for another suite"
            );
            return restart_fresh(db, opts, orchestrator_id, started);
        }
        Err(refusal) => anyhow::bail!(refusal.message),
    };
    if fresh {
        write_header(&db, opts)?;
    }
    let own = record::OwnConfig {
        text: &opts.config_text,
        path: &opts.config_path,
        local_run: opts.local_run.as_ref(),
    };
    let file = opts.path.display();
    let read_err = |e: redb::Error| anyhow::anyhow!("{}: {e}", describe(&opts.path));
    let first = first_seq(&db).map_err(read_err)?.unwrap_or(1);
    // From the newest snapshot that decodes; the ones that do not are
    // passed over for the one before (the log keeps two, see `snapshot`).
    let mut base = None;
    for seq in snapshot::candidates(&db).map_err(read_err)? {
        let bytes = {
            let read = db.begin_read().context(describe(&opts.path))?;
            let table = read.open_table(EVENTS).context(describe(&opts.path))?;
            let got = table.get(seq).context(describe(&opts.path))?;
            got.map(|v| v.value().to_vec())
        };
        match bytes
            .ok_or_else(|| "it is missing".to_string())
            .and_then(|b| snapshot::decode(&b))
        {
            Ok((scheduler, delivered)) => {
                base = Some((seq, scheduler, delivered));
                break;
            }
            Err(why) => tracing::warn!(
                journal = %file,
                entry = seq,
                why,
                "the event log's snapshot at entry {seq} cannot be used ({why}): replaying from the snapshot before it"
            ),
        }
    }
    let (from_snapshot, mut scheduler, mut delivered) = match base {
        Some((seq, s, d)) => (Some(seq), s, d),
        None if first <= 1 => (None, Scheduler::new(orchestrator_id), BTreeSet::new()),
        None => anyhow::bail!(
            "{file}: the entries before entry {first} were compacted into snapshots, and none of the snapshots left can be read: move the file away to start afresh"
        ),
    };
    let start = from_snapshot.map_or(first, |s| s + 1);
    // Snapshots between `start` and the end are no events: passed over,
    // damaged or not (a damaged one is no damaged tail).
    let marked = snapshot::marked(&db).map_err(read_err)?;
    let mut last = start - 1;
    let mut replayed = 0u64;
    let mut damaged: Option<(u64, String)> = None;
    {
        let read = db.begin_read().context(describe(&opts.path))?;
        let table = read.open_table(EVENTS).context(describe(&opts.path))?;
        for item in table.range(start..).context(describe(&opts.path))? {
            let (seq, bytes) = match item {
                Ok((k, v)) => (k.value(), v),
                Err(e) => {
                    damaged = Some((last + 1, format!("it could not be read: {e}")));
                    break;
                }
            };
            if seq != last + 1 {
                damaged = Some((last + 1, format!("entry {} is missing", last + 1)));
                break;
            }
            let entry = match record::read(bytes.value()) {
                Ok(entry) => entry,
                Err(e) if marked.contains(&seq) => {
                    tracing::warn!(
                        journal = %file,
                        entry = seq,
                        why = %e,
                        "the event log's snapshot at entry {seq} is damaged ({e}): passed over"
                    );
                    last = seq;
                    continue;
                }
                Err(e) => {
                    damaged = Some((seq, e.to_string()));
                    break;
                }
            };
            last = seq;
            if snapshot::is_snapshot(&entry) {
                continue;
            }
            replayed += 1;
            if let Some(key) = record::delivered(&entry) {
                delivered.insert(key);
                continue;
            }
            let (event, at) = record::event(entry, &own).map_err(|e| {
                anyhow::anyhow!(
                    "{}: entry {seq} cannot be replayed: {e}",
                    opts.path.display()
                )
            })?;
            scheduler.handle_replayed(event, at);
        }
    }
    if let Some((from, why)) = damaged {
        let cut = cut_from(&db, from).context(describe(&opts.path))?;
        tracing::warn!(
            journal = %opts.path.display(),
            from,
            cut,
            why,
            "cut the event log's damaged tail: {cut} entries from entry {from} on ({why}); the log ends at the last whole entry"
        );
    }
    if opts.fresh_unless_running && last > 0 && !scheduler.is_running() {
        tracing::info!(journal = %opts.path.display(), "starting a new event log: the last one's suite has ended");
        return restart_fresh(db, opts, orchestrator_id, started);
    }
    Ok(Opened {
        scheduler,
        db,
        next_seq: last + 1,
        replayed,
        from_snapshot,
        entries: (last + 1).saturating_sub(first),
        took: started.elapsed(),
        delivered,
    })
}

/// The first entry's sequence number (after a compaction, an older
/// snapshot's); None in an empty log.
fn first_seq(db: &Database) -> Result<Option<u64>, redb::Error> {
    let read = db.begin_read()?;
    let table = match read.open_table(EVENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let first = table.first()?.map(|(k, _)| k.value());
    Ok(first)
}

fn describe(path: &Path) -> String {
    format!("reading the event log {}", path.display())
}

fn open_db(path: &Path) -> anyhow::Result<Database> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let shown = path.display().to_string();
    let mut builder = Database::builder();
    builder.set_repair_callback(move |_| {
        tracing::warn!(
            journal = shown,
            "the event log was not closed cleanly (the orchestrator was killed, or the host lost power): checking it, and rolling back a commit that did not finish"
        );
    });
    builder.create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
            "{}: the event log is open in another orchestrator (each data dir serves one)",
            path.display()
        ),
        e => anyhow::anyhow!("{}: cannot open the event log: {e}", path.display()),
    })
}

struct Refusal {
    message: String,
    config_differs: bool,
}

/// Whether the log is new (no header yet); refuses one of a newer format
/// or another config.
fn check_header(db: &Database, opts: &Options) -> Result<bool, Refusal> {
    let file = opts.path.display();
    let plain = |message: String| Refusal {
        message,
        config_differs: false,
    };
    let read = db
        .begin_read()
        .map_err(|e| plain(format!("{file}: cannot read the event log: {e}")))?;
    let header = match read.open_table(HEADER) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(true),
        Err(e) => return Err(plain(format!("{file}: cannot read the event log: {e}"))),
    };
    let get = |key: &str| -> Option<String> {
        header
            .get(key)
            .ok()
            .flatten()
            .map(|v| v.value().to_string())
    };
    let format: u64 = get("format").and_then(|f| f.parse().ok()).unwrap_or(0);
    let written_by = get("written_by").unwrap_or_else(|| "an unknown version".into());
    if format > FORMAT || format == 0 {
        return Err(plain(format!(
            "{file}: this event log was written by testfleet {written_by} in log format {format}; this orchestrator ({}) reads format {FORMAT}: start the version that wrote it, or move the file away to start afresh",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if get("config").as_deref() != Some(opts.config_text.as_str())
        || get(LOCAL_RUN_KEY) != local_run_text(opts)
    {
        let was = get("config_path").unwrap_or_default();
        return Err(Refusal {
            message: format!(
                "{file}: this event log was written with another config ({was}) than this orchestrator's ({}): start it with the config the log was written with, or move the file away to start afresh",
                opts.config_path.display()
            ),
            config_differs: true,
        });
    }
    Ok(false)
}

fn write_header(db: &Database, opts: &Options) -> anyhow::Result<()> {
    let txn = db.begin_write().context(describe(&opts.path))?;
    {
        let mut h = txn.open_table(HEADER).context(describe(&opts.path))?;
        let format = FORMAT.to_string();
        let path = opts.config_path.display().to_string();
        for (k, v) in [
            ("format", format.as_str()),
            ("written_by", env!("CARGO_PKG_VERSION")),
            ("config_path", path.as_str()),
            ("config", opts.config_text.as_str()),
        ] {
            h.insert(k, v).context(describe(&opts.path))?;
        }
        if let Some(run) = local_run_text(opts) {
            h.insert(LOCAL_RUN_KEY, run.as_str())
                .context(describe(&opts.path))?;
        }
        txn.open_table(EVENTS).context(describe(&opts.path))?;
    }
    txn.commit()
        .with_context(|| format!("writing the event log {}", opts.path.display()))
}

/// The header key of `Options::local_run`, as JSON.
const LOCAL_RUN_KEY: &str = "local_run";

fn local_run_text(opts: &Options) -> Option<String> {
    opts.local_run
        .as_ref()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
}

/// Removes entries `from` on; how many there were.
fn cut_from(db: &Database, from: u64) -> anyhow::Result<u64> {
    let txn = db.begin_write()?;
    let mut cut = 0;
    {
        let mut t = txn.open_table(EVENTS)?;
        t.retain_in(from.., |_, _| {
            cut += 1;
            false
        })?;
    }
    txn.commit()?;
    Ok(cut)
}

/// Replaces the log with an empty one (`run`, whose last suite has ended
/// or was another's).
fn restart_fresh(
    db: Database,
    opts: &Options,
    orchestrator_id: &str,
    started: Instant,
) -> anyhow::Result<Opened> {
    drop(db);
    std::fs::remove_file(&opts.path)
        .with_context(|| format!("removing the old event log {}", opts.path.display()))?;
    let db = open_db(&opts.path)?;
    write_header(&db, opts)?;
    Ok(Opened {
        scheduler: Scheduler::new(orchestrator_id),
        db,
        next_seq: 1,
        replayed: 0,
        from_snapshot: None,
        entries: 0,
        took: started.elapsed(),
        delivered: BTreeSet::new(),
    })
}

#[cfg(test)]
mod tests;

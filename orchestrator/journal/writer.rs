//! Group commit: one thread writes the log. The engine hands it entries
//! without waiting; the thread takes whatever has queued up since its last
//! commit (up to `MAX_BATCH`), writes it in one transaction with one durable
//! commit, and reports the last sequence number that is now durable. Under
//! load many events share one sync; when idle each is committed at once.
//!
//! A snapshot (`snapshot::take`) is committed like any entry, marked as a
//! snapshot in the same transaction; once it is durable (and reported so)
//! the thread checks it and compacts the log (`snapshot::after_commit`).

use std::path::PathBuf;
use std::sync::mpsc;

use redb::Database;

use super::snapshot::{self, Check, Taken, SNAPSHOTS};
use super::EVENTS;

/// Most entries in one commit: bounds how long a commit holds results
/// back from their acknowledgement.
const MAX_BATCH: usize = 8192;

/// What the writer tells the engine.
#[derive(Debug)]
pub enum Written {
    /// Every entry up to and including this one is durable.
    Durable(u64),
    /// The log cannot be written (a full disk, an I/O error); nothing after
    /// the last `Durable` is. The writer has stopped.
    Failed(String),
}

/// One entry for the writer; a snapshot's with what to check it against.
struct Job {
    seq: u64,
    bytes: Vec<u8>,
    check: Option<Box<Check>>,
}

/// The engine's end: numbers entries and hands them to the writer.
pub struct Appender {
    tx: mpsc::Sender<Job>,
    next: u64,
}

impl Appender {
    /// Starts the writer thread on `db`; `told` hears what it wrote.
    /// `snapshot`: the snapshot the log was replayed from, if any (the
    /// next snapshot that passes its check compacts the log up to it).
    pub fn start(
        db: Database,
        path: PathBuf,
        next_seq: u64,
        snapshot: Option<u64>,
        told: impl Fn(Written) + Send + 'static,
    ) -> std::io::Result<Appender> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || write_loop(db, path, rx, snapshot, told))?;
        Ok(Appender { tx, next: next_seq })
    }

    /// Queues an entry; its sequence number, to wait for.
    pub fn append(&mut self, bytes: Vec<u8>) -> u64 {
        self.queue(bytes, None)
    }

    /// Queues a snapshot, to be checked and to compact the log once it is
    /// durable; its sequence number.
    pub fn append_snapshot(&mut self, taken: Taken) -> u64 {
        self.queue(taken.bytes, Some(Box::new(taken.check)))
    }

    fn queue(&mut self, bytes: Vec<u8>, check: Option<Box<Check>>) -> u64 {
        let seq = self.next;
        self.next += 1;
        // A stopped writer has said why (`Failed`); the engine stops acting on it.
        let _ = self.tx.send(Job { seq, bytes, check });
        seq
    }
}

fn write_loop(
    db: Database,
    path: PathBuf,
    rx: mpsc::Receiver<Job>,
    mut snapshot: Option<u64>,
    told: impl Fn(Written),
) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |j| j.seq);
        match commit(&db, &batch) {
            Ok(()) => told(Written::Durable(last)),
            Err(e) => {
                let dir = path.parent().unwrap_or(&path);
                told(Written::Failed(format!(
                    "the event log {} cannot be written: {e} (is the data dir {} full, or its disk failing?)",
                    path.display(),
                    dir.display()
                )));
                return;
            }
        }
        // After the answers went out: a check and a compaction take a
        // moment no acknowledgement should wait for.
        for job in batch.drain(..) {
            if let Some(check) = job.check {
                if snapshot::after_commit(&db, &path, job.seq, &check, snapshot) {
                    snapshot = Some(job.seq);
                }
            }
        }
    }
}

fn commit(db: &Database, batch: &[Job]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EVENTS)?;
        for job in batch {
            table.insert(job.seq, job.bytes.as_slice())?;
        }
        if batch.iter().any(|j| j.check.is_some()) {
            let mut marks = txn.open_table(SNAPSHOTS)?;
            for job in batch.iter().filter(|j| j.check.is_some()) {
                marks.insert(job.seq, ())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

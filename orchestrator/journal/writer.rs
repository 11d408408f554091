//! Group commit: one thread writes the log. The engine hands it entries
//! without waiting; the thread takes whatever has queued up since its last
//! commit (up to `MAX_BATCH`), writes it in one transaction with one durable
//! commit, and reports the last sequence number that is now durable. Under
//! load many events share one sync; when idle each is committed at once.

use std::path::PathBuf;
use std::sync::mpsc;

use redb::Database;

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

/// The engine's end: numbers entries and hands them to the writer.
pub struct Appender {
    tx: mpsc::Sender<(u64, Vec<u8>)>,
    next: u64,
}

impl Appender {
    /// Starts the writer thread on `db`; `told` hears what it wrote.
    pub fn start(
        db: Database,
        path: PathBuf,
        next_seq: u64,
        told: impl Fn(Written) + Send + 'static,
    ) -> std::io::Result<Appender> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || write_loop(db, path, rx, told))?;
        Ok(Appender { tx, next: next_seq })
    }

    /// Queues an entry; its sequence number, to wait for.
    pub fn append(&mut self, bytes: Vec<u8>) -> u64 {
        let seq = self.next;
        self.next += 1;
        // A stopped writer has said why (`Failed`); the engine stops acting on it.
        let _ = self.tx.send((seq, bytes));
        seq
    }
}

fn write_loop(
    db: Database,
    path: PathBuf,
    rx: mpsc::Receiver<(u64, Vec<u8>)>,
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
        let last = batch.last().map_or(0, |(seq, _)| *seq);
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
        batch.clear();
    }
}

fn commit(db: &Database, batch: &[(u64, Vec<u8>)]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EVENTS)?;
        for (seq, bytes) in batch {
            table.insert(*seq, bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

//! Measured test durations that survive runs: a small redb file of their
//! own (`durations.redb`), in `serve`'s data dir and in `run`'s cache dir
//! (the event log of `run` is replaced every run, its history must not be).
//! Keyed by suite name, task id and test id; each test keeps its last
//! `KEPT_RUNS` measured durations, and the plan gets their median
//! (`testfleet_core::split::history` says why a median).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use testfleet::config::SuitePlan;
use testfleet_core::split::history::{estimate, push_run};
use testfleet_core::split::Measured;

/// `suite \n task \n test` -> the last runs' milliseconds, oldest first, as
/// little-endian u32s.
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("test_durations");

/// The file's name in its directory.
pub const FILE: &str = "durations.redb";

/// The history: task id -> test id -> expected ms.
pub type History = HashMap<String, HashMap<String, u64>>;

pub struct Durations {
    db: Database,
    path: PathBuf,
}

fn key(suite: &str, task: &str, test: &str) -> String {
    format!("{suite}\n{task}\n{test}")
}

fn decode(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect()
}

fn encode(runs: &[u64]) -> Vec<u8> {
    runs.iter()
        .flat_map(|&ms| (ms.min(u32::MAX as u64) as u32).to_le_bytes())
        .collect()
}

impl Durations {
    /// Opens (or creates) the history in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Durations> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{}: the test durations are open in another orchestrator",
                path.display()
            ),
            e => anyhow::anyhow!("{}: cannot open the test durations: {e}", path.display()),
        })?;
        Ok(Durations { db, path })
    }

    /// Opens the history in `dir` only if one is there (for `check`, which
    /// writes nothing).
    pub fn open_existing(dir: &Path) -> anyhow::Result<Option<Durations>> {
        if !dir.join(FILE).exists() {
            return Ok(None);
        }
        Durations::open(dir).map(Some)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every split task's known test durations in suite `suite`.
    pub fn for_plan(&self, suite: &str, plan: &SuitePlan) -> anyhow::Result<History> {
        let mut out = History::new();
        for t in plan.tasks.iter().filter(|t| t.split.is_some()) {
            let tests = self.for_task(suite, &t.id)?;
            if !tests.is_empty() {
                out.insert(t.id.clone(), tests);
            }
        }
        Ok(out)
    }

    /// Task `task`'s known test durations in suite `suite`.
    pub fn for_task(&self, suite: &str, task: &str) -> anyhow::Result<HashMap<String, u64>> {
        let read = self.db.begin_read().context("reading the test durations")?;
        let table = match read.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(e).context("reading the test durations"),
        };
        let prefix = key(suite, task, "");
        let mut out = HashMap::new();
        for entry in table
            .range(prefix.as_str()..)
            .context("reading the test durations")?
        {
            let (k, v) = entry.context("reading the test durations")?;
            let Some(test) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            if let Some(ms) = estimate(&decode(v.value())) {
                out.insert(test.to_string(), ms);
            }
        }
        Ok(out)
    }

    /// Adds one run's measured durations of suite `suite`, in one commit.
    pub fn record(&self, suite: &str, measured: &[Measured]) -> anyhow::Result<()> {
        if measured.is_empty() {
            return Ok(());
        }
        let write = self
            .db
            .begin_write()
            .context("writing the test durations")?;
        {
            let mut table = write
                .open_table(RUNS)
                .context("writing the test durations")?;
            for m in measured {
                let k = key(suite, &m.task_id, &m.test_id);
                let mut runs = table
                    .get(k.as_str())
                    .context("reading the test durations")?
                    .map(|v| decode(v.value()))
                    .unwrap_or_default();
                push_run(&mut runs, m.ms);
                table
                    .insert(k.as_str(), encode(&runs).as_slice())
                    .context("writing the test durations")?;
            }
        }
        write.commit().context("committing the test durations")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(task: &str, test: &str, ms: u64) -> Measured {
        Measured {
            task_id: task.into(),
            test_id: test.into(),
            ms,
        }
    }

    #[test]
    fn durations_survive_reopening_and_are_kept_per_suite_and_task() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = Durations::open(dir.path()).unwrap();
            d.record("s", &[m("unit", "a::x", 100), m("unit", "a::y", 300)])
                .unwrap();
            d.record("s", &[m("unit", "a::x", 120), m("other", "a::x", 9)])
                .unwrap();
            d.record("s2", &[m("unit", "a::x", 5)]).unwrap();
        }
        let d = Durations::open_existing(dir.path()).unwrap().unwrap();
        let unit = d.for_task("s", "unit").unwrap();
        assert_eq!(unit.len(), 2);
        assert_eq!(unit["a::x"], 110, "median of 100 and 120");
        assert_eq!(unit["a::y"], 300);
        assert_eq!(d.for_task("s", "other").unwrap()["a::x"], 9);
        assert_eq!(d.for_task("s2", "unit").unwrap()["a::x"], 5);
        assert!(
            d.for_task("s", "un").unwrap().is_empty(),
            "a prefix of a task id is not it"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(Durations::open_existing(empty.path()).unwrap().is_none());
        assert!(!empty.path().join(FILE).exists(), "check writes nothing");
    }
}

//! A report that could not be written at the suite's end (its directory
//! full, read-only, or not a directory) is not lost: it is kept in memory
//! and written again every `REPORT_RETRY_INTERVAL` until it is, off the
//! scheduler's task. The failure is logged once, with its reason, by the
//! engine; success is logged here, with the number of tries. Meanwhile the
//! API serves the report from memory as usual.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use testfleet::config::defaults;

use crate::output::report::{self, ReportJson};

/// The reports waiting to be written, by directory: one per directory, the
/// newest, so an older suite's report never overwrites a newer one.
#[derive(Default)]
pub struct ReportRetries {
    by_dir: HashMap<PathBuf, tokio::task::AbortHandle>,
}

impl ReportRetries {
    /// Keeps `report` (and the merged `junit`, when it could be built) and
    /// writes it into `dir` until that works.
    pub fn keep(
        &mut self,
        suite_id: &str,
        dir: &Path,
        report: Arc<ReportJson>,
        junit: Option<String>,
    ) {
        self.forget(dir);
        let (suite_id, target) = (suite_id.to_string(), dir.to_path_buf());
        let task = tokio::spawn(async move {
            let since = Instant::now();
            let mut every = tokio::time::interval(defaults::REPORT_RETRY_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            for tries in 2u64.. {
                every.tick().await;
                let (report, junit, at) = (report.clone(), junit.clone(), target.clone());
                let written = tokio::task::spawn_blocking(move || {
                    report::write_texts(&at, &report, junit.as_deref())
                })
                .await;
                match written {
                    Ok(Ok(path)) => {
                        tracing::info!(
                            suite_id,
                            report = %path.display(),
                            tries,
                            waited_s = since.elapsed().as_secs(),
                            "wrote the report that could not be written at the suite's end"
                        );
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!(
                        suite_id,
                        tries,
                        error = format!("{e:#}"),
                        "the report is still not written"
                    ),
                    Err(e) => {
                        tracing::debug!(suite_id, tries, error = %e, "the report writer failed")
                    }
                }
            }
        });
        self.by_dir.insert(dir.to_path_buf(), task.abort_handle());
    }

    /// Stops retrying into `dir`: a newer report was written there.
    pub fn forget(&mut self, dir: &Path) {
        if let Some(task) = self.by_dir.remove(dir) {
            task.abort();
        }
        self.by_dir.retain(|_, t| !t.is_finished());
    }
}

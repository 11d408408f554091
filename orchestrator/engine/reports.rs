//! The suite's report as the engine keeps it: built once per scheduler
//! revision, written at the suite's end, and kept (and retried) while it
//! cannot be written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use testfleet_core::Scheduler;

use crate::output::report::{self, ReportJson};

/// The last report built, and the scheduler revision it describes; and
/// the reports that could not be written yet.
#[derive(Default)]
pub(super) struct Reports {
    last: Option<(u64, Arc<ReportJson>)>,
    retries: crate::output::report_retry::ReportRetries,
}

impl Reports {
    pub(super) fn current(&mut self, scheduler: &Scheduler) -> Option<Arc<ReportJson>> {
        if let Some(kept) = self.kept(scheduler) {
            return Some(kept);
        }
        let report = report::build(scheduler)?;
        Some(self.keep(scheduler, report))
    }

    /// Writes the current report into `dir`, building it as it is written
    /// unless it is kept already.
    /// One that cannot be written is kept and written later
    /// (`output::report_retry`).
    pub(super) fn write(&mut self, scheduler: &Scheduler, dir: &Path) -> anyhow::Result<PathBuf> {
        let (report, written) = match self.kept(scheduler) {
            Some(kept) => {
                let written = report::write(scheduler, &kept, dir);
                (kept, written)
            }
            None => {
                let (report, written) = report::build_and_write(scheduler, dir)
                    .context("a finished suite has a report")?;
                (self.keep(scheduler, report), written)
            }
        };
        match (&written, scheduler.suite()) {
            (Err(_), Some(suite)) => {
                let junit = crate::output::junit_merge::merge(suite, dir).ok();
                self.retries.keep(suite.suite_id(), dir, report, junit);
            }
            _ => self.retries.forget(dir),
        }
        written
    }

    fn keep(&mut self, scheduler: &Scheduler, report: ReportJson) -> Arc<ReportJson> {
        let report = Arc::new(report);
        self.last = Some((scheduler.revision(), report.clone()));
        report
    }

    /// The report last built, if the scheduler has not changed since.
    fn kept(&self, scheduler: &Scheduler) -> Option<Arc<ReportJson>> {
        let (at, report) = self.last.as_ref()?;
        if *at != scheduler.revision() {
            return None;
        }
        #[cfg(debug_assertions)]
        assert_eq!(
            report::build(scheduler).as_ref(),
            Some(&**report),
            "the scheduler changed the report without a new revision"
        );
        Some(report.clone())
    }
}

//! The final report as files: built in pieces, on a thread per core for a
//! large suite, written as report.json (atomically) beside the merged
//! junit.xml and report.html, and kept as text the API serves without
//! copying.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use testfleet::report_text::{ReportText, ReportTextWriter};
use testfleet_core::{Scheduler, SuiteRun};

use crate::views::report::{write_all_but_tasks, write_tasks};

pub use super::layout::{JUNIT_FILE, REPORT_FILE};
pub use super::report_html::HTML_FILE;

/// Reports are built in pieces this long: small enough that the file writer
/// keeps pace with the serialiser, large enough that a 20 MB report is a few
/// dozen pieces.
const PIECE_BYTES: usize = 512 * 1024;

/// A suite's tasks are serialised on up to one thread per core, each taking
/// at least this many: below it, starting a thread costs more than it saves.
const TASKS_PER_THREAD: usize = 2_000;

/// The current (or last) suite's report as compact JSON, with its id and
/// status; None before any suite has run.
pub fn build(s: &Scheduler) -> Option<ReportJson> {
    build_on(s, threads_for(s.suite()?))
}

/// `build`, with the tasks serialised on exactly `threads` threads.
pub(crate) fn build_on(s: &Scheduler, threads: usize) -> Option<ReportJson> {
    let suite = s.suite()?;
    Some(serialise(s, suite, threads, |_| {}))
}

fn threads_for(suite: &SuiteRun) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(suite.tasks().len() / TASKS_PER_THREAD).max(1)
}

/// Builds the report and writes it into `dir` (report.json, then the merged
/// junit.xml) at the same time: a thread writes each piece while the next is
/// serialised, so a 20 MB report costs the longer of the two rather than
/// their sum. The report comes back even when writing it failed.
pub fn build_and_write(s: &Scheduler, dir: &Path) -> Option<(ReportJson, anyhow::Result<PathBuf>)> {
    let suite = s.suite()?;
    let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
    Some(std::thread::scope(|scope| {
        // A failed write drops `rx`; the serialiser's sends then fail quietly
        // and it finishes the report for the API.
        let writer = scope.spawn(|| write_files(suite, rx, dir));
        let report = serialise(s, suite, threads_for(suite), move |piece| {
            let _ = tx.send(piece.clone());
        });
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the report writer panicked")));
        (report, written)
    }))
}

/// The report's text, handed to `on_piece` piece by piece in order. The
/// first range of tasks is serialised on this thread, straight after the
/// rest of the report, so its pieces go out (to the file) at once; the other
/// ranges are serialised meanwhile on their own threads and follow it.
fn serialise(
    s: &Scheduler,
    suite: &SuiteRun,
    threads: usize,
    on_piece: impl FnMut(&Bytes),
) -> ReportJson {
    let mut text = ReportTextWriter::new(PIECE_BYTES, on_piece);
    write_all_but_tasks(&mut text, s, suite);
    text.write_all(br#","tasks":["#).expect("writes to memory");
    let ranges = task_ranges(suite.tasks().len(), threads);
    std::thread::scope(|scope| {
        let later: Vec<_> = ranges[1..]
            .iter()
            .map(|range| {
                let range = range.clone();
                scope.spawn(move || {
                    let mut part = ReportTextWriter::new(PIECE_BYTES, |_| {});
                    write_tasks(&mut part, s.pool(), suite, range);
                    part.finish()
                })
            })
            .collect();
        write_tasks(&mut text, s.pool(), suite, ranges[0].clone());
        for part in later {
            let part = part.join().expect("a report's tasks serialise");
            text.write_all(b",").expect("writes to memory");
            text.append(part);
        }
    });
    text.write_all(b"]}").expect("writes to memory");
    ReportJson {
        suite_id: suite.suite_id().to_string(),
        status: suite.state().as_str(),
        json: text.finish(),
    }
}

/// `tasks` tasks cut into `parts` consecutive ranges of near-equal size,
/// none empty (but one when there are no tasks).
fn task_ranges(tasks: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, tasks.max(1));
    (0..parts)
        .map(|p| tasks * p / parts..tasks * (p + 1) / parts)
        .collect()
}

/// A report as text, ready to serve and to write. It can be tens of MB, so
/// the engine keeps the one it built until the scheduler changes (see
/// `Scheduler::revision`) rather than building it again for every reader,
/// and readers share its pieces rather than copying them.
#[derive(Debug, PartialEq)]
pub struct ReportJson {
    pub suite_id: String,
    pub status: &'static str,
    pub json: ReportText,
}

/// Writes `report` as report.json, and the merged junit.xml, into `dir`.
/// The JSON is compact: a 20,000-task suite's report is 20 MB this way and
/// 33 MB indented, and indenting doubles the time the scheduler spends
/// writing it. `jq . report.json` shows it indented.
pub fn write(s: &Scheduler, report: &ReportJson, dir: &Path) -> anyhow::Result<PathBuf> {
    let suite = s.suite().context("no suite to report on")?;
    write_files(suite, report.json.chunks().iter().cloned(), dir)
}

/// Writes a report kept in memory, and the merged JUnit text when there is
/// one, into `dir`: what `output::report_retry` tries again.
pub fn write_texts(
    dir: &Path,
    report: &ReportJson,
    junit: Option<&str>,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(REPORT_FILE);
    write_atomically(&path, report.json.chunks())?;
    if let Some(junit) = junit {
        write_atomically(&dir.join(JUNIT_FILE), [junit.as_bytes()])?;
    }
    Ok(path)
}

/// report.json from the report's pieces, then junit.xml.
fn write_files(
    suite: &SuiteRun,
    report: impl IntoIterator<Item = Bytes>,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(REPORT_FILE);
    // report.html is rendered from this same text, once it is whole. The
    // pieces are shared, and joined once their total length is known: a
    // buffer grown piece by piece copied a 20 MB report several times.
    let mut pieces = Vec::new();
    write_atomically(
        &path,
        report.into_iter().inspect(|p| pieces.push(p.clone())),
    )?;
    let whole = pieces.concat();
    let junit = crate::output::junit_merge::merge(suite, dir)?;
    write_atomically(&dir.join(JUNIT_FILE), [junit.as_bytes()])?;
    // The JSON is the report; a page that cannot be made costs only itself.
    let html = crate::output::report_html::render(&whole, Some(&junit))
        .and_then(|page| write_atomically(&dir.join(HTML_FILE), [page.as_bytes()]));
    if let Err(e) = html {
        tracing::warn!(error = format!("{e:#}"), dir = %dir.display(), "report.html was not written");
    }
    Ok(path)
}

/// A reader never sees half a file: write aside, then rename. On failure
/// (a full disk) the part written is removed.
fn write_atomically<P: AsRef<[u8]>>(
    path: &Path,
    pieces: impl IntoIterator<Item = P>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for piece in pieces {
            file.write_all(piece.as_ref())
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

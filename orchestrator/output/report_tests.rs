//! The report as the engine writes it at the finish: built and written at
//! once, in pieces, and the same text as the report the API serves; and a
//! report built at one scheduler revision stays true until the next.

use std::fmt::Write;

use crate::output::report::{
    build, build_and_write, build_on, ReportJson, JUNIT_FILE, REPORT_FILE,
};
use testfleet_core::sim::{cap, plan, run_schedule, superseded, Sim};
use testfleet_core::SuiteState;

/// A finished suite whose report is about 1 MB: more than one piece.
fn finished(tasks: usize) -> Sim {
    let mut y = String::from(
        "templates:\n  noop: {command: \"true\"}\nresource_allocation:\n  u: {memory_mb: 1, cpu_cores: 1, disk_mb: 1}\norchestrator:\n  name: big\n  task_definitions:\n    u:\n",
    );
    for i in 0..tasks {
        writeln!(y, "      - {{id: T{i}, template: noop}}").unwrap();
    }
    let mut sim = Sim::new();
    sim.join("a", cap(64, 1 << 20));
    sim.submit(plan(&y));
    sim.drain_successfully();
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    sim
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_report_written_as_it_is_built_is_the_report_served() {
    let sim = finished(900);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    let (report, written) = build_and_write(&sim.s, &out).unwrap();
    assert_eq!(written.unwrap(), out.join(REPORT_FILE));
    assert!(report.json.chunks().len() > 1, "{:?}", report.json);
    assert_eq!(Some(&report), build(&sim.s).as_ref());
    let on_disk = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert_eq!(on_disk, report.json.to_str().unwrap());
    let doc: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    assert_eq!(doc["tasks"].as_array().unwrap().len(), 900);
    assert!(out.join(JUNIT_FILE).is_file());
    assert_eq!(leftovers(&out), Vec::<String>::new());
}

#[test]
fn a_report_serialised_on_several_threads_is_the_same_text() {
    let sim = finished(900);
    let one = build_on(&sim.s, 1).unwrap();
    for threads in [2, 3, 7] {
        let several = build_on(&sim.s, threads).unwrap();
        assert_eq!(several, one, "{threads} threads");
    }
    let doc: serde_json::Value = serde_json::from_str(&one.json.to_str().unwrap()).unwrap();
    let ids: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..900).map(|i| format!("T{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(doc["summary"]["total_tasks"], 900);
}

#[test]
fn a_report_that_cannot_be_written_is_still_built_and_the_error_names_the_path() {
    let sim = finished(3);
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let out = blocker.join("suite");
    let (report, written) = build_and_write(&sim.s, &out).unwrap();
    let e = format!("{:#}", written.unwrap_err());
    assert!(e.contains("not-a-dir"), "{e}");
    assert_eq!(Some(&report), build(&sim.s).as_ref());
    // Nothing was left anywhere: the directory holds the blocker alone,
    // still empty (a `.tmp` could only have gone beside the report, which
    // could not be made).
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["not-a-dir"]);
    assert_eq!(std::fs::metadata(&blocker).unwrap().len(), 0);
}

#[test]
fn a_failed_write_leaves_no_partial_file() {
    let sim = finished(3);
    let dir = tempfile::tempdir().unwrap();
    // report.json's place is taken by a directory: the rename fails after
    // the text was written aside.
    std::fs::create_dir_all(dir.path().join(REPORT_FILE).join("x")).unwrap();
    let (_, written) = build_and_write(&sim.s, dir.path()).unwrap();
    let e = format!("{:#}", written.unwrap_err());
    assert!(e.contains("renaming to"), "{e}");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

#[test]
fn after_the_finish_only_a_late_result_changes_the_report_revision() {
    let (mut sim, first, second) = superseded();
    sim.succeed(&second);
    assert_eq!(sim.suite_state(), SuiteState::Completed);
    let finished = sim.s.revision();
    let report = build(&sim.s);
    sim.heartbeat(&second.agent);
    sim.advance(1);
    assert_eq!(sim.s.revision(), finished, "a heartbeat and a quiet tick");
    assert_eq!(build(&sim.s), report);
    sim.succeed(&first);
    assert_ne!(
        sim.s.revision(),
        finished,
        "a stale result is in the report"
    );
    assert_ne!(build(&sim.s), report);
}

/// In the simulation's schedules (one in 16 of its 10,000 seeds: building a
/// report every step is slow in a debug build), a report built at one
/// revision is still the report at that revision.
#[test]
fn in_random_schedules_a_report_stays_true_while_the_revision_stands() {
    for seed in (0..10_000).step_by(16) {
        // Keyed by restarts too: a report cached before a crash died with
        // the process, and the rebuilt scheduler numbers on from what was
        // durable, so it may reach the same revision by other events.
        let mut last: Option<((u32, u64), Option<ReportJson>)> = None;
        let mut check = |sim: &Sim| match &last {
            Some((at, report)) if *at == (sim.restarts, sim.s.revision()) => {
                let now = build(&sim.s);
                if &now != report {
                    panic!(
                        "the report changed without a new revision: {}",
                        first_difference(report.as_ref(), now.as_ref())
                    );
                }
            }
            _ => last = Some(((sim.restarts, sim.s.revision()), build(&sim.s))),
        };
        if let Err((msg, trace)) = run_schedule(seed, &mut check) {
            let tail = trace.len().saturating_sub(60);
            panic!(
                "seed {seed} broke: {msg}\nlast steps:\n{}",
                trace[tail..].join("\n")
            );
        }
    }
}

/// Where two reports' texts part, with some of each around it.
fn first_difference(a: Option<&ReportJson>, b: Option<&ReportJson>) -> String {
    let text = |r: Option<&ReportJson>| r.map(|r| r.json.to_str().unwrap().into_owned());
    let (a, b) = (text(a).unwrap_or_default(), text(b).unwrap_or_default());
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let around = |s: &str| {
        s.get(at.saturating_sub(120)..(at + 120).min(s.len()))
            .unwrap_or("")
            .to_string()
    };
    format!(
        "at byte {at}:\n before: {}\n  after: {}",
        around(&a),
        around(&b)
    )
}

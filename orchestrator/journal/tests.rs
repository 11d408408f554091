//! The event log on disk: written through the writer thread, replayed on
//! open; damaged tails cut, other configs and newer formats refused.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use testfleet_core::results::FinalStatus;
use testfleet_core::sim::{self, Sim};
use testfleet_core::{Event, Scheduler};

use super::*;

fn options(dir: &Path, config_text: &str) -> Options {
    Options {
        path: dir.join(FILE),
        config_path: dir.join("suite.yaml"),
        config_text: config_text.into(),
        fresh_unless_running: false,
        local_run: None,
    }
}

/// A suite half run: submitted, two agents, some results in.
fn half_run(yaml: &str) -> Sim {
    let mut s = Sim::new();
    s.submit(sim::plan(yaml));
    s.join("a1", sim::cap(8, 16_384));
    s.join("a2", sim::cap(8, 16_384));
    for a in s.running().into_iter().take(2) {
        s.succeed(&a);
    }
    s.advance(1_000);
    if let Some(a) = s.running().first().cloned() {
        s.step(Event::Completed(sim::completion(
            &a,
            FinalStatus::Success,
            5,
            4,
        )));
    }
    s
}

/// Writes `events` through the writer, waiting until all are durable.
fn write(opened: Opened, path: &Path, events: &[(Event, u64, usize)]) {
    let (tx, rx) = mpsc::channel();
    let snapshot = opened.from_snapshot;
    let mut a = Appender::start(
        opened.db,
        path.to_path_buf(),
        opened.next_seq,
        snapshot,
        move |w| {
            let _ = tx.send(w);
        },
    )
    .unwrap();
    let mut last = 0;
    for (e, at, _) in events {
        last = a.append(encode(e, *at, &PlanSource::OwnConfig));
    }
    if last > 0 {
        wait_durable(&rx, last);
    }
    drop(a);
    // The writer thread lets go of the file once its channel closes.
    std::thread::sleep(Duration::from_millis(200));
}

/// Waits until the writer says entry `last` is durable (or fails).
fn wait_durable(rx: &mpsc::Receiver<Written>, last: u64) {
    loop {
        match rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer answers")
        {
            Written::Durable(seq) if seq >= last => return,
            Written::Durable(_) => {}
            Written::Failed(why) => panic!("{why}"),
        }
    }
}

/// The report, as JSON (whose maps are ordered, unlike the hashed ones it
/// was built from).
fn report(s: &Scheduler) -> serde_json::Value {
    let r = crate::output::report::build(s).expect("a suite");
    serde_json::from_str(&r.json.to_str().unwrap()).unwrap()
}

/// Where two reports first differ, shortly.
fn same(a: &serde_json::Value, b: &serde_json::Value) {
    if a != b {
        let (x, y) = (a.to_string(), b.to_string());
        let at = x
            .chars()
            .zip(y.chars())
            .position(|(p, q)| p != q)
            .unwrap_or(0);
        let cut = |s: &str| {
            s.chars()
                .skip(at.saturating_sub(200))
                .take(400)
                .collect::<String>()
        };
        panic!("reports differ at {at}:\n{}\n{}", cut(&x), cut(&y));
    }
}

fn reopen(opts: &Options) -> anyhow::Result<Opened> {
    // The previous writer may still hold the file for a moment.
    for _ in 0..50 {
        match open(opts, "orch") {
            Err(e) if e.to_string().contains("open in another") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => return other,
        }
    }
    open(opts, "orch")
}

#[test]
fn a_log_replays_to_the_state_it_was_written_from() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = half_run(&yaml);
    let opened = open(&opts, "orch").unwrap();
    assert_eq!(opened.replayed, 0, "a new log is empty");
    write(opened, &opts.path, &s.events);

    let back = reopen(&opts).unwrap();
    assert_eq!(back.replayed, s.events.len() as u64);
    assert_eq!(back.next_seq, s.events.len() as u64 + 1);
    assert_eq!(back.scheduler.revision(), s.s.revision());
    same(&report(&back.scheduler), &report(&s.s));
}

#[test]
fn a_damaged_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = half_run(&yaml);
    write(open(&opts, "orch").unwrap(), &opts.path, &s.events);
    // Power lost mid-write: the last entry is half there, and one more
    // after it is garbage.
    let n = s.events.len() as u64;
    {
        let db = Database::open(&opts.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(EVENTS).unwrap();
            let whole = t.get(n).unwrap().unwrap().value().to_vec();
            t.insert(n, &whole[..whole.len() / 2]).unwrap();
            t.insert(n + 1, &b"\x00\x01garbage"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let back = reopen(&opts).unwrap();
    assert_eq!(back.replayed, n - 1, "replayed up to the damaged entry");
    assert_eq!(back.next_seq, n);
    let prefix = Scheduler::replay(
        "orch",
        s.events[..s.events.len() - 1]
            .iter()
            .map(|e| (e.0.clone(), e.1)),
    );
    same(&report(&back.scheduler), &report(&prefix));
    drop(back);
    // The cut is written: the next open finds a whole log.
    let again = reopen(&opts).unwrap();
    assert_eq!(again.replayed, n - 1);
}

#[test]
fn a_log_of_another_config_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    write(
        open(&options(dir.path(), &yaml), "orch").unwrap(),
        &dir.path().join(FILE),
        &[],
    );
    let other = options(dir.path(), &sim::seed_yaml("phased"));
    let err = format!("{:#}", reopen(&other).err().expect("refused"));
    assert!(
        err.contains(&dir.path().join(FILE).display().to_string()),
        "{err}"
    );
    assert!(err.contains("another config"), "{err}");
    // `run` starts afresh instead.
    let fresh = reopen(&Options {
        fresh_unless_running: true,
        local_run: None,
        ..other
    })
    .unwrap();
    assert_eq!(fresh.replayed, 0);
}

#[test]
fn a_log_of_a_newer_format_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    write(open(&opts, "orch").unwrap(), &opts.path, &[]);
    {
        let db = Database::open(&opts.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut h = txn.open_table(HEADER).unwrap();
            h.insert("format", "2").unwrap();
            h.insert("written_by", "9.9.9").unwrap();
        }
        txn.commit().unwrap();
    }
    let err = format!("{:#}", reopen(&opts).err().expect("refused"));
    assert!(err.contains(&opts.path.display().to_string()), "{err}");
    assert!(err.contains("testfleet 9.9.9 in log format 2"), "{err}");
    assert!(err.contains("reads format 1"), "{err}");
}

/// `suites` suites in a row on two agents, each run to its end, all of
/// the orchestrator's own config `yaml`.
fn suites_in_a_row(yaml: &str, suites: usize) -> Sim {
    let mut s = Sim::new();
    s.join("a1", sim::cap(8, 16_384));
    s.join("a2", sim::cap(8, 16_384));
    let plan = sim::plan(yaml);
    for n in 0..suites {
        s.advance(1_000);
        s.submit_as(&format!("s{n}"), plan.clone());
        s.drain_successfully();
        assert_eq!(s.suite_state(), testfleet_core::SuiteState::Completed);
    }
    s
}

/// What the engine writes for `events`: each entry, and a snapshot just
/// before each submit made while no suite runs (`corrupt(n)`: the nth
/// snapshot's bytes are broken before they are appended, so it fails its
/// check). The live scheduler, and the snapshots' sequence numbers.
fn write_as_engine(
    opened: Opened,
    path: &Path,
    events: &[(Event, u64, usize)],
    corrupt: impl Fn(usize) -> bool,
) -> (Scheduler, Vec<u64>) {
    let (tx, rx) = mpsc::channel();
    let from = opened.from_snapshot;
    let mut a = Appender::start(
        opened.db,
        path.to_path_buf(),
        opened.next_seq,
        from,
        move |w| {
            let _ = tx.send(w);
        },
    )
    .unwrap();
    let mut live = opened.scheduler;
    let delivered = opened.delivered;
    let mut snapshots = Vec::new();
    let mut last = 0;
    for (e, at, _) in events {
        if matches!(e, Event::SubmitSuite { .. }) && !live.is_running() {
            let mut taken = snapshot::take(&live, &delivered, *at).expect("a whole snapshot");
            if corrupt(snapshots.len()) {
                taken.bytes = snapshot::undecodable(&taken.bytes);
            }
            snapshots.push(a.append_snapshot(taken));
        }
        last = a.append(encode(e, *at, &PlanSource::OwnConfig));
        live.handle_replayed(e.clone(), *at);
    }
    wait_durable(&rx, last);
    drop(a);
    (live, snapshots)
}

/// The entries the log holds, first and last.
fn held(opts: &Options) -> (u64, u64) {
    let db = reopen_db(opts);
    let read = db.begin_read().unwrap();
    let t = read.open_table(EVENTS).unwrap();
    let first = t.first().unwrap().unwrap().0.value();
    let last = t.last().unwrap().unwrap().0.value();
    (first, last)
}

/// The file, once the writer thread has let go of it (after its checks
/// and compactions).
fn reopen_db(opts: &Options) -> Database {
    for _ in 0..100 {
        match Database::open(&opts.path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the writer still holds {}", opts.path.display());
}

/// Where the entries of the suite submitted at event `i` begin, in a log
/// written by `write_as_engine` from the first entry on: one snapshot
/// before each submit.
fn seq_of_event(events: &[(Event, u64, usize)], i: usize) -> u64 {
    let submits = events[..=i]
        .iter()
        .filter(|e| matches!(e.0, Event::SubmitSuite { .. }))
        .count() as u64;
    i as u64 + 1 + submits
}

fn submits(events: &[(Event, u64, usize)]) -> Vec<usize> {
    (0..events.len())
        .filter(|&i| matches!(events[i].0, Event::SubmitSuite { .. }))
        .collect()
}

fn same_carried_and_report(back: &Scheduler, live: &Scheduler) {
    testfleet_core::same_carried(back, live).unwrap();
    same(&report(back), &report(live));
}

#[test]
fn many_suites_leave_a_log_of_the_last_two_and_replay_to_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = suites_in_a_row(&yaml, 6);
    // A webhook delivery the engine knew of: its entry is compacted away,
    // the snapshots carry it.
    let key = WebhookKey {
        suite_id: "s0".into(),
        escalation_id: "e1".into(),
    };
    let mut opened = open(&opts, "orch").unwrap();
    opened.delivered.insert(key.clone());
    let (live, snapshots) = write_as_engine(opened, &opts.path, &s.events, |_| false);
    assert_eq!(snapshots.len(), 6);
    let written = s.events.len() as u64 + 6;

    // Only the last two suites' entries are left, from the snapshot
    // before the fifth suite on.
    let (first, last) = held(&opts);
    assert_eq!(first, snapshots[4]);
    assert_eq!(last, written);
    let at = submits(&s.events);
    assert_eq!(seq_of_event(&s.events, at[4]), snapshots[4] + 1);

    let back = reopen(&opts).unwrap();
    assert_eq!(back.from_snapshot, Some(snapshots[5]));
    assert_eq!(back.replayed, s.events.len() as u64 - at[5] as u64);
    assert_eq!(back.entries, written - snapshots[4] + 1);
    assert!(back.entries < written / 2, "{} of {written}", back.entries);
    assert_eq!(back.next_seq, written + 1);
    same_carried_and_report(&back.scheduler, &live);
    same_carried_and_report(&back.scheduler, &s.s);
    assert_eq!(back.scheduler.revision(), s.s.revision());
    assert!(back.delivered.contains(&key));

    // The log goes on from there, and the next boundary compacts again.
    let more = suites_in_a_row(&yaml, 1);
    // (Its agents have joined already; its first tick changed nothing and
    // is not logged.)
    let tail: Vec<_> = more.events[2..].to_vec();
    let (_, next) = write_as_engine(back, &opts.path, &tail, |_| false);
    assert_eq!(next[0], written + 1, "numbered on without a gap");
    assert_eq!(
        held(&opts).0,
        snapshots[5],
        "compacted up to the snapshot before"
    );
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = suites_in_a_row(&yaml, 3);
    let (live, snapshots) =
        write_as_engine(open(&opts, "orch").unwrap(), &opts.path, &s.events, |_| {
            false
        });
    let written = s.events.len() as u64 + 3;
    let newest = snapshots[2];
    let rewrite = |bytes: &dyn Fn(&[u8]) -> Vec<u8>| {
        let db = reopen_db(&opts);
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(EVENTS).unwrap();
            let whole = t.get(newest).unwrap().unwrap().value().to_vec();
            t.insert(newest, bytes(&whole).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    };

    // Its checksum holds, but what it holds is no snapshot.
    rewrite(&|b| snapshot::undecodable(b));
    let back = reopen(&opts).unwrap();
    assert_eq!(back.from_snapshot, Some(snapshots[1]));
    assert_eq!(back.next_seq, written + 1, "nothing is cut");
    same_carried_and_report(&back.scheduler, &live);
    drop(back);

    // Its bytes are torn: passed over, not cut as a damaged tail.
    rewrite(&|b| b[..b.len() / 2].to_vec());
    let back = reopen(&opts).unwrap();
    assert_eq!(back.from_snapshot, Some(snapshots[1]));
    assert_eq!(back.next_seq, written + 1, "nothing is cut");
    assert_eq!(back.entries, written - snapshots[1] + 1);
    same_carried_and_report(&back.scheduler, &live);
}

#[test]
fn a_snapshot_that_fails_its_check_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = suites_in_a_row(&yaml, 3);
    // The third snapshot is broken on its way to the log.
    let (live, snapshots) =
        write_as_engine(open(&opts, "orch").unwrap(), &opts.path, &s.events, |n| {
            n == 2
        });
    // The second one compacted up to the first; the third one nothing.
    assert_eq!(held(&opts).0, snapshots[0]);
    let back = reopen(&opts).unwrap();
    assert_eq!(
        back.from_snapshot,
        Some(snapshots[1]),
        "the broken one is passed over"
    );
    same_carried_and_report(&back.scheduler, &live);

    // The next good one compacts up to the last one that passed (the
    // second), not up to the broken one.
    let more = suites_in_a_row(&yaml, 1);
    let (_, next) = write_as_engine(back, &opts.path, &more.events[2..], |_| false);
    assert_eq!(held(&opts).0, snapshots[1]);
    let back = reopen(&opts).unwrap();
    assert_eq!(back.from_snapshot, Some(next[0]));
}

#[test]
fn a_compacted_log_whose_snapshots_are_all_unreadable_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let opts = options(dir.path(), &yaml);
    let s = suites_in_a_row(&yaml, 3);
    let (_, snapshots) =
        write_as_engine(open(&opts, "orch").unwrap(), &opts.path, &s.events, |_| {
            false
        });
    {
        let db = reopen_db(&opts);
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(EVENTS).unwrap();
            for seq in &snapshots[1..] {
                let whole = t.get(*seq).unwrap().unwrap().value().to_vec();
                t.insert(*seq, snapshot::undecodable(&whole).as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let err = format!("{:#}", reopen(&opts).err().expect("refused"));
    assert!(err.contains(&opts.path.display().to_string()), "{err}");
    assert!(err.contains("compacted into snapshots"), "{err}");
}

#[test]
fn a_runs_fleet_is_part_of_what_its_log_was_written_for() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = sim::seed_yaml("dag");
    let run = testfleet::config::LocalRun {
        agents: 3,
        cpu_cores: 4.0,
        memory_mb: 4096,
        scheduling: None,
    };
    let opts = Options {
        fresh_unless_running: true,
        local_run: Some(run.clone()),
        ..options(dir.path(), &yaml)
    };
    let mut config = testfleet::config::SuiteConfig::parse(&yaml, &opts.config_path).unwrap();
    config.local_run = Some(run.clone());
    let mut s = Sim::new();
    s.submit(std::sync::Arc::new(config.plan(dir.path())));
    s.join("agent_001", sim::cap(4, 4096));
    write(open(&opts, "orch").unwrap(), &opts.path, &s.events);

    // Replayed as the run planned it: its three local agents.
    let again = reopen(&opts).unwrap();
    assert_eq!(again.replayed as usize, s.events.len());
    let plan = again.scheduler.suite().unwrap().plan().clone();
    assert_eq!((plan.pool.min_agents, plan.pool.max_agents), (3, Some(3)));
    drop(again);

    // Another --local-agents: the run starts a new log.
    let other = Options {
        local_run: Some(testfleet::config::LocalRun { agents: 2, ..run }),
        ..opts
    };
    assert_eq!(reopen(&other).unwrap().replayed, 0);
}

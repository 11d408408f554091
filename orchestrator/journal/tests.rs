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
    let mut a = Appender::start(opened.db, path.to_path_buf(), opened.next_seq, move |w| {
        let _ = tx.send(w);
    })
    .unwrap();
    let mut last = 0;
    for (e, at, _) in events {
        last = a.append(encode(e, *at, &PlanSource::OwnConfig));
    }
    if last > 0 {
        loop {
            match rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the writer answers")
            {
                Written::Durable(seq) if seq >= last => break,
                Written::Durable(_) => {}
                Written::Failed(why) => panic!("{why}"),
            }
        }
    }
    drop(a);
    // The writer thread lets go of the file once its channel closes.
    std::thread::sleep(Duration::from_millis(200));
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
    std::thread::sleep(Duration::from_millis(200));

    // Another --local-agents: the run starts a new log.
    let other = Options {
        local_run: Some(testfleet::config::LocalRun { agents: 2, ..run }),
        ..opts
    };
    assert_eq!(reopen(&other).unwrap().replayed, 0);
}

//! The event log meets bad data: a damaged tail is cut and the rest
//! replayed; a log written for another config is refused, naming the file;
//! a log that cannot be written (the disk is full) stops new work with a
//! clear error, and what was durable is kept.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

const SUITE: &str = r#"templates:
  quick:
    command: "true"
orchestrator:
  name: durable
  task_definitions:
    unit_tests:
      - {id: "ONE", template: quick, resources: {memory_mb: 64, timeout: 60}}
      - {id: "TWO", template: quick, dependencies: ["ONE"], resources: {memory_mb: 64, timeout: 60}}
"#;

fn log_lines(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(&server.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn serve(config: &Path, dir: &Path) -> anyhow::Result<Server> {
    Server::serve(Serve {
        config,
        dir,
        insecure: true,
        env: &[],
        echo_log: false,
    })
}

#[test]
fn a_damaged_tail_is_cut_logged_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, SUITE).unwrap();
    let mut server = Server::start(&config, dir.path());
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    server.wait_for_status(&["completed"], Duration::from_secs(30));
    server.kill9();

    // Power lost mid-write: an entry after the last whole one is garbage.
    let file = server.data_dir.join("events.redb");
    let last = {
        use redb::{ReadableTable, TableDefinition};
        let events: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
        let db = redb::Database::open(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let last = {
            let mut t = txn.open_table(events).unwrap();
            let last = t.last().unwrap().unwrap().0.value();
            t.insert(last + 1, &b"\x13\x37half an entry"[..]).unwrap();
            last
        };
        txn.commit().unwrap();
        last
    };
    server.restart().unwrap();
    let lines = log_lines(&server);
    let cut = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cut the event log's damaged tail"))
        })
        .unwrap_or_else(|| panic!("the cut is logged: {}", server.log.display()));
    assert_eq!(cut["from"], last + 1);
    assert_eq!(cut["cut"], 1);
    assert!(
        cut["journal"].as_str().unwrap().ends_with("events.redb"),
        "{cut}"
    );
    // Everything before it is still there: the suite it ran.
    assert_eq!(server.status()["status"], "completed");
    let report = server.http_get("/api/v1/final-report").1;
    assert_eq!(report["summary"]["completed_success"], 2);
}

#[test]
fn a_log_written_for_another_config_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, SUITE).unwrap();
    let mut server = Server::start(&config, dir.path());
    server.kill9();
    std::fs::write(&config, SUITE.replace("name: durable", "name: another")).unwrap();
    let refused = serve(&config, dir.path());
    assert!(
        refused.is_err(),
        "an orchestrator started on another config's log"
    );
    let log = std::fs::read_to_string(dir.path().join("orchestrator.log")).unwrap();
    let file = dir.path().join("data/events.redb");
    assert!(
        log.contains(&format!(
            "{}: this event log was written with another config",
            file.display()
        )),
        "{log}"
    );
}

#[test]
fn a_full_disk_stops_new_work_with_a_clear_error_and_keeps_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, SUITE).unwrap();
    // Room for the log's first entries, not for a 2 MB submitted config.
    let mut server = Server::serve_with_file_size(
        Serve {
            config: &config,
            dir: dir.path(),
            insecure: true,
            env: &[],
            echo_log: false,
        },
        1 << 20,
    )
    .unwrap();
    let big = dir.path().join("big.yaml");
    let padding = format!("# {}\n", "x".repeat(100)).repeat(20_000);
    std::fs::write(&big, format!("{padding}{SUITE}")).unwrap();
    let submit = server.client(&["submit", big.to_str().unwrap()]);
    assert!(!submit.status.success(), "{}", show(&submit));
    let said = show(&submit);
    let file = server.data_dir.join("events.redb");
    assert!(
        said.contains(&format!(
            "the event log {} cannot be written",
            file.display()
        )),
        "{said}"
    );
    assert!(said.contains("starts no new work"), "{said}");
    // It is still up, says why to operators, and refuses other commands too.
    let again = server.client(&["submit"]);
    assert!(!again.status.success(), "{}", show(&again));
    assert!(
        show(&again).contains("cannot be written"),
        "{}",
        show(&again)
    );
    assert!(
        log_lines(&server).iter().any(|l| l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the event log cannot be written"))),
        "the failure is logged: {}",
        server.log.display()
    );
    // With room again, it starts from what was durable: the suite whose
    // submit could not be logged was never taken, and a new one is.
    server.restart().unwrap();
    assert_eq!(server.status()["status"], "idle", "{}", server.status());
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
}

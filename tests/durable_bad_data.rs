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

/// ONE waits for the file `go` beside the suite, then finishes; TWO,
/// which waits on it, leaves `two.ran`.
fn gated_suite(dir: &Path) -> String {
    let go = dir.join("go");
    let two = dir.join("two.ran");
    format!(
        r#"templates:
  gated:
    command: "sh -c 'while [ ! -e {go} ]; do sleep 0.05; done'"
  mark:
    command: "touch {two}"
orchestrator:
  name: durable
  task_definitions:
    unit_tests:
      - {{id: "ONE", template: gated, resources: {{memory_mb: 64, timeout: 60}}}}
      - {{id: "TWO", template: mark, dependencies: ["ONE"], resources: {{memory_mb: 64, timeout: 60}}}}
"#,
        go = go.display(),
        two = two.display()
    )
}

fn task_field(status: &Value, id: &str, field: &str) -> Value {
    status["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task_id"] == id))
        .map_or(Value::Null, |t| t[field].clone())
}

#[test]
fn a_full_disk_stops_new_work_with_a_clear_error_and_keeps_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    let suite = gated_suite(dir.path());
    std::fs::write(&config, &suite).unwrap();
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
    let _agent = start_agent(&server.endpoint(), "agent_a", dir.path(), &[]);
    server.wait_for_agents(1);
    assert_eq!(server.http_post("/api/v1/execute-suite", "{}").0, 202);
    wait_for("ONE running", Duration::from_secs(30), || {
        (task_field(&server.status(), "ONE", "status") == "running").then_some(())
    });

    // A second submit while ONE runs: logged before it is refused, and
    // its 2 MB do not fit.
    let big = dir.path().join("big.yaml");
    let padding = format!("# {}\n", "x".repeat(100)).repeat(20_000);
    std::fs::write(&big, format!("{padding}{suite}")).unwrap();
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

    // Status says so: not "running", and the sentence names the data dir
    // and the OS's error.
    let status = server.status();
    assert_eq!(status["status"], "halted", "{status}");
    let detail = status["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains(&format!("the data dir {}", server.data_dir.display())),
        "{detail}"
    );
    assert!(detail.contains("os error 27"), "EFBIG named: {detail}");
    let shown = server.client(&["status"]);
    assert!(
        show(&shown).contains("starts no new work"),
        "{}",
        show(&shown)
    );
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
                .is_some_and(|m| m.starts_with("the event log cannot be written")
                    && m.contains("os error 27"))),
        "the failure is logged: {}",
        server.log.display()
    );

    // ONE ends; its result is not taken, and TWO is not handed out.
    std::fs::write(dir.path().join("go"), "").unwrap();
    wait_for("ONE's result refused", Duration::from_secs(30), || {
        log_lines(&server)
            .iter()
            .any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("a result was not taken"))
            })
            .then_some(())
    });
    let status = server.status();
    assert_eq!(task_field(&status, "TWO", "attempts"), 0, "{status}");
    assert!(
        !log_lines(&server)
            .iter()
            .any(|l| l["message"] == "task_assigned" && l["task_id"] == "TWO"),
        "TWO was assigned after the failure: {}",
        server.log.display()
    );
    assert!(!dir.path().join("two.ran").exists());

    // With room again, it starts from what was durable: the suite goes on,
    // ONE's result (re-sent by its agent) counts once, TWO runs, and the
    // submit that could not be logged was never taken.
    server.restart().unwrap();
    server.wait_for_status(&["completed"], Duration::from_secs(60));
    let status = server.status();
    assert_eq!(task_field(&status, "ONE", "attempts"), 1, "{status}");
    assert_eq!(task_field(&status, "TWO", "status"), "completed_success");
    assert!(dir.path().join("two.ran").exists());
}

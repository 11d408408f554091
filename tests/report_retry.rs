//! A report that cannot be written at the suite's end is kept, served, and
//! written once its directory can take it. Here the data dir's `reports`
//! is a file, so no directory can be made under it (root included); the
//! test then puts a directory in its place.

use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

const SUITE: &str = "\
templates:
  quick:
    command: \"echo quick\"
orchestrator:
  name: report_retry
  task_definitions:
    unit_tests:
      - {id: \"QUICK\", template: quick, resources: {memory_mb: 64, cpu_cores: 1, timeout: 60}}
";

#[test]
fn a_report_that_could_not_be_written_is_kept_served_and_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, SUITE).unwrap();
    let reports = dir.path().join("data/reports");
    std::fs::create_dir_all(reports.parent().unwrap()).unwrap();
    std::fs::write(&reports, "a file where the reports directory goes").unwrap();

    let server = Server::start_env(
        &config,
        dir.path(),
        true,
        &[("RUST_LOG", "info,orchestrator::output::report_retry=debug")],
    );
    let _agent = start_agent(&server.endpoint(), "agent_001", dir.path(), &[]);
    server.wait_for_agents(1);
    let submitted = server.client(&["submit"]);
    assert!(submitted.status.success(), "{}", show(&submitted));
    server.wait_for_status(&["completed"], Duration::from_secs(30));
    let suite_id = server.status()["suite_id"].as_str().unwrap().to_string();
    let log = || std::fs::read_to_string(&server.log).unwrap();

    // Tried again (twice at least), and told once.
    wait_for(
        "two more tries to write the report",
        Duration::from_secs(20),
        || {
            log()
                .lines()
                .any(|l| l.contains("the report is still not written") && l.contains("\"tries\":3"))
                .then_some(())
        },
    );
    let told = log()
        .lines()
        .filter(|l| l.contains("could not write the report"))
        .count();
    assert_eq!(told, 1, "{}", log());
    assert!(log().contains("Not a directory"), "the reason: {}", log());
    // Served from memory meanwhile.
    let (code, report) = server.http_get("/api/v1/final-report");
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["suite_id"], suite_id.as_str());
    assert_eq!(report["status"], "completed");

    // Room again: the report lands on its own.
    std::fs::remove_file(&reports).unwrap();
    std::fs::create_dir(&reports).unwrap();
    let path = reports.join(&suite_id).join("report.json");
    let written: Value = wait_for("report.json to be written", Duration::from_secs(20), || {
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
    });
    assert_eq!(written["suite_id"], suite_id.as_str());
    assert_eq!(written["status"], "completed");
    assert!(reports.join(&suite_id).join("junit.xml").exists());
    wait_for("the success to be logged", Duration::from_secs(5), || {
        log()
            .contains("wrote the report that could not be written at the suite's end")
            .then_some(())
    });
}

//! Resident pytest runners, through `orchestrator run` with real agents
//! and real pytest: one process per agent runs batch after batch, the one
//! that collected among them, its fixtures ended properly; a test that
//! kills it is named and a new one runs the rest; while one agent
//! collects, the others warm their runners; and a runner no batch comes
//! for ends after the agent's idle timeout.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use testfleet_testkit::*;

/// What the suite's tests and fixtures wrote to `log`: (what, pid, rest).
fn log_lines(log: &Path) -> Vec<(String, u32, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            let what = w.next().unwrap().to_string();
            let pid = w.next().unwrap().parse().unwrap();
            (what, pid, w.next().unwrap_or("").to_string())
        })
        .collect()
}

/// A conftest that logs each pytest process it is loaded in, and whose
/// session and module fixtures log when they start and end, and a helper
/// the tests call to log their pid.
fn logging_conftest(project: &Path, log: &Path) {
    write_file(
        project,
        "tests/conftest.py",
        &format!(
            "import os, pytest\nLOG = {:?}\ndef note(what, rest=''):\n    with open(LOG, 'a') as f:\n        f.write(f'{{what}} {{os.getpid()}} {{rest}}\\n')\ndef pytest_configure(config):\n    note('configure')\n@pytest.fixture(scope='session', autouse=True)\ndef session_fixture():\n    note('session-up')\n    yield\n    note('session-down')\n@pytest.fixture(scope='module', autouse=True)\ndef module_fixture(request):\n    note('module-up', request.module.__name__)\n    yield\n    note('module-down', request.module.__name__)\n@pytest.fixture(autouse=True)\ndef pid_of_test(request):\n    note('test', request.node.nodeid)\n",
            log.display().to_string()
        ),
    );
}

#[test]
fn one_pytest_process_runs_batch_after_batch_and_ends_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let log = project.join("fixtures.log");
    logging_conftest(project, &log);
    for f in 0..4 {
        let mut body = String::from("import time\n");
        for i in 0..15 {
            body.push_str(&format!("def test_{i:02}():\n    time.sleep(0.05)\n"));
        }
        write_file(project, &format!("tests/test_file{f}.py"), &body);
    }
    let config = split_pytest_suite(project, &[], "");
    let (out, report) = run_suite(
        &config,
        2,
        &project.join("report"),
        &["--agent-cpu-cores", "1"],
    );
    assert_eq!(
        task(&report, "unit")["status"],
        "completed_success",
        "{}",
        show(&out)
    );
    let tests = split_tests_of(&report);
    assert_eq!(tests.len(), 60);
    let batch_of: std::collections::HashMap<String, String> = task(&report, "unit")["split"]
        ["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["attempts"].as_array().unwrap().len(), 1, "{t}");
            (
                t["id"].as_str().unwrap().to_string(),
                t["attempts"][0]["batch_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lines = log_lines(&log);
    let mut batches_of_pid: std::collections::HashMap<u32, HashSet<&str>> = Default::default();
    for (what, pid, id) in &lines {
        if what == "test" {
            let batch = batch_of
                .get(id)
                .unwrap_or_else(|| panic!("{id} not reported"));
            batches_of_pid.entry(*pid).or_default().insert(batch);
        }
    }
    let batches: HashSet<&String> = batch_of.values().collect();
    // One runner per agent (one batch at a time each), however many batches.
    assert!(batches_of_pid.len() <= 2, "{batches_of_pid:?}");
    assert!(
        batches.len() > batches_of_pid.len(),
        "more batches ({}) than pytest processes: {batches_of_pid:?}",
        batches.len()
    );
    assert!(
        batches_of_pid.values().any(|b| b.len() >= 2),
        "{batches_of_pid:?}"
    );
    // The process that collected ran batches too: no agent collected twice.
    let processes: HashSet<u32> = lines
        .iter()
        .filter(|l| l.0 == "configure")
        .map(|l| l.1)
        .collect();
    assert!(
        processes.len() <= 2 && batches_of_pid.keys().all(|p| processes.contains(p)),
        "pytest processes {processes:?}, of which ran tests {batches_of_pid:?}"
    );
    // Each runner set its session up once and tore it down when its agent
    // stopped; every module fixture it set up it tore down.
    for pid in batches_of_pid.keys() {
        let count = |what: &str| lines.iter().filter(|l| l.0 == what && l.1 == *pid).count();
        assert_eq!(
            (count("session-up"), count("session-down")),
            (1, 1),
            "{pid}: {lines:?}"
        );
        assert!(count("module-up") >= 1, "{lines:?}");
        assert_eq!(count("module-up"), count("module-down"), "{pid}: {lines:?}");
    }
}

#[test]
fn a_test_that_kills_its_resident_runner_is_named_and_a_new_runner_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let log = project.join("fixtures.log");
    logging_conftest(project, &log);
    let mut body = String::from("import ctypes, time\n");
    for i in 0..20 {
        let crash = if i == 10 {
            "    ctypes.string_at(0)\n"
        } else {
            ""
        };
        body.push_str(&format!(
            "def test_{i:02}():\n    time.sleep(0.05)\n{crash}"
        ));
    }
    write_file(project, "tests/test_crash.py", &body);
    // Short batches: the culprit's runner has run several before it.
    let config = split_pytest_suite(project, &[], ", max_batch_seconds: 0.2");
    let (out, report) = run_suite(
        &config,
        1,
        &project.join("report"),
        &["--agent-cpu-cores", "1"],
    );
    let tests = split_tests_of(&report);
    assert_eq!(tests.len(), 20, "{}", show(&out));
    for (id, verdict, runs) in &tests {
        let expected = if id.ends_with("test_10") {
            "crashed"
        } else {
            "passed"
        };
        assert_eq!(verdict, expected, "{id}: {runs:?}");
    }
    let reason = task(&report, "unit")["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("tests/test_crash.py::test_10 (crashed)"),
        "{reason}"
    );
    // The tests up to the culprit ran in one process, over every batch
    // before it; none after it did.
    let first_pid = |n: u32| -> u32 {
        let id = format!("tests/test_crash.py::test_{n:02}");
        log_lines(&log)
            .iter()
            .find(|l| l.0 == "test" && l.2 == id)
            .unwrap_or_else(|| panic!("{id} did not run"))
            .1
    };
    let crashed = first_pid(10);
    assert!(
        (0..10).all(|n| first_pid(n) == crashed),
        "{:?}",
        log_lines(&log)
    );
    let batches_before: HashSet<String> = task(&report, "unit")["split"]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_str().unwrap() <= "tests/test_crash.py::test_10")
        .map(|t| t["attempts"][0]["batch_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        batches_before.len() >= 2,
        "one process, several batches: {batches_before:?}"
    );
    assert!(
        (11..20).all(|n| first_pid(n) != crashed),
        "{:?}",
        log_lines(&log)
    );
}

#[test]
fn while_one_agent_collects_the_others_warm_their_runners_and_run_batches_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let log = project.join("processes.log");
    write_file(
        project,
        "tests/conftest.py",
        &format!(
            "import os, time, pytest\nLOG = {:?}\ndef note(what, rest=''):\n    with open(LOG, 'a') as f:\n        f.write(f'{{what}} {{os.getpid()}} {{rest}}\\n')\ndef pytest_configure(config):\n    note('configure', repr(time.time()))\ndef pytest_collection_finish(session):\n    note('collected', repr(time.time()))\n@pytest.fixture(autouse=True)\ndef pid_of_test(request):\n    note('test', request.node.nodeid)\n",
            log.display().to_string()
        ),
    );
    // A collection that takes seconds, as a big suite's imports do.
    let report = run_slow_collecting_suite(project, 3, "");
    let lines = log_lines(&log);
    let times = |what: &str| -> Vec<(u32, f64)> {
        lines
            .iter()
            .filter(|l| l.0 == what)
            .map(|l| (l.1, l.2.trim().parse().unwrap()))
            .collect()
    };
    let (started, collected) = (times("configure"), times("collected"));
    assert_eq!(started.len(), 2, "one pytest process per agent: {lines:?}");
    let last_start = started.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let first_collected = collected.iter().map(|c| c.1).fold(f64::MAX, f64::min);
    assert!(
        last_start < first_collected,
        "the second agent's runner started {:.2} s after the first collection ended: {lines:?}",
        last_start - first_collected
    );
    let ran: HashSet<u32> = lines
        .iter()
        .filter(|l| l.0 == "test")
        .map(|l| l.1)
        .collect();
    let processes: HashSet<u32> = started.iter().map(|s| s.0).collect();
    assert_eq!(ran, processes, "both runners ran tests: {lines:?}");
    assert_eq!(split_tests_of(&report).len(), 30);
}

#[test]
fn a_warmed_runner_that_dies_before_it_is_ready_loses_no_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let log = project.join("processes.log");
    // Runners started on a warm hint die as they start.
    write_file(
        project,
        "tests/conftest.py",
        &format!(
            "import os\nLOG = {:?}\ndef pytest_configure(config):\n    warm = os.environ.get('TESTFLEET_ATTEMPT_ID', '').endswith('.warm')\n    with open(LOG, 'a') as f:\n        f.write(('warm' if warm else 'other') + ' ' + str(os.getpid()) + '\\n')\n    if warm:\n        os._exit(3)\n",
            log.display().to_string()
        ),
    );
    // Short batches: the agent that warmed takes one early.
    let report = run_slow_collecting_suite(project, 1, ", max_batch_seconds: 0.2");
    let tests = split_tests_of(&report);
    assert_eq!(tests.len(), 30);
    assert!(tests.iter().all(|t| t.1 == "passed"), "{tests:?}");
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines.matches("warm ").count(),
        1,
        "one hint, one warmed runner: {lines}"
    );
    // Its batch found it dead and ran in a process of its own; runners
    // were not refused there, so later batches went back to one.
    let logs: String = std::fs::read_dir(project.join("report/agents"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("the warmed runner ended before it was ready"),
        "{logs}"
    );
    assert!(!logs.contains("running batches one process each"), "{logs}");
}

/// 30 tests of 0.05 s in one file whose import takes `import_s`, split
/// (with more `split` keys) over 2 agents of 1 core; it must succeed.
fn run_slow_collecting_suite(project: &Path, import_s: u32, split: &str) -> serde_json::Value {
    let mut body = format!("import time\ntime.sleep({import_s})\n");
    for i in 0..30 {
        body.push_str(&format!("def test_{i:02}():\n    time.sleep(0.05)\n"));
    }
    write_file(project, "tests/test_slow_import.py", &body);
    let config = split_pytest_suite(project, &[], split);
    let (out, report) = run_suite(
        &config,
        2,
        &project.join("report"),
        &["--agent-cpu-cores", "1"],
    );
    assert_eq!(
        task(&report, "unit")["status"],
        "completed_success",
        "{}",
        show(&out)
    );
    report
}

#[test]
fn a_runner_no_batch_comes_for_is_ended_after_the_agents_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    let log = project.join("fixtures.log");
    logging_conftest(project, &log);
    for f in 0..2 {
        write_file(
            project,
            &format!("tests/test_idle{f}.py"),
            "def test_a():\n    pass\ndef test_b():\n    pass\n",
        );
    }
    let config = split_pytest_suite(project, &[], "");
    let (orchestrator_dir, agent_dir) = (project.join("orchestrator"), project.join("agent"));
    for d in [&orchestrator_dir, &agent_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let server = Server::start(&config, &orchestrator_dir);
    let agent = start_agent(
        &server.endpoint(),
        "agent_001",
        &agent_dir,
        &["--runner-idle-timeout", "5"],
    );
    server.wait_for_agents(1);
    let (code, body) = server.http_post("/api/v1/execute-suite", "{}");
    assert_eq!(code, 202, "{body}");
    let status = server.wait_for_status(&["completed", "failed"], Duration::from_secs(120));
    assert_eq!(status, "completed", "{}", server.status());
    let runners: HashSet<u32> = log_lines(&log)
        .into_iter()
        .filter(|l| l.0 == "test")
        .map(|l| l.1)
        .collect();
    assert!(!runners.is_empty(), "{:?}", log_lines(&log));
    let ended = |lines: &[(String, u32, String)]| -> HashSet<u32> {
        lines
            .iter()
            .filter(|l| l.0 == "session-down")
            .map(|l| l.1)
            .collect()
    };
    assert!(
        ended(&log_lines(&log)).is_empty(),
        "a runner ended before it had been idle 5 s: {:?}",
        log_lines(&log)
    );
    // The suite is over and the agent stays: its runners wait idle, and are
    // ended (their sessions torn down) once 5 s pass with no batch.
    let ended = wait_for(
        "every idle runner's session torn down",
        Duration::from_secs(30),
        || {
            let ended = ended(&log_lines(&log));
            runners.is_subset(&ended).then_some(ended)
        },
    );
    assert!(
        !process_gone(agent.pid()),
        "the runner ended with its agent, not for being idle: {ended:?}"
    );
    let agent_log = std::fs::read_to_string(agent_dir.join("agent_001.log")).unwrap();
    assert!(
        agent_log.contains("ending resident runners no batch came for"),
        "{agent_log}"
    );
    wait_for("no runner process left", Duration::from_secs(15), || {
        processes_in(project).is_empty().then_some(())
    });
}

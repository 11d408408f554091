//! What a new user meets in their first hour (issue 19): where a local run
//! leaves things, two runs at once, the summary a run prints, the client
//! commands' output, help texts and logs. Real binaries throughout.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testfleet_testkit::*;

/// `orchestrator run CONFIG --local-agents N` started in `cwd`, as a user
/// types it (default report dir and cache), plus `extra`.
fn run_in(cwd: &Path, config: &str, agents: u32, extra: &[&str]) -> Output {
    Command::new(orchestrator_bin())
        .current_dir(cwd)
        .args(["run", config, "--local-agents", &agents.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run orchestrator run")
}

const CACHED_SUITE: &str = r#"
templates:
  t:
    setup: "echo ran >> {config_dir}/setups.txt && touch {workdir}/venv-marker"
    command: "test -e {workdir}/venv-marker"
orchestrator:
  name: cached
  task_definitions:
    u:
      - {id: "A", template: t}
"#;

#[test]
fn agent_workdirs_go_to_a_cache_beside_the_config_and_setup_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("suite.yaml"), CACHED_SUITE).unwrap();
    for _ in 0..2 {
        let out = run_in(dir.path(), "project/suite.yaml", 1, &[]);
        assert!(out.status.success(), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(".testfleet-cache"),
            "the run says where the workdirs are: {stderr}"
        );
    }
    let setups = std::fs::read_to_string(project.join("setups.txt")).unwrap();
    assert_eq!(setups.lines().count(), 1, "the second run reused the setup");

    let workdir = project.join(".testfleet-cache/agents/agent_001");
    assert!(
        workdir.join("venv-marker").exists(),
        "setup's files are in the cache"
    );
    assert!(
        !workdir.join("attempts").exists(),
        "the attempts' files were uploaded to the report, and pruned from the cache"
    );
    // The report holds the report, the logs and the artifacts: no workdir.
    let report = dir.path().join("testfleet-report");
    assert!(report.join("report.json").exists());
    let agents: Vec<String> = std::fs::read_dir(report.join("agents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(agents, ["agent_001.log"], "only the agent's log");

    // Neither shows up in git.
    let ignore = std::fs::read_to_string(repo_root().join(".gitignore")).unwrap();
    for line in ["testfleet-report/", ".testfleet-cache/"] {
        assert!(ignore.lines().any(|l| l == line), "{line} in .gitignore");
    }
}

/// A run whose one task waits for `go` beside the config (at most 60 s),
/// after saying it started.
const WAITING_SUITE: &str = r#"
templates:
  t:
    command: "touch {config_dir}/started; i=0; while [ ! -e {config_dir}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
orchestrator:
  name: waiting
  task_definitions:
    u:
      - {id: "A", template: t}
"#;

fn spawn_run(cwd: &Path, extra: &[&str]) -> Proc {
    let child = Command::new(orchestrator_bin())
        .current_dir(cwd)
        .args(["run", "suite.yaml", "--local-agents", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc {
        child,
        name: "orchestrator run".into(),
    }
}

fn finish(mut p: Proc) -> (std::process::ExitStatus, String) {
    let status = p.wait_exit(Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(p.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn a_second_run_on_the_same_report_dir_or_cache_is_refused_naming_it_and_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), WAITING_SUITE).unwrap();
    let first = spawn_run(dir.path(), &[]);
    let first_pid = first.pid();
    wait_for(
        "the first run's task to start",
        Duration::from_secs(60),
        || dir.path().join("started").exists().then_some(()),
    );

    // The same report dir.
    let (status, stderr) = finish(spawn_run(dir.path(), &[]));
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "the report directory {} is in use by another `orchestrator run` (pid {first_pid})",
            dir.path()
                .join("testfleet-report")
                .canonicalize()
                .unwrap()
                .display()
        )),
        "{stderr}"
    );
    // Its own report dir, but the same agent cache.
    let (status, stderr) = finish(spawn_run(dir.path(), &["--report-dir", "other"]));
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "the agent cache {} is in use by another `orchestrator run` (pid {first_pid})",
            dir.path()
                .join(".testfleet-cache")
                .canonicalize()
                .unwrap()
                .display()
        )) && stderr.contains("--cache-dir DIR"),
        "{stderr}"
    );
    assert!(!dir.path().join("other/report.json").exists());

    // The first run was left alone: its one attempt finishes.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let (status, stderr) = finish(first);
    assert!(status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("testfleet-report/report.json")).unwrap(),
    )
    .unwrap();
    let a = task(&report, "A");
    assert_eq!(a["status"], "completed_success");
    assert_eq!(a["attempts"].as_array().unwrap().len(), 1, "{a}");

    // With the first run over, the directory is free again.
    std::fs::remove_file(dir.path().join("started")).unwrap();
    let (status, stderr) = finish(spawn_run(dir.path(), &[]));
    assert!(status.success(), "{stderr}");
}

/// Starts an agent against `endpoint` and waits for its log to say it
/// cannot reach the orchestrator with `answered` and `cause` in the
/// sentences; returns the log.
fn unreachable_says(endpoint: &str, answered: &str, cause: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(endpoint, "agent_001", dir.path(), &[]);
    let log = dir.path().join("agent_001.log");
    wait_for(
        &format!("the agent to say why it cannot reach {endpoint}"),
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            let found = text.lines().any(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                    return false;
                };
                v["message"] == "cannot reach the orchestrator; retrying"
                    && v["dialled"] == endpoint
                    && v["answered"].as_str().is_some_and(|a| a.contains(answered))
                    && v["likely_cause"]
                        .as_str()
                        .is_some_and(|c| c.contains(cause))
            });
            found.then_some(text)
        },
    )
}

#[test]
fn an_agent_that_cannot_reach_its_orchestrator_says_what_it_dialled_what_answered_and_why() {
    // Nothing listens: a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = unreachable_says(
        &format!("http://127.0.0.1:{port}"),
        "the connection was refused",
        "no orchestrator listens there",
    );
    assert!(
        !log.contains("lost the orchestrator"),
        "it never connected: {log}"
    );

    // The orchestrator's metrics port instead of its API port.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), CACHED_SUITE).unwrap();
    let server = Server::start(&dir.path().join("suite.yaml"), dir.path());
    unreachable_says(
        &format!("http://{}", server.metrics_addr),
        "status 404",
        "metrics port",
    );

    // http:// against a TLS port.
    let certs = dir.path().join("certs");
    let out = Command::new(orchestrator_bin())
        .args(["certs", "init", "--agents", "1", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let tls_config = dir.path().join("tls.yaml");
    std::fs::write(
        &tls_config,
        format!(
            "tls: {{ca: {0}/ca.pem, cert: {0}/server.pem, key: {0}/server.key}}\n{CACHED_SUITE}",
            certs.display()
        ),
    )
    .unwrap();
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let tls_server = Server::start_with(&tls_config, &tls_dir, false);
    unreachable_says(
        &format!("http://{}", tls_server.addr),
        "A server",
        "expects TLS",
    );
}

/// A run that logs a little of everything: an agent connecting, a command
/// that exits 2, a setup that fails, a task that succeeds.
const MIXED_SUITE: &str = r#"
failure_handling: {max_retries: 0, retry_delay_seconds: 0, escalation_threshold: 1}
templates:
  ok: {command: "echo fine"}
  exits: {command: "echo broken >&2; exit 2"}
  unset: {setup: "exit 3", command: "true"}
orchestrator:
  name: mixed
  task_definitions:
    u:
      - {id: "OK", template: ok}
      - {id: "EXITS", template: exits}
      - {id: "UNSET", template: unset}
"#;

#[test]
fn json_log_fields_are_values_not_rust_debug_text() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), MIXED_SUITE).unwrap();
    let out = run_in(dir.path(), "suite.yaml", 1, &["--on-escalation", "skip"]);
    assert!(!out.status.success(), "two tasks fail: {}", show(&out));
    let report = dir.path().join("testfleet-report");
    let logs = [
        report.join("orchestrator.log"),
        report.join("agents/agent_001.log"),
    ];
    // What Rust's `{:?}` leaves in a field: an Option, a struct, a tuple
    // struct such as ExitStatus(unix_wait_status(512)).
    let debug = regex::Regex::new(
        r"^(Some|None|Ok|Err)\b|^[A-Z][A-Za-z]+ \{ [a-z_]+: |^[A-Z][A-Za-z]+\(|unix_wait_status",
    )
    .unwrap();
    let mut lines = 0;
    let mut seen = std::collections::BTreeSet::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", log.display()));
            lines += 1;
            for (key, value) in v.as_object().unwrap() {
                seen.insert(key.clone());
                if let Some(s) = value.as_str() {
                    assert!(
                        !debug.is_match(s),
                        "{}: field {key} holds Rust debug text {s:?}: {line}",
                        log.display()
                    );
                }
            }
        }
    }
    assert!(lines > 10, "the logs say something");
    // The fields that used to be debug text are there, as values.
    for key in ["peer", "memory_mb", "cpu_cores", "exit_code", "error_type"] {
        assert!(seen.contains(key), "no {key} field in {seen:?}");
    }
}

const PASSES_WITH_A_SKIP: &str = r#"<testsuite name="s" tests="3" failures="0" errors="0" skipped="1"><testcase classname="t" name="a"/><testcase classname="t" name="b"/><testcase classname="t" name="c"><skipped/></testcase></testsuite>"#;
const ONE_FAILS: &str = r#"<testsuite name="s" tests="2" failures="1" errors="0" skipped="0"><testcase classname="t" name="a"/><testcase classname="t" name="b"><failure message="expected 1, got 2">assert 1 == 2</failure></testcase></testsuite>"#;

const COUNTED_SUITE: &str = r#"
failure_handling: {max_retries: 0, retry_delay_seconds: 0, escalation_threshold: 1}
templates:
  skips: {command: "cp {config_dir}/skips.xml {artifacts_dir}/junit.xml", junit: junit.xml}
  fails: {command: "cp {config_dir}/fails.xml {artifacts_dir}/junit.xml; exit 1", junit: junit.xml}
orchestrator:
  name: counted
  task_definitions:
    u:
      - {id: "SKIPS", template: skips, success_criteria: {pass_rate: 1.0}}
      - {id: "GROUP", template: skips, subtasks: ["G1", "G2"], success_criteria: {pass_rate: 1.0}}
      - {id: "FAILS", template: fails}
"#;

#[test]
fn counts_agree_and_skipped_tests_do_not_lower_the_pass_rate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), COUNTED_SUITE).unwrap();
    std::fs::write(dir.path().join("skips.xml"), PASSES_WITH_A_SKIP).unwrap();
    std::fs::write(dir.path().join("fails.xml"), ONE_FAILS).unwrap();
    let out = run_in(dir.path(), "suite.yaml", 1, &["--on-escalation", "skip"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("testfleet-report/report.json")).unwrap(),
    )
    .unwrap();

    // Every test that ran passed: pass_rate 1.0 holds, for a task and for a
    // group of subtasks, with skips.
    for id in ["SKIPS", "GROUP"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "completed_success", "{id}: {t}");
        assert_eq!(t["criteria"][0]["actual"], 1.0, "{id}");
    }
    // The totals count the failed task's tests too, and the skipped ones
    // beside the pass rate: SKIPS, G1 and G2 ran 2 and skipped 1 each;
    // FAILS ran 2 and failed 1.
    let s = &report["summary"];
    assert_eq!(
        (
            s["total_tests"].as_u64(),
            s["tests_passed"].as_u64(),
            s["tests_failed"].as_u64(),
            s["tests_skipped"].as_u64()
        ),
        (Some(11), Some(7), Some(1), Some(3)),
        "{s}"
    );
    assert_eq!(s["pass_rate"], 7.0 / 8.0);
    assert!(
        stdout
            .contains("tasks succeeded; 11 tests: 7 passed, 1 failed, 3 skipped (pass rate 87.5%)"),
        "{stdout}"
    );
    // Why FAILS ended, in the table.
    assert!(
        stdout.contains("attempt 1 on agent_001 failed: calculation_error: expected 1, got 2"),
        "{stdout}"
    );
    // No coverage was configured: the event lines do not make one up.
    assert!(
        stderr.contains("finished on agent_001: 2/3 tests passed"),
        "{stderr}"
    );
    assert!(!stderr.contains("coverage 0.0%"), "{stderr}");
}

/// Its one task reads a file beside it by a relative path.
const RELATIVE_SUITE: &str = r#"
templates:
  t: {command: "grep -q here data.txt"}
orchestrator:
  name: relative
  task_definitions:
    u:
      - {id: "READS", template: t}
"#;

#[test]
fn client_commands_run_a_file_where_it_is_and_say_what_a_user_needs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.yaml"), CACHED_SUITE).unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("suite.yaml"), RELATIVE_SUITE).unwrap();
    std::fs::write(project.join("data.txt"), "here\n").unwrap();
    // The server runs in the test's directory, not the project's.
    let server = Server::start(&dir.path().join("server.yaml"), dir.path());
    let _agent = start_agent(
        &server.endpoint(),
        "agent_001",
        &dir.path().join("agents"),
        &["--labels", "zone=a,rack=7"],
    );
    server.wait_for_agents(1);

    let status = server.client(&["status"]);
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "no suite has run on this orchestrator yet: `orchestrator submit` starts one\n"
    );
    let agents = String::from_utf8_lossy(&server.client(&["agents"]).stdout).into_owned();
    assert!(agents.contains("labels rack=7,zone=a"), "{agents}");

    // A relative path, from the directory a user would type it in.
    let out = Command::new(orchestrator_bin())
        .current_dir(dir.path())
        .args(["submit", "project/suite.yaml", "--wait", "--insecure"])
        .args(["--endpoint", &server.endpoint()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    // The same summary table `run` prints.
    assert!(stdout.contains("suite relative completed\n"), "{stdout}");
    assert!(
        stdout.contains("READS  completed_success        1"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 1 tasks succeeded"), "{stdout}");
}

/// The arguments and options in a `-h` text that have no description.
fn undescribed(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let entry = |l: &str| l.starts_with("  ") && l.trim_start().starts_with(['-', '<', '[']);
    let mut section = false;
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = *line == "Arguments:" || *line == "Options:";
            continue;
        }
        if !section || !entry(line) {
            continue;
        }
        let same_line = line
            .trim()
            .split_once("  ")
            .is_some_and(|(_, text)| !text.trim().is_empty());
        let next_line = lines
            .get(i + 1)
            .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
        if !same_line && !next_line {
            missing.push(line.trim().to_string());
        }
    }
    missing
}

fn help_of(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).arg("-h").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_argument_and_option_says_what_it_is() {
    let orchestrator = orchestrator_bin();
    for command in [
        &["serve"][..],
        &["run"],
        &["check"],
        &["submit"],
        &["status"],
        &["watch"],
        &["report"],
        &["agents"],
        &["drain"],
        &["cancel"],
        &["certs", "init"],
        &["escalations", "list"],
        &["escalations", "resolve"],
    ] {
        let help = help_of(&orchestrator, command);
        assert_eq!(
            undescribed(&help),
            Vec::<String>::new(),
            "orchestrator {}:\n{help}",
            command.join(" ")
        );
    }
    let help = help_of(&agent_bin(), &[]);
    assert_eq!(undescribed(&help), Vec::<String>::new(), "agent:\n{help}");
    for command in ["run", "submit"] {
        let help = help_of(&orchestrator, &[command]);
        // On the option's line, or (in clap's two-line layout) the next.
        let lines: Vec<&str> = help.lines().collect();
        let at = lines.iter().position(|l| l.contains("--timeout")).unwrap();
        assert!(
            lines[at..=at + 1]
                .iter()
                .any(|l| l.contains("0 means no limit")),
            "{command}:\n{help}"
        );
    }
}

/// `orchestrator serve ARGS --insecure` on free ports, until its log says
/// where it listens.
fn serve_listens(dir: &Path, args: &[&str]) -> bool {
    let mut child = Command::new(orchestrator_bin())
        .current_dir(dir)
        .arg("serve")
        .args(args)
        .args([
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--data-dir", "data"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _proc = Proc {
        child,
        name: "orchestrator serve".into(),
    };
    // Until it says where it listens, or exits.
    std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .any(|l| l.contains("\"addr\""))
}

#[test]
fn serve_takes_the_config_as_an_argument_or_as_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("suite.yaml"), CACHED_SUITE).unwrap();
    assert!(serve_listens(dir.path(), &["suite.yaml"]));
    assert!(serve_listens(dir.path(), &["--config", "suite.yaml"]));
    // Neither, or both: refused before anything starts, naming the file.
    let neither = Command::new(orchestrator_bin())
        .args(["serve", "--insecure"])
        .output()
        .unwrap();
    assert!(!neither.status.success());
    assert!(
        String::from_utf8_lossy(&neither.stderr).contains("<FILE>"),
        "{}",
        show(&neither)
    );
    let both = Command::new(orchestrator_bin())
        .current_dir(dir.path())
        .args([
            "serve",
            "suite.yaml",
            "--config",
            "suite.yaml",
            "--insecure",
        ])
        .output()
        .unwrap();
    assert!(!both.status.success(), "{}", show(&both));
}

#[test]
fn an_agent_that_exits_at_once_is_said_with_its_log_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        "agent_pool: {placement_timeout: 3}\ntemplates:\n  t: {command: \"true\"}\norchestrator:\n  task_definitions:\n    u:\n      - {id: A, template: t}\n",
    )
    .unwrap();
    // An "agent" that cannot start: what a wrong --agent-bin, or one that
    // refuses its flags, looks like.
    let broken = dir.path().join("broken-agent");
    std::fs::write(&broken, "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n").unwrap();
    let mut perms = std::fs::metadata(&broken).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&broken, perms).unwrap();

    let started = std::time::Instant::now();
    let out = run_in(
        dir.path(),
        "suite.yaml",
        1,
        &["--agent-bin", broken.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ends, not waits: {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("pool: provision_failed agent_001: could not start it: the agent process exit status: 3 (its log: "),
        "{text}"
    );
    assert!(
        text.contains("testfleet-report/agents/agent_001.log)"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("testfleet-report/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(task(&report, "A")["status"], "failed", "{text}");
}

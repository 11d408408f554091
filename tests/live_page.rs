//! The live page (`/ui`) in a real headless Chromium: it loads during a
//! run, shows every task, follows their states over server-sent events
//! without a reload, shows the report at the end, and resolves an
//! escalation from a button. Under mTLS only an admin certificate opens it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

const TASKS: [&str; 12] = [
    "A1", "A2", "A3", "B1", "B1a", "B1b", "B1c", "B2", "B3", "C1", "C2", "C3",
];

const STATES: &str = "Object.fromEntries([...document.querySelectorAll('.task')].map(e => [e.dataset.task, e.dataset.state]))";

/// Passed: a flaky pass (a timing test of cashcow's on a loaded host) too.
fn passed(state: &Value) -> bool {
    state == "completed_success" || state == "flaky"
}

fn states(b: &mut Browser) -> serde_json::Map<String, Value> {
    b.eval(STATES)
        .unwrap()
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_page_follows_a_cashcow_run_live_and_shows_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_root().join("examples/cashcow/orchestrator_config.yaml");
    let server = Server::start(&config, dir.path());
    // Workdirs kept across runs: the suite's setup (a venv with pytest)
    // then runs once per machine, not once per test run.
    let workdirs = repo_root().join("target/test-workdirs/live_page");
    let _agents: Vec<Proc> = ["agent_001", "agent_002", "agent_003"]
        .iter()
        .map(|id| start_agent(&server.endpoint(), id, &workdirs.join(id), &[]))
        .collect();
    server.wait_for_agents(3);
    let (code, body) = server.http_post("/api/v1/execute-suite", "{}");
    assert_eq!(code, 202, "{body}");
    server.wait_for_status(&["running"], Duration::from_secs(10));

    let page = format!("http://{}/ui", server.addr);
    let mut b = Browser::open(&page, 1440, 1000).expect("chromium opens the page");
    b.wait_for(
        "every task on the page",
        Duration::from_secs(20),
        &format!(
            "(() => {{ const ids = Object.keys({STATES}); return ids.length === 12 && {:?}.every(t => ids.includes(t)); }})()",
            TASKS
        ),
    )
    .unwrap();
    let load_id = b.eval("window.__pageLoadId").unwrap();
    let at_load = states(&mut b);
    // A task still to finish when the page loaded: the page must see it end.
    let pending = TASKS
        .iter()
        .rev()
        .find(|t| !passed(&at_load[**t]))
        .expect("the run had not ended when the page loaded");
    let shot = ci_artifacts_dir();
    b.wait_for(
        "a task running on the page",
        Duration::from_secs(60),
        "!!document.querySelector('.task[data-state=running]')",
    )
    .unwrap();
    b.screenshot(&shot.join("live-page-running.png")).unwrap();
    b.wait_for(
        &format!("{pending} to pass on the page (it was {})", at_load[*pending]),
        Duration::from_secs(300),
        &format!("['completed_success', 'flaky'].includes(document.querySelector('.task[data-task={pending}]').dataset.state)"),
    )
    .unwrap();
    let report = b
        .wait_for(
            "the report on the page",
            Duration::from_secs(120),
            "(() => { const r = document.querySelector('#report'); return !r.hidden && r.dataset.status && r.innerText; })()",
        )
        .unwrap();
    let report = report.as_str().unwrap();
    assert!(report.contains("Suite completed"), "{report}");
    assert!(report.contains("12/12"), "{report}");
    assert_eq!(
        b.eval("window.__pageLoadId").unwrap(),
        load_id,
        "the page was never reloaded"
    );
    assert_eq!(
        b.eval("performance.getEntriesByType('navigation').length")
            .unwrap(),
        1
    );
    let end = states(&mut b);
    for t in TASKS {
        assert!(passed(&end[t]), "{t} on the page: {end:?}");
    }
    b.eval("window.scrollTo(0, 0)").unwrap();
    b.screenshot(&shot.join("live-page-finished.png")).unwrap();

    // The full report the page links to is report.html.
    let full = b
        .eval("fetch('/ui/report.html').then(r => r.text())")
        .unwrap();
    assert!(full.as_str().unwrap().contains("id=\"timeline\""));
    let origin = format!("http://{}/", server.addr);
    let elsewhere: Vec<&String> = b
        .requests
        .iter()
        .filter(|u| !u.starts_with(&origin))
        .collect();
    assert!(elsewhere.is_empty(), "the page asked for {elsewhere:?}");
    assert!(
        b.console.iter().all(|c| !c.starts_with("exception")),
        "{:?}",
        b.console
    );
}

/// A suite of one task that fails a calculation twice: it is escalated, and
/// its dependent waits.
fn escalating_suite(dir: &Path) -> PathBuf {
    let faults = repo_root().join("examples/faults");
    let text = format!(
        r#"resource_allocation:
  faults: {{memory_mb: 256, cpu_cores: 1, timeout_seconds: 60}}
failure_handling: {{max_retries: 1, retry_delay_seconds: 1, escalation_threshold: 2}}
templates:
  pytest:
    command: "${{TESTFLEET_PYTHON:-python3}} -m pytest -p no:cacheprovider {faults}/tests/test_calc.py --junitxml={{artifacts_dir}}/junit.xml"
    progress_parser: pytest
    junit: junit.xml
  echo:
    command: "echo reported"
orchestrator:
  name: "escalates"
  task_definitions:
    faults:
      - {{id: "CALC", template: pytest}}
      - {{id: "REPORT", template: echo, dependencies: ["CALC"]}}
"#,
        faults = faults.display()
    );
    let path = dir.join("escalates.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_escalation_is_resolved_from_the_page_of_an_embedded_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = escalating_suite(dir.path());
    let mut child = Command::new(orchestrator_bin())
        .arg("run")
        .arg(&config)
        .args([
            "--local-agents",
            "1",
            "--on-escalation",
            "wait",
            "--report-dir",
        ])
        .arg(dir.path().join("report"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut run = Proc {
        child,
        name: "orchestrator run".into(),
    };
    // The run says where its page is.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("testfleet: live page on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("`run` prints the live page's address");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/ui"),
        "{url}"
    );

    let mut b = Browser::open(&url, 1280, 900).unwrap();
    b.wait_for(
        "the escalation's buttons on the page",
        Duration::from_secs(90),
        "!!document.querySelector('.esc button.skip')",
    )
    .unwrap();
    let paused = b
        .eval("document.querySelector('.task[data-task=REPORT]').dataset.state")
        .unwrap();
    assert_eq!(paused, "paused", "its dependent waits");
    b.screenshot(&ci_artifacts_dir().join("live-page-escalation.png"))
        .unwrap();
    b.eval("document.querySelector('.esc button.skip').click()")
        .unwrap();
    b.wait_for(
        "the escalated task skipped on the page",
        Duration::from_secs(30),
        "document.querySelector('.task[data-task=CALC]').dataset.state === 'skipped'",
    )
    .unwrap();
    let status = run.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "a skipped task fails the suite");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["escalations"][0]["state"], "skip");
    assert_eq!(task(&report, "CALC")["status"], "skipped");
}

/// HTTP/1.1: a refusal sent before a POST's body is read ends the HTTP/2
/// stream with RST_STREAM(NO_ERROR), as RFC 9113 8.1 allows, which this
/// curl reports as a framing error instead of the response.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "--max-time",
            "5",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    let body = if code == "000" {
        format!("{body}{}", String::from_utf8_lossy(&out.stderr))
    } else {
        body.to_string()
    };
    (code.to_string(), body)
}

#[test]
fn under_mtls_only_an_admin_certificate_opens_the_page_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(orchestrator_bin())
        .args(["certs", "init", "--agents", "1", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let p = |n: &str| certs.join(n).display().to_string();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            "tls: {{ca: {}, cert: {}, key: {}}}\ntemplates:\n  t: {{command: 'true'}}\norchestrator:\n  task_definitions:\n    unit:\n      - {{id: A, template: t}}\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        ),
    )
    .unwrap();
    let server = Server::start_with(&config, dir.path(), false);
    let base = format!("https://localhost:{}", server.addr.port());
    let who = |name: &str| {
        vec![
            "--cacert".to_string(),
            p("ca.pem"),
            "--cert".into(),
            p(&format!("{name}.pem")),
            "--key".into(),
            p(&format!("{name}.key")),
        ]
    };
    let call = |name: &str, extra: &[&str]| {
        let mut args = who(name);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    };
    let (code, page) = call("admin", &[&format!("{base}/ui")]);
    assert_eq!(code, "200");
    assert!(page.contains("<title>testfleet</title>"), "{page}");
    // The stream starts with a snapshot (curl stops it at its --max-time).
    let (_, events) = call(
        "admin",
        &["-N", "--max-time", "2", &format!("{base}/ui/events")],
    );
    assert!(events.starts_with("event: snapshot\ndata: {"), "{events}");
    // An agent's certificate opens nothing here and resolves nothing.
    let (code, body) = call("agent_001", &[&format!("{base}/ui")]);
    assert_eq!(code, "403", "{body}");
    let resolve = format!("{base}/ui/escalations/esc-1/resolve");
    let (code, body) = call(
        "agent_001",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"action":"skip"}"#,
            &resolve,
        ],
    );
    assert_eq!(code, "403", "{body}");
    // Another site's page cannot make an admin's browser resolve one.
    let (code, body) = call(
        "admin",
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Origin: https://evil.example",
            "-d",
            r#"{"action":"skip"}"#,
            &resolve,
        ],
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("evil.example"), "{body}");
    // Nor can a form post, which carries no JSON.
    let (code, body) = call("admin", &["-d", "action=skip", &resolve]);
    assert_eq!(code, "415", "{body}");
    // The admin's own call reaches the scheduler (no suite: no such escalation).
    let (code, body) = call(
        "admin",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"action":"skip"}"#,
            &resolve,
        ],
    );
    assert!(code == "404" || code == "409", "{code} {body}");
    // Without a certificate there is no TLS session at all.
    let (code, _) = curl(&["--cacert", &p("ca.pem"), &format!("{base}/ui")]);
    assert_ne!(code, "200");
}

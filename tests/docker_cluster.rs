//! The docker-compose cluster (deploy/) under faults: an orchestrator and
//! three agents in their own containers on a private network, over mTLS,
//! run the CashCow suite submitted from the host while one agent is killed
//! mid-task, another is cut off the network and let back on, and the
//! orchestrator is killed (SIGKILL) and started again on its data. Prometheus
//! (built from Debian's package) scrapes the orchestrator meanwhile.
//!
//! It needs the Docker engine and builds its images (deploy/build-images.sh,
//! deploy/prometheus/build-image.sh), so it is run by deploy/cluster-test
//! (CI's .ci/run), not by the plain `cargo test`:
//!   cargo test --test docker_cluster -- --ignored --nocapture

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet_testkit::*;

/// `docker compose` where the plugin exists, else `docker-compose`.
fn compose_cmd() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the test says about the faults it injects and what the cluster
/// did about them, with the time since the start.
fn say(start: Instant, what: &str) {
    eprintln!(
        "[cluster-test {:>6.1} s] {what}",
        start.elapsed().as_secs_f64()
    );
}

struct Cluster {
    project: String,
    compose: Vec<String>,
    certs: PathBuf,
    api_port: u16,
    prometheus_port: u16,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Output {
        let file = repo_root().join("deploy/docker-compose.yml");
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["-p", &self.project, "-f"])
            .arg(file)
            .args(["--profile", "observability"])
            .args(args)
            .env("TESTFLEET_CERTS", &self.certs)
            .env("TESTFLEET_API_PORT", self.api_port.to_string())
            .env("PROMETHEUS_PORT", self.prometheus_port.to_string())
            .env("PROMETHEUS_IMAGE", "testfleet-prometheus:bookworm")
            .output()
            .expect("run docker compose")
    }

    /// An `orchestrator` client command from the host, with the admin
    /// certificate.
    fn admin(&self, args: &[&str]) -> Output {
        let p = |n: &str| self.certs.join(n);
        Command::new(orchestrator_bin())
            .args(args)
            .args([
                "--endpoint",
                &format!("https://localhost:{}", self.api_port),
            ])
            .arg("--ca")
            .arg(p("ca.pem"))
            .arg("--cert")
            .arg(p("admin.pem"))
            .arg("--key")
            .arg(p("admin.key"))
            .output()
            .expect("run the orchestrator client")
    }

    fn status(&self) -> Value {
        let out = self.admin(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn agents(&self) -> String {
        String::from_utf8_lossy(&self.admin(&["agents"]).stdout).to_string()
    }

    fn container(&self, service: &str) -> String {
        let out = self.run(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}: {}", show(&out));
        id
    }

    fn network(&self) -> String {
        // Compose names it <project>_<network>, the project lower-cased.
        format!("{}_fleet", self.project)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Always torn down, also when an assertion failed.
        let out = self.run(&["down", "-v", "--remove-orphans", "-t", "2"]);
        if !out.status.success() {
            eprintln!("tearing the cluster down: {}", show(&out));
        }
    }
}

fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", show(&out));
    out
}

/// A task running on `agent`, with its attempt: (task, attempt id).
fn running_on(status: &Value, agent: &str) -> Option<(String, String)> {
    status["tasks"].as_array()?.iter().find_map(|t| {
        (t["status"] == "running" && t["agent_id"] == agent).then(|| {
            (
                t["task_id"].as_str().unwrap_or_default().to_string(),
                t["attempt_id"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

/// Succeeded tasks of a status, with how many attempts each took.
fn succeeded_attempts(status: &Value) -> std::collections::BTreeMap<String, u64> {
    let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
    tasks
        .iter()
        .filter(|t| t["status"] == "completed_success")
        .map(|t| {
            (
                t["task_id"].as_str().unwrap_or_default().to_string(),
                t["attempts"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn task_in<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["task_id"] == id)
}

fn build_images() {
    let bin_dir = orchestrator_bin().parent().unwrap().to_path_buf();
    for (script, args) in [
        (
            "deploy/build-images.sh",
            vec![bin_dir.display().to_string()],
        ),
        ("deploy/prometheus/build-image.sh", vec![]),
    ] {
        let out = Command::new(repo_root().join(script))
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(out.status.success(), "{script}: {}", show(&out));
    }
}

fn certs_init(dir: &Path) {
    let out = Command::new(orchestrator_bin())
        .args([
            "certs",
            "init",
            "--agents",
            "3",
            "--names",
            "orchestrator,localhost,127.0.0.1",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
#[ignore = "needs the Docker engine and builds images: run by deploy/cluster-test"]
fn the_compose_cluster_completes_cashcow_through_a_killed_agent_a_cut_off_agent_and_a_killed_orchestrator(
) {
    let start = Instant::now();
    build_images();
    say(
        start,
        "images built: testfleet:dev, testfleet-prometheus:bookworm (Debian)",
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs);
    let cluster = Cluster {
        project: format!("tfchaos{}", std::process::id()),
        compose: compose_cmd(),
        certs,
        api_port: free_port(),
        prometheus_port: free_port(),
    };
    let up = cluster.run(&[
        "up",
        "-d",
        "orchestrator",
        "agent_001",
        "agent_002",
        "agent_003",
        "prometheus",
    ]);
    assert!(up.status.success(), "{}", show(&up));
    wait_for("three agents over mTLS", Duration::from_secs(120), || {
        (cluster.agents().matches(" connected ").count() == 3).then_some(())
    });
    say(
        start,
        "orchestrator and 3 agents up over mTLS on a private network",
    );

    let submit = cluster.admin(&["submit"]);
    assert!(submit.status.success(), "{}", show(&submit));
    say(start, "cashcow submitted from the host");

    // Fault 1: agent_001 killed while it runs a task.
    let (killed_task, killed_attempt) = wait_for(
        "a task running on agent_001",
        Duration::from_secs(300),
        || running_on(&cluster.status(), "agent_001"),
    );
    docker(&["kill", &cluster.container("agent_001")]);
    say(
        start,
        &format!("FAULT: docker kill agent_001 while it ran {killed_task} ({killed_attempt})"),
    );
    let moved = wait_for(
        &format!("{killed_task} to be requeued off agent_001"),
        Duration::from_secs(120),
        || {
            let s = cluster.status();
            let t = task_in(&s, &killed_task)?;
            (t["attempt_id"] != killed_attempt.as_str() || t["status"] != "running")
                .then(|| format!("{} on {}", t["status"], t["agent_id"]))
        },
    );
    say(
        start,
        &format!("RECOVERY: {killed_task} left agent_001 at once: now {moved}"),
    );

    // Fault 2: agent_002 cut off the network while it runs a task, let back
    // on after the orchestrator has given its work to another agent.
    let (cut_task, cut_attempt) = wait_for(
        "a task running on agent_002",
        Duration::from_secs(300),
        || running_on(&cluster.status(), "agent_002"),
    );
    let agent_002 = cluster.container("agent_002");
    docker(&["network", "disconnect", &cluster.network(), &agent_002]);
    say(start, &format!("FAULT: agent_002 disconnected from the network while it ran {cut_task} ({cut_attempt})"));
    wait_for(
        &format!("{cut_task} to be requeued off the cut-off agent_002"),
        Duration::from_secs(180),
        || {
            let s = cluster.status();
            let t = task_in(&s, &cut_task)?;
            (t["attempt_id"] != cut_attempt.as_str() || t["status"] != "running").then_some(())
        },
    );
    say(
        start,
        &format!("RECOVERY: the orchestrator lost agent_002 and requeued {cut_task}"),
    );
    docker(&["network", "connect", &cluster.network(), &agent_002]);
    say(start, "FAULT ENDS: agent_002 back on the network");
    wait_for(
        "agent_002 to connect again",
        Duration::from_secs(180),
        || {
            cluster
                .agents()
                .lines()
                .any(|l| l.contains("agent_002") && l.contains(" connected "))
                .then_some(())
        },
    );
    say(
        start,
        "RECOVERY: agent_002 reconnected; what it still ran of the old attempt is superseded",
    );

    // Fault 3: the orchestrator killed (SIGKILL) while a task runs, and
    // started again on the same data dir: it replays its log, the agents
    // reconnect and re-announce, and the live attempt goes on.
    let (live_task, live_attempt) = wait_for(
        "a task running before the orchestrator is killed",
        Duration::from_secs(300),
        || {
            let s = cluster.status();
            ["agent_002", "agent_003"]
                .iter()
                .find_map(|a| running_on(&s, a))
        },
    );
    let finished_before = succeeded_attempts(&cluster.status());
    let orchestrator = cluster.container("orchestrator");
    docker(&["kill", "--signal", "KILL", &orchestrator]);
    say(
        start,
        &format!(
            "FAULT: docker kill -s KILL orchestrator while {live_task} ({live_attempt}) ran; {} tasks had succeeded",
            finished_before.len()
        ),
    );
    docker(&["start", &orchestrator]);
    wait_for(
        "the restarted orchestrator to see agent_002 and agent_003 again",
        Duration::from_secs(180),
        || {
            let agents = cluster.agents();
            ["agent_002", "agent_003"]
                .iter()
                .all(|a| {
                    agents
                        .lines()
                        .any(|l| l.contains(a) && l.contains(" connected "))
                })
                .then_some(())
        },
    );
    let resumed = cluster.status();
    assert!(
        succeeded_attempts(&resumed)
            .iter()
            .all(|(task, n)| finished_before.get(task).is_none_or(|before| before == n)),
        "a task's counted success changed across the restart: before {finished_before:?}, after {:?}",
        succeeded_attempts(&resumed)
    );
    say(
        start,
        &format!(
            "RECOVERY: the orchestrator replayed its log ({} successes kept, suite {}) and agent_002, agent_003 reconnected",
            finished_before.len(),
            resumed["status"]
        ),
    );

    let status = wait_for("the suite to end", Duration::from_secs(900), || {
        let s = cluster.status()["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ["completed", "failed", "cancelled"]
            .contains(&s.as_str())
            .then_some(s)
    });
    say(start, &format!("suite {status}"));
    let out = cluster.admin(&["report"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(report["status"], "completed", "{}", report["reason"]);
    // Every task that ran has exactly one counted success.
    for t in report["tasks"].as_array().unwrap() {
        let attempts = t["attempts"].as_array().unwrap();
        if attempts.is_empty() {
            continue; // a group: its subtasks ran
        }
        let wins = attempts
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .count();
        assert_eq!(
            wins, 1,
            "{} counted {wins} successes: {attempts:#?}",
            t["task_id"]
        );
    }
    // The superseded attempts stayed superseded: lost, and whatever they
    // sent later was marked stale, never counted.
    for (id, attempt) in [(&killed_task, &killed_attempt), (&cut_task, &cut_attempt)] {
        let a = task(&report, id)["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["attempt_id"] == attempt.as_str())
            .cloned()
            .unwrap();
        assert_eq!(a["outcome"], "agent_lost", "{a:#}");
        say(
            start,
            &format!(
                "{id} {attempt}: agent_lost, {} stale results",
                a["stale_results"]
            ),
        );
    }
    let cut = task(&report, &cut_task)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attempt_id"] == cut_attempt.as_str())
        .cloned()
        .unwrap();
    assert!(
        cut["stale_results"].as_u64().unwrap_or(0) >= 1 || cut["cancel_acknowledged"] == true,
        "agent_002's superseded attempt neither reported stale results nor acknowledged its cancel: {cut:#}"
    );
    // Nothing that had finished before the restart ran again, and the
    // attempt that was live went on instead of being given up.
    for (id, count) in &finished_before {
        let attempts = task(&report, id)["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len() as u64,
            *count,
            "{id} ran again after the restart: {attempts:#?}"
        );
    }
    let live = task(&report, &live_task)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attempt_id"] == live_attempt.as_str())
        .cloned()
        .unwrap();
    assert_ne!(
        live["outcome"], "agent_lost",
        "the attempt live across the restart was given up: {live:#}"
    );
    say(
        start,
        &format!(
            "{live_task} {live_attempt}, live across the restart: {}",
            live["outcome"]
        ),
    );
    let hosts: BTreeSet<&str> = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["agent-001", "agent-002", "agent-003"].into());

    // Prometheus (Debian's) has scraped the orchestrator's testfleet_ metrics.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.prometheus_port)
        .parse()
        .unwrap();
    let scraped = wait_for(
        "Prometheus to have scraped testfleet_ metrics",
        Duration::from_secs(60),
        || {
            let (code, v) = http(
                addr,
                "GET",
                "/api/v1/query?query=testfleet_completed_tasks_total",
                "",
            );
            let value = v["data"]["result"][0]["value"][1].as_str()?.to_string();
            (code == 200 && value != "0").then_some(value)
        },
    );
    say(
        start,
        &format!("Prometheus scraped testfleet_completed_tasks_total = {scraped}"),
    );
}

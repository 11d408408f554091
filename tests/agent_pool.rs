//! The agent pool with real binaries: a task no agent can take is explained
//! and failed `unplaceable`; the local and command provisioners start the
//! agents work needs (the command one over mTLS with certificates the
//! orchestrator mints) and stop them after.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet_testkit::*;

/// The seed's suite (sleeps for commands) with `agent_pool` set to `pool`.
fn seed_suite(pool: &str, max_agents: u32) -> String {
    let text = std::fs::read_to_string(fixture("seed_shape_sleep.yaml")).unwrap();
    let start = text
        .find("agent_pool:")
        .expect("the fixture has agent_pool");
    let end = start
        + text[start..]
            .find("recovery:")
            .expect("recovery follows agent_pool");
    let mut out = format!("{}agent_pool:\n{pool}\n{}", &text[..start], &text[end..]);
    out = out.replace(
        "  max_agents: 6\n",
        &format!("  max_agents: {max_agents}\n"),
    );
    out
}

/// An agent process on this host offering `cpu` cores and `memory_mb`.
fn agent(endpoint: &str, id: &str, dir: &Path, cpu: f64, memory_mb: u64) -> Proc {
    start_agent_sized(endpoint, id, dir, cpu, memory_mb, &[])
}

fn task_status<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {status}"))
}

#[test]
fn a_task_no_agent_can_take_is_explained_and_fails_unplaceable_so_the_suite_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        seed_suite(
            "  min_agents: 1\n  max_agents: 1\n  placement_timeout: 4\n",
            1,
        ),
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let _agent = agent(
        &server.endpoint(),
        "small",
        &dir.path().join("agents"),
        2.0,
        2048,
    );
    server.wait_for_agents(1);

    // `submit --wait` watches the suite from before it starts to its end.
    let endpoint = server.endpoint();
    let submit = std::thread::spawn(move || {
        Command::new(orchestrator_bin())
            .args(["submit", "--wait", "--endpoint", &endpoint, "--insecure"])
            .output()
            .expect("run submit --wait")
    });

    let sentence = "C1 needs 4 cores and 4096 MB; the largest agent has 2 cores and 2048 MB; max_agents 1 reached; no provisioner is configured (agent_pool.provisioner)";
    let waiting_since = wait_for("C1 explained in status", Duration::from_secs(60), || {
        let status = server.status();
        let c1 = status["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["task_id"] == "C1")?;
        (c1["status"] == "ready" && c1["detail"] == sentence).then(Instant::now)
    });
    let shown = server.client(&["status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(sentence), "status says why C1 waits:\n{text}");

    server.wait_for_status(&["failed"], Duration::from_secs(10));
    let waited = waiting_since.elapsed();
    assert!(
        waited <= Duration::from_secs(6),
        "ended {waited:?} after C1 was explained; placement_timeout is 4 s"
    );

    let status = server.status();
    let c1 = task_status(&status, "C1");
    assert_eq!(c1["status"], "failed");
    assert_eq!(c1["failure_type"], "unplaceable");
    assert!(
        c1["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("unplaceable: {sentence}")),
        "{c1}"
    );
    for dependent in ["C2", "C3"] {
        assert_eq!(task_status(&status, dependent)["status"], "skipped");
    }

    let watched = submit.join().unwrap();
    assert!(
        !watched.status.success(),
        "the suite failed: {}",
        show(&watched)
    );
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.contains(&format!("C1 is ready ({sentence}")),
        "watch says it:\n{watched}"
    );
    assert!(watched.contains("C1 is failed (unplaceable: "), "{watched}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains(sentence), "the log says it");

    let (_, report) = server.http_get("/api/v1/final-report");
    assert_eq!(task(&report, "C1")["failure_type"], "unplaceable");
    let decisions = report["pool"]["decisions"]
        .as_array()
        .expect("the report has the pool's decisions");
    assert!(
        decisions
            .iter()
            .any(|d| d["decision"] == "unplaceable" && d["task_id"] == "C1"),
        "{decisions:?}"
    );
}

fn decisions(report: &Value) -> Vec<Value> {
    report["pool"]["decisions"]
        .as_array()
        .expect("the report has the pool's decisions")
        .clone()
}

#[test]
fn the_local_provisioner_grows_the_fleet_for_c1_and_shrinks_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        seed_suite(
            "  min_agents: 1\n  max_agents: 4\n  scale_down_threshold: 0.6\n  scale_down_grace: 1\n  placement_timeout: 60\n  provisioner: {type: local, cpu_cores: 2, memory_mb: 2048}\n",
            4,
        ),
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let run = server.client(&["submit", "--wait"]);
    let watched = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "the suite succeeds: {}", show(&run));

    let (_, report) = server.http_get("/api/v1/final-report");
    let d = decisions(&report);
    let summary: Vec<String> = d
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["decision"], r["agent_id"], r["task_id"], r["reason"]
            )
        })
        .collect();
    let summary = summary.join("\n");
    // One agent for min_agents, of the configured size.
    let first = &d[0];
    assert_eq!(first["decision"], "provision", "{summary}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("min_agents 1"),
        "{summary}"
    );
    assert_eq!(first["cpu_cores"], 2.0);
    // One sized for C1, which fits no 2-core agent, and it joined.
    let for_c1 = d
        .iter()
        .find(|r| r["decision"] == "provision" && r["task_id"] == "C1")
        .unwrap_or_else(|| panic!("no agent for C1:\n{summary}"));
    assert_eq!(
        (for_c1["cpu_cores"].as_f64(), for_c1["memory_mb"].as_u64()),
        (Some(4.0), Some(4096))
    );
    let c1_agent = for_c1["agent_id"].as_str().unwrap();
    let joined = d
        .iter()
        .find(|r| r["decision"] == "joined" && r["agent_id"] == c1_agent)
        .unwrap_or_else(|| panic!("{c1_agent} never joined:\n{summary}"));
    assert!(joined["join_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(task(&report, "C1")["attempts"][0]["agent_id"], c1_agent);
    // While C1 ran, an idle 2-core agent went (utilisation below 60%).
    assert!(
        d.iter()
            .any(|r| r["decision"] == "stop" && r["reason"].as_str().unwrap().starts_with("idle")),
        "the fleet shrinks when work no longer needs it:\n{summary}"
    );
    assert!(
        watched.contains(&format!("pool: provision {c1_agent} (for C1)")),
        "{watched}"
    );

    // And every agent it started is gone when the suite is.
    wait_for(
        "the pool's agents to leave",
        Duration::from_secs(20),
        || {
            let out = server.client(&["agents"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (!text.contains(" connected ")).then_some(())
        },
    );
}

#[test]
fn the_command_provisioner_runs_the_users_script_and_its_agent_joins_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let init = Command::new(orchestrator_bin())
        .args(["certs", "init", "--agents", "0", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", show(&init));
    let record = dir.path().join("record.txt");
    let script = dir.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# start ID CORES MB ENDPOINT CA CERT KEY | stop ID
echo "$@" >> {record}
case "$1" in
  start)
    {agent} --orchestrator-endpoint "$5" --agent-id "$2" --cpu-cores "$3" --memory-mb "$4" \
      --ca "$6" --cert "$7" --key "$8" --workdir "{dir}/$2" --log-file "{dir}/$2.log" </dev/null >/dev/null 2>&1 &
    echo $! > "{dir}/$2.pid" ;;
  stop) kill "$(cat "{dir}/$2.pid")" ;;
esac
"#,
            record = record.display(),
            agent = agent_bin().display(),
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        format!(
            "tls: {{ca: certs/ca.pem, cert: certs/server.pem, key: certs/server.key}}
agent_pool:
  min_agents: 0
  provisioner:
    type: command
    start: sh {script} start {{agent_id}} {{cpu_cores}} {{memory_mb}} {{endpoint}} {{ca}} {{cert}} {{key}}
    stop: sh {script} stop {{agent_id}}
templates:
  t: {{command: \"true\"}}
orchestrator:
  task_definitions:
    unit_tests:
      - {{id: T, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}
",
            script = script.display()
        ),
    )
    .unwrap();
    let server = Server::start_with(&config, dir.path(), false);
    let admin = |args: &[&str]| {
        Command::new(orchestrator_bin())
            .args(args)
            .args([
                "--endpoint",
                &format!("https://localhost:{}", server.addr.port()),
            ])
            .args(["--ca", &certs.join("ca.pem").display().to_string()])
            .args(["--cert", &certs.join("admin.pem").display().to_string()])
            .args(["--key", &certs.join("admin.key").display().to_string()])
            .output()
            .unwrap()
    };
    let run = admin(&["submit", "--wait"]);
    assert!(
        run.status.success(),
        "the suite succeeds on the provisioned agent: {}",
        show(&run)
    );

    let report: Value = serde_json::from_slice(&admin(&["report"]).stdout).unwrap();
    assert_eq!(task(&report, "T")["attempts"][0]["agent_id"], "pool_001");
    let pool_dir = server.data_dir.join("pool/pool_001");
    let started = format!(
        "start pool_001 2 2048 https://127.0.0.1:{} {} {} {}",
        server.addr.port(),
        dir.path().join("certs/ca.pem").display(),
        pool_dir.join("pool_001.pem").display(),
        pool_dir.join("pool_001.key").display(),
    );
    let recorded = wait_for("the stop command", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&record).ok()?;
        text.contains("stop pool_001").then_some(text)
    });
    assert_eq!(recorded, format!("{started}\nstop pool_001\n"));
    // The minted certificate names the agent: the orchestrator took it as pool_001.
    let cert = std::fs::read_to_string(pool_dir.join("pool_001.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let id = testfleet::tls::identity_of(&der).unwrap();
    assert_eq!(
        (id.name.as_str(), id.role),
        ("pool_001", Some(testfleet::tls::Role::Agent))
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("pool_001.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the agent process to end", Duration::from_secs(20), || {
        process_gone(pid).then_some(())
    });
}

/// Six independent tasks of `sleep 3` under `agent_pool:` `pool`.
fn six_sleeps(pool: &str) -> String {
    let mut yaml = format!(
        "agent_pool:\n{pool}  provisioner: {{type: local, cpu_cores: 1, memory_mb: 512}}\ntemplates:\n  t: {{command: \"sleep 3\"}}\norchestrator:\n  task_definitions:\n    unit_tests:\n"
    );
    for i in 1..=6 {
        yaml.push_str(&format!(
            "      - {{id: T{i}, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}\n"
        ));
    }
    yaml
}

fn no_agent_connected(server: &Server) {
    wait_for(
        "the pool's agents to leave",
        Duration::from_secs(20),
        || {
            let out = server.client(&["agents"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (!text.contains(" connected ")).then_some(())
        },
    );
}

#[test]
fn target_duration_grows_the_pool_to_what_the_timing_history_says_the_suite_needs() {
    let dir = tempfile::tempdir().unwrap();
    // A first run on three agents leaves the history: each task ~3 s.
    let first = dir.path().join("first.yaml");
    std::fs::write(&first, six_sleeps("  min_agents: 3\n  max_agents: 3\n")).unwrap();
    let server = Server::start(&first, dir.path());
    let run = server.client(&["submit", "--wait"]);
    assert!(run.status.success(), "the first run: {}", show(&run));
    no_agent_connected(&server);

    // Then: end within 8 s. 6 × ~3 s of work over 8 s needs 3 agents (the
    // critical path, one task, is ~3 s); min_agents alone would be 1.
    let second = dir.path().join("second.yaml");
    std::fs::write(
        &second,
        six_sleeps("  min_agents: 1\n  max_agents: 4\n  target_duration: 8\n"),
    )
    .unwrap();
    let run = server.client(&["submit", "--wait", second.to_str().unwrap()]);
    assert!(run.status.success(), "the second run: {}", show(&run));
    let watched = String::from_utf8_lossy(&run.stdout).to_string();

    let (_, report) = server.http_get("/api/v1/final-report");
    assert_eq!(report["pool"]["target_duration_seconds"], 8.0);
    let d = decisions(&report);
    let summary: Vec<String> = d
        .iter()
        .map(|r| format!("{} {} {}", r["decision"], r["agent_id"], r["reason"]))
        .collect();
    let summary = summary.join("\n");
    let chosen = d
        .iter()
        .find(|r| r["decision"] == "target")
        .unwrap_or_else(|| panic!("no target decision:\n{summary}"));
    let reason = chosen["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("8 s left of target_duration 8 s for ")
            && reason.contains(" agent-s of work, critical path ")
            && reason.ends_with(": 3 agents needed"),
        "{summary}"
    );
    assert!(
        !reason.contains("without history"),
        "every task has history: {reason}"
    );
    let for_target: Vec<&str> = d
        .iter()
        .filter(|r| {
            r["decision"] == "provision"
                && r["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("target_duration: 3 agents needed")
        })
        .map(|r| r["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(for_target.len(), 3, "{summary}");
    for id in &for_target {
        assert!(
            d.iter()
                .any(|r| r["decision"] == "joined" && r["agent_id"] == *id),
            "{id} joined:\n{summary}"
        );
    }
    // The tasks ran on those agents, three at a time.
    let ran_on: std::collections::BTreeSet<String> = (1..=6)
        .map(|i| {
            task(&report, &format!("T{i}"))["attempts"][0]["agent_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(ran_on.len() >= 3, "{ran_on:?}\n{summary}");
    assert!(
        watched.contains("pool: target: 8 s left of target_duration 8 s"),
        "watch shows the decision:\n{watched}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains(reason), "the log says it");
    no_agent_connected(&server);
}

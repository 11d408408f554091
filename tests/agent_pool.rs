//! The agent pool with real binaries: a task no agent can take is explained
//! and failed `unplaceable`; the local and command provisioners start the
//! agents work needs (the command one over mTLS with certificates the
//! orchestrator mints) and stop them after.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testfleet::local_agent::LocalAgent;
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
    let args = LocalAgent {
        endpoint,
        agent_id: id,
        dir,
        cpu_cores: cpu,
        memory_mb,
    }
    .args();
    let child = Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start an agent");
    Proc {
        child,
        name: id.into(),
    }
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

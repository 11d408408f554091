//! The docker-compose cluster (deploy/): an orchestrator and three agents in
//! their own containers on a private network run the CashCow suite. Uses the
//! real Docker engine; builds the images from the binaries under test.

use std::process::{Command, Output};
use std::time::Duration;

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

struct Cluster {
    project: String,
    compose: Vec<String>,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Output {
        let file = repo_root().join("deploy/docker-compose.yml");
        Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["-p", &self.project, "-f"])
            .arg(file)
            .args(args)
            .output()
            .expect("run docker compose")
    }

    fn orchestrator(&self, args: &[&str]) -> Output {
        let mut full = vec!["exec", "-T", "orchestrator", "orchestrator"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--insecure", "--endpoint", "http://localhost:8080"]);
        self.run(&full)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "2"]);
    }
}

#[test]
fn the_compose_cluster_runs_the_cashcow_suite() {
    let bin_dir = orchestrator_bin().parent().unwrap().to_path_buf();
    let build = Command::new(repo_root().join("deploy/build-images.sh"))
        .arg(&bin_dir)
        .output()
        .expect("run build-images.sh");
    assert!(build.status.success(), "{}", show(&build));

    let cluster = Cluster {
        project: format!("testfleet-test-{}", std::process::id()),
        compose: compose_cmd(),
    };
    let up = cluster.run(&["up", "-d"]);
    assert!(up.status.success(), "{}", show(&up));
    wait_for("three agents to connect", Duration::from_secs(60), || {
        let out = cluster.orchestrator(&["agents"]);
        (String::from_utf8_lossy(&out.stdout)
            .matches(" connected ")
            .count()
            == 3)
            .then_some(())
    });

    let submit = cluster.orchestrator(&["submit", "--wait"]);
    assert!(submit.status.success(), "{}", show(&submit));
    let report = cluster.orchestrator(&["report"]);
    let report: Value = serde_json::from_slice(&report.stdout).expect("the report is JSON");
    assert_eq!(report["status"], "completed");
    assert_eq!(report["summary"]["completed_success"], 12);
    // The agents are separate hosts, and the work was spread over them.
    let hosts: std::collections::BTreeSet<&str> = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["agent-001", "agent-002", "agent-003"].into());
    let used: std::collections::BTreeSet<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["attempts"].as_array().unwrap())
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert!(used.len() >= 2, "tasks ran on {used:?}");
}

//! The docker provisioner against the real Docker engine: agent containers
//! from deploy/'s image, started for a suite and removed after; a start that
//! fails leaves nothing either. Whatever happens, the test removes every
//! container of its image when it ends (also when it fails).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testfleet_testkit::*;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// This test's own image of deploy/Dockerfile (the binaries under test), so
/// other tests rebuilding `testfleet:dev` cannot change it underneath; and
/// on drop, every container of it and the image are removed.
struct TestImage {
    tag: String,
}

impl TestImage {
    fn build() -> TestImage {
        let base = Command::new(repo_root().join("deploy/base-image.sh"))
            .output()
            .expect("run deploy/base-image.sh");
        assert!(base.status.success(), "{}", show(&base));
        let context = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(context.path().join("bin")).unwrap();
        std::fs::create_dir_all(context.path().join("examples")).unwrap();
        for b in [orchestrator_bin(), agent_bin()] {
            std::fs::copy(&b, context.path().join("bin").join(b.file_name().unwrap())).unwrap();
        }
        let tag = format!("testfleet-pool-test:{}", std::process::id());
        let dockerfile = repo_root().join("deploy/Dockerfile");
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-f"])
            .arg(&dockerfile)
            .arg(context.path())
            .output()
            .expect("run docker build");
        assert!(built.status.success(), "{}", show(&built));
        TestImage { tag }
    }

    fn containers(&self) -> Vec<String> {
        let out = docker(&["ps", "-aq", "--filter", &format!("ancestor={}", self.tag)]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        for c in self.containers() {
            let _ = docker(&["rm", "-f", &c]);
        }
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

fn suite(image: &str, placement_timeout: u32) -> String {
    format!(
        "agent_pool:
  min_agents: 0
  placement_timeout: {placement_timeout}
  provisioner: {{type: docker, image: \"{image}\", cpu_cores: 1, memory_mb: 512}}
# The config's directory is on this host, not in the container.
templates:
  t: {{command: \"true\", working_directory: /tmp}}
orchestrator:
  task_definitions:
    unit_tests:
      - {{id: T1, template: t, resources: {{cpu_cores: 1, memory_mb: 256}}}}
      - {{id: T2, template: t, dependencies: [T1], resources: {{cpu_cores: 1, memory_mb: 256}}}}
"
    )
}

#[test]
fn the_docker_provisioner_starts_agent_containers_and_leaves_none_behind() {
    let image = TestImage::build();
    let dir = tempfile::tempdir().unwrap();

    // A suite on a container the pool starts.
    let config = dir.path().join("suite.yaml");
    std::fs::write(&config, suite(&image.tag, 60)).unwrap();
    let ok = dir.path().join("ok");
    std::fs::create_dir_all(&ok).unwrap();
    let server = Server::start(&config, &ok);
    // A suite timeout, so a broken container cannot make the test hang.
    let run = server.client(&["submit", "--wait", "--timeout", "120"]);
    let report: Value = serde_json::from_slice(&server.client(&["report"]).stdout).unwrap();
    assert!(
        run.status.success(),
        "the suite runs in a container: {}\n{:#}",
        show(&run),
        task(&report, "T1")
    );
    assert_eq!(task(&report, "T1")["attempts"][0]["agent_id"], "pool_001");
    let joined = report["pool"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["decision"] == "joined")
        .cloned()
        .expect("the container's agent joined");
    assert_eq!(joined["cpu_cores"], 1.0, "sized as configured: {joined}");
    wait_for(
        "the container to be removed",
        Duration::from_secs(30),
        || image.containers().is_empty().then_some(()),
    );

    // A start that fails (no such image) is retried, then the task fails
    // unplaceable: no container either way.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, suite("testfleet-no-such-image:none", 2)).unwrap();
    let failing = dir.path().join("bad");
    std::fs::create_dir_all(&failing).unwrap();
    let server = Server::start(&bad, &failing);
    let run = server.client(&["submit", "--wait", "--timeout", "120"]);
    assert!(!run.status.success(), "{}", show(&run));
    let report: Value = serde_json::from_slice(&server.client(&["report"]).stdout).unwrap();
    assert_eq!(task(&report, "T1")["failure_type"], "unplaceable");
    let failed = report["pool"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"] == "provision_failed")
        .count();
    assert_eq!(failed, 3, "{}", report["pool"]);
    let leftover = docker(&["ps", "-aq", "--filter", "label=testfleet.pool"]);
    let ours: Vec<String> = String::from_utf8_lossy(&leftover.stdout)
        .lines()
        .filter(|id| {
            let inspect = docker(&["inspect", "--format", "{{.Config.Image}}", id]);
            String::from_utf8_lossy(&inspect.stdout).trim() == "testfleet-no-such-image:none"
        })
        .map(str::to_string)
        .collect();
    assert!(ours.is_empty(), "containers left: {ours:?}");
}

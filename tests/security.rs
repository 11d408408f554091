//! mTLS with certificates from `orchestrator certs init`: the suite runs,
//! every refusal the issue names is refused (and changes nothing), and
//! grpcurl works with certificates and fails without.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self, agent_message, AgentMessage};
use testfleet::tls::{DevCa, Role};
use testfleet_testkit::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[test]
fn the_cashcow_suite_runs_over_mtls_on_three_agents() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    // The suite's own directory, so its relative paths still resolve.
    let config = pki.suite_with_tls(
        &repo_root().join("examples/cashcow/orchestrator_config.yaml"),
        &repo_root().join(format!(
            "examples/cashcow/.mtls-test-{}.yaml",
            std::process::id()
        )),
        false,
    );
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(config.clone());
    let server = Server::start_with(&config, dir.path(), false);
    let _agents: Vec<Proc> = ["agent_001", "agent_002", "agent_003"]
        .iter()
        .map(|a| tls_agent(&server, &pki, a, dir.path()))
        .collect();
    wait_for("three agents over mTLS", Duration::from_secs(20), || {
        let out = tls_admin(&server, &pki, &["agents"]);
        (String::from_utf8_lossy(&out.stdout)
            .matches(" connected ")
            .count()
            == 3)
            .then_some(())
    });
    let run = tls_admin(&server, &pki, &["submit", "--wait"]);
    assert!(run.status.success(), "{}", show(&run));
    let report: Value =
        serde_json::from_slice(&tls_admin(&server, &pki, &["report"]).stdout).unwrap();
    assert_eq!(report["status"], "completed");
    assert_eq!(report["summary"]["completed_success"], 12);
    let ids: Vec<&str> = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["agent_001", "agent_002", "agent_003"],
        "ids come from the certificates"
    );
}

async fn channel(
    server: &Server,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(https_endpoint(server))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn status(
    ch: Result<tonic::transport::Channel, tonic::transport::Error>,
) -> Result<proto::SuiteStatus, String> {
    let ch = ch.map_err(|e| format!("connect: {e}"))?;
    ControlClient::new(ch)
        .get_status(proto::GetStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unauthorised_peer_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let config = pki.suite_with_tls(
        &fixture("long_task.yaml"),
        &dir.path().join("suite.yaml"),
        false,
    );
    let server = Server::start_with(&config, dir.path(), false);
    let _a = tls_agent(&server, &pki, "agent_001", dir.path());
    let read = |name: &str| std::fs::read_to_string(pki.dir.join(name)).unwrap();
    let ca = read("ca.pem");
    let admin_id = (read("admin.pem"), read("admin.key"));
    let started = tls_admin(&server, &pki, &["submit"]);
    assert!(started.status.success(), "{}", show(&started));
    let before = wait_for("SLEEPY to run", Duration::from_secs(10), || {
        let s = futures::executor::block_on(status(futures::executor::block_on(channel(
            &server,
            &ca,
            Some((&admin_id.0, &admin_id.1)),
        ))));
        s.ok().filter(|s| {
            s.tasks
                .iter()
                .any(|t| t.task_id == "SLEEPY" && t.status == "running")
        })
    });

    // No client certificate.
    assert!(status(channel(&server, &ca, None).await).await.is_err());
    // A certificate from another CA.
    let other = DevCa::new("someone else's CA").unwrap();
    let stranger = other.client("admin", Role::Admin).unwrap();
    assert!(
        status(channel(&server, &ca, Some((&stranger.cert_pem, &stranger.key_pem))).await)
            .await
            .is_err()
    );
    // An expired certificate from the right CA.
    let expired = DevCa::load(&ca, &read("ca.key"))
        .unwrap()
        .client_valid(
            "admin",
            Role::Admin,
            Some((
                rcgen::date_time_ymd(2020, 1, 1),
                rcgen::date_time_ymd(2021, 1, 1),
            )),
        )
        .unwrap();
    let expired = (expired.cert_pem, expired.key_pem);
    assert!(
        status(channel(&server, &ca, Some((&expired.0, &expired.1))).await)
            .await
            .is_err()
    );
    // An agent's certificate calling Control.
    let agent2 = (read("agent_002.pem"), read("agent_002.key"));
    let refused = status(channel(&server, &ca, Some((&agent2.0, &agent2.1))).await)
        .await
        .unwrap_err();
    assert!(refused.starts_with("PermissionDenied"), "{refused}");

    // Agent A's certificate saying hello as agent B.
    let agent_a = channel(&server, &ca, Some((&agent2.0, &agent2.1)))
        .await
        .unwrap();
    let err = raw_agent(agent_a.clone(), "agent_001", (1, 0.001))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Agent A (as itself) reporting on B's attempt.
    let (tx, mut inbound) = raw_agent(agent_a, "agent_002", (1, 0.001)).await.unwrap();
    inbound.message().await.unwrap().unwrap();
    let live = before
        .tasks
        .iter()
        .find(|t| t.task_id == "SLEEPY")
        .unwrap()
        .attempt_id
        .clone();
    let completion = proto::TaskCompletion {
        message_id: "m".into(),
        agent_id: "agent_002".into(),
        task_id: "SLEEPY".into(),
        attempt_id: live.clone(),
        final_status: proto::FinalStatus::Success as i32,
        ..Default::default()
    };
    let msg = AgentMessage {
        body: Some(agent_message::Body::Completion(completion)),
    };
    expect_rejection(&tx, &mut inbound, msg, tonic::Code::PermissionDenied).await;

    // Nothing changed.
    let after = status(channel(&server, &ca, Some((&admin_id.0, &admin_id.1))).await)
        .await
        .unwrap();
    let sleepy = after.tasks.iter().find(|t| t.task_id == "SLEEPY").unwrap();
    assert_eq!(
        (
            sleepy.status.as_str(),
            sleepy.agent_id.as_str(),
            sleepy.attempt_id.as_str()
        ),
        ("running", "agent_001", live.as_str())
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.matches("refused a TLS handshake").count() >= 3,
        "handshakes refused and logged at WARN:\n{log}"
    );
}

#[test]
fn grpcurl_works_with_certificates_and_fails_without() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let config = pki.suite_with_tls(
        &fixture("long_task.yaml"),
        &dir.path().join("suite.yaml"),
        false,
    );
    let server = Server::start_with(&config, dir.path(), false);
    let addr = format!("localhost:{}", server.addr.port());
    let certs = [
        "-cacert".to_string(),
        pki.path_str("ca.pem"),
        "-cert".into(),
        pki.path_str("admin.pem"),
        "-key".into(),
        pki.path_str("admin.key"),
    ];
    let grpcurl = |args: &[&str]| {
        let out = Command::new("grpcurl")
            .args(args)
            .output()
            .expect("grpcurl on PATH");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let with = |rest: &[&str]| {
        let mut a: Vec<&str> = certs.iter().map(String::as_str).collect();
        a.push(&addr);
        a.extend_from_slice(rest);
        grpcurl(&a)
    };
    let (ok, list) = with(&["list"]);
    assert!(
        ok && list.contains("testfleet.v1.Control") && list.contains("grpc.health.v1.Health"),
        "{list}"
    );
    let (ok, d) = with(&["describe", "testfleet.v1.TaskCompletion"]);
    assert!(ok && d.contains("message TaskCompletion"), "{d}");
    let (ok, h) = with(&["grpc.health.v1.Health/Check"]);
    assert!(ok && h.contains("SERVING"), "{h}");
    let (ok, st) = with(&["testfleet.v1.Control/GetStatus"]);
    assert!(ok && st.contains("\"status\": \"idle\""), "{st}");
    let (ok, out) = grpcurl(&["-cacert", &pki.path_str("ca.pem"), &addr, "list"]);
    assert!(!ok, "without a client certificate grpcurl must fail: {out}");

    // An agent with a certificate from another CA says so in a sentence.
    let stranger = Pki::init(&dir.path().join("other"));
    let mut agent = Command::new(agent_bin())
        .args([
            "--orchestrator-endpoint",
            &https_endpoint(&server),
            "--ca",
            &pki.path_str("ca.pem"),
        ])
        .args([
            "--cert",
            &stranger.path_str("agent_001.pem"),
            "--key",
            &stranger.path_str("agent_001.key"),
        ])
        .arg("--workdir")
        .arg(dir.path().join("stranger"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(agent.stderr.take().unwrap());
    // A read blocks: a watchdog ends the agent, so the test cannot hang.
    let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let line = wait_for("the agent's complaint", Duration::from_secs(15), || {
        let mut l = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut l).ok()?;
        assert!(n > 0, "the agent exited without saying why");
        l.contains("refused").then_some(l)
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        line.contains("the orchestrator refused our certificate"),
        "{line}"
    );
}

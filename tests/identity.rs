//! Identity under mTLS, with certificates from `orchestrator certs init`:
//! one live stream per agent id (a second certificate with the same name is
//! refused while the first is connected, and takes nothing), a revocation
//! list that takes effect when its file changes (new connections refused,
//! open ones closed), and a server certificate
//! rotated on SIGHUP, both without a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testfleet::proto::control_client::ControlClient;
use testfleet::proto::{self};
use testfleet::tls::{DevCa, Issued, Role};
use testfleet_testkit::*;

const LONG: &str = "\
templates:
  sleeper:
    command: \"sleep 60\"
orchestrator:
  name: identity
  task_definitions:
    unit_tests:
      - {id: \"LONG\", template: sleeper, resources: {memory_mb: 64, cpu_cores: 1, timeout: 120}}
";

fn suite(dir: &Path, pki: &Pki, crl: bool) -> std::path::PathBuf {
    let plain = dir.join("plain.yaml");
    std::fs::write(&plain, LONG).unwrap();
    pki.suite_with_tls(&plain, &dir.join("suite.yaml"), crl)
}

async fn status(server: &Server, ca: &str, who: &Issued) -> Result<proto::SuiteStatus, String> {
    let ch = tls_channel(server, ca, Some(who))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    ControlClient::new(ch)
        .get_status(proto::GetStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Says hello as `id` with `cert`: Ok once the orchestrator acknowledged it.
async fn hello(
    server: &Server,
    pki: &Pki,
    id: &str,
    cert: &Issued,
) -> Result<(AgentSender, OrchestratorStream), String> {
    let ch = tls_channel(server, &pki.read("ca.pem"), Some(cert))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (tx, mut inbound) = raw_agent(ch, id, (64, 0.1))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(_ack))) => Ok((tx, inbound)),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        other => Err(format!("no acknowledgement: {other:?}")),
    }
}

fn log(server: &Server) -> String {
    std::fs::read_to_string(&server.log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_for_a_connected_agent_is_refused_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let server = Server::start_with(&suite(dir.path(), &pki, false), dir.path(), false);
    let agent = tls_agent(&server, &pki, "agent_001", dir.path());
    let started = tls_admin(&server, &pki, &["submit"]);
    assert!(started.status.success(), "{}", show(&started));
    let (ca, boss) = (pki.read("ca.pem"), pki.issued("admin"));
    let mut before = None;
    for _ in 0..200 {
        let s = status(&server, &ca, &boss).await.unwrap();
        if s.tasks.iter().any(|t| t.status == "running") {
            before = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = before.expect("LONG to run on agent_001 within 20 s");
    let live = before.tasks[0].clone();
    assert_eq!(live.agent_id, "agent_001");

    // Another certificate with the same name, from the same CA.
    let twin = pki.mint("agent_001", Role::Agent);
    let refused = hello(&server, &pki, "agent_001", &twin).await.err();
    let refused = refused.expect("a second stream for a connected agent is refused");
    assert!(
        refused.starts_with("AlreadyExists")
            && refused.contains("\"agent_001\"")
            && refused.contains("already connected from 127.0.0.1:"),
        "{refused}"
    );
    // Nothing changed: the task runs on, on the first stream's attempt.
    let after = status(&server, &ca, &boss).await.unwrap();
    let task = &after.tasks[0];
    assert_eq!(
        (
            task.status.as_str(),
            task.agent_id.as_str(),
            &task.attempt_id
        ),
        ("running", "agent_001", &live.attempt_id)
    );
    assert!(
        log(&server).contains("refused a second stream for an agent that is connected"),
        "{}",
        log(&server)
    );

    // Once the first agent's stream ends, the id is free again.
    drop(agent);
    let mut got_in = Err(String::new());
    for _ in 0..100 {
        got_in = hello(&server, &pki, "agent_001", &twin).await;
        if got_in.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(got_in.is_ok(), "the id stays taken: {got_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_once_the_crl_changes_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let server = Server::start_with(&suite(dir.path(), &pki, true), dir.path(), false);
    let pid = server.proc.pid();
    let (a1, a2) = (pki.issued("agent_001"), pki.issued("agent_002"));
    let first = hello(&server, &pki, "agent_002", &a2).await;
    let (_open_tx, mut open) = first.expect("not yet revoked");

    let out = Command::new(orchestrator_bin())
        .args(["certs", "revoke", "--dir"])
        .arg(&pki.dir)
        .arg(pki.path("agent_002.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 certificate(s) revoked"),
        "{}",
        show(&out)
    );

    // Its stream that was open is closed.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match open.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked agent's open stream still runs");
    // And a new one is refused at the handshake (not for the open one).
    let mut refused = None;
    for _ in 0..100 {
        match hello(&server, &pki, "agent_002", &a2).await {
            Err(e) if !e.starts_with("AlreadyExists") => {
                refused = Some(e);
                break;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("agent_002 refused within 10 s of the CRL changing");
    assert!(
        hello(&server, &pki, "agent_001", &a1).await.is_ok(),
        "agent_001 is not revoked (after agent_002's refusal: {refused})"
    );
    assert_eq!(server.proc.pid(), pid);
    assert!(!process_gone(pid), "the orchestrator was not restarted");
    let text = log(&server);
    assert!(text.contains("the CRL changed: reloaded it"), "{text}");
    assert!(
        text.contains("closing a connection: after the reload its certificate is refused"),
        "{text}"
    );
    assert!(
        text.contains("refused a TLS handshake") && text.to_lowercase().contains("revoked"),
        "the refusal is logged with its reason: {text}"
    );

    // A CRL that does not load keeps the last one: agent_002 stays out.
    std::fs::write(pki.path("crl.pem"), "garbage").unwrap();
    wait_for("the bad CRL to be noticed", Duration::from_secs(10), || {
        log(&server).contains("could not be loaded").then_some(())
    });
    assert!(hello(&server, &pki, "agent_002", &a2).await.is_err());
    assert!(hello(&server, &pki, "agent_001", &a1).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_served_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let server = Server::start_with(&suite(dir.path(), &pki, false), dir.path(), false);
    let boss = pki.issued("admin");
    let (old_ca, new_ca) = (
        pki.read("ca.pem"),
        DevCa::new("the next server CA").unwrap(),
    );
    assert!(status(&server, &old_ca, &boss).await.is_ok());
    assert!(
        status(&server, &new_ca.cert_pem, &boss).await.is_err(),
        "not yet rotated"
    );

    // The new certificate and key, each replaced whole.
    let next = new_ca
        .server(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    for (name, text) in [
        ("server.key", &next.key_pem),
        ("server.pem", &next.cert_pem),
    ] {
        let tmp = pki.path(&format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, pki.path(name)).unwrap();
    }
    assert!(
        status(&server, &old_ca, &boss).await.is_ok(),
        "nothing changes before SIGHUP"
    );
    server.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let mut rotated = Err(String::new());
    for _ in 0..100 {
        rotated = status(&server, &new_ca.cert_pem, &boss).await;
        if rotated.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rotated.is_ok(),
        "the new certificate within 10 s: {rotated:?}"
    );
    assert!(
        status(&server, &old_ca, &boss).await.is_err(),
        "the old one is no longer served"
    );
    assert!(!process_gone(server.proc.pid()), "SIGHUP did not stop it");
    assert!(log(&server).contains("reloaded the TLS files on SIGHUP"));
}

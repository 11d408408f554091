//! The metrics port: on loopback unless told otherwise, under the API's
//! mTLS when TLS is on (an observer or admin certificate reads it, an
//! agent's does not, no certificate gets no answer), and a busy metrics
//! port stops `serve` at start as a busy API port does, unless metrics are
//! turned off.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use testfleet::tls::Issued;
use testfleet_testkit::*;

const SUITE: &str = "\
templates:
  quick:
    command: \"echo quick\"
orchestrator:
  name: metrics
  metrics_port: METRICS_PORT
  task_definitions:
    unit_tests:
      - {id: \"QUICK\", template: quick, resources: {memory_mb: 64, cpu_cores: 1, timeout: 60}}
";

fn suite(dir: &Path, metrics_port: u16) -> PathBuf {
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        SUITE.replace("METRICS_PORT", &metrics_port.to_string()),
    )
    .unwrap();
    path
}

/// A port nothing listens on (the kernel's pick, let go at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `orchestrator serve ARGS --config CONFIG`, its stderr in `dir/serve.log`.
fn serve(dir: &Path, config: &Path, args: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join("serve.log");
    let proc = serve_logged(dir, config, args, &log);
    (proc, log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The value of `key` in the first JSON log line that has it.
fn logged(log: &Path, key: &str) -> String {
    wait_for(
        &format!("{key} in the log"),
        Duration::from_secs(20),
        || {
            read(log).lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v[key].as_str().map(str::to_string)
            })
        },
    )
}

async fn scrape(
    server: &Server,
    pki: &Pki,
    who: Option<&Issued>,
) -> Result<(u16, String), reqwest::Error> {
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(
            pki.read("ca.pem").as_bytes(),
        )?)
        .timeout(Duration::from_secs(10));
    if let Some(who) = who {
        let pem = format!("{}\n{}", who.cert_pem, who.key_pem);
        client = client.identity(reqwest::Identity::from_pem(pem.as_bytes())?);
    }
    let url = format!("https://localhost:{}/metrics", server.metrics_addr.port());
    let reply = client.build()?.get(url).send().await?;
    let code = reply.status().as_u16();
    Ok((code, reply.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_metrics_need_an_observer_or_admin_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let config = pki.suite_with_tls(
        &suite(dir.path(), free_port()),
        &dir.path().join("tls.yaml"),
        false,
    );
    let server = Server::start_with(&config, dir.path(), false);

    for who in ["observer", "admin"] {
        let (code, text) = scrape(&server, &pki, Some(&pki.issued(who)))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"));
        assert_eq!(code, 200, "{who}: {text}");
        assert!(text.contains("testfleet_active_agents"), "{who}: {text}");
    }
    let (code, text) = scrape(&server, &pki, Some(&pki.issued("agent_001")))
        .await
        .unwrap();
    assert_eq!(code, 403, "{text}");
    assert!(
        text.contains("\"agent_001\" carries the agent role") && text.contains("observer or admin"),
        "{text}"
    );
    assert!(
        scrape(&server, &pki, None).await.is_err(),
        "no certificate, no metrics"
    );
    // A certificate from another CA.
    let stranger = testfleet::tls::DevCa::new("another CA")
        .unwrap()
        .client("observer", testfleet::tls::Role::Observer)
        .unwrap();
    assert!(scrape(&server, &pki, Some(&stranger)).await.is_err());
    // Plaintext gets no metrics.
    let mut tcp = std::net::TcpStream::connect(server.metrics_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains("testfleet_"), "{reply}");
}

#[test]
fn the_metrics_port_is_on_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_proc, log) = serve(
        dir.path(),
        &suite(dir.path(), port),
        &["--insecure", "--listen", "127.0.0.1:0"],
    );
    assert_eq!(logged(&log, "metrics_addr"), format!("127.0.0.1:{port}"));
}

#[test]
fn a_busy_metrics_port_stops_serve_at_start_unless_metrics_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = suite(dir.path(), port);

    let busy_metrics = format!("127.0.0.1:{port}");
    let (mut proc, log) = serve(
        dir.path(),
        &config,
        &[
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &busy_metrics,
        ],
    );
    let status = proc.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let said = read(&log);
    assert!(
        said.contains(&format!(
            "cannot listen on {busy_metrics} for metrics (is another orchestrator running there?"
        )) && said.contains("--no-metrics"),
        "{said}"
    );
    // The same kind of sentence as a busy API port.
    let (mut proc, log) = serve(
        dir.path(),
        &config,
        &["--insecure", "--listen", &busy_metrics, "--no-metrics"],
    );
    assert!(!proc.wait_exit(Duration::from_secs(20)).success());
    let api = read(&log);
    assert!(
        api.contains(&format!(
            "cannot listen on {busy_metrics} (is another orchestrator running there?)"
        )),
        "{api}"
    );

    // Turned off, a busy metrics port (the config's, here) stops nothing.
    let (mut proc, log) = serve(
        dir.path(),
        &config,
        &["--insecure", "--listen", "127.0.0.1:0", "--no-metrics"],
    );
    let addr = logged(&log, "addr");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(proc.child.try_wait().unwrap().is_none(), "it serves");
    assert!(!read(&log).contains("metrics_addr"), "{}", read(&log));
    drop(busy);
}

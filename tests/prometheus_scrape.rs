//! deploy/prometheus/prometheus.yml, as written but for where the
//! certificates and the orchestrator are, lets a real Prometheus scrape an
//! mTLS orchestrator with the observer certificate `certs init` makes.
//! Needs `prometheus` on PATH (Debian's package); says so and passes
//! without it.

use std::process::{Command, Stdio};
use std::time::Duration;

use testfleet_testkit::*;

#[test]
fn prometheus_scrapes_the_metrics_port_with_the_observer_certificate() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no prometheus on PATH (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("certs"));
    let config = pki.suite_with_tls(
        &fixture("long_task.yaml"),
        &dir.path().join("suite.yaml"),
        true,
    );
    let server = Server::start_with(&config, dir.path(), false);

    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(
        shipped.contains("targets: [\"orchestrator:9090\"]"),
        "{shipped}"
    );
    let local = shipped
        .replace("/certs/", &format!("{}/", pki.dir.display()))
        .replace(
            "orchestrator:9090",
            &format!("localhost:{}", server.metrics_addr.port()),
        );
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, local).unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let _prometheus = Proc {
        child,
        name: "prometheus".into(),
    };
    let sample = wait_for(
        "Prometheus to have scraped testfleet_active_agents",
        Duration::from_secs(30),
        || {
            let (code, v) = std::panic::catch_unwind(|| {
                http(
                    web,
                    "GET",
                    "/api/v1/query?query=testfleet_active_agents",
                    "",
                )
            })
            .ok()?;
            let result = v["data"]["result"].as_array()?.first()?.clone();
            (code == 200).then_some(result)
        },
    );
    assert_eq!(sample["metric"]["job"], "testfleet", "{sample}");
    let (_, targets) = http(web, "GET", "/api/v1/targets", "");
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert!(
        target["scrapeUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{target}"
    );
}

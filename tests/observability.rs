//! The compose cluster's `observability` profile: the compose file
//! validates with it, Prometheus scrapes where the orchestrator serves its
//! metrics, Grafana's dashboard asks only for metrics the orchestrator
//! serves, from the datasources it is given. (Jaeger and Grafana are not
//! packaged by Debian and no registry is reachable here: their files are
//! checked, and the OTLP path is tested against the project's own receiver
//! in tests/telemetry.rs.)

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use testfleet_testkit::*;

fn deploy(path: &str) -> String {
    std::fs::read_to_string(repo_root().join("deploy").join(path))
        .unwrap_or_else(|e| panic!("deploy/{path}: {e}"))
}

fn compose() -> Vec<String> {
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

#[test]
fn the_compose_file_validates_with_the_observability_profile() {
    let c = compose();
    let out = Command::new(&c[0])
        .args(&c[1..])
        .arg("-f")
        .arg(repo_root().join("deploy/docker-compose.yml"))
        .args(["--profile", "observability", "config"])
        .output()
        .expect("run docker compose");
    assert!(out.status.success(), "{}", show(&out));
    let config: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let services: BTreeSet<&str> = config["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    for s in [
        "orchestrator",
        "agent_001",
        "agent_002",
        "agent_003",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(s), "no {s} in {services:?}");
    }
    // Only with the profile: the cluster alone starts without them.
    for s in ["jaeger", "prometheus", "grafana"] {
        let profiles = serde_yaml::to_string(&config["services"][s]["profiles"]).unwrap();
        assert_eq!(profiles.trim(), "- observability", "{s}");
    }
    for s in ["orchestrator", "agent_001"] {
        assert!(config["services"][s]["profiles"].is_null(), "{s}");
    }

    // Prometheus scrapes the port the orchestrator is told to serve metrics
    // on, on every interface of its container; Jaeger takes OTLP on 4317.
    let orchestrator = serde_yaml::to_string(&config["services"]["orchestrator"]).unwrap();
    assert!(
        orchestrator.contains("--metrics-listen 0.0.0.0:9090"),
        "{orchestrator}"
    );
    let prom: serde_yaml::Value =
        serde_yaml::from_str(&deploy("prometheus/prometheus.yml")).unwrap();
    let targets = serde_yaml::to_string(&prom["scrape_configs"]).unwrap();
    assert!(targets.contains("orchestrator:9090"), "{targets}");
    assert_eq!(
        config["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"],
        "true"
    );
}

/// Every `testfleet_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"testfleet_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_served_by_the_orchestrator() {
    let dashboard: Value =
        serde_json::from_str(&deploy("grafana/dashboards/testfleet.json")).unwrap();
    let datasources: serde_yaml::Value =
        serde_yaml::from_str(&deploy("grafana/provisioning/datasources/datasources.yml")).unwrap();
    let uids: BTreeSet<String> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        uids.contains("prometheus") && uids.contains("jaeger"),
        "{uids:?}"
    );

    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            uids.contains(uid),
            "panel {} uses datasource {uid}",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            queried.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    // The seed's dashboard metrics are all on it.
    for m in [
        "testfleet_active_agents",
        "testfleet_task_queue_length",
        "testfleet_completed_tasks_total",
        "testfleet_failed_tasks_total",
        "testfleet_task_execution_seconds_bucket",
        "testfleet_task_success_rate",
        "testfleet_test_coverage_percentage",
        "testfleet_agent_health_status",
        "testfleet_agent_memory_usage_mb",
        "testfleet_agent_cpu_utilization",
        "testfleet_alert_active",
    ] {
        assert!(queried.contains(m), "the dashboard does not show {m}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("suite.yaml");
    std::fs::write(
        &config,
        "templates:\n  t: {command: 'true'}\norchestrator:\n  task_definitions:\n    unit:\n      - {id: A, template: t}\n",
    )
    .unwrap();
    let server = Server::start(&config, dir.path());
    let text = server.metrics_text();
    // Families by name and type, as the text format declares them.
    let families: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect();
    let served = |name: &str| {
        families.iter().any(|(family, kind)| {
            let suffix = name.strip_prefix(family.as_str());
            matches!(
                (kind.as_str(), suffix),
                (_, Some(""))
                    | ("counter", Some("_total"))
                    | ("histogram", Some("_bucket" | "_sum" | "_count"))
            )
        })
    };
    let missing: Vec<&String> = queried.iter().filter(|m| !served(m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which the orchestrator does not serve:\n{text}"
    );
}

//! The seed's own orchestrator.sh, with only its launch lines and
//! PROJECT_DIR changed (examples/cashcow/orchestrator.sh), runs the suite to
//! "Testing suite completed successfully!". It needs poetry, curl and jq on
//! PATH, and port 8080 free: the script hard-codes both.

use std::process::{Command, Stdio};
use std::time::Duration;

use testfleet_testkit::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        // What a run of the example leaves beside it (the README's first
        // command makes .testfleet-cache, whose venvs hold symlinks).
        if [
            ".venv",
            "orchestration_logs",
            "__pycache__",
            ".pytest_cache",
            ".testfleet-cache",
            "testfleet-report",
        ]
        .iter()
        .any(|n| name == *n)
        {
            continue;
        }
        let dest = to.join(&name);
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn the_seeds_orchestrator_script_runs_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("cashcow");
    copy_dir(&repo_root().join("examples/cashcow"), &project);
    let bin_dir = orchestrator_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = dir.path().join("output.txt");
    let file = std::fs::File::create(&output).unwrap();
    let mut script = Proc {
        child: Command::new("bash")
            .arg(project.join("orchestrator.sh"))
            .env("PATH", path)
            .env_remove("PROJECT_DIR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
        name: "orchestrator.sh".into(),
    };
    let status = script.wait_exit(Duration::from_secs(400));
    let out = std::fs::read_to_string(&output).unwrap();
    let failure_report =
        std::fs::read_to_string(project.join("orchestration_logs/failure_report.json"))
            .unwrap_or_default();
    assert!(
        status.success(),
        "orchestrator.sh failed:\n{out}\nfailure report:\n{failure_report}"
    );
    assert!(
        out.contains("Testing suite completed successfully!"),
        "{out}"
    );
    assert!(
        out.contains("Orchestration completed successfully!"),
        "{out}"
    );
    assert!(out.contains("Launched agent_006"), "{out}");
    // Its cleanup stopped every process it started.
    let logs = project.join("orchestration_logs");
    assert!(std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .all(|e| e.path().extension().is_none_or(|x| x != "pid")));
    wait_for("port 8080 to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect("127.0.0.1:8080")
            .is_err()
            .then_some(())
    });
}

//! README's "Security model": plaintext gives whoever reaches the port an
//! admin's power (any command on every agent), so `serve --insecure` on an
//! address other than loopback is refused unless `--insecure-allow-remote`
//! says so too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testfleet_testkit::*;

fn serve(dir: &Path, args: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join(format!(
        "serve-{}.log",
        args.join("_").replace([':', '/'], "-")
    ));
    let proc = serve_logged(dir, &fixture("long_task.yaml"), args, &log);
    (proc, log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn plaintext_off_loopback_needs_a_second_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    // The API on every interface (as `serve --insecure` alone listens).
    for (args, addr, what) in [
        (
            vec![
                "--insecure",
                "--listen",
                "0.0.0.0:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            "0.0.0.0:0",
            "the API",
        ),
        (
            vec![
                "--insecure",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "0.0.0.0:0",
            ],
            "0.0.0.0:0",
            "metrics",
        ),
        (
            vec!["--insecure", "--metrics-listen", "127.0.0.1:0"],
            "0.0.0.0:8080",
            "the API",
        ),
    ] {
        let (mut proc, log) = serve(dir.path(), &args);
        let status = proc.wait_exit(Duration::from_secs(20));
        let said = read(&log);
        assert!(!status.success(), "{args:?} started: {said}");
        assert!(
            said.contains(&format!(
                "refusing to serve {what} in plaintext on {addr}, which is not a loopback address"
            )) && said.contains("--insecure-allow-remote"),
            "{args:?}: {said}"
        );
    }

    // Asked twice, it serves, and says what that means.
    let (mut proc, log) = serve(
        dir.path(),
        &[
            "--insecure",
            "--insecure-allow-remote",
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    wait_for("it to listen", Duration::from_secs(20), || {
        read(&log).contains("orchestrator listening").then_some(())
    });
    assert!(proc.child.try_wait().unwrap().is_none());
    assert!(read(&log).contains("serving PLAINTEXT"), "{}", read(&log));

    // The second flag means nothing without the first.
    let out = Command::new(orchestrator_bin())
        .args(["serve", "--insecure-allow-remote", "--config"])
        .arg(fixture("long_task.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--insecure"),
        "{}",
        show(&out)
    );
}

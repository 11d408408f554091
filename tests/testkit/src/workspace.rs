//! Where this workspace's binaries and files are.

use std::path::{Path, PathBuf};

/// Where cargo put the workspace's binaries: beside the running executable
/// (the bench), or one up from a test's `deps/`. Cargo builds the root
/// package's binaries before its integration tests run; `testfleet-bench`
/// needs `cargo build --workspace` (tests/run.sh does it).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("an executable is in a directory");
    if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn orchestrator_bin() -> PathBuf {
    bin_dir().join("orchestrator")
}

pub fn agent_bin() -> PathBuf {
    bin_dir().join("agent")
}

/// The benchmark harness; panics, saying how to build it, when it is not
/// built.
pub fn bench_bin() -> PathBuf {
    let bin = bin_dir().join("testfleet-bench");
    assert!(
        bin.exists(),
        "no {}: build it with `cargo build --workspace --all-targets` (tests/run.sh does)",
        bin.display()
    );
    bin
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit is at tests/testkit")
        .to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// A Python with pytest and pytest-cov (CI's venv, or the developer's).
pub fn python() -> String {
    std::env::var("TESTFLEET_PYTHON").unwrap_or_else(|_| "python3".into())
}

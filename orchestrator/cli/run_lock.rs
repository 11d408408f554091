//! One `orchestrator run` at a time per report directory and per agent
//! cache: two runs sharing either would kill each other's tasks (a new
//! agent reaps the process groups an earlier one left in its workdir) and
//! mix their reports. An advisory `flock` on a file inside the directory,
//! holding the owner's pid so a refusal can name it; the kernel drops the
//! lock when the process ends, however it ends, so no stale lock is left.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name, inside the locked directory.
pub const LOCK_FILE: &str = ".testfleet-run.lock";

/// Held for as long as the run lasts.
pub struct DirLock {
    _lock: Flock<File>,
}

/// Locks `dir` (which exists) for this run; refuses when another process
/// holds it. `what` names the directory's role and `flag` the option that
/// picks another one, for the refusal's sentence.
pub fn lock(dir: &Path, what: &str, flag: &str) -> anyhow::Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_string(),
                pid => format!("another `orchestrator run` (pid {pid})"),
            };
            anyhow::bail!(
                "the {what} {} is in use by {holder}: wait for it to end, or give this run its own with {flag} DIR",
                dir.display()
            );
        }
        Err((_, e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    };
    // The pid, for the next run's refusal to name.
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    lock.flush()?;
    Ok(DirLock { _lock: lock })
}

/// `dir`, made and made absolute.
pub fn create(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the {what} {}", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("finding the {what} {}", dir.display()))
}

//! The command line of an agent process that joins a plaintext orchestrator
//! on this host. `orchestrator run --local-agents` starts its agents with
//! it, and so do the black-box tests (through the testkit crate), so the
//! agents under test are started as the product starts them.

use std::ffi::OsString;
use std::path::Path;

/// One agent on this host.
pub struct LocalAgent<'a> {
    /// The orchestrator's `http://` endpoint: loopback, so no TLS.
    pub endpoint: &'a str,
    pub agent_id: &'a str,
    /// The agent's workdir is `dir/ID` and its log `dir/ID.log`.
    pub dir: &'a Path,
    pub cpu_cores: f64,
    pub memory_mb: u64,
}

impl LocalAgent<'_> {
    /// The agent binary's arguments.
    pub fn args(&self) -> Vec<OsString> {
        self.args_logging_to(self.dir)
    }

    /// The same, but the log goes to `log_dir/ID.log`: `orchestrator run`
    /// keeps workdirs in its cache and logs in the report directory.
    pub fn args_logging_to(&self, log_dir: &Path) -> Vec<OsString> {
        let id = self.agent_id;
        let mut args: Vec<OsString> = [
            "--orchestrator-endpoint",
            self.endpoint,
            "--insecure",
            "--agent-id",
            id,
            "--workdir",
        ]
        .map(OsString::from)
        .into();
        args.push(self.dir.join(id).into());
        args.push("--log-file".into());
        args.push(log_dir.join(format!("{id}.log")).into());
        args.extend(
            [
                "--cpu-cores".to_string(),
                self.cpu_cores.to_string(),
                "--memory-mb".to_string(),
                self.memory_mb.to_string(),
            ]
            .map(OsString::from),
        );
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_agent_and_puts_its_workdir_and_log_under_dir() {
        let args = LocalAgent {
            endpoint: "http://127.0.0.1:1",
            agent_id: "agent_001",
            dir: Path::new("/r/agents"),
            cpu_cores: 4.0,
            memory_mb: 8192,
        }
        .args();
        let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            text,
            [
                "--orchestrator-endpoint",
                "http://127.0.0.1:1",
                "--insecure",
                "--agent-id",
                "agent_001",
                "--workdir",
                "/r/agents/agent_001",
                "--log-file",
                "/r/agents/agent_001.log",
                "--cpu-cores",
                "4",
                "--memory-mb",
                "8192",
            ]
        );
    }
}

//! A certificate for each agent the pool starts, minted from the
//! orchestrator's CA (`tls.ca` and its key): the agent's id is the
//! certificate's name, so mTLS stays on and the agent cannot speak as another.

use std::path::{Path, PathBuf};

use anyhow::Context;
use testfleet::tls::{DevCa, Role};

/// Where an agent's certificate, its key and the CA are.
#[derive(Debug, Clone)]
pub struct AgentCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Mints `agent_id`'s certificate into `dir`.
pub fn mint(
    agent_id: &str,
    ca: &Path,
    ca_key: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<AgentCerts> {
    let ca_key = ca_key.context(
        "mTLS is on, so each agent needs a certificate: set agent_pool.provisioner.ca_key to the CA's private key",
    )?;
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("reading the CA {}", ca.display()))?;
    let key_pem = std::fs::read_to_string(ca_key).with_context(|| {
        format!(
            "reading the CA key {} (agent_pool.provisioner.ca_key)",
            ca_key.display()
        )
    })?;
    let issued = DevCa::load(&ca_pem, &key_pem)?.client(agent_id, Role::Agent)?;
    let cert = dir.join(format!("{agent_id}.pem"));
    let key = dir.join(format!("{agent_id}.key"));
    std::fs::write(&cert, issued.cert_pem)
        .with_context(|| format!("writing {}", cert.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .with_context(|| format!("writing {}", key.display()))?;
        f.write_all(issued.key_pem.as_bytes())?;
    }
    Ok(AgentCerts {
        ca: ca.to_path_buf(),
        cert,
        key,
    })
}

//! Certificates for mTLS tests: the layout `orchestrator certs init` writes
//! (made by the real binary), more certificates minted from its CA, a suite
//! file pointing at them, and gRPC channels presenting any of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use testfleet::tls::{DevCa, Issued, Role};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{orchestrator_bin, Server};

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `orchestrator certs init --agents 3 --out dir`.
    pub fn init(dir: &Path) -> Pki {
        let out = Command::new(orchestrator_bin())
            .args(["certs", "init", "--agents", "3", "--out"])
            .arg(dir)
            .output()
            .expect("run certs init");
        assert!(
            out.status.success(),
            "certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path(name).display()))
    }

    /// A certificate and key `certs init` wrote, by name (`agent_001`, `admin`).
    pub fn issued(&self, who: &str) -> Issued {
        Issued {
            cert_pem: self.read(&format!("{who}.pem")),
            key_pem: self.read(&format!("{who}.key")),
        }
    }

    /// The CA, to mint more from.
    pub fn ca(&self) -> DevCa {
        DevCa::load(&self.read("ca.pem"), &self.read("ca.key")).expect("load the CA")
    }

    /// A new certificate for `name` with `role`, from the CA.
    pub fn mint(&self, name: &str, role: Role) -> Issued {
        self.ca().client(name, role).expect("mint a certificate")
    }

    /// `--ca --cert --key` for `who`.
    pub fn flags(&self, who: &str) -> Vec<String> {
        ["ca.pem", &format!("{who}.pem"), &format!("{who}.key")]
            .iter()
            .zip(["--ca", "--cert", "--key"])
            .flat_map(|(file, flag)| [flag.to_string(), self.path(file).display().to_string()])
            .collect()
    }

    /// `config` with a `tls:` section (and, with `crl`, its `crl:` key)
    /// pointing at these files, written to `out`.
    pub fn suite_with_tls(&self, config: &Path, out: &Path, crl: bool) -> PathBuf {
        let text = std::fs::read_to_string(config).expect("read the suite");
        let crl = if crl {
            format!(", crl: {}", self.path("crl.pem").display())
        } else {
            String::new()
        };
        let body = format!(
            "tls: {{ca: {}, cert: {}, key: {}{crl}}}\n{text}",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display()
        );
        std::fs::write(out, body).expect("write the suite");
        out.to_path_buf()
    }
}

/// `https://localhost:PORT` of the server's API.
pub fn https_endpoint(server: &Server) -> String {
    format!("https://localhost:{}", server.addr.port())
}

/// A channel to the server's API over mTLS: trusting `ca_pem`, presenting
/// `identity` (or no certificate).
pub async fn tls_channel(
    server: &Server,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(https_endpoint(server))
        .expect("an endpoint")
        .tls_config(tls)?
        .connect()
        .await
}

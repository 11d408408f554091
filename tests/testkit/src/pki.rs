//! Certificates for mTLS tests: the layout `orchestrator certs init` writes
//! (made by the real binary), more certificates minted from its CA, a suite
//! file pointing at them, and gRPC channels presenting any of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testfleet::tls::{DevCa, Issued, Role};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{agent_bin, orchestrator_bin, Proc, Server};

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

    /// `path`, as a command-line argument.
    pub fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
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

/// An agent (4 cores, 8 GB) dialling the server over mTLS as `who`, with
/// its workdir and log under `dir`.
pub fn tls_agent(server: &Server, pki: &Pki, who: &str, dir: &Path) -> Proc {
    let child = Command::new(agent_bin())
        .args(["--orchestrator-endpoint", &https_endpoint(server)])
        .args(["--cpu-cores", "4", "--memory-mb", "8192"])
        .args(pki.flags(who))
        .arg("--workdir")
        .arg(dir.join(who))
        .arg("--log-file")
        .arg(dir.join(format!("{who}.log")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start an agent");
    Proc {
        child,
        name: who.into(),
    }
}

/// An `orchestrator` client command against the server with the admin
/// certificate.
pub fn tls_admin(server: &Server, pki: &Pki, args: &[&str]) -> Output {
    Command::new(orchestrator_bin())
        .args(args)
        .args(["--endpoint", &https_endpoint(server)])
        .args(pki.flags("admin"))
        .output()
        .expect("run the orchestrator client")
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

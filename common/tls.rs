//! mTLS for every connection: a dev certificate authority (`orchestrator
//! certs init`), loading PEM files into rustls configurations, and reading a
//! peer's identity from its certificate. An identity is the certificate's
//! common name (an agent's id, or an operator's name); its role is the
//! organizational unit: `agent` or `admin`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// Who is on the other end of a connection, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub name: String,
    pub role: Option<Role>,
}

/// Reads CN and OU from a DER certificate.
pub fn identity_of(cert: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let role = subject
        .iter_organizational_unit()
        .find_map(|ou| match ou.as_str().ok()? {
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            _ => None,
        });
    Some(PeerIdentity { name, role })
}

pub use crate::config::TlsFiles;

/// The rustls configurations a side builds from its `TlsFiles`.
pub trait TlsSetup {
    /// The orchestrator's: its certificate, and the CA client certificates
    /// must be signed by.
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>>;
    /// An agent's or a control client's.
    fn client_config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig>;
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the certificate {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading the key {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{} is not a PEM private key", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}

fn roots(files: &TlsFiles) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&files.ca)? {
        roots
            .add(c)
            .with_context(|| format!("{} is not a usable CA certificate", files.ca.display()))?;
    }
    Ok(roots)
}

impl TlsSetup for TlsFiles {
    /// The orchestrator's side: requires a client certificate from the CA.
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(self)?),
            provider.clone(),
        )
        .build()
        .context("building the client certificate verifier")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .with_context(|| {
                format!(
                    "{} and {} do not make a certificate and its key",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// tonic's client config: verify the orchestrator against the CA, present ours.
    fn client_config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        // Fail here, with the file named, rather than at the first call.
        certs(&self.ca)?;
        certs(&self.cert)?;
        key(&self.key)?;
        Ok(tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&self.cert)?,
                read(&self.key)?,
            )))
    }
}

/// A certificate authority for development and tests.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// An issued certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    pub fn new(name: &str) -> anyhow::Result<DevCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(DevCa {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA (its PEM certificate and key), to issue more from.
    pub fn load(cert_pem: &str, key_pem: &str) -> anyhow::Result<DevCa> {
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .context("the CA certificate is not a PEM certificate")?;
        Ok(DevCa {
            issuer,
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        })
    }

    /// The orchestrator's certificate, valid for `names` (DNS names or IPs).
    pub fn server(&self, names: &[String]) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "testfleet orchestrator");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: `name` is the identity, `role` what it may do.
    pub fn client(&self, name: &str, role: Role) -> anyhow::Result<Issued> {
        self.client_valid(name, role, None)
    }

    /// A client certificate with a chosen validity (tests use expired ones).
    pub fn client_valid(
        &self,
        name: &str,
        role: Role,
        valid: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some((from, to)) = valid {
            params.not_before = from;
            params.not_after = to;
        }
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `orchestrator certs init`: a CA, a server certificate, `agents` agent
/// certificates (agent_001, ...) and an admin certificate, as PEM files.
pub fn init_dev_pki(out: &Path, agents: u32, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = DevCa::new("testfleet dev CA")?;
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, private: bool| -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        written.push(path);
        Ok(())
    };
    write("ca.pem", &ca.cert_pem, false)?;
    write("ca.key", &ca.key_pem, true)?;
    let server = ca.server(names)?;
    write("server.pem", &server.cert_pem, false)?;
    write("server.key", &server.key_pem, true)?;
    for i in 1..=agents {
        let id = format!("agent_{i:03}");
        let c = ca.client(&id, Role::Agent)?;
        write(&format!("{id}.pem"), &c.cert_pem, false)?;
        write(&format!("{id}.key"), &c.key_pem, true)?;
    }
    let admin = ca.client("admin", Role::Admin)?;
    write("admin.pem", &admin.cert_pem, false)?;
    write("admin.key", &admin.key_pem, true)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn client_certificates_carry_identity_and_role() {
        let ca = DevCa::new("test CA").unwrap();
        let agent = ca.client("agent_007", Role::Agent).unwrap();
        assert_eq!(
            identity_of(&der(&agent.cert_pem)),
            Some(PeerIdentity {
                name: "agent_007".into(),
                role: Some(Role::Agent)
            })
        );
        let admin = ca.client("alice", Role::Admin).unwrap();
        assert_eq!(
            identity_of(&der(&admin.cert_pem)).unwrap().role,
            Some(Role::Admin)
        );
    }

    #[test]
    fn init_writes_a_usable_pki() {
        let dir = tempfile::tempdir().unwrap();
        let files = init_dev_pki(dir.path(), 2, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(files.len(), 10);
        let server = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
        };
        server.server_config().unwrap();
        let agent = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("agent_002.pem"),
            key: dir.path().join("agent_002.key"),
        };
        agent.client_config().unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = TlsFiles {
            ca: "/nope/ca.pem".into(),
            cert: "/nope/c.pem".into(),
            key: "/nope/k.pem".into(),
        };
        let err = format!("{:#}", files.server_config().unwrap_err());
        assert!(err.contains("/nope/ca.pem"), "{err}");
    }
}

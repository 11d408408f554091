//! mTLS for every connection: a dev certificate authority (`orchestrator
//! certs init`), loading PEM files into rustls configurations, and reading a
//! peer's identity from its certificate. An identity is the certificate's
//! common name (an agent's id, or an operator's name); its role is the
//! organizational unit: `agent`, `admin` or `observer`. The orchestrator's
//! configurations are reloadable (`ServerTls`): a new CRL, CA or
//! certificate is taken without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Admin,
    /// Reads the metrics port, and nothing else: for Prometheus.
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Observer => "observer",
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
            "observer" => Some(Role::Observer),
            _ => None,
        });
    Some(PeerIdentity { name, role })
}

pub use crate::config::TlsFiles;

/// The rustls configurations a side builds from its `TlsFiles`.
pub trait TlsSetup {
    /// The orchestrator's API port's: its certificate, and the CA (less its
    /// revoked certificates) client certificates must be signed by.
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>>;
    /// The orchestrator's, for the API and the metrics port, from one
    /// reading of the files.
    fn server_configs(&self) -> anyhow::Result<ServerConfigs>;
    /// An agent's or a control client's.
    fn client_config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig>;
}

/// The orchestrator's two TLS configurations. They differ only in what
/// they offer to speak: gRPC needs HTTP/2 on the API port, while the
/// metrics port speaks HTTP/1.1 only (a Prometheus offered h2 would take it).
#[derive(Clone)]
pub struct ServerConfigs {
    pub api: Arc<rustls::ServerConfig>,
    pub metrics: Arc<rustls::ServerConfig>,
    /// Both configurations' client verifier, to check a connection's
    /// certificate again after a reload.
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
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

/// The CRLs in `pem`, the text of `path`. An empty file lists none; a file
/// with text but no CRL is a mistake worth saying.
fn crls(path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let crls: Vec<_> = rustls_pemfile::crls(&mut &*pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM CRLs", path.display()))?;
    anyhow::ensure!(
        !crls.is_empty() || pem.iter().all(u8::is_ascii_whitespace),
        "{} holds no \"X509 CRL\" block",
        path.display()
    );
    Ok(crls)
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

/// The server configurations from the files, with the CRL file's text
/// (already read, so the caller knows which text they hold).
fn server_configs_with(files: &TlsFiles, crl_pem: Option<&[u8]>) -> anyhow::Result<ServerConfigs> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(files)?),
        provider.clone(),
    );
    if let (Some(path), Some(pem)) = (&files.crl, crl_pem) {
        verifier = verifier.with_crls(crls(path, pem)?);
    }
    let verifier = verifier
        .build()
        .context("building the client certificate verifier")?;
    let mut api = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .with_context(|| {
            format!(
                "{} and {} do not make a certificate and its key",
                files.cert.display(),
                files.key.display()
            )
        })?;
    let mut metrics = api.clone();
    api.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    metrics.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerConfigs {
        api: Arc::new(api),
        metrics: Arc::new(metrics),
        verifier,
    })
}

fn read_crl(files: &TlsFiles) -> anyhow::Result<Option<Vec<u8>>> {
    files
        .crl
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading the CRL {}", p.display())))
        .transpose()
}

impl TlsSetup for TlsFiles {
    /// The orchestrator's side: requires a client certificate from the CA.
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(self.server_configs()?.api)
    }

    fn server_configs(&self) -> anyhow::Result<ServerConfigs> {
        server_configs_with(self, read_crl(self)?.as_deref())
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

/// The orchestrator's TLS as it stands: read from the files at start, and
/// again on `reload` (SIGHUP) or when the CRL file changes. Each new
/// connection takes the configurations current at its handshake; a reload
/// that fails (a half-written file, a key that does not match) keeps the
/// ones in use, so a mistake never leaves the port without TLS.
pub struct ServerTls {
    files: TlsFiles,
    current: arc_swap::ArcSwap<ServerConfigs>,
    /// Counts the configurations served: each reload that took adds one.
    reloads: tokio::sync::watch::Sender<u64>,
    /// The CRL file as last read (its bytes, or why it could not be read),
    /// to tell when it changes; held while reloading, so reloads queue.
    crl_seen: std::sync::Mutex<Option<Result<Vec<u8>, std::io::ErrorKind>>>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> anyhow::Result<ServerTls> {
        let crl = read_crl(&files)?;
        let configs = server_configs_with(&files, crl.as_deref())?;
        Ok(ServerTls {
            current: arc_swap::ArcSwap::from_pointee(configs),
            reloads: tokio::sync::watch::Sender::new(0),
            crl_seen: std::sync::Mutex::new(crl.map(Ok)),
            files,
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// For the API port's next handshake.
    pub fn api(&self) -> Arc<rustls::ServerConfig> {
        self.current.load().api.clone()
    }

    /// For the metrics port's next handshake.
    pub fn metrics(&self) -> Arc<rustls::ServerConfig> {
        self.current.load().metrics.clone()
    }

    /// Tells of each reload that took (its count), so open connections can
    /// be checked against the new CA and CRL.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Whether a client's certificate chain (end entity first) passes the
    /// configuration now served: a revoked one does not.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let (end, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        self.current
            .load()
            .verifier
            .verify_client_cert(end, intermediates, rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    fn serve(&self, configs: ServerConfigs) {
        self.current.store(Arc::new(configs));
        self.reloads.send_modify(|n| *n += 1);
    }

    /// Reads every file again (CA, certificate, key, CRL) and, if they
    /// make a configuration, serves it from the next handshake on.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut seen = self.lock();
        let crl = read_crl(&self.files);
        *seen = Self::seen(&self.files, &crl);
        let configs = server_configs_with(&self.files, crl?.as_deref())?;
        self.serve(configs);
        Ok(())
    }

    /// Reloads when the CRL file reads differently from the last time it
    /// was looked at: Ok(true) when a new configuration is served. A file
    /// that fails to load is not tried again until it changes once more.
    pub fn reload_if_crl_changed(&self) -> anyhow::Result<bool> {
        if self.files.crl.is_none() {
            return Ok(false);
        }
        let mut seen = self.lock();
        let crl = read_crl(&self.files);
        let now = Self::seen(&self.files, &crl);
        if now == *seen {
            return Ok(false);
        }
        *seen = now;
        let configs = server_configs_with(&self.files, crl?.as_deref())?;
        self.serve(configs);
        Ok(true)
    }

    fn seen(
        files: &TlsFiles,
        crl: &anyhow::Result<Option<Vec<u8>>>,
    ) -> Option<Result<Vec<u8>, std::io::ErrorKind>> {
        files.crl.as_ref()?;
        Some(match crl {
            Ok(bytes) => Ok(bytes.clone().unwrap_or_default()),
            Err(e) => Err(e
                .downcast_ref::<std::io::Error>()
                .map_or(std::io::ErrorKind::Other, std::io::Error::kind)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Result<Vec<u8>, std::io::ErrorKind>>> {
        self.crl_seen.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A CRL (PEM) revoking `revoked` (PEM certificates this CA issued),
    /// valid from now for `valid_days`. `number` must grow with each CRL
    /// the CA issues. An empty list makes a CRL that revokes nothing.
    pub fn crl(&self, revoked: &[&str], number: u64, valid_days: i64) -> anyhow::Result<String> {
        let serials = revoked
            .iter()
            .map(|pem| serial_of(pem))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.crl_of_serials(&serials, number, valid_days)
    }

    /// A CRL revoking the certificates with these serial numbers.
    pub fn crl_of_serials(
        &self,
        serials: &[Vec<u8>],
        number: u64,
        valid_days: i64,
    ) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(valid_days.max(1)),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
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

/// The serial number of a PEM certificate, as its bytes.
pub fn serial_of(cert_pem: &str) -> anyhow::Result<Vec<u8>> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .context("no PEM certificate")?
        .context("not a PEM certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).context("not an X.509 certificate")?;
    Ok(cert.raw_serial().to_vec())
}

/// `orchestrator certs revoke`: adds the certificates `revoke` (PEM files)
/// to the CRL at `dir`/crl.pem, signed with the CA in `dir` (ca.pem,
/// ca.key), as `certs init` laid it out. The CRL is replaced atomically, so
/// an orchestrator watching it never reads half of one. Returns the serials
/// now revoked, in hex.
pub fn revoke(dir: &Path, revoke: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let ca = DevCa::load(&read("ca.pem")?, &read("ca.key")?)?;
    let crl_path = dir.join("crl.pem");
    let (mut serials, mut number) = (Vec::new(), 1u64);
    if crl_path.exists() {
        let pem =
            std::fs::read(&crl_path).with_context(|| format!("reading {}", crl_path.display()))?;
        for der in crls(&crl_path, &pem)? {
            let (_, crl) = x509_parser::parse_x509_crl(&der)
                .map_err(|e| anyhow::anyhow!("{} is not a CRL: {e}", crl_path.display()))?;
            serials.extend(
                crl.iter_revoked_certificates()
                    .map(|r| r.raw_serial().to_vec()),
            );
            if let Some(n) = crl.crl_number() {
                number = number.max(u64::try_from(n).unwrap_or(u64::MAX - 1) + 1);
            }
        }
    }
    for path in revoke {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let serial = serial_of(&pem).with_context(|| format!("{}", path.display()))?;
        if !serials.contains(&serial) {
            serials.push(serial);
        }
    }
    let text = ca.crl_of_serials(&serials, number, CRL_DAYS)?;
    let tmp = crl_path.with_extension("pem.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &crl_path)
        .with_context(|| format!("replacing {}", crl_path.display()))?;
    Ok(serials
        .iter()
        .map(|s| s.iter().map(|b| format!("{b:02x}")).collect())
        .collect())
}

/// How long a CRL that `certs` writes is valid. The orchestrator does not
/// refuse an out-of-date CRL (rustls enforces no next-update by default),
/// but other readers may.
pub const CRL_DAYS: i64 = 3650;

/// `orchestrator certs init`: a CA, a server certificate, `agents` agent
/// certificates (agent_001, ...), an admin and an observer certificate (for
/// Prometheus), and an empty CRL (crl.pem) to revoke into, as PEM files.
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
    let observer = ca.client("observer", Role::Observer)?;
    write("observer.pem", &observer.cert_pem, false)?;
    write("observer.key", &observer.key_pem, true)?;
    write("crl.pem", &ca.crl(&[], 1, CRL_DAYS)?, false)?;
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
        assert_eq!(files.len(), 13);
        let server = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            crl: Some(dir.path().join("crl.pem")),
        };
        server.server_config().unwrap();
        let agent = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("agent_002.pem"),
            key: dir.path().join("agent_002.key"),
            crl: None,
        };
        agent.client_config().unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let files = TlsFiles {
            ca: "/nope/ca.pem".into(),
            cert: "/nope/c.pem".into(),
            key: "/nope/k.pem".into(),
            crl: None,
        };
        let err = format!("{:#}", files.server_config().unwrap_err());
        assert!(err.contains("/nope/ca.pem"), "{err}");
    }

    #[test]
    fn a_changed_crl_is_reloaded_and_a_bad_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        init_dev_pki(dir.path(), 1, &["localhost".into()]).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            crl: Some(dir.path().join("crl.pem")),
        };
        let tls = ServerTls::load(files).unwrap();
        assert!(!tls.reload_if_crl_changed().unwrap(), "nothing changed");
        let ca = DevCa::load(&read("ca.pem"), &read("ca.key")).unwrap();
        let revoked = ca.crl(&[&read("agent_001.pem")], 2, 1).unwrap();
        let before = tls.api();
        std::fs::write(dir.path().join("crl.pem"), &revoked).unwrap();
        assert!(tls.reload_if_crl_changed().unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.api()), "a new configuration");
        let kept = tls.api();
        std::fs::write(dir.path().join("crl.pem"), "not a CRL").unwrap();
        let err = format!("{:#}", tls.reload_if_crl_changed().unwrap_err());
        assert!(err.contains("crl.pem"), "{err}");
        assert!(Arc::ptr_eq(&kept, &tls.api()), "the last good one stays");
        assert!(
            !tls.reload_if_crl_changed().unwrap(),
            "told once per change"
        );
    }

    #[test]
    fn a_crl_names_the_serials_it_revokes() {
        let ca = DevCa::new("test CA").unwrap();
        let agent = ca.client("agent_001", Role::Agent).unwrap();
        let pem = ca.crl(&[&agent.cert_pem], 7, 1).unwrap();
        let der = rustls_pemfile::crls(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        let serials: Vec<_> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, [serial_of(&agent.cert_pem).unwrap()]);
    }
}

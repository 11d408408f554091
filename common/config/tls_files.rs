//! Where the `tls:` section points. Reading and using the files is the
//! TLS module's work (`testfleet::tls`); here they are only paths.

use std::path::{Path, PathBuf};

/// Where `tls:` points: the CA that signs peers, and this side's certificate.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate peers must be signed by (PEM).
    pub ca: PathBuf,
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
    /// The orchestrator's: certificates the CA has revoked (PEM CRLs, any
    /// number in one file). Read again whenever the file changes, and on
    /// SIGHUP with the rest; a client certificate it lists is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// Resolves relative paths against `dir` (the config file's directory).
    pub fn relative_to(&self, dir: &Path) -> TlsFiles {
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                dir.join(p)
            }
        };
        TlsFiles {
            ca: abs(&self.ca),
            cert: abs(&self.cert),
            key: abs(&self.key),
            crl: self.crl.as_ref().map(abs),
        }
    }
}

//! Who may do what. Under mTLS the certificate decides: an agent's identity
//! is its certificate's name, and control calls need the admin role. With
//! `--insecure` (or the embedded run on loopback) nothing is checked.

use testfleet::tls::Role;
use tonic::Status;

use crate::edge::listener::PeerInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plaintext, by explicit choice.
    Open,
    Mtls,
}

/// The certificate name of the caller, when it has `role`.
pub fn require(mode: Mode, peer: Option<&PeerInfo>, role: Role) -> Result<Option<String>, Status> {
    if mode == Mode::Open {
        return Ok(None);
    }
    let identity = peer
        .and_then(|p| p.identity.as_ref())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    if identity.role != Some(role) {
        tracing::warn!(
            peer = peer.and_then(|p| p.remote_addr).map(|a| a.to_string()),
            name = identity.name,
            needed = role.as_str(),
            "refused a call for its role"
        );
        return Err(Status::permission_denied(format!(
            "certificate {:?} does not carry the {} role",
            identity.name,
            role.as_str()
        )));
    }
    Ok(Some(identity.name.clone()))
}

pub fn peer<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

//! Client channels to the orchestrator. Plaintext only when asked for: mTLS
//! comes through the `tls` seam.

use crate::tls::TlsSetup as _;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 flow-control windows, both ways: how much one stream, and one
/// connection, may send before the reader acknowledges it.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// Accepts `host:port`, `http://host:port` or `https://host:port`.
pub fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let ep = Endpoint::from_shared(url.clone())
        .with_context(|| format!("{url:?} is not a valid endpoint"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // HTTP/2's default 64 KB window makes a 20 MB final report hundreds
        // of round trips; these are credit, not buffers.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(ep)
}

pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let ep = endpoint(url)?;
    ep.connect()
        .await
        .with_context(|| format!("cannot reach the orchestrator at {url}"))
}

/// An endpoint using mTLS with `files` (the URL must be https://), or
/// plaintext when `files` is None.
pub fn secure_endpoint(
    url: &str,
    files: Option<&crate::tls::TlsFiles>,
) -> anyhow::Result<Endpoint> {
    let ep = endpoint(url)?;
    match files {
        Some(f) => {
            anyhow::ensure!(
                !url.starts_with("http://"),
                "{url} is plaintext but TLS files were given: use https://"
            );
            Ok(ep.tls_config(f.client_config()?)?)
        }
        None => Ok(ep),
    }
}

/// `TlsFiles` from the three flags: all or none.
pub fn tls_flags(
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            crl: None,
        })),
        _ => anyhow::bail!("--ca, --cert and --key go together"),
    }
}

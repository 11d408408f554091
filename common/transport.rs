//! Client channels to the orchestrator. Plaintext only when asked for: mTLS
//! comes through the `tls` seam.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

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

//! Certificates without a restart: on SIGHUP `serve` reads its `tls:` files
//! again (CA, server certificate and key, CRL), and it looks at the CRL file
//! every `CRL_CHECK_INTERVAL`, so a revocation takes effect on its own. New
//! handshakes get the new configuration; connections already open keep the
//! one they were made with. A reload that fails is logged and changes
//! nothing.

use std::sync::{Arc, Weak};

use testfleet::config::defaults;
use testfleet::tls::ServerTls;

/// Starts both watchers; they end when `tls` is dropped (the server gone).
pub fn spawn(tls: &Arc<ServerTls>) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let weak = Arc::downgrade(tls);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(tls) = weak.upgrade() else { return };
            let files = tls.files();
            match tls.reload() {
                Ok(()) => tracing::info!(
                    ca = %files.ca.display(),
                    cert = %files.cert.display(),
                    crl = files.crl.as_ref().map(|p| p.display().to_string()),
                    "reloaded the TLS files on SIGHUP: new connections use them"
                ),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "could not reload the TLS files on SIGHUP; the ones loaded before stay in use"
                ),
            }
        }
    });
    if tls.files().crl.is_some() {
        tokio::spawn(watch_crl(Arc::downgrade(tls)));
    }
    Ok(())
}

async fn watch_crl(tls: Weak<ServerTls>) {
    let mut every = tokio::time::interval(defaults::CRL_CHECK_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(tls) = tls.upgrade() else { return };
        // Reading a small file: off the async workers all the same, so a
        // slow disk cannot stall them.
        let check = tls.clone();
        let changed = tokio::task::spawn_blocking(move || check.reload_if_crl_changed()).await;
        let crl = tls.files().crl.as_ref().map(|p| p.display().to_string());
        match changed {
            Ok(Ok(true)) => tracing::info!(
                crl,
                "the CRL changed: reloaded it, new connections are checked against it"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(
                crl,
                error = format!("{e:#}"),
                "the CRL changed but could not be loaded; the one loaded before stays in use"
            ),
            Err(e) => tracing::error!(error = %e, "the CRL check failed"),
        }
    }
}

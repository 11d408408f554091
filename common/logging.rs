//! Logs: JSON lines (for machines) unless stderr is a terminal, then human
//! text. `--log-file` sends them to a file as JSON.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::{fmt, EnvFilter};

/// `default_level` applies when RUST_LOG is unset.
pub fn init(default_level: &str, log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_level.to_lowercase()));
    let builder = fmt().with_env_filter(filter).with_target(false);
    match log_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .json()
                .flatten_event(true)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None if std::io::stderr().is_terminal() => builder.with_writer(std::io::stderr).init(),
        None => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

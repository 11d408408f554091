//! The suite configuration: its model, validation and plan (the
//! `testfleet-config` crate, which reads no files), and reading it from one.

use std::path::{Path, PathBuf};

pub use testfleet_config::*;

/// Reads and parses the suite file at `path`.
pub fn load(path: &Path) -> Result<SuiteConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![ConfigProblem {
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    SuiteConfig::parse(&text, path)
}

/// The directory a config file lives in, absolute.
pub fn config_dir(path: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    abs.parent().map(Path::to_path_buf).unwrap_or_default()
}

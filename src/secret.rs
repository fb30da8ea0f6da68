//! Secrets in the config: inline, from a file (e.g. systemd's `$CREDENTIALS_DIRECTORY`) or from
//! an environment variable. A module of its own because every config section that talks to the
//! outside (sources, hooks, notifiers, schema probes) holds them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret given inline, from a file (e.g. under `$CREDENTIALS_DIRECTORY`), or from an
/// environment variable. Only the reference is kept in logs (`Debug` never prints an inline
/// value).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Secret {
    /// Reads the secret's value now (files are re-read so rotated secrets take effect).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File { file } => {
                let p = expand_credentials(file);
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))
            }
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
            }
        }
    }

    /// How the secret is referenced, for logs (never the value).
    pub fn describe(&self) -> String {
        match self {
            Secret::Inline(_) => "<inline secret>".into(),
            Secret::File { file } => format!("file {}", file.display()),
            Secret::Env { env } => format!("env {env}"),
        }
    }
}

/// `$CREDENTIALS_DIRECTORY/name` lets systemd's `LoadCredential=` supply secrets.
fn expand_credentials(p: &Path) -> PathBuf {
    match p.strip_prefix("$CREDENTIALS_DIRECTORY") {
        Ok(rest) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => PathBuf::from(dir).join(rest),
            None => p.to_path_buf(),
        },
        Err(_) => p.to_path_buf(),
    }
}

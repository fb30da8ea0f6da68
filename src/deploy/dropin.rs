//! Drop-in deployments: a YAML file per deployment in a watched directory registers it, for
//! Ansible and other config-management users who would rather write a file than call an API.
//!
//! The file holds the same fields as `POST /api/v1/deployments`. Registration is idempotent
//! on `id`, so the directory is simply re-read after every change (and every minute, for file
//! systems without inotify); a file whose content changed for an id already registered is
//! reported as a conflict and ignored. Errors name the file, line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, EngineError};
use super::model::DeploymentRequest;
use crate::diag::Diagnostic;
use crate::yamlfile::{is_rule_file_name, read_limited, yaml_options};

/// Parses one drop-in file.
pub fn parse_file(path: &Path) -> Result<DeploymentRequest, Diagnostic> {
    let text = read_limited(path)?;
    serde_saphyr::from_str_with_options(&text, yaml_options())
        .map_err(|e| Diagnostic::from_yaml(path, &e))
}

/// Registers every drop-in file not seen with the same content before. Returns how many new
/// deployments were registered.
pub fn scan(engine: &Arc<Engine>, dir: &Path, seen: &mut BTreeMap<PathBuf, String>) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_rule_file_name(p))
        .collect();
    files.sort();
    let mut registered = 0;
    for f in files {
        let stamp = std::fs::read(&f)
            .map(|b| crate::yamlfile::short_hash(&b))
            .unwrap_or_default();
        if seen.get(&f) == Some(&stamp) {
            continue;
        }
        seen.insert(f.clone(), stamp);
        match parse_file(&f) {
            Ok(req) => {
                let id = req.id.clone();
                match engine.register(req) {
                    Ok((_, true)) => {
                        registered += 1;
                        tracing::info!(file = %f.display(), deployment = %id, "registered a drop-in deployment");
                    }
                    Ok((_, false)) => {}
                    Err(EngineError::Conflict(id)) => {
                        tracing::error!(file = %f.display(), deployment = %id, "drop-in file changed for a deployment that is already registered; ignored (use a new id)");
                    }
                    Err(e) => {
                        tracing::error!(file = %f.display(), error = %e, "drop-in deployment rejected")
                    }
                }
            }
            Err(d) => tracing::error!(error = %d, "drop-in deployment file is invalid"),
        }
    }
    registered
}

/// Watches `dir` until `shutdown`, registering drop-in deployments as they appear.
pub async fn run(engine: Arc<Engine>, dir: PathBuf, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<()>(8);
    let _watcher = match notify_debouncer_full::new_debouncer(
        Duration::from_millis(250),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            if res.is_ok() {
                let _ = tx.try_send(());
            }
        },
    ) {
        Ok(mut d) => match d.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "drop-in directory not watched; re-read every minute");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the drop-in directory");
            None
        }
    };
    let mut seen = BTreeMap::new();
    let mut periodic = tokio::time::interval(Duration::from_secs(60));
    loop {
        scan(&engine, &dir, &mut seen);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = rx.recv() => {}
            _ = periodic.tick() => {}
        }
    }
}

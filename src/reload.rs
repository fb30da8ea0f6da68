//! Hot reload of the rules directory: a debounced directory watch (safe for editors that save
//! by writing a temp file and renaming, like vim and `sed -i`) plus SIGHUP, both ending in
//! [`Rules::reload`], which runs exactly the loader `rollguard check` runs. A valid edit is
//! swapped in atomically; an invalid one is rejected, logged with its located errors,
//! counted, and announced, and the last good rules stay in force.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::diag::Diagnostic;
use crate::rules::{RuleSet, load_rules};
use crate::store::now;
use crate::telemetry::Telemetry;
use crate::yamlfile::is_rule_file_name;

/// What `GET /api/v1/rules` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RulesStatus {
    pub version: String,
    pub loaded_at: f64,
    pub analyses: Vec<String>,
    pub files: Vec<String>,
    pub last_error: Option<Vec<String>>,
    pub last_error_at: Option<f64>,
    pub reloads: u64,
}

/// The live rule set and its status.
pub struct Rules {
    pub set: Arc<ArcSwap<RuleSet>>,
    pub status: Mutex<RulesStatus>,
    dir: PathBuf,
    actions: std::collections::BTreeSet<String>,
    telemetry: Arc<Telemetry>,
}

impl Rules {
    /// A copy of the current status (version, analyses, last reload error).
    pub fn status(&self) -> RulesStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Loads the rules for the first time (failure here stops the daemon from starting).
    pub fn load(
        dir: PathBuf,
        actions: std::collections::BTreeSet<String>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Rules, Vec<Diagnostic>> {
        let set = load_rules(std::slice::from_ref(&dir), Some(&actions))?;
        telemetry.rules_last_success.set(now());
        Telemetry::inc(&telemetry.rule_reloads, &[("result", "success")]);
        let status = RulesStatus {
            version: set.version.clone(),
            loaded_at: now(),
            analyses: set.analyses.keys().cloned().collect(),
            files: set.files.iter().map(|f| f.display().to_string()).collect(),
            ..Default::default()
        };
        Ok(Rules {
            set: Arc::new(ArcSwap::from_pointee(set)),
            status: Mutex::new(status),
            dir,
            actions,
            telemetry,
        })
    }

    /// Re-reads every rule file; swaps the new set in only if all of it is valid.
    pub fn reload(&self) -> Result<bool, Vec<Diagnostic>> {
        let result = load_rules(std::slice::from_ref(&self.dir), Some(&self.actions));
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.reloads += 1;
        match result {
            Ok(set) => {
                self.telemetry.rules_last_success.set(now());
                Telemetry::inc(&self.telemetry.rule_reloads, &[("result", "success")]);
                let changed = set.version != st.version;
                st.version = set.version.clone();
                st.loaded_at = now();
                st.analyses = set.analyses.keys().cloned().collect();
                st.files = set.files.iter().map(|f| f.display().to_string()).collect();
                st.last_error = None;
                if changed {
                    tracing::info!(version = %set.version, analyses = ?st.analyses, "rules reloaded");
                }
                self.set.store(Arc::new(set));
                Ok(changed)
            }
            Err(diags) => {
                Telemetry::inc(&self.telemetry.rule_reloads, &[("result", "failure")]);
                st.last_error = Some(diags.iter().map(|d| d.to_string()).collect());
                st.last_error_at = Some(now());
                for d in &diags {
                    tracing::error!(error = %d, "rule reload rejected; keeping version {}", st.version);
                }
                Err(diags)
            }
        }
    }
}

/// Watches the rules directory and sends a message after each debounced batch of changes to
/// rule files. The returned watcher must be kept alive.
pub fn watch(
    dir: &std::path::Path,
    tx: mpsc::Sender<()>,
) -> Result<
    notify_debouncer_full::Debouncer<
        notify_debouncer_full::notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    String,
> {
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(250),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            if let Ok(events) = res {
                let relevant = events
                    .iter()
                    .any(|e| e.paths.iter().any(|p| is_rule_file_name(p)));
                if relevant {
                    let _ = tx.try_send(());
                }
            }
        },
    )
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(debouncer)
}

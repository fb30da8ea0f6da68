//! What rollguard does about a verdict: run hooks (rollback, promote, step, hold) and tell
//! people (notifiers). Hooks run in their own processes with a record on disk, so a rollback
//! survives a restart of the daemon and never runs twice.

pub mod hook;
pub mod notify;
pub mod runner;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The facts a hook receives: as `ROLLGUARD_*` environment variables, as `{{name}}`
/// placeholders in its argv or HTTP body, and in full as JSON on stdin / as the HTTP body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub deployment: String,
    pub service: String,
    pub analysis: String,
    /// What the hook is for: `rollback`, `promote`, `step`, `hold`, `inconclusive`.
    pub action: String,
    /// Stable per action: a hook can use it as an idempotency key.
    pub action_id: String,
    pub verdict: String,
    pub reason: String,
    pub version: String,
    pub baseline_version: String,
    pub step: Option<u32>,
    pub weight: Option<f64>,
    pub dry_run: bool,
    pub params: BTreeMap<String, String>,
    /// The judge's reports at the time of the decision, for hooks that want the numbers.
    #[serde(default)]
    pub checks: serde_json::Value,
}

/// The `{{name}}` placeholders hooks may use (plus `param.<name>` for deployment
/// parameters); config validation rejects any other.
pub const PLACEHOLDERS: &[&str] = &[
    "id",
    "deployment",
    "service",
    "analysis",
    "action",
    "action_id",
    "verdict",
    "reason",
    "version",
    "baseline_version",
    "step",
    "weight",
    "dry_run",
    "param.<name>",
];

impl Facts {
    /// Whether `name` is a placeholder some deployment can fill.
    pub fn knows(name: &str) -> bool {
        name.strip_prefix("param.").is_some_and(|p| !p.is_empty())
            || PLACEHOLDERS.iter().any(|p| *p == name && !p.contains('<'))
    }

    /// Value of a `{{name}}` placeholder (`id`, `service`, `param.job`, ...).
    pub fn lookup(&self, name: &str) -> Option<String> {
        Some(match name {
            "id" | "deployment" => self.deployment.clone(),
            "service" => self.service.clone(),
            "analysis" => self.analysis.clone(),
            "action" => self.action.clone(),
            "action_id" => self.action_id.clone(),
            "verdict" => self.verdict.clone(),
            "reason" => self.reason.clone(),
            "version" => self.version.clone(),
            "baseline_version" => self.baseline_version.clone(),
            "step" => self.step.map(|s| s.to_string()).unwrap_or_default(),
            "weight" => self.weight.map(fmt_weight).unwrap_or_default(),
            "dry_run" => self.dry_run.to_string(),
            other => {
                return other
                    .strip_prefix("param.")
                    .and_then(|p| self.params.get(p).cloned());
            }
        })
    }

    /// The `ROLLGUARD_*` environment of a hook process.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("ROLLGUARD_DEPLOYMENT".to_string(), self.deployment.clone()),
            ("ROLLGUARD_SERVICE".into(), self.service.clone()),
            ("ROLLGUARD_ANALYSIS".into(), self.analysis.clone()),
            ("ROLLGUARD_ACTION".into(), self.action.clone()),
            ("ROLLGUARD_ACTION_ID".into(), self.action_id.clone()),
            ("ROLLGUARD_VERDICT".into(), self.verdict.clone()),
            ("ROLLGUARD_REASON".into(), self.reason.clone()),
            ("ROLLGUARD_VERSION".into(), self.version.clone()),
            (
                "ROLLGUARD_BASELINE_VERSION".into(),
                self.baseline_version.clone(),
            ),
            (
                "ROLLGUARD_DRY_RUN".into(),
                if self.dry_run { "1".into() } else { "0".into() },
            ),
        ];
        if let Some(s) = self.step {
            v.push(("ROLLGUARD_STEP".into(), s.to_string()));
        }
        if let Some(w) = self.weight {
            v.push(("ROLLGUARD_WEIGHT".into(), fmt_weight(w)));
        }
        for (k, val) in &self.params {
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            v.push((format!("ROLLGUARD_PARAM_{key}"), val.clone()));
        }
        v
    }
}

fn fmt_weight(w: f64) -> String {
    if w.fract() == 0.0 {
        format!("{w:.0}")
    } else {
        format!("{w}")
    }
}

//! Notable events: one struct per event, which writes the log line, bumps the metric and
//! queues the notifications together — so logs, metrics and chat always tell the same story.

use serde::{Deserialize, Serialize};

use crate::judge::CheckReport;

text_enum! {
    /// How much a notice matters, ordered (`info` < `warning` < `critical`): pagers page from
    /// a minimum, chat colours follow it, logs use its level.
    pub enum Severity {
        Info => "info",
        Warning => "warning",
        Critical => "critical",
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    DeploymentStarted,
    StepPromoted,
    CheckFailing,
    RollbackStarted,
    RollbackSucceeded,
    RollbackFailed,
    HookFailed,
    Held,
    Resumed,
    Promoted,
    Inconclusive,
    Aborted,
    BackendDown,
    BackendRecovered,
    RuleReloadFailed,
    /// A valid rule edit after a rejected one: closes the reload-failed alert.
    RulesReloaded,
    /// Dry run (global or per hook): what rollguard would have done, recorded and announced.
    DryRun,
    /// Rolling back would run the baseline on a schema it does not work with (after a
    /// contract migration): no rollback hook ran, the deployment is held; roll forward.
    RollbackUnsafe,
}

/// How a notice relates to an ongoing problem, for destinations that track incidents
/// (Alertmanager alerts, PagerDuty incidents). Chat destinations show every notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Something needs attention: fire (or update) the incident for this notice's key.
    Open,
    /// The problem behind this notice's key is over: resolve whatever is open for it.
    Close,
    /// A plain fact (started, stepped, dry run): nothing to open or resolve.
    Info,
}

impl NoticeKind {
    /// Every kind, for tests and docs that must cover them all.
    pub const ALL: [NoticeKind; 18] = [
        NoticeKind::DeploymentStarted,
        NoticeKind::StepPromoted,
        NoticeKind::CheckFailing,
        NoticeKind::RollbackStarted,
        NoticeKind::RollbackSucceeded,
        NoticeKind::RollbackFailed,
        NoticeKind::HookFailed,
        NoticeKind::Held,
        NoticeKind::Resumed,
        NoticeKind::Promoted,
        NoticeKind::Inconclusive,
        NoticeKind::Aborted,
        NoticeKind::BackendDown,
        NoticeKind::BackendRecovered,
        NoticeKind::RuleReloadFailed,
        NoticeKind::RulesReloaded,
        NoticeKind::DryRun,
        NoticeKind::RollbackUnsafe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::DeploymentStarted => "deployment_started",
            NoticeKind::StepPromoted => "step_promoted",
            NoticeKind::CheckFailing => "check_failing",
            NoticeKind::RollbackStarted => "rollback_started",
            NoticeKind::RollbackSucceeded => "rollback_succeeded",
            NoticeKind::RollbackFailed => "rollback_failed",
            NoticeKind::HookFailed => "hook_failed",
            NoticeKind::Held => "held",
            NoticeKind::Resumed => "resumed",
            NoticeKind::Promoted => "promoted",
            NoticeKind::Inconclusive => "inconclusive",
            NoticeKind::Aborted => "aborted",
            NoticeKind::BackendDown => "backend_down",
            NoticeKind::BackendRecovered => "backend_recovered",
            NoticeKind::RuleReloadFailed => "rule_reload_failed",
            NoticeKind::RulesReloaded => "rules_reloaded",
            NoticeKind::DryRun => "dry_run",
            NoticeKind::RollbackUnsafe => "rollback_unsafe",
        }
    }

    /// Severity for pagers, colours and log levels.
    pub fn severity(self) -> Severity {
        match self {
            NoticeKind::RollbackFailed | NoticeKind::HookFailed | NoticeKind::RollbackUnsafe => {
                Severity::Critical
            }
            NoticeKind::RollbackStarted
            | NoticeKind::CheckFailing
            | NoticeKind::Held
            | NoticeKind::Inconclusive
            | NoticeKind::BackendDown
            | NoticeKind::RuleReloadFailed
            | NoticeKind::Aborted => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// Whether this event opens, closes or merely reports an incident. A later `Open` notice
    /// with the same key replaces the earlier one (the latest state of a deployment wins);
    /// `Close` resolves it.
    pub fn lifecycle(self) -> Lifecycle {
        match self {
            NoticeKind::CheckFailing
            | NoticeKind::RollbackStarted
            | NoticeKind::RollbackFailed
            | NoticeKind::HookFailed
            | NoticeKind::Held
            | NoticeKind::Inconclusive
            | NoticeKind::BackendDown
            | NoticeKind::RuleReloadFailed
            | NoticeKind::RollbackUnsafe => Lifecycle::Open,
            NoticeKind::RollbackSucceeded
            | NoticeKind::Resumed
            | NoticeKind::Promoted
            | NoticeKind::Aborted
            | NoticeKind::BackendRecovered
            | NoticeKind::RulesReloaded => Lifecycle::Close,
            NoticeKind::DeploymentStarted | NoticeKind::StepPromoted | NoticeKind::DryRun => {
                Lifecycle::Info
            }
        }
    }

    /// The Alertmanager `alertname` of an `Open` kind (CamelCase, as Prometheus alerts are
    /// named).
    pub fn alertname(self) -> &'static str {
        match self {
            NoticeKind::DeploymentStarted => "RollguardDeploymentStarted",
            NoticeKind::StepPromoted => "RollguardStepPromoted",
            NoticeKind::CheckFailing => "RollguardCheckFailing",
            NoticeKind::RollbackStarted => "RollguardRollbackInProgress",
            NoticeKind::RollbackSucceeded => "RollguardRollbackSucceeded",
            NoticeKind::RollbackFailed => "RollguardRollbackFailed",
            NoticeKind::HookFailed => "RollguardHookFailed",
            NoticeKind::Held => "RollguardDeploymentHeld",
            NoticeKind::Resumed => "RollguardDeploymentResumed",
            NoticeKind::Promoted => "RollguardPromoted",
            NoticeKind::Inconclusive => "RollguardAnalysisInconclusive",
            NoticeKind::Aborted => "RollguardDeploymentAborted",
            NoticeKind::BackendDown => "RollguardMetricsBackendDown",
            NoticeKind::BackendRecovered => "RollguardMetricsBackendRecovered",
            NoticeKind::RuleReloadFailed => "RollguardRuleReloadFailed",
            NoticeKind::RulesReloaded => "RollguardRulesReloaded",
            NoticeKind::DryRun => "RollguardDryRun",
            NoticeKind::RollbackUnsafe => "RollguardRollbackUnsafe",
        }
    }

    /// Stable journald MESSAGE_ID for key events (`journalctl MESSAGE_ID=...`).
    pub fn message_id(self) -> &'static str {
        match self {
            NoticeKind::RollbackStarted => "5b2a1d8e0c7f4a3e9d6b1c0f2e4a7d91",
            NoticeKind::RollbackSucceeded => "8e1f3c5a7b9d4e2f8a6c0b1d3e5f7a92",
            NoticeKind::RollbackFailed => "c3d5e7f9a1b24c6e8d0f2a4b6c8e0a93",
            NoticeKind::Promoted => "1a3c5e7f9b2d4f6a8c0e2b4d6f8a0c94",
            NoticeKind::BackendDown => "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e95",
            NoticeKind::RuleReloadFailed => "3c5e7a9b1d2f4b6d8f0a2c4e6b8d0f96",
            NoticeKind::RollbackUnsafe => "7e9a1c3e5b4d6f8a0c2e4a6c8e0b2d98",
            _ => "4d6f8b0c2e3a5c7e9a1b3d5f7c9e1a97",
        }
    }
}

/// Who a notice is about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub deployment: String,
    pub service: String,
    pub analysis: String,
    pub version: String,
    pub baseline_version: String,
}

/// One notable event, rendered per destination by the notifiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub at: f64,
    pub subject: Option<Subject>,
    /// One line: what happened, to what.
    pub title: String,
    /// Plain words with the numbers: why, and what rollguard did.
    pub text: String,
    /// The checks behind it (failing ones first).
    #[serde(default)]
    pub checks: Vec<CheckReport>,
    /// Link to the details (configured public URL + API path).
    pub link: Option<String>,
    /// Stable key for deduplication and threading (one per deployment or incident).
    pub key: String,
}

impl Notice {
    /// Writes the log line for this event (structured fields for journald).
    pub fn log(&self) {
        let dep = self
            .subject
            .as_ref()
            .map(|s| s.deployment.as_str())
            .unwrap_or("");
        let kind = self.kind.as_str();
        // `tracing` takes the level as a constant, so one macro writes the same line at each.
        macro_rules! log_at {
            ($level:ident) => {
                tracing::$level!(
                    event = kind,
                    deployment = dep,
                    message_id = self.kind.message_id(),
                    "{}: {}",
                    self.title,
                    self.text
                )
            };
        }
        match self.kind.severity() {
            Severity::Critical => log_at!(error),
            Severity::Warning => log_at!(warn),
            _ => log_at!(info),
        }
    }
}

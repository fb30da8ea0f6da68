//! Runs the hook actions a decision owes, exactly once in effect.
//!
//! Every action is a row in the store before it starts (written with the decision). The
//! runner marks it running (with the hook's process group), waits for it, retries failures
//! with backoff, and records the result. After a restart [`ActionRunner::recover`] picks up
//! every unfinished action: an exec hook still running is waited for, one that finished
//! while the daemon was down is read from its status file, and only one that vanished
//! without a trace is run again (with the same `ROLLGUARD_ACTION_ID`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Facts;
use super::hook::{self, HookOutcome};
use super::notify::Notifiers;
use crate::config::{HookConfig, HookKind};
use crate::events::{Notice, NoticeKind, Subject};
use crate::store::{Action, Store, now};
use crate::telemetry::Telemetry;

/// Executes and records hook actions.
pub struct ActionRunner {
    store: Arc<Store>,
    hooks: BTreeMap<String, HookConfig>,
    state_dir: PathBuf,
    client: reqwest::Client,
    telemetry: Arc<Telemetry>,
    notifiers: Arc<Notifiers>,
    /// Global dry run: record and announce, never execute.
    dry_run: bool,
    tracker: tokio_util::task::TaskTracker,
}

impl ActionRunner {
    pub fn new(
        store: Arc<Store>,
        hooks: BTreeMap<String, HookConfig>,
        state_dir: PathBuf,
        telemetry: Arc<Telemetry>,
        notifiers: Arc<Notifiers>,
        dry_run: bool,
    ) -> Result<Self, String> {
        let client = crate::net::client(&crate::config::TlsConfig::default(), Duration::from_secs(60))?;
        Ok(ActionRunner { store, hooks, state_dir, client, telemetry, notifiers, dry_run, tracker: tokio_util::task::TaskTracker::new() })
    }

    /// Whether a name is a hook (rule action lists mix hooks and notifiers).
    pub fn is_hook(&self, name: &str) -> bool {
        self.hooks.contains_key(name)
    }

    /// Starts running persisted actions in the background.
    pub fn start(self: &Arc<Self>, actions: Vec<Action>, notify: Vec<String>, decided: tokio::time::Instant) {
        for a in actions {
            let me = self.clone();
            let notify = notify.clone();
            self.tracker.spawn(async move {
                me.telemetry.decision_to_hook.observe(decided.elapsed().as_secs_f64());
                me.run(a, notify).await;
            });
        }
    }

    /// Waits for running actions, at most `grace`. Returns whether all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }

    /// Resumes every unfinished action after a restart.
    pub async fn recover(self: &Arc<Self>, notify_for: impl Fn(&Action) -> Vec<String>) {
        let open = match self.store.open_actions() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot read unfinished actions; none resumed");
                return;
            }
        };
        for a in open {
            tracing::info!(action = %a.id, hook = %a.hook, status = %a.status, "resuming action after restart");
            let notify = notify_for(&a);
            let me = self.clone();
            self.tracker.spawn(async move { me.resume(a, notify).await });
        }
    }

    async fn resume(&self, a: Action, notify: Vec<String>) {
        if a.status == "running" {
            if let (Some(pid), Some(hook)) = (a.pid, self.hooks.get(&a.hook)) {
                if matches!(hook.kind, HookKind::Exec { .. }) {
                    let dir = hook::attempt_dir(&self.state_dir, &a.id, a.attempts.max(1));
                    let elapsed = Duration::from_secs_f64((now() - a.started_at.unwrap_or_else(now)).max(0.0));
                    let remaining = hook.timeout.saturating_sub(elapsed);
                    if let Some(outcome) = hook::recover_exec(&dir, pid, remaining, hook.timeout).await {
                        tracing::info!(action = %a.id, result = %outcome.summary, "found the result of a hook that ran while the daemon was down");
                        self.finish_attempt(&a, hook, a.attempts.max(1), outcome, &notify).await;
                        return;
                    }
                }
            }
        }
        self.run(a, notify).await;
    }

    async fn run(&self, a: Action, notify: Vec<String>) {
        let Some(hook) = self.hooks.get(&a.hook).cloned() else {
            let msg = format!("hook `{}` is not in the daemon config (was it removed?)", a.hook);
            let _ = self.store.action_finished(&a.id, "failed", &msg, "");
            self.announce(&a, NoticeKind::HookFailed, &msg, "", &notify);
            return;
        };
        let facts: Facts = serde_json::from_value(a.facts.clone()).unwrap_or_default();
        if self.dry_run || facts.dry_run {
            let msg = format!("dry run: would run hook `{}`", a.hook);
            let _ = self.store.action_finished(&a.id, "skipped", &msg, "");
            let _ = self.store.add_event(&a.deployment, "hook", &msg, &serde_json::Value::Null);
            return;
        }
        let first = a.attempts + 1;
        let last = hook.retries + 1;
        for attempt in first..=last {
            if let Err(e) = self.store.action_started(&a.id, attempt, None) {
                tracing::error!(action = %a.id, error = %e, "cannot record hook start; not running it without a record");
                return;
            }
            let outcome = match &hook.kind {
                HookKind::Exec { .. } => {
                    let dir = hook::attempt_dir(&self.state_dir, &a.id, attempt);
                    let store = self.store.clone();
                    let id = a.id.clone();
                    hook::run_exec(&hook, &facts, &dir, move |pid| {
                        if let Err(e) = store.action_started(&id, attempt, Some(pid)) {
                            tracing::error!(action = %id, error = %e, "cannot record hook pid");
                        }
                    })
                    .await
                }
                HookKind::Http { .. } => hook::run_http(&hook, &facts, &self.client).await,
            };
            let retry_after = outcome.retry_after;
            if self.finish_attempt(&a, &hook, attempt, outcome, &notify).await || attempt == last {
                return;
            }
            let backoff = retry_after.unwrap_or(Duration::from_secs(1u64 << attempt.min(6)));
            tokio::time::sleep(backoff).await;
        }
    }

    /// Records one attempt's result; returns true when the action is finished.
    async fn finish_attempt(&self, a: &Action, hook: &HookConfig, attempt: u32, outcome: HookOutcome, notify: &[String]) -> bool {
        let result = if outcome.success { "success" } else if outcome.timed_out { "timeout" } else { "failure" };
        Telemetry::inc(&self.telemetry.hook_runs, &[("hook", &hook.name), ("result", result)]);
        let last = attempt > hook.retries;
        let status = if outcome.success {
            "succeeded"
        } else if last {
            "failed"
        } else {
            "pending"
        };
        if let Err(e) = self.store.action_finished(&a.id, status, &outcome.summary, &outcome.output) {
            tracing::error!(action = %a.id, error = %e, "cannot record hook result");
        }
        let msg = format!("hook `{}` ({}) attempt {attempt}: {}", hook.name, a.purpose, outcome.summary);
        let _ = self.store.add_event(&a.deployment, "hook", &msg, &serde_json::json!({"action": a.id, "output": outcome.output}));
        if outcome.success {
            tracing::info!(action = %a.id, hook = %hook.name, "{msg}");
            // "Rollback done" once, when every rollback hook of the deployment succeeded.
            let siblings = self.store.actions_of(&a.deployment).unwrap_or_default();
            let rollback: Vec<_> = siblings.iter().filter(|x| x.purpose == "rollback").collect();
            if a.purpose == "rollback" && rollback.iter().all(|x| x.status == "succeeded") {
                let hooks: Vec<String> = rollback.iter().map(|x| format!("{} ({})", x.hook, x.summary)).collect();
                self.announce(a, NoticeKind::RollbackSucceeded, &format!("rollback hooks finished: {}", hooks.join(", ")), &outcome.output, notify);
            }
            true
        } else if status == "failed" {
            let kind = if a.purpose == "rollback" { NoticeKind::RollbackFailed } else { NoticeKind::HookFailed };
            self.announce(a, kind, &msg, &outcome.output, notify);
            true
        } else {
            tracing::warn!(action = %a.id, hook = %hook.name, "{msg}; retrying");
            false
        }
    }

    fn announce(&self, a: &Action, kind: NoticeKind, msg: &str, output: &str, notify: &[String]) {
        let facts: Facts = serde_json::from_value(a.facts.clone()).unwrap_or_default();
        let tail: String = output.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
        let notice = Notice {
            kind,
            at: now(),
            subject: Some(Subject {
                deployment: facts.deployment.clone(),
                service: facts.service.clone(),
                analysis: facts.analysis.clone(),
                version: facts.version.clone(),
                baseline_version: facts.baseline_version.clone(),
            }),
            title: match kind {
                NoticeKind::RollbackSucceeded => format!("Rollback done: {}", facts.deployment),
                NoticeKind::RollbackFailed => format!("Rollback FAILED: {}", facts.deployment),
                _ => format!("Hook failed: {} ({})", a.hook, facts.deployment),
            },
            text: if tail.is_empty() { format!("{msg}. Reason for the action: {}", facts.reason) } else { format!("{msg}. Reason for the action: {}. Output: {tail}", facts.reason) },
            checks: Vec::new(),
            link: None,
            key: format!("rollguard/{}", facts.deployment),
        };
        self.notifiers.enqueue(notify, &notice);
    }
}

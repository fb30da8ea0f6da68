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
use crate::config::{DEFAULT_KILL_GRACE, HookConfig, HookKind, MAX_HOOK_BACKOFF};
use crate::events::{Notice, NoticeKind, Subject};
use crate::judge::{CheckReport, Outcome};
use crate::store::{
    Action, ActionEnd, ActionStatus, EventKind, Purpose, Store, TimelineEvent, now,
};
use crate::telemetry::Telemetry;

/// Executes and records hook actions.
pub struct ActionRunner {
    store: Arc<dyn Store>,
    hooks: BTreeMap<String, HookConfig>,
    state_dir: PathBuf,
    client: reqwest::Client,
    telemetry: Arc<Telemetry>,
    notifiers: Arc<Notifiers>,
    /// Global dry run: record and announce, never execute.
    dry_run: bool,
    tracker: tokio_util::task::TaskTracker,
    /// Process groups of the exec hooks this daemon runs now, by action id: what
    /// [`stop_all`](Self::stop_all) stops when the store can no longer be read.
    groups: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
}

impl ActionRunner {
    pub fn new(
        store: Arc<dyn Store>,
        hooks: BTreeMap<String, HookConfig>,
        state_dir: PathBuf,
        telemetry: Arc<Telemetry>,
        notifiers: Arc<Notifiers>,
        dry_run: bool,
    ) -> Result<Self, String> {
        let client = crate::net::client(
            &crate::config::TlsConfig::default(),
            Duration::from_secs(60),
        )?;
        Ok(ActionRunner {
            store,
            hooks,
            state_dir,
            client,
            telemetry,
            notifiers,
            dry_run,
            tracker: tokio_util::task::TaskTracker::new(),
            groups: Arc::default(),
        })
    }

    /// Whether a name is a hook (rule action lists mix hooks and notifiers).
    pub fn is_hook(&self, name: &str) -> bool {
        self.hooks.contains_key(name)
    }

    /// Starts running persisted actions in the background; each tells its own `notify` list
    /// how it ended.
    pub fn start(self: &Arc<Self>, actions: Vec<Action>, decided: tokio::time::Instant) {
        for a in actions {
            let me = self.clone();
            self.tracker.spawn(async move {
                me.telemetry
                    .decision_to_hook
                    .observe(decided.elapsed().as_secs_f64());
                me.run(a).await;
            });
        }
    }

    /// Waits for running actions, at most `grace`. Returns whether all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// After [`drain`](Self::drain) ran out of time: stops the exec hooks still running
    /// (SIGTERM to each process group, SIGKILL after the hook's `kill_grace`) and waits at most
    /// `record_wait` for their attempts to be recorded, so the next start retries them. HTTP
    /// hooks in flight are sent again on the next start. Returns the stopped actions' ids.
    pub async fn stop_running(&self, record_wait: Duration) -> Vec<String> {
        let running: Vec<Action> = match self.store.open_actions() {
            Ok(a) => a
                .into_iter()
                .filter(|a| a.status == ActionStatus::Running)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list running hooks; leaving them to the service manager");
                return Vec::new();
            }
        };
        let mut stops = Vec::new();
        let mut ids = Vec::new();
        for a in &running {
            let Some(pgid) = a.pid else {
                tracing::warn!(action = %a.id, hook = %a.hook, "HTTP hook still in flight at the end of the grace period; it is sent again on the next start");
                continue;
            };
            tracing::warn!(action = %a.id, hook = %a.hook, deployment = %a.deployment, pgid, "hook still running at the end of the grace period: stopping it; the next start retries it");
            self.timeline(
                a,
                EventKind::Hook,
                format!(
                    "hook `{}` was stopped by a rollguard shutdown; it is retried on the next start",
                    a.hook
                ),
                serde_json::json!({"action": a.id}),
            );
            let grace = self
                .hooks
                .get(&a.hook)
                .map_or(DEFAULT_KILL_GRACE, |h| h.kill_grace);
            // The task that runs the hook owns the wrapper process and reaps it.
            stops.push(hook::terminate_group(pgid, grace, None));
            ids.push(a.id.clone());
        }
        futures_util::future::join_all(stops).await;
        // Each task records its attempt once the process is reaped, and starts no retry now
        // that the tracker is closed; so the tracker empties when every record is written.
        let _ = tokio::time::timeout(record_wait, self.tracker.wait()).await;
        ids
    }

    /// Stops every exec hook this daemon runs now, from memory (the store may be gone):
    /// SIGTERM to each process group, SIGKILL after `grace`. For a daemon that lost its
    /// leader lease, whose actions the new leader runs again. Returns how many it stopped.
    pub async fn stop_all(&self, grace: Duration) -> usize {
        self.tracker.close();
        let groups: Vec<(String, u32)> =
            std::mem::take(&mut *self.groups.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        for (id, pgid) in &groups {
            tracing::warn!(action = %id, pgid, "stopping a hook: this daemon no longer leads");
        }
        futures_util::future::join_all(
            groups
                .iter()
                .map(|(_, pgid)| hook::terminate_group(*pgid, grace, None)),
        )
        .await;
        groups.len()
    }

    /// Resumes every unfinished action after a restart. Who is told comes from the stored
    /// action; `legacy` answers only for actions stored before that was recorded (an empty
    /// list).
    pub async fn recover(self: &Arc<Self>, legacy: impl Fn(&Action) -> Vec<String>) {
        let open = match self.store.open_actions() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot read unfinished actions; none resumed");
                return;
            }
        };
        for a in open {
            tracing::info!(action = %a.id, hook = %a.hook, status = %a.status, "resuming action after restart");
            let mut a = a;
            if a.notify.is_empty() {
                a.notify = legacy(&a);
            }
            let me = self.clone();
            self.tracker.spawn(async move { me.resume(a).await });
        }
    }

    async fn resume(&self, a: Action) {
        let running_exec = self.hooks.get(&a.hook).filter(|h| {
            a.status == ActionStatus::Running && matches!(h.kind, HookKind::Exec { .. })
        });
        if let Some(hook) = running_exec {
            let attempt = a.attempts.max(1);
            let dir = hook::attempt_dir(&self.state_dir, &a.id, attempt);
            let elapsed =
                Duration::from_secs_f64((now() - a.started_at.unwrap_or_else(now)).max(0.0));
            let remaining = hook.timeout.saturating_sub(elapsed);
            if let Some(outcome) = hook::recover_exec(&dir, a.pid, remaining, hook).await {
                tracing::info!(action = %a.id, result = %outcome.summary, "found the result of a hook that ran while the daemon was down");
                let done = self
                    .finish_attempt(&a, hook, attempt, outcome.clone())
                    .await;
                hook::discard(&dir);
                if done {
                    return;
                }
                let again = Action {
                    attempts: attempt,
                    ..a
                };
                tokio::time::sleep(self.backoff(hook, attempt, &outcome)).await;
                self.run(again).await;
                return;
            }
            tracing::warn!(action = %a.id, "a hook that was running when the daemon stopped left no status and is gone; running it again with the same action id");
        }
        self.run(a).await;
    }

    /// The wait before the next attempt: the server's `Retry-After` when it gave one, else
    /// the hook's backoff doubled per attempt, capped.
    fn backoff(&self, hook: &HookConfig, attempt: u32, outcome: &HookOutcome) -> Duration {
        outcome
            .retry_after
            .unwrap_or_else(|| {
                hook.retry_backoff
                    .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            })
            .min(MAX_HOOK_BACKOFF)
    }

    async fn run(&self, a: Action) {
        let Some(hook) = self.hooks.get(&a.hook).cloned() else {
            let msg = format!(
                "hook `{}` is not in the daemon config (was it removed?)",
                a.hook
            );
            self.record_end(&a, ActionEnd::without_output(ActionStatus::Failed, &msg));
            self.announce(&a, NoticeKind::HookFailed, &msg, "");
            return;
        };
        let facts: Facts = serde_json::from_value(a.facts.clone()).unwrap_or_default();
        if self.dry_run || facts.dry_run || hook.dry_run {
            self.dry(&a, &hook, &facts);
            return;
        }
        let first = a.attempts + 1;
        let last = hook.retries + 1;
        for attempt in first..=last.max(first) {
            // Once the daemon is stopping (drain closed the tracker), no retry starts: the
            // action stays pending with its attempts counted, and the next start resumes it.
            if attempt > 1 && self.tracker.is_closed() {
                tracing::info!(action = %a.id, hook = %hook.name, next_attempt = attempt, "stopping: the retry waits for the next start");
                return;
            }
            if let Err(e) = self.store.action_started(&a.id, attempt, None) {
                tracing::error!(action = %a.id, error = %e, "cannot record hook start; not running it without a record");
                return;
            }
            let dir = hook::attempt_dir(&self.state_dir, &a.id, attempt);
            let outcome = match &hook.kind {
                HookKind::Exec { .. } => {
                    let store = self.store.clone();
                    let (id, groups) = (a.id.clone(), self.groups.clone());
                    let outcome = hook::run_exec(&hook, &facts, &dir, move |pid| {
                        groups
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.clone(), pid);
                        if let Err(e) = store.action_started(&id, attempt, Some(pid)) {
                            tracing::error!(action = %id, error = %e, "cannot record hook pid");
                        }
                    })
                    .await;
                    self.groups
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&a.id);
                    outcome
                }
                HookKind::Http { .. } => hook::run_http(&hook, &facts, &self.client).await,
            };
            let wait = self.backoff(&hook, attempt, &outcome);
            let done = self.finish_attempt(&a, &hook, attempt, outcome).await;
            hook::discard(&dir);
            if done {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Dry run: record and announce what would have run, run nothing.
    fn dry(&self, a: &Action, hook: &HookConfig, facts: &Facts) {
        let what = match &hook.kind {
            HookKind::Exec { argv, .. } => match hook::render_argv(argv, facts) {
                Ok(v) => format!("exec {}", serde_json::to_string(&v).unwrap_or_default()),
                Err(e) => format!("exec (argv does not render: {e})"),
            },
            HookKind::Http { url, method, .. } => {
                let shown = url
                    .resolve()
                    .ok()
                    .and_then(|u| hook::render_url(&u, facts).ok())
                    .map(|u| crate::net::redact_url(&u))
                    .unwrap_or_else(|| url.describe());
                format!("{method} {shown}")
            }
        };
        let msg = format!("dry run: would run {} hook `{}`: {what}", a.purpose, a.hook);
        self.record_end(a, ActionEnd::without_output(ActionStatus::Skipped, &msg));
        self.timeline(
            a,
            EventKind::DryRun,
            msg.clone(),
            serde_json::json!({"action": a.id}),
        );
        Telemetry::inc(
            &self.telemetry.hook_runs,
            &[("hook", &hook.name), ("result", "dry_run")],
        );
        self.announce(a, NoticeKind::DryRun, &msg, "");
    }

    /// Records one attempt's result; returns true when the action is finished.
    async fn finish_attempt(
        &self,
        a: &Action,
        hook: &HookConfig,
        attempt: u32,
        outcome: HookOutcome,
    ) -> bool {
        let result = if outcome.success {
            "success"
        } else if outcome.timed_out {
            "timeout"
        } else {
            "failure"
        };
        Telemetry::inc(
            &self.telemetry.hook_runs,
            &[("hook", &hook.name), ("result", result)],
        );
        let last = attempt > hook.retries || !outcome.retryable;
        let status = if outcome.success {
            ActionStatus::Succeeded
        } else if last {
            ActionStatus::Failed
        } else {
            ActionStatus::Pending
        };
        let end = ActionEnd {
            status,
            summary: &outcome.summary,
            output: &outcome.output,
        };
        self.record_end(a, end);
        let msg = format!(
            "hook `{}` ({}) attempt {attempt}/{}: {}",
            hook.name,
            a.purpose,
            hook.retries + 1,
            outcome.summary
        );
        self.timeline(
            a,
            EventKind::Hook,
            msg.clone(),
            serde_json::json!({"action": a.id, "attempt": attempt, "output": outcome.output}),
        );
        if outcome.success {
            tracing::info!(action = %a.id, hook = %hook.name, "{msg}");
            // "Rollback done" once, when every rollback hook of the deployment succeeded.
            let siblings = self.store.actions_of(&a.deployment).unwrap_or_default();
            let rollback: Vec<_> = siblings
                .iter()
                .filter(|x| x.purpose == Purpose::Rollback)
                .collect();
            if a.purpose == Purpose::Rollback
                && rollback.iter().all(|x| x.status == ActionStatus::Succeeded)
            {
                let hooks: Vec<String> = rollback
                    .iter()
                    .map(|x| format!("`{}` ({})", x.hook, x.summary))
                    .collect();
                self.announce(
                    a,
                    NoticeKind::RollbackSucceeded,
                    &format!("rollback hooks finished: {}", hooks.join(", ")),
                    &outcome.output,
                );
            }
            true
        } else if status == ActionStatus::Failed {
            tracing::error!(action = %a.id, hook = %hook.name, output = %outcome.output, "{msg}; giving up");
            let kind = if a.purpose == Purpose::Rollback {
                NoticeKind::RollbackFailed
            } else {
                NoticeKind::HookFailed
            };
            self.announce(
                a,
                kind,
                &format!("{msg}; no attempts left"),
                &outcome.output,
            );
            true
        } else {
            tracing::warn!(action = %a.id, hook = %hook.name, "{msg}; retrying");
            false
        }
    }

    /// Records how an attempt ended. On a store error the action stays open in the store and
    /// is taken up again after a restart, so the error is logged, not returned.
    fn record_end(&self, a: &Action, end: ActionEnd<'_>) {
        if let Err(e) = self.store.action_finished(&a.id, end) {
            tracing::error!(action = %a.id, status = %end.status, error = %e, "cannot record how the hook action ended");
        }
    }

    /// Adds an entry to the action's deployment timeline. Best effort: what is acted on is
    /// the action's own row, so a store error here loses only the explanation.
    fn timeline(&self, a: &Action, kind: EventKind, message: String, data: serde_json::Value) {
        let event = TimelineEvent {
            kind,
            message,
            data,
        };
        let _ = self.store.add_event(&a.deployment, &event);
    }

    fn announce(&self, a: &Action, kind: NoticeKind, msg: &str, output: &str) {
        let facts: Facts = serde_json::from_value(a.facts.clone()).unwrap_or_default();
        let tail: String = {
            let chars: Vec<char> = output.trim_end().chars().collect();
            chars[chars.len().saturating_sub(600)..].iter().collect()
        };
        // The numbers behind the decision, failing checks first.
        let mut checks: Vec<CheckReport> =
            serde_json::from_value(facts.checks.clone()).unwrap_or_default();
        checks.sort_by_key(|c| c.outcome != Outcome::Fail);
        let dep = &facts.deployment;
        let title = match kind {
            NoticeKind::RollbackSucceeded => format!("Rolled back {dep}"),
            NoticeKind::RollbackFailed => format!("Rollback FAILED: {dep}"),
            NoticeKind::DryRun => format!(
                "Dry run: would {} {dep}",
                if a.purpose == Purpose::Rollback {
                    "roll back".to_string()
                } else {
                    a.purpose.to_string()
                }
            ),
            _ => format!("Hook `{}` failed ({}) for {dep}", a.hook, a.purpose),
        };
        let mut text = format!(
            "{msg}. Reason for the {}: {}",
            a.purpose,
            if facts.reason.is_empty() {
                "-"
            } else {
                &facts.reason
            }
        );
        if !tail.is_empty() {
            text.push_str(&format!("\nLast output:\n{tail}"));
        }
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
            title,
            text,
            checks,
            link: None,
            key: format!("rollguard/{}", facts.deployment),
        };
        self.notifiers.enqueue(&a.notify, &notice);
    }
}

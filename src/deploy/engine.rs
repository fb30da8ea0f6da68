//! The engine: registers deployments, runs one analysis task per deployment, applies the
//! judge's verdicts (persist first, then act), and handles people's actions (pause, resume,
//! promote, abort).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::model::{DeploymentRecord, DeploymentRequest, State, Strategy};
use crate::action::Facts;
use crate::action::notify::Notifiers;
use crate::action::runner::ActionRunner;
use crate::config::Config;
use crate::events::{Notice, NoticeKind, Subject};
use crate::judge::{CheckReport, Judge, Outcome, Step, Verdict};
use crate::query::Arms;
use crate::rules::{AnalysisSpec, AnalysisTemplate, ReloadPolicy, RuleSet, parse_rule_file};
use crate::selector::parse_matchers;
use crate::source::{ArmTargets, DeploymentSource, Source, promql::PromClient, scrape::Scraper};
use crate::store::{Action, Registered, Store, StoreError, new_record, now};
use crate::telemetry::Telemetry;

/// First wait before an analysis loop that could not write its state tries again; doubles
/// per failure up to [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_secs(1);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A person's action on a running deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Pause { who: String, why: String },
    Resume { who: String, why: String },
    Promote { who: String, why: String },
    Abort { who: String, why: String },
}

impl Control {
    pub fn parse(action: &str, who: String, why: String) -> Option<Control> {
        Some(match action {
            "pause" => Control::Pause { who, why },
            "resume" => Control::Resume { who, why },
            "promote" => Control::Promote { who, why },
            "abort" => Control::Abort { who, why },
            _ => return None,
        })
    }

    fn describe(&self) -> (&'static str, &str, &str) {
        match self {
            Control::Pause { who, why } => ("paused", who, why),
            Control::Resume { who, why } => ("resumed", who, why),
            Control::Promote { who, why } => ("promoted", who, why),
            Control::Abort { who, why } => ("aborted", who, why),
        }
    }
}

/// What an interval did to a deployment.
enum Progress {
    Continue,
    Finished,
    /// A blue-green deployment switched traffic to green.
    Switched,
}

/// Errors the API turns into HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("deployment `{0}` not found")]
    NotFound(String),
    #[error("deployment `{id}` is already {state}")]
    Finished { id: String, state: State },
    #[error("deployment `{0}` is already registered with a different request")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rollguard is shutting down")]
    ShuttingDown,
}

/// Something changed on a deployment (for event streams).
#[derive(Clone, Debug)]
pub struct Change {
    pub deployment: String,
}

/// The long-lived core of the daemon.
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub telemetry: Arc<Telemetry>,
    pub notifiers: Arc<Notifiers>,
    pub actions: Arc<ActionRunner>,
    scraper: Arc<Scraper>,
    prom: Option<Arc<PromClient>>,
    controls: Mutex<HashMap<String, mpsc::Sender<Control>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    pub changes: broadcast::Sender<Change>,
    /// Bumped after every analysis step: the watchdog pings only while this moves or
    /// nothing is running.
    pub progress: Arc<std::sync::atomic::AtomicU64>,
    breaker: Mutex<Breaker>,
    /// Per running deployment: when its loop last completed a step, and its interval.
    heartbeats: Mutex<HashMap<String, (tokio::time::Instant, Duration)>>,
}

/// The circuit breaker. When most deployments on one kind of source (`prometheus`, `scrape`)
/// find that source unreachable at once, the metrics backend is the suspect, not the
/// releases. It trips at once, and from then on the per-deployment "holding" alerts and
/// hold hooks are suppressed (the judge already holds on missing data: nothing is promoted
/// or rolled back). The single "metrics backend down" alert goes out once the trip has lasted
/// `source_grace`, so a blip stays silent; "recovered" follows only an announced trip, when a
/// deployment of that kind reaches its source again. The input is each source's own verdict
/// on reachability ([`DeploymentSource::backend_error`]), not the checks' outcomes, so a bad
/// selector in one rule is never taken for an outage.
#[derive(Default)]
struct Breaker {
    /// Per running deployment: its source kind and whether its last fetch found it down.
    deployments: HashMap<String, (&'static str, bool)>,
    tripped: HashMap<&'static str, Trip>,
}

struct Trip {
    since: tokio::time::Instant,
    announced: bool,
    error: String,
}

/// What the breaker wants said.
#[derive(Debug, PartialEq)]
enum BreakerEvent {
    Down {
        kind: &'static str,
        error: String,
        failing: usize,
        of: usize,
    },
    Recovered {
        kind: &'static str,
        after: Duration,
    },
}

impl Breaker {
    /// Minimum number of deployments on a kind of source before the breaker can judge "most".
    const MIN: usize = 2;

    /// Records one deployment's fetch (`error` when its source looked down).
    fn observe(
        &mut self,
        id: &str,
        kind: &'static str,
        error: Option<&str>,
        now: tokio::time::Instant,
        grace: Duration,
    ) -> Option<BreakerEvent> {
        self.deployments
            .insert(id.to_string(), (kind, error.is_some()));
        let (n, bad) = self
            .deployments
            .values()
            .filter(|(k, _)| *k == kind)
            .fold((0, 0), |(n, b), (_, e)| (n + 1, b + usize::from(*e)));
        let most = n >= Self::MIN && bad * 2 > n;
        match (self.tripped.get_mut(kind), error) {
            (None, Some(e)) if most => {
                self.tripped.insert(
                    kind,
                    Trip {
                        since: now,
                        announced: false,
                        error: e.to_string(),
                    },
                );
                None
            }
            (Some(t), Some(e)) => {
                t.error = e.to_string();
                if !t.announced && now.duration_since(t.since) >= grace {
                    t.announced = true;
                    return Some(BreakerEvent::Down {
                        kind,
                        error: t.error.clone(),
                        failing: bad,
                        of: n,
                    });
                }
                None
            }
            (Some(t), None) if !most => {
                let (announced, after) = (t.announced, now.duration_since(t.since));
                self.tripped.remove(kind);
                announced.then_some(BreakerEvent::Recovered { kind, after })
            }
            _ => None,
        }
    }

    /// A deployment stopped running. A trip stays until a fetch shows the source is back.
    fn forget(&mut self, id: &str) {
        self.deployments.remove(id);
    }

    /// Whether the deployment's kind of source is considered down (holds are not announced).
    fn down_for(&self, id: &str) -> bool {
        self.deployments
            .get(id)
            .is_some_and(|(k, _)| self.tripped.contains_key(k))
    }

    fn any_announced(&self) -> bool {
        self.tripped.values().any(|t| t.announced)
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        rules: Arc<ArcSwap<RuleSet>>,
        telemetry: Arc<Telemetry>,
        notifiers: Arc<Notifiers>,
        actions: Arc<ActionRunner>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Engine>, String> {
        let scraper = Arc::new(Scraper::new(&config.scrape)?);
        let prom = match &config.prometheus {
            Some(p) => Some(Arc::new(PromClient::new(p)?)),
            None => None,
        };
        let (changes, _) = broadcast::channel(256);
        Ok(Arc::new(Engine {
            config,
            store,
            rules,
            telemetry,
            notifiers,
            actions,
            scraper,
            prom,
            controls: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            shutdown,
            changes,
            progress: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            breaker: Mutex::new(Breaker::default()),
            heartbeats: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether every running analysis loop completed a step recently (interval plus the
    /// scrape timeout plus slack). Drives the systemd watchdog.
    pub fn healthy(&self) -> bool {
        let slack = self.config.scrape.timeout + Duration::from_secs(60);
        let now = tokio::time::Instant::now();
        self.heartbeats
            .lock()
            .map(|h| {
                h.values()
                    .all(|(at, every)| now.duration_since(*at) <= *every * 2 + slack)
            })
            .unwrap_or(false)
    }

    fn beat(&self, id: &str, every: Option<Duration>) {
        if let Ok(mut h) = self.heartbeats.lock() {
            match every {
                Some(e) => {
                    h.insert(id.to_string(), (tokio::time::Instant::now(), e));
                }
                None => {
                    h.remove(id);
                }
            }
        }
    }

    /// Number of deployments being analysed right now.
    pub fn running(&self) -> usize {
        self.controls.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Registers a deployment (idempotent on `id`) and starts its analysis.
    pub fn register(
        self: &Arc<Self>,
        req: DeploymentRequest,
    ) -> Result<(DeploymentRecord, bool), EngineError> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        req.validate().map_err(EngineError::Invalid)?;
        let rules = self.rules.load();
        let Some(template) = rules.analyses.get(&req.analysis) else {
            let hint =
                crate::diag::suggest(&req.analysis, rules.analyses.keys().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "no analysis named `{}` in the loaded rules{hint}; loaded: {}",
                req.analysis,
                rules
                    .analyses
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if req.uses_prometheus() && self.prom.is_none() {
            return Err(EngineError::Invalid(
                "the arms use `selector`, but no `prometheus:` source is configured".into(),
            ));
        }
        self.source_for(&req)?;
        let rec = new_record(
            req,
            template.path.display().to_string(),
            template.version.clone(),
            template.source.to_string(),
        );
        // Exactly what the analysis task will run: a registration is refused for the same
        // reasons a resumption or a `follow` switch would fail.
        compile(&rec).map_err(EngineError::Invalid)?;
        let msg = format!(
            "registered for analysis `{}` (rule version {})",
            rec.request.analysis, rec.rule_version
        );
        match self.store.register(&rec, &msg)? {
            Registered::Existing(existing) => {
                if existing.request != rec.request {
                    return Err(EngineError::Conflict(rec.request.id.clone()));
                }
                Ok((*existing, false))
            }
            Registered::Created => {
                let svc = rec.request.service.clone().unwrap_or_default();
                Telemetry::inc(&self.telemetry.deployments_started, &[("service", &svc)]);
                self.spawn(rec.request.id.clone());
                Ok((rec, true))
            }
        }
    }

    /// Resumes every unfinished deployment and action after a start.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        let me = self.clone();
        self.actions
            .recover(move |a| {
                me.store
                    .get(&a.deployment)
                    .ok()
                    .flatten()
                    .and_then(|r| compile(&r).ok())
                    .map(|s| match a.purpose.as_str() {
                        "rollback" => s.actions.on_fail.clone(),
                        "promote" => s.actions.on_pass.clone(),
                        _ => Vec::new(),
                    })
                    .unwrap_or_default()
            })
            .await;
        let open = self.store.unfinished()?;
        let n = open.len();
        for r in open {
            tracing::info!(deployment = %r.request.id, state = %r.state, elapsed_s = r.elapsed_ms / 1000, "resuming deployment");
            self.spawn(r.request.id);
        }
        Ok(n)
    }

    /// Sends a person's action to a running deployment.
    pub async fn control(&self, id: &str, c: Control) -> Result<(), EngineError> {
        let tx = self.controls.lock().ok().and_then(|m| m.get(id).cloned());
        match tx {
            Some(tx) => tx
                .send(c)
                .await
                .map_err(|_| EngineError::NotFound(id.to_string())),
            None => match self.store.get(id)? {
                Some(r) => Err(EngineError::Finished {
                    id: id.to_string(),
                    state: r.state,
                }),
                None => Err(EngineError::NotFound(id.to_string())),
            },
        }
    }

    /// Stops starting new work and waits (bounded) for analysis tasks to persist and exit.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Starts the analysis task of a deployment, unless one is already running (a
    /// registration can race with the resumption of unfinished deployments at start).
    fn spawn(self: &Arc<Self>, id: String) {
        let (tx, rx) = mpsc::channel(16);
        match self.controls.lock() {
            Ok(mut m) => {
                if m.contains_key(&id) {
                    return;
                }
                m.insert(id.clone(), tx);
            }
            Err(_) => return,
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            let mut rx = rx;
            let mut wait = STORE_RETRY_FIRST;
            loop {
                match me.run(&id, &mut rx).await {
                    // Nothing was acted on (persist first, then act). Once the state directory
                    // takes writes again, the loop resumes from the last record it wrote.
                    Err(EngineError::Store(e)) if !me.shutdown.is_cancelled() => {
                        tracing::error!(deployment = %id, error = %e, retry_in = ?wait, "state store failing: this deployment's analysis waits until its state can be recorded");
                        me.beat(&id, None);
                        tokio::select! {
                            _ = me.shutdown.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(STORE_RETRY_MAX);
                    }
                    Err(e) => {
                        tracing::error!(deployment = %id, error = %e, "analysis task stopped");
                        break;
                    }
                    Ok(()) => break,
                }
            }
            if let Ok(mut m) = me.controls.lock() {
                m.remove(&id);
            }
            if let Ok(mut b) = me.breaker.lock() {
                b.forget(&id);
            }
            me.beat(&id, None);
        });
    }

    fn source_for(&self, req: &DeploymentRequest) -> Result<Source, EngineError> {
        if req.uses_prometheus() {
            let prom = self
                .prom
                .clone()
                .ok_or_else(|| EngineError::Invalid("no Prometheus source configured".into()))?;
            let m = |sel: &Option<String>, arm: &str| {
                parse_matchers(sel.as_deref().unwrap_or_default())
                    .map_err(|e| EngineError::Invalid(format!("`{arm}.selector`: {e}")))
            };
            Ok(Source::Prometheus {
                client: prom,
                arms: Arms {
                    baseline: m(&req.baseline.selector, "baseline")?,
                    canary: m(&req.canary.selector, "canary")?,
                },
                baseline_offset: req
                    .baseline
                    .offset
                    .as_deref()
                    .and_then(|o| crate::units::parse_duration(o).ok())
                    .unwrap_or_default(),
            })
        } else {
            let t = |a: &super::model::ArmSpec| -> Result<ArmTargets, EngineError> {
                match &a.file_sd {
                    Some(name) => {
                        // A file name inside the configured directory, nothing else: the API must
                        // not become a way to read arbitrary files.
                        let dir = self.config.file_sd_dir.as_ref().ok_or_else(|| {
                            EngineError::Invalid(
                                "`file_sd` needs `file_sd_dir` in the daemon config".into(),
                            )
                        })?;
                        let plain = !name.is_empty()
                            && !name.contains('/')
                            && !name.contains("..")
                            && !name.starts_with('.');
                        if !plain {
                            return Err(EngineError::Invalid(format!(
                                "`file_sd` must be a file name inside {}, got `{name}`",
                                dir.display()
                            )));
                        }
                        Ok(ArmTargets::FileSd(dir.join(name)))
                    }
                    None => Ok(ArmTargets::Urls(a.targets.clone())),
                }
            };
            Ok(Source::Scrape {
                scraper: self.scraper.clone(),
                arms: Arms {
                    baseline: t(&req.baseline)?,
                    canary: t(&req.canary)?,
                },
            })
        }
    }

    fn subject(rec: &DeploymentRecord) -> Subject {
        Subject {
            deployment: rec.request.id.clone(),
            service: rec.request.service.clone().unwrap_or_default(),
            analysis: rec.request.analysis.clone(),
            version: rec.request.canary.version.clone().unwrap_or_default(),
            baseline_version: rec.request.baseline.version.clone().unwrap_or_default(),
        }
    }

    fn link(&self, id: &str) -> Option<String> {
        self.config
            .public_url
            .as_ref()
            .map(|u| format!("{u}/api/v1/deployments/{id}"))
    }

    /// A notice about one deployment, addressed to a rule's action list: its notifiers get
    /// this notice, and later how the decision's hooks ended.
    fn notice(
        &self,
        to: &[String],
        rec: &DeploymentRecord,
        kind: NoticeKind,
        title: String,
        text: String,
        checks: Vec<CheckReport>,
    ) -> (Vec<String>, Notice) {
        let n = Notice {
            kind,
            at: now(),
            subject: Some(Self::subject(rec)),
            title,
            text,
            checks,
            link: self.link(&rec.request.id),
            key: format!("rollguard/{}", rec.request.id),
        };
        (to.to_vec(), n)
    }

    /// The analysis loop of one deployment.
    async fn run(
        self: &Arc<Self>,
        id: &str,
        rx: &mut mpsc::Receiver<Control>,
    ) -> Result<(), EngineError> {
        let Some(mut rec) = self.store.get(id)? else {
            return Err(EngineError::NotFound(id.into()));
        };
        if rec.state.is_terminal() {
            return Ok(());
        }
        let mut spec = compile(&rec).map_err(EngineError::Invalid)?;
        let mut judge = Judge::restore(&spec, rec.judge.as_deref());
        let mut source =
            DeploymentSource::new(self.source_for(&rec.request)?, id, self.telemetry.clone());
        let mut step_duration = step_duration(&rec.request.strategy, &spec);
        if rec.state == State::Pending {
            rec.state = State::Analysing;
            rec.reason = "analysing".into();
            let mut actions = Vec::new();
            let mut events = vec![(
                "started".to_string(),
                format!("analysis `{}` started", spec.name),
                serde_json::Value::Null,
            )];
            if let Some(w) = weight_at(&rec.request.strategy, 0) {
                actions = self.owed(&rec, &spec.actions.on_step, "step", &Verdict::Continue, &[]);
                events.push((
                    "step".into(),
                    format!("step 1 at weight {w}"),
                    serde_json::Value::Null,
                ));
            }
            let n = self.notice(
                &spec.actions.on_fail,
                &rec,
                NoticeKind::DeploymentStarted,
                format!("Canary analysis started: {id}"),
                format!(
                    "analysis `{}` (rule {}), watching {} checks",
                    spec.name,
                    spec.version,
                    spec.checks.len()
                ),
                Vec::new(),
            );
            self.commit(&mut rec, &judge, events, actions, Some(n), &[])?;
        }
        let interval = spec.timing.interval;
        source.set_round_budget(interval);
        self.beat(id, Some(interval));
        let resumed = tokio::time::Instant::now();
        let base = Duration::from_millis(rec.elapsed_ms);
        let mut t = base;
        // A `follow` rule version this deployment cannot take (said once, not every interval).
        let mut refused: Option<String> = None;
        loop {
            let next = Duration::from_millis(
                ((t.as_millis() / interval.as_millis().max(1)) as u64 + 1)
                    * interval.as_millis() as u64,
            );
            let wake = resumed + next.saturating_sub(base);
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.persist(&mut rec, &judge, vec![], &[])?;
                    return Ok(());
                }
                c = rx.recv() => {
                    let Some(c) = c else {
                        tracing::error!(deployment = id, "the control channel closed; stopping this analysis task (it resumes on the next start)");
                        return Ok(());
                    };
                    let latest: Vec<CheckReport> = serde_json::from_value(rec.checks.clone()).unwrap_or_default();
                    if self.apply_control(&mut rec, &spec, &judge, c, &latest)? {
                        return Ok(());
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            t = next;
            // `follow` rules switch to a newer version of the same analysis, with a fresh judge.
            if spec.reload == ReloadPolicy::Follow
                && let Some(newer) = self
                    .rules
                    .load()
                    .analyses
                    .get(&spec.name)
                    .filter(|a| a.version != spec.version)
                && refused.as_ref() != Some(&newer.version)
            {
                let mut next = rec.clone();
                next.rule_path = newer.path.display().to_string();
                next.rule_version = newer.version.clone();
                next.rule_source = newer.source.to_string();
                match compile(&next) {
                    Ok(s) => {
                        tracing::info!(deployment = id, from = %spec.version, to = %s.version, "following the edited rule");
                        rec = next;
                        spec = s;
                        judge = Judge::new(&spec);
                        step_duration = self::step_duration(&rec.request.strategy, &spec);
                    }
                    Err(e) => {
                        tracing::warn!(deployment = id, version = %newer.version, error = %e, "not following the edited rule: it does not fit this deployment");
                        refused = Some(newer.version.clone());
                    }
                }
            }
            let frame = source.fetch(&spec.queries).await;
            let share = expected_share(&rec, rec.step);
            let step = judge.step(&spec, t, &frame, share);
            self.telemetry.analysis_steps.inc();
            self.progress
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.beat(id, Some(spec.timing.interval));
            rec.elapsed_ms = t.as_millis() as u64;
            self.observe_breaker(id, source.kind(), source.backend_error());
            match self.apply_step(&mut rec, &spec, &judge, step, step_duration)? {
                Progress::Finished => return Ok(()),
                Progress::Continue => {}
                Progress::Switched => {
                    // Blue-green: from now on only the absolute guards watch green.
                    spec = compile(&rec).map_err(EngineError::Invalid)?;
                    judge = Judge::new(&spec);
                    self.persist(&mut rec, &judge, vec![], &[])?;
                }
            }
        }
    }

    fn observe_breaker(&self, id: &str, kind: &'static str, error: Option<&str>) {
        let tick = tokio::time::Instant::now();
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        let event = b.observe(id, kind, error, tick, self.config.source_grace);
        let announced = b.any_announced();
        drop(b);
        let source = if kind == "prometheus" {
            "the Prometheus query API"
        } else {
            "their scrape targets"
        };
        let (kind_, title, text) = match event {
            Some(BreakerEvent::Down {
                kind,
                error,
                failing,
                of,
            }) => (
                NoticeKind::BackendDown,
                format!("Metrics backend down ({kind})"),
                format!(
                    "{failing} of {of} running deployments cannot reach {source} (last error: {error}). Holding all of them: nothing is promoted or rolled back until metrics are back; rollguard resumes by itself."
                ),
            ),
            Some(BreakerEvent::Recovered { kind, after }) => (
                NoticeKind::BackendRecovered,
                format!("Metrics backend recovered ({kind})"),
                format!(
                    "metrics are flowing again after {}; analyses continue",
                    crate::units::format_duration(after)
                ),
            ),
            None => return,
        };
        self.telemetry.backend_down.set(i64::from(announced));
        let n = Notice {
            kind: kind_,
            at: now(),
            subject: None,
            title,
            text,
            checks: Vec::new(),
            link: None,
            key: format!("rollguard/backend/{kind}"),
        };
        self.notifiers.enqueue(&self.config.ops_notifiers, &n);
    }

    fn backend_down_for(&self, id: &str) -> bool {
        self.breaker.lock().map(|b| b.down_for(id)).unwrap_or(false)
    }

    /// Applies one judge step.
    fn apply_step(
        self: &Arc<Self>,
        rec: &mut DeploymentRecord,
        spec: &AnalysisSpec,
        judge: &Judge,
        step: Step,
        step_duration: Duration,
    ) -> Result<Progress, EngineError> {
        let id = rec.request.id.clone();
        rec.checks = serde_json::to_value(&step.checks).unwrap_or_default();
        for c in &step.checks {
            Telemetry::set_f(
                &self.telemetry.check_evidence,
                &[("deployment", &id), ("check", &c.name)],
                if c.evidence.is_finite() {
                    c.evidence
                } else {
                    f64::MAX
                },
            );
        }
        let mut events: Vec<(String, String, serde_json::Value)> = Vec::new();
        let mut notify: Option<(Vec<String>, Notice)> = None;
        let mut actions = Vec::new();
        for name in &step.newly_failed {
            if let Some(r) = step.checks.iter().find(|c| &c.name == name) {
                events.push((
                    "check_failed".into(),
                    format!("{}: {}", r.name, r.explanation),
                    serde_json::to_value(r).unwrap_or_default(),
                ));
                if r.enforce == crate::rules::Enforcement::Shadow {
                    // Shadow: recorded (above) and announced once, never acted upon.
                    notify = Some(self.notice(
                        &spec.actions.on_fail,
                        rec,
                        NoticeKind::CheckFailing,
                        format!("Shadow check would fail: {} on {id}", r.name),
                        format!("{} (shadow: nothing was done)", r.explanation),
                        vec![r.clone()],
                    ));
                }
                if r.enforce == crate::rules::Enforcement::Notify {
                    notify = Some(self.notice(
                        &spec.actions.on_fail,
                        rec,
                        NoticeKind::CheckFailing,
                        format!("Check failing: {} on {id}", r.name),
                        r.explanation.clone(),
                        vec![r.clone()],
                    ));
                }
            }
        }
        let failing: Vec<CheckReport> = step
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .cloned()
            .collect();
        let verdict = if rec.paused && matches!(step.verdict, Verdict::Promote { .. }) {
            Verdict::Hold {
                reason: "paused by a person; promotion waits for resume".into(),
            }
        } else {
            step.verdict.clone()
        };
        let was = rec.state;
        let mut switched = false;
        match &verdict {
            Verdict::Rollback { check, reason } => {
                Self::finish(rec, State::RolledBack, reason.clone());
                self.telemetry.time_to_detect.observe(step.t.as_secs_f64());
                actions = self.owed(
                    rec,
                    &spec.actions.on_fail,
                    "rollback",
                    &verdict,
                    &step.checks,
                );
                events.push((
                    "decision".into(),
                    format!("rollback: {reason}"),
                    serde_json::to_value(&step.checks).unwrap_or_default(),
                ));
                let hooks: Vec<String> = actions.iter().map(|a| a.hook.clone()).collect();
                let did = if hooks.is_empty() {
                    "no rollback hook is configured for this analysis".to_string()
                } else {
                    format!("running {}", hooks.join(", "))
                };
                notify = Some(self.notice(
                    &spec.actions.on_fail,
                    rec,
                    NoticeKind::RollbackStarted,
                    format!("Rolling back {id}: {check} failed"),
                    format!("{reason}. Action: {did}."),
                    failing.clone(),
                ));
            }
            Verdict::Promote { reason } => {
                let last = steps_len(&rec.request.strategy).saturating_sub(1) as u32;
                if rec.request.strategy.post_switch().is_some() && rec.step == 0 {
                    // Blue-green: green verified; switch traffic, then watch it.
                    rec.step = 1;
                    rec.step_started_ms = rec.elapsed_ms;
                    rec.reason = format!("switched to green: {reason}");
                    actions =
                        self.owed(rec, &spec.actions.on_pass, "switch", &verdict, &step.checks);
                    events.push((
                        "switch".into(),
                        format!("green verified, switching traffic: {reason}"),
                        serde_json::Value::Null,
                    ));
                    notify = Some(self.notice(
                        &spec.actions.on_pass,
                        rec,
                        NoticeKind::StepPromoted,
                        format!("{id}: switching to green"),
                        format!("{reason}; watching green after the switch"),
                        step.checks.clone(),
                    ));
                    switched = true;
                } else if rec.step < last {
                    // Canary steps: advance (handled below with the step timer).
                } else if rec.request.strategy.post_switch().is_some() {
                    // Blue-green watch passed: traffic is already on green, nothing to run.
                    Self::finish(
                        rec,
                        State::Promoted,
                        format!("green held up after the switch: {reason}"),
                    );
                    events.push((
                        "decision".into(),
                        format!("promote: {}", rec.reason),
                        serde_json::Value::Null,
                    ));
                    notify = Some(self.notice(
                        &spec.actions.on_pass,
                        rec,
                        NoticeKind::Promoted,
                        format!("Promoted {id}"),
                        rec.reason.clone(),
                        step.checks.clone(),
                    ));
                } else {
                    Self::finish(rec, State::Promoted, reason.clone());
                    actions = self.owed(
                        rec,
                        &spec.actions.on_pass,
                        "promote",
                        &verdict,
                        &step.checks,
                    );
                    events.push((
                        "decision".into(),
                        format!("promote: {reason}"),
                        serde_json::Value::Null,
                    ));
                    notify = Some(self.notice(
                        &spec.actions.on_pass,
                        rec,
                        NoticeKind::Promoted,
                        format!("Promoted {id}"),
                        reason.clone(),
                        step.checks.clone(),
                    ));
                }
            }
            Verdict::Inconclusive { reason } => {
                Self::finish(rec, State::Inconclusive, reason.clone());
                // While the metrics backend is down rollguard acts on nothing: the verdict is
                // recorded and announced, its hooks do not run.
                if !self.backend_down_for(&id) {
                    actions = self.owed(
                        rec,
                        &spec.actions.on_inconclusive,
                        "inconclusive",
                        &verdict,
                        &step.checks,
                    );
                } else {
                    events.push((
                        "held".into(),
                        "metrics backend down: on_inconclusive hooks not run".into(),
                        serde_json::Value::Null,
                    ));
                }
                events.push((
                    "decision".into(),
                    format!("inconclusive: {reason}"),
                    serde_json::Value::Null,
                ));
                notify = Some(self.notice(
                    &spec.actions.on_inconclusive,
                    rec,
                    NoticeKind::Inconclusive,
                    format!("Inconclusive: {id}"),
                    reason.clone(),
                    step.checks.clone(),
                ));
            }
            Verdict::Hold { reason } => {
                rec.state = State::Held;
                if was != State::Held {
                    rec.reason = reason.clone();
                    events.push(("held".into(), reason.clone(), serde_json::Value::Null));
                    if !self.backend_down_for(&id) {
                        actions = self.owed(
                            rec,
                            &spec.actions.on_no_data,
                            "hold",
                            &verdict,
                            &step.checks,
                        );
                        notify = Some(self.notice(&spec.actions.on_no_data, rec, NoticeKind::Held, format!("Holding {id}"), format!("{reason}. Nothing is promoted or rolled back until the evidence is back."), step.checks.clone()));
                    }
                }
            }
            Verdict::Continue => {
                rec.state = if rec.paused {
                    State::Held
                } else {
                    State::Analysing
                };
                if was == State::Held && !rec.paused {
                    rec.reason = "analysing".into();
                    events.push((
                        "resumed".into(),
                        "evidence is back; analysis continues".into(),
                        serde_json::Value::Null,
                    ));
                }
            }
        }
        // Canary steps advance when the current one has run its time with nothing failing.
        let in_step = Duration::from_millis(rec.elapsed_ms.saturating_sub(rec.step_started_ms));
        let last = steps_len(&rec.request.strategy).saturating_sub(1) as u32;
        if !rec.state.is_terminal()
            && rec.state == State::Analysing
            && matches!(rec.request.strategy, Strategy::Canary { .. })
            && rec.step < last
            && in_step >= step_duration
            && failing.is_empty()
            && rec.elapsed_ms > spec.timing.warmup.as_millis() as u64
        {
            rec.step += 1;
            rec.step_started_ms = rec.elapsed_ms;
            let w = weight_at(&rec.request.strategy, rec.step as usize).unwrap_or(100.0);
            actions = self.owed(
                rec,
                &spec.actions.on_step,
                "step",
                &Verdict::Continue,
                &step.checks,
            );
            events.push((
                "step".into(),
                format!("step {} at weight {w}", rec.step + 1),
                serde_json::Value::Null,
            ));
            notify = Some(self.notice(
                &spec.actions.on_fail,
                rec,
                NoticeKind::StepPromoted,
                format!("{id}: step {} ({w} %)", rec.step + 1),
                "no check failing; traffic increased".into(),
                step.checks.clone(),
            ));
        }
        self.commit(rec, judge, events, actions, notify, &step.checks)?;
        if rec.state.is_terminal() {
            return Ok(Progress::Finished);
        }
        Ok(if switched {
            Progress::Switched
        } else {
            Progress::Continue
        })
    }

    /// The hook actions owed by a decision (notifier names in the list are skipped here).
    fn owed(
        &self,
        rec: &DeploymentRecord,
        names: &[String],
        purpose: &str,
        verdict: &Verdict,
        checks: &[CheckReport],
    ) -> Vec<Action> {
        names
            .iter()
            .filter(|n| self.actions.is_hook(n))
            .map(|hook| {
                let action_id = format!("{}-{purpose}-{}-{hook}", rec.request.id, rec.step);
                let facts = Facts {
                    deployment: rec.request.id.clone(),
                    service: rec.request.service.clone().unwrap_or_default(),
                    analysis: rec.request.analysis.clone(),
                    action: purpose.to_string(),
                    action_id: action_id.clone(),
                    verdict: verdict.name().to_string(),
                    reason: verdict.reason().to_string(),
                    version: rec.request.canary.version.clone().unwrap_or_default(),
                    baseline_version: rec.request.baseline.version.clone().unwrap_or_default(),
                    step: matches!(rec.request.strategy, Strategy::Canary { .. })
                        .then_some(rec.step + 1),
                    weight: weight_at(&rec.request.strategy, rec.step as usize),
                    dry_run: self.config.dry_run,
                    params: rec.request.params.clone(),
                    checks: serde_json::to_value(checks).unwrap_or_default(),
                };
                Action::pending(
                    action_id,
                    &rec.request.id,
                    hook,
                    purpose,
                    serde_json::to_value(&facts).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Persists the record, judge state, events and owed actions in one transaction. If this
    /// fails nothing is acted upon.
    fn persist(
        &self,
        rec: &mut DeploymentRecord,
        judge: &Judge,
        events: Vec<(String, String, serde_json::Value)>,
        actions: &[Action],
    ) -> Result<(), EngineError> {
        rec.updated_at = now();
        // A finished deployment is never judged again, and its final check reports carry the
        // numbers: its judge state (up to ~100 KB per check after 30 minutes) is not kept, or
        // it would be most of the database after a year of deployments.
        rec.judge = if rec.state.is_terminal() {
            None
        } else {
            serde_json::to_string(judge).ok()
        };
        let saved = self.store.save(rec, &events, actions);
        // The JSON is only for the store (the loop keeps the live `Judge`): no second copy in
        // memory per deployment.
        rec.judge = None;
        if let Err(e) = saved {
            tracing::error!(deployment = %rec.request.id, error = %e, "cannot persist the deployment's state: refusing to act without a record");
            return Err(e.into());
        }
        let _ = self.changes.send(Change {
            deployment: rec.request.id.clone(),
        });
        Ok(())
    }

    /// Persist, then act: records the step's events and owed actions, and only once they are
    /// written queues the notice and starts the hooks. A deployment that just finished is
    /// counted, and its per-check gauges are dropped so `/metrics` does not keep stale series.
    fn commit(
        &self,
        rec: &mut DeploymentRecord,
        judge: &Judge,
        events: Vec<(String, String, serde_json::Value)>,
        actions: Vec<Action>,
        notice: Option<(Vec<String>, Notice)>,
        checks: &[CheckReport],
    ) -> Result<(), EngineError> {
        self.persist(rec, judge, events, &actions)?;
        let decided = tokio::time::Instant::now();
        let names = match &notice {
            Some((names, n)) => {
                self.notifiers.enqueue(names, n);
                names.clone()
            }
            None => Vec::new(),
        };
        self.actions.start(actions, names, decided);
        if rec.state.is_terminal() {
            let id = &rec.request.id;
            let svc = rec.request.service.clone().unwrap_or_default();
            Telemetry::inc(
                &self.telemetry.deployments_finished,
                &[("service", &svc), ("outcome", rec.state.as_str())],
            );
            for c in checks {
                Telemetry::remove(
                    &self.telemetry.check_evidence,
                    &[("deployment", id), ("check", &c.name)],
                );
            }
        }
        Ok(())
    }

    /// Ends the deployment in `state` (a decision, or a person's promote or abort).
    fn finish(rec: &mut DeploymentRecord, state: State, reason: String) {
        rec.state = state;
        rec.reason = reason;
        rec.finished_at = Some(now());
    }

    /// Applies a person's action. Returns true when the deployment is finished.
    fn apply_control(
        self: &Arc<Self>,
        rec: &mut DeploymentRecord,
        spec: &AnalysisSpec,
        judge: &Judge,
        c: Control,
        checks: &[CheckReport],
    ) -> Result<bool, EngineError> {
        let (what, who, why) = c.describe();
        let msg = format!(
            "{what} by {who}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        );
        let id = rec.request.id.clone();
        let mut actions = Vec::new();
        let mut notice = None;
        match &c {
            Control::Pause { .. } => {
                rec.paused = true;
                rec.state = State::Held;
                rec.reason = msg.clone();
            }
            Control::Resume { .. } => {
                rec.paused = false;
                rec.state = State::Analysing;
                rec.reason = msg.clone();
                notice = Some(self.notice(
                    &spec.actions.on_fail,
                    rec,
                    NoticeKind::Resumed,
                    format!("Resumed {id}"),
                    msg.clone(),
                    Vec::new(),
                ));
            }
            Control::Promote { .. } => {
                Self::finish(rec, State::Promoted, msg.clone());
                let v = Verdict::Promote {
                    reason: msg.clone(),
                };
                actions = self.owed(rec, &spec.actions.on_pass, "promote", &v, checks);
                notice = Some(self.notice(
                    &spec.actions.on_pass,
                    rec,
                    NoticeKind::Promoted,
                    format!("Promoted {id} by hand"),
                    msg.clone(),
                    Vec::new(),
                ));
            }
            Control::Abort { .. } => {
                Self::finish(rec, State::Aborted, msg.clone());
                let v = Verdict::Rollback {
                    check: "person".into(),
                    reason: msg.clone(),
                };
                actions = self.owed(rec, &spec.actions.on_fail, "rollback", &v, checks);
                notice = Some(self.notice(
                    &spec.actions.on_fail,
                    rec,
                    NoticeKind::Aborted,
                    format!("Aborted {id}"),
                    format!("{msg}; rolling back"),
                    Vec::new(),
                ));
            }
        }
        self.commit(
            rec,
            judge,
            vec![("person".into(), msg, serde_json::Value::Null)],
            actions,
            notice,
            checks,
        )?;
        Ok(rec.state.is_terminal())
    }
}

/// Rebuilds a deployment's analysis from the rule text stored at registration (hook names
/// are checked when actions run, against the current config).
pub fn compile(rec: &DeploymentRecord) -> Result<AnalysisSpec, String> {
    let spec = compile_verify(rec)?;
    match rec.request.strategy.post_switch() {
        Some(watch) if rec.step >= 1 => Ok(post_switch_spec(
            &spec,
            Duration::from_millis(rec.step_started_ms),
            watch,
        )),
        _ => Ok(spec),
    }
}

/// After a blue-green switch blue has no traffic left to compare with, so only the
/// analysis' absolute guards keep judging green, from the switch until the watch ends.
pub fn post_switch_spec(
    spec: &AnalysisSpec,
    switched_at: Duration,
    watch: Duration,
) -> AnalysisSpec {
    let mut post = spec.clone();
    post.checks
        .retain(|c| c.kind == crate::rules::CheckKind::Threshold);
    post.timing.warmup = switched_at + spec.timing.interval;
    post.timing.min_duration = switched_at + watch;
    post.timing.max_duration = switched_at + watch + spec.timing.interval;
    post
}

/// A written `query:` is PromQL: only the Prometheus source can answer it, so an analysis
/// that has one cannot judge scraped arms.
fn source_fits(spec: &AnalysisSpec, req: &DeploymentRequest) -> Result<(), String> {
    match spec.written_query_check() {
        Some(check) if !req.uses_prometheus() => Err(format!(
            "check `{check}` of analysis `{}` is a written PromQL `query:`, which needs the Prometheus source: give both arms a `selector` instead of `targets` or `file_sd`",
            spec.name
        )),
        _ => Ok(()),
    }
}

fn compile_verify(rec: &DeploymentRecord) -> Result<AnalysisSpec, String> {
    let path = std::path::PathBuf::from(&rec.rule_path);
    let template: AnalysisTemplate =
        parse_rule_file(&path, &rec.rule_source, None).map_err(|d| {
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    let mut spec = template
        .instantiate(&rec.request.params)
        .map_err(|e| e.to_string())?;
    if let Some(o) = &rec.request.timing {
        o.apply(&mut spec.timing)?;
    }
    if let Strategy::Bake { watch } = &rec.request.strategy {
        // A bake watches for a fixed time, then promotes if every check held up.
        let w = watch
            .as_deref()
            .and_then(|w| crate::units::parse_duration(w).ok())
            .unwrap_or(Duration::from_secs(1800));
        spec.timing.min_duration = w.max(spec.timing.warmup + spec.timing.interval);
        spec.timing.max_duration = spec.timing.min_duration + spec.timing.interval;
    }
    source_fits(&spec, &rec.request)?;
    Ok(spec)
}

fn steps_len(s: &Strategy) -> usize {
    match s {
        Strategy::Canary { steps, .. } => steps.len(),
        Strategy::BlueGreen { .. } => 2,
        Strategy::Analysis | Strategy::Bake { .. } => 1,
    }
}

fn weight_at(s: &Strategy, i: usize) -> Option<f64> {
    match s {
        Strategy::Canary { steps, .. } => steps.get(i).copied(),
        Strategy::BlueGreen { .. } | Strategy::Analysis | Strategy::Bake { .. } => None,
    }
}

fn step_duration(s: &Strategy, spec: &AnalysisSpec) -> Duration {
    match s {
        Strategy::Canary {
            steps,
            step_duration,
        } => step_duration
            .as_deref()
            .and_then(|d| crate::units::parse_duration(d).ok())
            .unwrap_or_else(|| spec.timing.min_duration / (steps.len().max(1) as u32)),
        Strategy::BlueGreen { .. } | Strategy::Analysis | Strategy::Bake { .. } => Duration::MAX,
    }
}

/// The canary's expected share of requests, when the deployment says.
fn expected_share(rec: &DeploymentRecord, step: u32) -> Option<f64> {
    let c = weight_at(&rec.request.strategy, step as usize).or(rec.request.canary.weight)?;
    let b = rec.request.baseline.weight.unwrap_or(100.0 - c);
    (c > 0.0 && b > 0.0).then(|| c / (c + b))
}

/// A deployment as the API shows it. Target URLs lose any `user:password@` part: the API
/// may be read by people and tools that should not learn a scrape credential (the scraper
/// still uses the URL as registered).
pub fn describe(rec: &DeploymentRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    for arm in ["baseline", "canary"] {
        let targets = v
            .pointer_mut(&format!("/request/{arm}/targets"))
            .and_then(serde_json::Value::as_array_mut);
        for t in targets.into_iter().flatten() {
            if let Some(u) = t.as_str() {
                *t = crate::net::redact_userinfo(u).into();
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), rec.request.id.clone().into());
        o.insert("analysis".into(), rec.request.analysis.clone().into());
        o.insert("elapsed_s".into(), (rec.elapsed_ms as f64 / 1000.0).into());
    }
    v
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn trips_at_once_announces_after_grace_and_recovers_once() {
        let grace = Duration::from_secs(10);
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Breaker::default();
        assert_eq!(b.observe("a", "prometheus", None, at(0), grace), None);
        assert_eq!(b.observe("b", "prometheus", None, at(0), grace), None);
        assert_eq!(
            b.observe("c", "scrape", Some("refused"), at(0), grace),
            None,
            "one scrape deployment is no majority"
        );
        assert_eq!(
            b.observe("a", "prometheus", Some("refused"), at(1), grace),
            None
        );
        assert!(!b.down_for("a"), "1 of 2 is not most");
        assert_eq!(
            b.observe("b", "prometheus", Some("refused"), at(1), grace),
            None
        );
        assert!(
            b.down_for("a") && b.down_for("b") && !b.down_for("c"),
            "tripped at once, per kind"
        );
        assert_eq!(
            b.observe("a", "prometheus", Some("refused"), at(5), grace),
            None,
            "silent within the grace"
        );
        assert!(matches!(
            b.observe("b", "prometheus", Some("timeout"), at(11), grace),
            Some(BreakerEvent::Down {
                failing: 2,
                of: 2,
                ..
            })
        ));
        assert_eq!(
            b.observe("a", "prometheus", Some("refused"), at(12), grace),
            None,
            "announced once"
        );
        // A deployment leaving does not fake a recovery.
        b.forget("a");
        assert_eq!(
            b.observe("b", "prometheus", Some("refused"), at(13), grace),
            None
        );
        assert!(matches!(
            b.observe("b", "prometheus", None, at(14), grace),
            Some(BreakerEvent::Recovered { .. })
        ));
        assert!(!b.down_for("b"));
    }

    #[test]
    fn a_blip_shorter_than_the_grace_is_silent() {
        let grace = Duration::from_secs(10);
        let t0 = tokio::time::Instant::now();
        let mut b = Breaker::default();
        b.observe("a", "prometheus", Some("x"), t0, grace);
        b.observe("b", "prometheus", Some("x"), t0, grace);
        assert!(b.down_for("a"));
        assert_eq!(
            b.observe("a", "prometheus", None, t0 + Duration::from_secs(2), grace),
            None
        );
        assert!(!b.down_for("a"));
    }
}

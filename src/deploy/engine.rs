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

use super::judge_guard;
use super::model::{DeploymentRecord, DeploymentRequest, Stage, State, Strategy};
pub use super::policy::Control;
use super::policy::{self, Context, Input, expected_share};
use crate::action::notify::Notifiers;
use crate::action::runner::ActionRunner;
use crate::config::Config;
use crate::events::{Notice, NoticeKind};
use crate::judge::{CheckReport, Judge};
use crate::query::Arms;
use crate::rules::{AnalysisSpec, AnalysisTemplate, ReloadPolicy, RuleSet, parse_rule_file};
use crate::selector::parse_matchers;
use crate::source::{ArmTargets, DeploymentSource, Source, promql::PromClient, scrape::Scraper};
use crate::store::{OutboxRow, Purpose, Registered, Store, StoreError, Writes, new_record, now};
use crate::telemetry::Telemetry;

/// First wait before an analysis loop that could not write its state tries again; doubles
/// per failure up to [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_secs(1);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// The pre-flight migration gate refused the canary (HTTP 412, `deploy start` exits 10).
    #[error("{0}")]
    Schema(String),
}

/// Something changed on a deployment (for event streams).
#[derive(Clone, Debug)]
pub struct Change {
    pub deployment: String,
}

/// The long-lived core of the daemon.
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub telemetry: Arc<Telemetry>,
    pub notifiers: Arc<Notifiers>,
    pub actions: Arc<ActionRunner>,
    scraper: Arc<Scraper>,
    prom: Option<Arc<PromClient>>,
    controls: Mutex<HashMap<String, mpsc::Sender<Control>>>,
    pub(super) tracker: TaskTracker,
    pub(super) shutdown: CancellationToken,
    /// Live schema per service and the migration gates' settings (`schemas:`).
    pub schemas: Arc<crate::schema::Schemas>,
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
        store: Arc<dyn Store>,
        rules: Arc<ArcSwap<RuleSet>>,
        telemetry: Arc<Telemetry>,
        notifiers: Arc<Notifiers>,
        actions: Arc<ActionRunner>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Engine>, String> {
        let scraper = Arc::new(Scraper::new(&config.scrape)?);
        let prom = match &config.prometheus {
            Some(p) => Some(Arc::new(
                PromClient::new(p)?.with_warning_counter(telemetry.query_warnings.clone()),
            )),
            None => None,
        };
        let (changes, _) = broadcast::channel(256);
        let schemas = Arc::new(crate::schema::Schemas::new(
            config.schemas.clone(),
            prom.clone(),
        )?);
        Ok(Arc::new(Engine {
            schemas,
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
        let stage = req.validate().map_err(EngineError::Invalid)?;
        let rules = self.rules.load();
        let Some(template) = rules.analyses.get(&req.analysis) else {
            let hint =
                crate::diag::suggest(&req.analysis, rules.analyses.keys().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "no analysis named `{}` in the loaded rules{hint}; loaded: {}",
                req.analysis,
                rules.names()
            )));
        };
        if req.uses_prometheus() && self.prom.is_none() {
            return Err(EngineError::Invalid(
                "the arms use `selector`, but no `prometheus:` source is configured".into(),
            ));
        }
        self.source_for(&req, &stage)?;
        self.check_ranges(&req)?;
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
                    .map(|s| match a.purpose {
                        Purpose::Rollback | Purpose::RollForward => s.actions.on_fail.clone(),
                        Purpose::Promote | Purpose::Switch => s.actions.on_pass.clone(),
                        Purpose::Hold => s.actions.on_no_data.clone(),
                        Purpose::Inconclusive => s.actions.on_inconclusive.clone(),
                        Purpose::Step => policy::watchers(&s, &|n| me.actions.is_hook(n)),
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

    fn source_for(&self, req: &DeploymentRequest, stage: &Stage) -> Result<Source, EngineError> {
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
                baseline_offset: stage.baseline_offset,
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

    fn link(&self, id: &str) -> Option<String> {
        self.config
            .public_url
            .as_ref()
            .map(|u| format!("{u}/api/v1/deployments/{id}"))
    }

    /// The analysis loop of one deployment: fetch → judge → advance → save → start.
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
        let stage = rec.request.validate().map_err(EngineError::Invalid)?;
        let mut spec = compile(&rec).map_err(EngineError::Invalid)?;
        let mut judge = Judge::restore(&spec, rec.judge.as_deref());
        let mut source = DeploymentSource::new(
            self.source_for(&rec.request, &stage)?,
            id,
            self.telemetry.clone(),
        );
        // Migrations before code: a canary that needs a newer schema waits for it here.
        if rec.state == State::Pending
            && !self
                .wait_for_schema(&mut rec, &spec, &judge, &stage, rx)
                .await?
        {
            return Ok(());
        }
        if rec.state == State::Pending {
            self.transition(&mut rec, &spec, &judge, &stage, Input::Start, None)?;
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
                    self.persist(&mut rec, &judge, Writes::default())?;
                    return Ok(());
                }
                c = rx.recv() => {
                    let Some(c) = c else {
                        tracing::error!(deployment = id, "the control channel closed; stopping this analysis task (it resumes on the next start)");
                        return Ok(());
                    };
                    // Before an abort's rollback hooks: is the baseline fine on the live schema?
                    let facts = match c {
                        Control::Abort { .. } => self.schema_facts(&rec).await,
                        _ => None,
                    };
                    self.transition(&mut rec, &spec, &judge, &stage, Input::Control(&c), facts.as_ref())?;
                    if rec.state.is_terminal() {
                        return Ok(());
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            t = next;
            if let Some((r, s)) = self.follow(&rec, &spec, &mut refused) {
                rec = r;
                spec = s;
                judge = Judge::new(&spec);
            }
            let frame = source.fetch(&spec.queries).await;
            let share = expected_share(&rec, rec.step);
            let (next_judge, step) = judge_guard::step(id, judge, &spec, t, frame, share).await;
            judge = next_judge;
            rec.chart.record(&step);
            self.telemetry.analysis_steps.inc();
            self.progress
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.beat(id, Some(spec.timing.interval));
            rec.elapsed_ms = t.as_millis() as u64;
            self.observe_breaker(id, source.kind(), source.backend_error());
            self.show_evidence(id, &step.checks);
            // Before any rollback hook: is the baseline still fine on the live schema?
            let facts = match step.verdict {
                crate::judge::Verdict::Rollback { .. } => self.schema_facts(&rec).await,
                _ => None,
            };
            let switched = self.transition(
                &mut rec,
                &spec,
                &judge,
                &stage,
                Input::Judged(&step),
                facts.as_ref(),
            )?;
            if rec.state == State::RolledBack {
                self.telemetry.time_to_detect.observe(step.t.as_secs_f64());
            }
            if rec.state.is_terminal() {
                return Ok(());
            }
            if switched {
                // Blue-green, or a canary at all traffic: from now on only the absolute
                // guards watch the new version.
                spec = compile(&rec).map_err(EngineError::Invalid)?;
                judge = Judge::new(&spec);
                self.persist(&mut rec, &judge, Writes::default())?;
            }
        }
    }

    /// `follow` rules switch to a newer version of the same analysis (the caller starts a
    /// fresh judge). A version that does not fit the deployment is refused once.
    fn follow(
        &self,
        rec: &DeploymentRecord,
        spec: &AnalysisSpec,
        refused: &mut Option<String>,
    ) -> Option<(DeploymentRecord, AnalysisSpec)> {
        if spec.reload != ReloadPolicy::Follow {
            return None;
        }
        let rules = self.rules.load();
        let newer = rules
            .analyses
            .get(&spec.name)
            .filter(|a| a.version != spec.version)?;
        if refused.as_ref() == Some(&newer.version) {
            return None;
        }
        let id = &rec.request.id;
        let mut next = rec.clone();
        next.rule_path = newer.path.display().to_string();
        next.rule_version = newer.version.clone();
        next.rule_source = newer.source.to_string();
        match compile(&next) {
            Ok(s) => {
                tracing::info!(deployment = %id, from = %spec.version, to = %s.version, "following the edited rule");
                Some((next, s))
            }
            Err(e) => {
                tracing::warn!(deployment = %id, version = %newer.version, error = %e, "not following the edited rule: it does not fit this deployment");
                *refused = Some(newer.version.clone());
                None
            }
        }
    }

    /// Each check's evidence as a gauge on `/metrics`.
    fn show_evidence(&self, id: &str, checks: &[CheckReport]) {
        for c in checks {
            Telemetry::set_f(
                &self.telemetry.check_evidence,
                &[("deployment", id), ("check", &c.name)],
                if c.evidence.is_finite() {
                    c.evidence
                } else {
                    f64::MAX
                },
            );
            if c.threshold.is_finite() {
                Telemetry::set_f(
                    &self.telemetry.check_threshold,
                    &[("deployment", id), ("check", &c.name)],
                    c.threshold,
                );
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

    /// Advances a deployment by one input: the policy decides, the store writes the record,
    /// timeline, owed actions and notices in one transaction, and only then are the notices
    /// woken and the hooks started. Returns whether a blue-green deployment switched.
    pub(super) fn transition(
        self: &Arc<Self>,
        rec: &mut DeploymentRecord,
        spec: &AnalysisSpec,
        judge: &Judge,
        stage: &Stage,
        input: Input,
        schema: Option<&policy::SchemaFacts>,
    ) -> Result<bool, EngineError> {
        let id = rec.request.id.clone();
        let is_hook = |n: &str| self.actions.is_hook(n);
        let ctx = Context {
            at: now(),
            is_hook: &is_hook,
            dry_run: self.config.dry_run,
            backend_down: self.backend_down_for(&id),
            link: self.link(&id),
            stage,
            schema,
            new_id: &crate::ids::new_id,
        };
        let t = policy::advance(rec.clone(), spec, input, &ctx);
        let outbox: Vec<OutboxRow> = t
            .notices
            .iter()
            .flat_map(|n| self.notifiers.rows(&n.to, &n.notice))
            .collect();
        let mut next = t.record;
        let writes = Writes {
            events: &t.events,
            actions: &t.actions,
            outbox: &outbox,
        };
        self.persist(&mut next, judge, writes)?;
        *rec = next;
        let decided = tokio::time::Instant::now();
        if t.events
            .iter()
            .any(|e| e.kind == crate::store::EventKind::RollbackBlocked && e.data["unsafe"] == true)
        {
            let svc = rec.request.service.clone().unwrap_or_default();
            Telemetry::inc(&self.telemetry.rollbacks_blocked, &[("service", &svc)]);
        }
        for n in &t.notices {
            self.notifiers.written(&n.to, &n.notice);
        }
        self.actions.start(t.actions, decided);
        if rec.state.is_terminal() {
            let svc = rec.request.service.clone().unwrap_or_default();
            Telemetry::inc(
                &self.telemetry.deployments_finished,
                &[("service", &svc), ("outcome", rec.state.as_str())],
            );
            let checks: Vec<CheckReport> =
                serde_json::from_value(rec.checks.clone()).unwrap_or_default();
            for c in &checks {
                let labels = [("deployment", id.as_str()), ("check", c.name.as_str())];
                Telemetry::remove(&self.telemetry.check_evidence, &labels);
                Telemetry::remove(&self.telemetry.check_threshold, &labels);
            }
        }
        Ok(t.switched)
    }

    /// Persists the record, judge state, timeline, owed actions and notices in one
    /// transaction. If this fails nothing is acted upon.
    pub(super) fn persist(
        &self,
        rec: &mut DeploymentRecord,
        judge: &Judge,
        writes: Writes<'_>,
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
        let saved = self.store.save(rec, writes);
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
}

/// Rebuilds a deployment's analysis from the rule text stored at registration (hook names
/// are checked when actions run, against the current config).
pub fn compile(rec: &DeploymentRecord) -> Result<AnalysisSpec, String> {
    let stage = rec.request.validate()?;
    let spec = compile_verify(rec, &stage)?;
    match rec.request.strategy {
        Strategy::BlueGreen { .. } if rec.step >= 1 => Ok(post_switch_spec(
            &spec,
            Duration::from_millis(rec.step_started_ms),
            stage.post_switch,
        )),
        Strategy::Canary { .. } if rec.request.hands_over(rec.step as usize) => {
            let watch = policy::step_duration(&rec.request.strategy, &stage, &spec);
            Ok(post_switch_spec(
                &spec,
                Duration::from_millis(rec.step_started_ms),
                watch,
            ))
        }
        _ => Ok(spec),
    }
}

/// After a blue-green switch, or a canary's step to all traffic, the old version has no
/// traffic left to compare with, so only the analysis' absolute guards keep judging the
/// new one, from the switch until the watch ends.
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

fn compile_verify(rec: &DeploymentRecord, stage: &Stage) -> Result<AnalysisSpec, String> {
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
    if rec.request.timing.is_some() {
        stage.timing.apply(&mut spec.timing)?;
    }
    if let Strategy::Bake { .. } = &rec.request.strategy {
        // A bake watches for a fixed time, then promotes if every check held up.
        let w = stage.watch;
        spec.timing.min_duration = w.max(spec.timing.warmup + spec.timing.interval);
        spec.timing.max_duration = spec.timing.min_duration + spec.timing.interval;
    }
    source_fits(&spec, &rec.request)?;
    Ok(spec)
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

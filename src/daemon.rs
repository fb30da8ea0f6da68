//! Wiring: validated config → store → rules → engine → API, then wait for a shutdown trigger
//! and stop within a bounded grace period. The shutdown trigger is passed in as a future
//! (mini-redis style), so tests and the demo stop the daemon without signals.
//!
//! Two runtimes. The engine (analysis loops, hooks, notifiers) runs on the caller's
//! runtime. The HTTP server runs on a small runtime of its own thread: it accepts
//! connections and answers the admin paths (`/healthz`, `/readyz`, `/metrics`) there, and
//! hands every other request to the engine's runtime. So probes are answered even when every
//! engine worker is busy or blocked, and a slow probe never delays an analysis step.
//!
//! Stopping (see [`Daemon::stop`]) has one deadline, `shutdown_grace` from the stop request:
//! analysis loops persist their state and exit, running hooks get until the deadline to
//! finish, hooks still running then are stopped cleanly (SIGTERM to their process group,
//! SIGKILL after the hook's `kill_grace`) so their attempt is recorded and the next start retries it,
//! and due notifications are flushed. Under systemd, `KillMode=mixed` sends SIGTERM to the
//! daemon only, so this sequence, not systemd, decides how hooks end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::action::notify::Notifiers;
use crate::action::runner::ActionRunner;
use crate::api::{self, Api, Readiness};
use crate::config::Config;
use crate::deploy::engine::Engine;
use crate::events::{Notice, NoticeKind};
use crate::leader::Leadership;
use crate::reload::Rules;
use crate::store::{PgStore, SqliteStore, Store, now};
use crate::systemd::Notifier;
use crate::telemetry::Telemetry;

/// After the grace period: how long the runner gets to record the outcome of hooks that
/// were stopped, before the daemon exits anyway.
const RECORD_WAIT: Duration = Duration::from_secs(3);
/// Due notifications get at least this long to go out, even if hooks used the whole grace.
const FLUSH_MIN: Duration = Duration::from_secs(3);
/// An in-flight notification send, and open API connections, get this long to finish.
const TAIL_WAIT: Duration = Duration::from_secs(2);
/// Slack in the stop-time bound told to systemd (`EXTEND_TIMEOUT_USEC=`).
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// A running daemon (in this process).
pub struct Daemon {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub rules: Arc<Rules>,
    /// Stops the analysis loops and background tasks (the engine cancels it first).
    shutdown: CancellationToken,
    /// What only the acting daemon runs (the leader, or the only daemon).
    acting: Arc<Acting>,
    /// With a PostgreSQL store: this daemon's part in the leader election.
    pub leadership: Option<Arc<Leadership>>,
    lease_lost: CancellationToken,
    /// Stops the HTTP server, last, so the API answers during the whole shutdown.
    api_shutdown: CancellationToken,
    api_done: oneshot::Receiver<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
    readiness: Arc<Readiness>,
    systemd: Notifier,
    grace: Duration,
    _watcher: Option<Box<dyn std::any::Any + Send>>,
}

/// Options that do not belong in the config file.
#[derive(Default)]
pub struct StartOptions {
    /// Receives SIGHUP-style reload requests (the signal module feeds it in production).
    pub reloads: Option<mpsc::Receiver<()>>,
    /// Pace between two messages to one notifier (default 1 s).
    pub notify_pace: Option<Duration>,
    /// The service manager to notify (disabled by default: tests and the demo).
    pub systemd: Notifier,
}

/// What a stop achieved, for the log line and for callers that care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Every analysis loop persisted its state and exited in time.
    pub analyses_done: bool,
    /// Every running hook finished by itself within the grace period.
    pub hooks_done: bool,
    /// Actions whose hook was still running at the deadline and was stopped; each is
    /// recorded and retried on the next start.
    pub hooks_stopped: Vec<String>,
    /// Notifications still queued (they go out on the next start).
    pub notifications_left: usize,
}

impl Daemon {
    /// Validates everything, binds the API and resumes unfinished deployments. Returns once
    /// the daemon can serve; the caller then reports readiness.
    pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<Daemon> {
        crate::net::install_crypto_provider();
        let config = Arc::new(config);
        let telemetry = Arc::new(Telemetry::new());
        let prepared =
            crate::preflight::prepare(&config).context("the configuration cannot be used")?;
        let rules = Rules::load(
            config.rules_dir.clone(),
            config.action_names(),
            telemetry.clone(),
        )
        .map_err(crate::preflight::Unusable)
        .context("invalid rules")?;
        let rules = Arc::new(rules);
        let (store, leadership) = open_store(&config)?;
        let mut notifiers =
            Notifiers::new(store.clone(), config.notifiers.clone(), telemetry.clone())
                .map_err(anyhow::Error::msg)?;
        if let Some(p) = opts.notify_pace {
            notifiers = notifiers.with_pace(p);
        }
        let notifiers = Arc::new(notifiers);
        let actions = Arc::new(
            ActionRunner::new(
                store.clone(),
                config.hooks.clone(),
                config.state_dir.clone(),
                telemetry.clone(),
                notifiers.clone(),
                config.dry_run,
            )
            .map_err(anyhow::Error::msg)?,
        );
        let shutdown = CancellationToken::new();
        let engine = Engine::new(
            config.clone(),
            store.clone(),
            rules.set.clone(),
            telemetry.clone(),
            notifiers.clone(),
            actions.clone(),
            shutdown.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        let readiness = Arc::new(Readiness::new(&config).map_err(anyhow::Error::msg)?);

        let api = Api {
            engine: engine.clone(),
            rules: rules.clone(),
            token: prepared.token,
            readiness: readiness.clone(),
            leadership: leadership.clone(),
        };
        let (addr, api_shutdown, api_done) = bind_api(&config, api).await?;

        let mut background = Vec::new();
        let (watcher, watch_rx) = watch_rules(&config.rules_dir);
        background.push(tokio::spawn(reload_loop(
            rules.clone(),
            notifiers.clone(),
            config.ops_notifiers.clone(),
            opts.reloads,
            watch_rx,
            opts.systemd.clone(),
            shutdown.clone(),
        )));
        let e2 = engine.clone();
        background.push(tokio::spawn(
            opts.systemd
                .clone()
                .watchdog(Arc::new(move || e2.healthy()), shutdown.clone()),
        ));
        background.push(tokio::spawn(count_states(engine.clone(), shutdown.clone())));

        let acting = Arc::new(Acting {
            engine: engine.clone(),
            shutdown: shutdown.clone(),
            notify_shutdown: CancellationToken::new(),
            tasks: Default::default(),
        });
        let lease_lost = CancellationToken::new();
        match &leadership {
            None => {
                let resumed = acting.begin().await?;
                tracing::info!(resumed, "resumed unfinished work");
            }
            Some(l) => {
                let url = config.public_url.clone();
                l.set_url(url.unwrap_or_else(|| format!("http://{addr}")));
                background.push(acting.clone().lead(l.clone(), &lease_lost, &shutdown));
            }
        }
        tracing::info!(%addr, role = leadership.as_ref().map_or("single", |l| l.role().as_str()), rules = %rules.status().version, "rollguard listening on http://{addr}");
        Ok(Daemon {
            addr,
            engine,
            rules,
            shutdown,
            acting,
            leadership,
            lease_lost,
            api_shutdown,
            api_done,
            background,
            readiness,
            systemd: opts.systemd,
            grace: config.shutdown_grace,
            _watcher: watcher,
        })
    }

    /// Resolves when this daemon has to stop acting because its leader lease is gone (never,
    /// without a PostgreSQL store). Then call [`abandon`](Self::abandon), not `stop`.
    pub async fn lease_lost(&self) {
        self.lease_lost.cancelled().await
    }

    /// After the lease was lost: stop at once, without writing (the store refuses writes
    /// now). Analysis loops end, every hook this daemon runs is stopped (SIGTERM to its
    /// process group, SIGKILL after at most a second) so that the new leader's rerun of the
    /// action is the only one, and the API stops. Queued notifications stay queued for the
    /// new leader.
    pub async fn abandon(self) {
        self.readiness.set_stopping();
        self.shutdown.cancel();
        self.acting.notify_shutdown.cancel();
        let stopped = self.engine.actions.stop_all(Duration::from_secs(1)).await;
        tracing::error!(
            hooks_stopped = stopped,
            "stepped down: stopped acting; the service manager restarts this daemon as a standby"
        );
        for b in self.background {
            b.abort();
        }
        self.acting.abort();
        self.api_shutdown.cancel();
        let _ = tokio::time::timeout(TAIL_WAIT, self.api_done).await;
    }

    /// Stops within the grace period: analysis loops persist and exit; running hooks may
    /// finish until the deadline, and those still running then are stopped (SIGTERM, then
    /// SIGKILL, to their process group) with their attempt recorded, so the next start
    /// retries them; due notifications are sent; the API stops last. Logs either way.
    pub async fn stop(self) -> StopReport {
        let deadline = Instant::now() + self.grace;
        let left = || deadline.saturating_duration_since(Instant::now());
        // The longest the whole stop can take: the grace, then stopping hooks, recording them,
        // the flush, the notifier and the API, plus a margin.
        let kill_grace = self
            .engine
            .config
            .hooks
            .values()
            .map(|h| h.kill_grace)
            .max()
            .unwrap_or(crate::config::DEFAULT_KILL_GRACE);
        self.systemd.stopping(
            self.grace + kill_grace + RECORD_WAIT + FLUSH_MIN + TAIL_WAIT * 2 + STOP_MARGIN,
        );
        self.readiness.set_stopping();
        tracing::info!(grace = ?self.grace, "stopping: no new analysis steps; running hooks may finish");
        let mut report = StopReport {
            analyses_done: self.engine.stop(left()).await,
            ..StopReport::default()
        };
        report.hooks_done = self.engine.actions.drain(left()).await;
        if !report.hooks_done {
            report.hooks_stopped = self.engine.actions.stop_running(RECORD_WAIT).await;
        }
        report.notifications_left = self
            .engine
            .notifiers
            .flush(deadline.max(Instant::now() + FLUSH_MIN))
            .await;
        self.acting.notify_shutdown.cancel();
        self.acting.finish(TAIL_WAIT).await;
        self.shutdown.cancel();
        for b in self.background {
            b.abort();
        }
        if let Some(l) = &self.leadership {
            l.release();
        }
        self.api_shutdown.cancel();
        let _ = tokio::time::timeout(TAIL_WAIT, self.api_done).await;
        if report.analyses_done && report.hooks_done {
            tracing::info!(
                notifications_left = report.notifications_left,
                "rollguard stopped cleanly"
            );
        } else {
            tracing::warn!(
                analyses_done = report.analyses_done,
                hooks_stopped = ?report.hooks_stopped,
                notifications_left = report.notifications_left,
                grace = ?self.grace,
                "rollguard stopped with work unfinished; it is recorded and resumes on the next start"
            );
        }
        report
    }
}

/// Why `run` ended when the leader lease was lost (exit code
/// [`EX_LEASE_LOST`](crate::exit::EX_LEASE_LOST)).
#[derive(Debug, thiserror::Error)]
#[error(
    "the leader lease could not be renewed in time; stepped down (a restart rejoins as a standby)"
)]
pub struct LeaseLost;

/// A store, with the lease loop when it is shared.
type OpenStore = (Arc<dyn Store>, Option<Arc<Leadership>>);

/// The configured store: SQLite in the state directory, or PostgreSQL with this daemon's
/// part in the leader election. Refuses to start without a store that answers (rollguard
/// never acts without a record).
fn open_store(config: &Config) -> anyhow::Result<OpenStore> {
    let Some(pg) = &config.postgres else {
        let store = SqliteStore::open(&config.state_dir).context("cannot open the state store")?;
        store.check_writable().context("the state directory is not writable; refusing to start (rollguard never acts without a record)")?;
        return Ok((Arc::new(store), None));
    };
    // Hook attempts and `listen.addr` still live in the state directory.
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create {}", config.state_dir.display()))?;
    let store = Arc::new(PgStore::open(pg).context("cannot open the PostgreSQL store")?);
    let leadership = Leadership::new(store.clone(), pg.lease);
    Ok((store, Some(leadership)))
}

/// The work only the acting daemon does: deliver notifications, run and resume hooks,
/// analyse deployments, read drop-in files, watch schemas, prune history. Started at once
/// with SQLite, and when the lease is taken with PostgreSQL.
struct Acting {
    engine: Arc<Engine>,
    /// The daemon's shutdown, which also ends the analysis loops.
    shutdown: CancellationToken,
    /// Stops the notification workers, after the final flush.
    notify_shutdown: CancellationToken,
    tasks: std::sync::Mutex<ActingTasks>,
}

/// The notification workers' task, and the other tasks started to act.
type ActingTasks = (Option<JoinHandle<()>>, Vec<JoinHandle<()>>);

impl Acting {
    fn tasks(&self) -> std::sync::MutexGuard<'_, ActingTasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the acting work; returns how many unfinished deployments were resumed.
    async fn begin(&self) -> anyhow::Result<usize> {
        let e = &self.engine;
        let notify = tokio::spawn(e.notifiers.clone().run(self.notify_shutdown.clone()));
        self.tasks().0 = Some(notify);
        let resumed = e
            .resume_all()
            .await
            .context("cannot read unfinished deployments")?;
        // Live schema per configured service: changes onto the running deployments' timelines.
        e.watch_schemas();
        let mut tasks = Vec::new();
        if let Some(dir) = &e.config.deployments_dir {
            let run = crate::deploy::dropin::run(e.clone(), dir.clone(), self.shutdown.clone());
            tasks.push(tokio::spawn(run));
        }
        if let Some(keep) = e.config.retention {
            let prune = prune_history(e.store.clone(), keep, self.shutdown.clone());
            tasks.push(tokio::spawn(prune));
        }
        self.tasks().1.extend(tasks);
        Ok(resumed)
    }

    /// Takes part in the leader election: acts from the moment this daemon takes the lease.
    /// A leader that cannot resume would hold the lease for nothing: it steps down
    /// (`lost`), and a standby (or this daemon, restarted) tries.
    fn lead(
        self: Arc<Self>,
        leadership: Arc<Leadership>,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let on_lost = lost.clone();
        let on_lead = move || {
            tokio::spawn(async move {
                match self.begin().await {
                    Ok(resumed) => {
                        tracing::info!(resumed, "leader: resumed unfinished work from the store")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "leader: cannot resume unfinished work; stepping down");
                        on_lost.cancel();
                    }
                }
            });
        };
        tokio::spawn(leadership.run(on_lead, lost.clone(), shutdown.clone()))
    }

    /// Waits for the notification workers at most `wait` (after their final flush), then
    /// aborts the rest.
    async fn finish(&self, wait: Duration) {
        let notify = self.tasks().0.take();
        if let Some(n) = notify {
            let _ = tokio::time::timeout(wait, n).await;
        }
        self.abort();
    }

    /// Aborts every task started to act (the lease is lost, or the stop is done).
    fn abort(&self) {
        let (notify, others) = std::mem::take(&mut *self.tasks());
        for t in notify.into_iter().chain(others) {
            t.abort();
        }
    }
}

/// The next SIGHUP, or never when there is no signal channel (tests, the demo) or it closed.
async fn next_reload(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(r) => match r.recv().await {
            Some(()) => Some(()),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Middleware on the API runtime: admin paths are answered right here; everything else
/// runs as a task on the engine's runtime (so engine code that spawns, like registering a
/// deployment, spawns there, as it always did).
async fn on_engine_runtime(
    State(engine_rt): State<tokio::runtime::Handle>,
    req: Request,
    next: Next,
) -> Response {
    if api::is_admin_path(req.uri().path()) {
        return next.run(req).await;
    }
    match engine_rt.spawn(next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "rollguard is shutting down\n",
        )
            .into_response(),
    }
}

/// Runs the HTTP server on its own thread and single-threaded runtime. The receiver
/// completes when the server has stopped.
fn serve_api(
    listener: std::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("rollguard-api".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app)
                            .with_graceful_shutdown(stop.cancelled_owned())
                            .await
                        {
                            tracing::error!(error = %e, "API server stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "API server cannot use its listener"),
                }
            });
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// Binds the API address and serves it on its own thread (see the module docs), and writes
/// the bound address to `listen.addr` in the state directory for tools and tests that asked
/// for port 0.
async fn bind_api(
    config: &Config,
    api: Api,
) -> anyhow::Result<(SocketAddr, CancellationToken, oneshot::Receiver<()>)> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let listener = listener
        .into_std()
        .context("cannot hand the listener to the API thread")?;
    // The API and the status pages (which read the API's state, so `api` does not route
    // them itself) on one listener.
    let pages = crate::status::web::routes(api.clone()).with_state(api.clone());
    let app = api::router(api)
        .merge(pages)
        .layer(axum::middleware::from_fn_with_state(
            tokio::runtime::Handle::current(),
            on_engine_runtime,
        ));
    let api_shutdown = CancellationToken::new();
    let api_done =
        serve_api(listener, app, api_shutdown.clone()).context("cannot start the API thread")?;
    if let Err(e) = std::fs::write(config.state_dir.join("listen.addr"), addr.to_string()) {
        tracing::warn!(error = %e, "cannot write listen.addr in the state directory");
    }
    Ok((addr, api_shutdown, api_done))
}

/// Watches the rules directory (the directory, not the files: a file watch goes deaf after
/// `sed -i`). Without inotify the reload loop still has SIGHUP and its periodic check.
fn watch_rules(
    dir: &std::path::Path,
) -> (Option<Box<dyn std::any::Any + Send>>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel::<()>(8);
    let watcher = match crate::reload::watch(dir, tx) {
        Ok(w) => Some(Box::new(w) as Box<dyn std::any::Any + Send>),
        Err(e) => {
            tracing::warn!(error = %e, "rules directory is not watched; reload with SIGHUP");
            None
        }
    };
    (watcher, rx)
}

/// Rule reloads: a directory watch, SIGHUP (which systemd's ExecReload sends), and a periodic
/// safety net for file systems without inotify. Only SIGHUP is a reload in systemd's sense,
/// so only it is bracketed by RELOADING=1 … READY=1. A rejected edit keeps the last good rules
/// and is told to `ops`; the first clean load after one is told too.
async fn reload_loop(
    rules: Arc<Rules>,
    notifiers: Arc<Notifiers>,
    ops: Vec<String>,
    mut reloads: Option<mpsc::Receiver<()>>,
    mut watch_rx: mpsc::Receiver<()>,
    systemd: Notifier,
    shutdown: CancellationToken,
) {
    let mut periodic = tokio::time::interval(Duration::from_secs(60));
    periodic.tick().await;
    loop {
        let signalled = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = next_reload(&mut reloads) => true,
            Some(()) = watch_rx.recv() => false,
            _ = periodic.tick() => false,
        };
        if signalled {
            systemd.reloading();
        }
        let was_failing = rules
            .status
            .lock()
            .map(|s| s.last_error.is_some())
            .unwrap_or(false);
        let status = match rules.reload() {
            Ok(_) => {
                let version = rules
                    .status
                    .lock()
                    .map(|s| s.version.clone())
                    .unwrap_or_default();
                if was_failing {
                    notifiers.enqueue(
                        &ops,
                        &Notice {
                            kind: NoticeKind::RulesReloaded,
                            at: now(),
                            subject: None,
                            title: "Rules valid again".into(),
                            text: format!(
                                "the rules directory loads cleanly; version {version} is in force"
                            ),
                            checks: Vec::new(),
                            link: None,
                            key: "rollguard/rules".into(),
                        },
                    );
                }
                format!("running; rules {version}")
            }
            Err(diags) => {
                let text = diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                let version = rules
                    .status
                    .lock()
                    .map(|s| s.version.clone())
                    .unwrap_or_default();
                notifiers.enqueue(
                    &ops,
                    &Notice {
                        kind: NoticeKind::RuleReloadFailed,
                        at: now(),
                        subject: None,
                        title: "Rule edit rejected".into(),
                        text: format!("the rules stay at version {version}; fix:\n{text}"),
                        checks: Vec::new(),
                        link: None,
                        key: "rollguard/rules".into(),
                    },
                );
                format!("running; rule reload rejected, keeping rules {version}")
            }
        };
        if signalled {
            systemd.ready(&status);
        } else {
            systemd.status(&status);
        }
    }
}

/// Keeps `rollguard_active_deployments{state}` current: a recount from the store after
/// changes (at most once a second, however many deployments step) and every 30 s, so the
/// gauge is right after a restart and never drifts from what the store says.
async fn count_states(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut changes = engine.changes.subscribe();
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
            r = changes.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                // Let a burst of steps settle, then count once.
                tokio::time::sleep(Duration::from_secs(1)).await;
                changes = changes.resubscribe();
            }
        }
        let store = engine.store.clone();
        let counts = match tokio::task::spawn_blocking(move || store.count_unfinished()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot count deployments by state");
                continue;
            }
            Err(_) => continue,
        };
        use crate::deploy::State as D;
        for s in [D::Pending, D::Analysing, D::Held] {
            let n = counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
            Telemetry::set(
                &engine.telemetry.active_deployments,
                &[("state", s.as_str())],
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }
}

/// Deletes history older than `keep` at start and then every hour ([`Store::prune`]): an
/// ops host runs for years, and the store should not grow without bound.
async fn prune_history(store: Arc<dyn Store>, keep: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let before = now() - keep.as_secs_f64();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(before)).await {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((deployments, notifications))) => tracing::info!(
                deployments,
                notifications,
                retention = %crate::units::format_duration(keep),
                "deleted history older than the retention"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot delete old history; trying again in an hour")
            }
            Err(e) => tracing::warn!(error = %e, "the history pruning task failed"),
        }
    }
}

/// Runs the daemon until `shutdown` completes: start, `READY=1`, wait, stop. A second
/// SIGTERM/SIGINT during the stop ends the process at once; everything is persisted at
/// every step, so the next start resumes from there.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let systemd = Notifier::from_env();
    let reloads = crate::signals::reloads()?;
    let d = match Daemon::start(
        config,
        StartOptions {
            reloads: Some(reloads),
            notify_pace: None,
            systemd: systemd.clone(),
        },
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            systemd.status(&format!("failed to start: {e:#}"));
            return Err(e);
        }
    };
    let rules = d.rules.status().version;
    let role = d
        .leadership
        .as_ref()
        .map_or(String::new(), |l| format!("; {}", l.role().as_str()));
    systemd.ready(&format!("running; rules {rules}; API on {}{role}", d.addr));
    tokio::select! {
        _ = shutdown => {}
        _ = d.lease_lost() => {
            systemd.status("stepped down: the leader lease could not be renewed");
            d.abandon().await;
            return Err(anyhow::Error::new(LeaseLost));
        }
    }
    let again = crate::signals::shutdown();
    tokio::select! {
        _ = d.stop() => {}
        _ = again => tracing::warn!("second stop signal: exiting now; unfinished work resumes on the next start"),
    }
    Ok(())
}

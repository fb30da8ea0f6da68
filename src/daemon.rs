//! Wiring: validated config → store → rules → engine → API, then wait for a shutdown trigger
//! and stop within a bounded grace period. The shutdown trigger is passed in as a future
//! (mini-redis style), so tests and the demo stop the daemon without signals.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::action::notify::Notifiers;
use crate::action::runner::ActionRunner;
use crate::api::{self, Api};
use crate::config::Config;
use crate::deploy::engine::Engine;
use crate::events::{Notice, NoticeKind};
use crate::reload::Rules;
use crate::store::{Store, now};
use crate::systemd;
use crate::telemetry::Telemetry;

/// A running daemon (in this process).
pub struct Daemon {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub rules: Arc<Rules>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
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
}

impl Daemon {
    /// Validates everything, binds the API and resumes unfinished deployments.
    pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<Daemon> {
        crate::net::install_crypto_provider();
        let config = Arc::new(config);
        let telemetry = Arc::new(Telemetry::new());
        let rules = Rules::load(
            config.rules_dir.clone(),
            config.action_names(),
            telemetry.clone(),
        )
        .map_err(|d| {
            anyhow::anyhow!(
                "invalid rules:\n{}",
                d.iter()
                    .map(|x| format!("  {x}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        let rules = Arc::new(rules);
        let store = Arc::new(
            Store::open(&config.state_dir).with_context(|| "cannot open the state store")?,
        );
        store.check_writable().context("the state directory is not writable; refusing to start (rollguard never acts without a record)")?;
        let token = match &config.api_token_file {
            Some(p) => Some(Arc::<str>::from(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read api_token_file {}", p.display()))?
                    .trim(),
            )),
            None => None,
        };
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            anyhow::bail!(
                "the API token in {:?} is shorter than 16 characters",
                config.api_token_file
            );
        }
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

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let _ = std::fs::write(config.state_dir.join("listen.addr"), addr.to_string());
        let app = api::router(Api {
            engine: engine.clone(),
            rules: rules.clone(),
            token,
        });
        let sd = shutdown.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { sd.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "API server stopped");
            }
        });

        let mut background = Vec::new();
        background.push(tokio::spawn(notifiers.clone().run(shutdown.clone())));

        // Rule reloads: directory watch, SIGHUP, and a periodic safety net for filesystems
        // without inotify.
        let (tx, mut rx) = mpsc::channel::<()>(8);
        let watcher = match crate::reload::watch(&config.rules_dir, tx.clone()) {
            Ok(w) => Some(Box::new(w) as Box<dyn std::any::Any + Send>),
            Err(e) => {
                tracing::warn!(error = %e, "rules directory is not watched; reload with SIGHUP");
                None
            }
        };
        if let Some(mut hup) = opts.reloads {
            let tx = tx.clone();
            background.push(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.send(()).await;
                }
            }));
        }
        let (r2, n2, ops, sd) = (
            rules.clone(),
            notifiers.clone(),
            config.ops_notifiers.clone(),
            shutdown.clone(),
        );
        background.push(tokio::spawn(async move {
            let mut periodic = tokio::time::interval(Duration::from_secs(60));
            periodic.tick().await;
            loop {
                let manual = tokio::select! {
                    _ = sd.cancelled() => return,
                    m = rx.recv() => m.is_some(),
                    _ = periodic.tick() => false,
                };
                if manual {
                    systemd::reloading();
                }
                if let Err(diags) = r2.reload() {
                    let text = diags
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n");
                    let version = r2
                        .status
                        .lock()
                        .map(|s| s.version.clone())
                        .unwrap_or_default();
                    n2.enqueue(
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
                }
                if manual {
                    systemd::ready("running");
                }
            }
        }));
        let e2 = engine.clone();
        background.push(tokio::spawn(systemd::watchdog(
            Arc::new(move || e2.healthy()),
            shutdown.clone(),
        )));

        let resumed = engine
            .resume_all()
            .await
            .context("cannot read unfinished deployments")?;
        tracing::info!(%addr, resumed, rules = %rules.status.lock().map(|s| s.version.clone()).unwrap_or_default(), "rollguard listening on http://{addr}");
        Ok(Daemon {
            addr,
            engine,
            rules,
            shutdown,
            server,
            background,
            grace: config.shutdown_grace,
            _watcher: watcher,
        })
    }

    /// Stops: persists analysis state, lets running hooks finish (bounded by the grace
    /// period), stops the API. Logs either way.
    pub async fn stop(self) {
        systemd::stopping();
        let engine_done = self.engine.stop(self.grace).await;
        let hooks_done = self.engine.actions.drain(self.grace).await;
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        for b in self.background {
            b.abort();
        }
        if engine_done && hooks_done {
            tracing::info!("rollguard stopped cleanly");
        } else {
            tracing::warn!(engine_done, hooks_done, grace = ?self.grace, "rollguard stopped with work still running; it resumes on the next start");
        }
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let reloads = crate::signals::reloads().context("cannot install the SIGHUP handler")?;
    let d = Daemon::start(
        config,
        StartOptions {
            reloads: Some(reloads),
            notify_pace: None,
        },
    )
    .await?;
    systemd::ready(&format!("listening on {}", d.addr));
    shutdown.await;
    d.stop().await;
    Ok(())
}

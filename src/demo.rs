//! `rollguard demo`: the whole product on one machine with nothing else installed.
//!
//! It starts a simulated fleet (two baseline and two canary instances serving `/metrics` on
//! 127.0.0.1, running ten times faster than the wall clock), starts the daemon in-process with
//! the shipped rules, registers a canary deployment through the HTTP API, prints the judge's
//! timeline and the status page's address, and watches the canary's error rate jump and
//! rollguard roll it back: the rollback hook calls the fleet, which really switches the
//! canary back to the good version. The status page (chart per check, decision marker,
//! timeline) stays served until Ctrl-C; `--exit` ends right after the rollback instead.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use clap::Args;

use crate::config::{Config, HookConfig, HookKind, Secret};
use crate::daemon::{Daemon, StartOptions};
use crate::deploy::State as DState;
use crate::judge::CheckReport;
use crate::sim::{Fault, Instance, Scenario};

/// The shipped rule templates, embedded so the demo works from any directory.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    (
        "http-service.yaml",
        include_str!("../rules/http-service.yaml"),
    ),
    (
        "memory-leak.yaml",
        include_str!("../rules/memory-leak.yaml"),
    ),
    ("db-pool.yaml", include_str!("../rules/db-pool.yaml")),
    ("rate-limit.yaml", include_str!("../rules/rate-limit.yaml")),
    ("blue-green.yaml", include_str!("../rules/blue-green.yaml")),
];

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Error-rate multiplier the bad canary gets.
    #[arg(long, default_value_t = 6.0)]
    pub fault: f64,
    /// Random seed of the fleet.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where the daemon (API and status page) listens; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// End after the rollback instead of serving the status page until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// The simulated fleet behind an HTTP server.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Mutex<FleetInner>>,
}

struct FleetInner {
    instances: BTreeMap<String, Instance>,
    /// The scenario's requests per second over both arms, and instances per arm: what a
    /// new canary weight divides.
    total_rps: f64,
    per_arm: f64,
    start: tokio::time::Instant,
    speed: f64,
    rolled_back: bool,
    log: Vec<String>,
}

impl Fleet {
    /// A fleet for `scenario`, whose simulated clock runs `speed` times faster than real time.
    pub fn new(scenario: &Scenario, speed: f64) -> Fleet {
        let mut instances = BTreeMap::new();
        for canary in [false, true] {
            for i in 0..scenario.instances_per_arm {
                let inst = Instance::new(scenario, canary, i);
                instances.insert(inst.name.clone(), inst);
            }
        }
        Fleet {
            inner: Arc::new(Mutex::new(FleetInner {
                instances,
                total_rps: scenario.total_rps,
                per_arm: scenario.instances_per_arm.max(1) as f64,
                start: tokio::time::Instant::now(),
                speed,
                rolled_back: false,
                log: Vec::new(),
            })),
        }
    }

    /// Serves `/<instance>/metrics`, `POST /admin/rollback` and `POST /admin/weight` (a
    /// canary step hook's `{"weight": "25"}`: the canary's share of requests in %) on
    /// 127.0.0.1:0.
    pub async fn serve(&self) -> std::io::Result<std::net::SocketAddr> {
        let app = Router::new()
            .route("/{instance}/metrics", get(metrics))
            .route("/admin/rollback", post(rollback))
            .route("/admin/weight", post(weight))
            .route("/chat", post(chat))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }

    pub fn rolled_back(&self) -> bool {
        self.inner.lock().map(|f| f.rolled_back).unwrap_or(false)
    }

    pub fn log(&self) -> Vec<String> {
        self.inner.lock().map(|f| f.log.clone()).unwrap_or_default()
    }
}

async fn metrics(
    State(fleet): State<Fleet>,
    Path(instance): Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(mut f) = fleet.inner.lock() else {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "poisoned").into_response();
    };
    let t = f.start.elapsed().as_secs_f64() * f.speed;
    match f.instances.get_mut(&instance) {
        Some(inst) => {
            inst.advance_to(t);
            if inst.down() {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "restarting").into_response();
            }
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                inst.exposition(),
            )
                .into_response()
        }
        None => (axum::http::StatusCode::NOT_FOUND, "no such instance").into_response(),
    }
}

/// Stands in for a chat webhook: prints what rollguard would post.
async fn chat(axum::Json(notice): axum::Json<crate::events::Notice>) -> &'static str {
    println!("  chat> [{}] {}", notice.kind.as_str(), notice.title);
    "ok"
}

async fn rollback(State(fleet): State<Fleet>, body: String) -> &'static str {
    if let Ok(mut f) = fleet.inner.lock() {
        f.rolled_back = true;
        let t = f.start.elapsed().as_secs_f64() * f.speed;
        // The canary instances are replaced by the baseline version: same model, no fault.
        for inst in f.instances.values_mut().filter(|i| i.canary) {
            inst.clear_fault();
        }
        f.log.push(format!("fleet: rollback requested at simulated t={t:.0}s; canary instances now run the baseline version ({} bytes of decision facts received)", body.len()));
    }
    "rolled back\n"
}

/// Stands in for a mesh's traffic split: sets the canary's share of the requests.
async fn weight(
    State(fleet): State<Fleet>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> (axum::http::StatusCode, String) {
    let w = match &body["weight"] {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        v => v.as_f64(),
    };
    let Some(w) = w.filter(|w| (0.0..=100.0).contains(w)) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "want {\"weight\": 0-100}\n".into(),
        );
    };
    let Ok(mut f) = fleet.inner.lock() else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "poisoned\n".into(),
        );
    };
    let t = f.start.elapsed().as_secs_f64() * f.speed;
    let (total, n) = (f.total_rps, f.per_arm);
    for inst in f.instances.values_mut() {
        // Up to now at the old weight, from now on at the new one.
        inst.advance_to(t);
        let share = if inst.canary { w } else { 100.0 - w } / 100.0;
        inst.set_rps(total * share / n);
    }
    f.log
        .push(format!("fleet: canary weight {w} % at simulated t={t:.0}s"));
    (axum::http::StatusCode::OK, format!("weight {w}\n"))
}

/// `rollguard demo`.
pub async fn main(args: DemoArgs) -> ExitCode {
    // One Ctrl-C (or SIGTERM) listener for the whole demo: before the decision it ends the demo (exit
    // 130), afterwards it ends the serving of the status page (exit 0).
    let interrupted = tokio_util::sync::CancellationToken::new();
    let on_signal = interrupted.clone();
    let signal = crate::signals::shutdown();
    tokio::spawn(async move {
        signal.await;
        on_signal.cancel();
    });
    match run(args, interrupted).await {
        Ok(Some(true)) => ExitCode::SUCCESS,
        Ok(None) => {
            eprintln!("demo: interrupted before the decision");
            ExitCode::from(130)
        }
        Ok(Some(false)) => {
            eprintln!("demo: no rollback happened (this is a bug; please report it)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon config of the demo: an HTTP rollback hook that tells the fleet to roll back, an
/// exec hook that prints what it was given, no-op promote/step/switch/hold hooks, and the
/// fleet's chat endpoint as a webhook notifier. The shipped rule's `on_fail` gets the printing
/// hook too.
fn demo_config(
    dir: &std::path::Path,
    rules_dir: &std::path::Path,
    fleet_addr: &str,
) -> anyhow::Result<Config> {
    let mut config = Config::for_dir(dir, rules_dir);
    config.hooks.insert(
        "rollback".into(),
        HookConfig {
            name: "rollback".into(),
            kind: HookKind::Http {
                url: Secret::Inline(format!("http://{fleet_addr}/admin/rollback")),
                method: "POST".into(),
                headers: BTreeMap::new(),
                body: None,
                success_codes: vec![200],
            },
            timeout: Duration::from_secs(10),
            retries: 2,
            ..HookConfig::exec("rollback", Vec::new())
        },
    );
    config.hooks.insert(
        "announce".into(),
        HookConfig {
            name: "announce".into(),
            kind: HookKind::Exec {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    r#"echo "hook: rolling back $ROLLGUARD_DEPLOYMENT ($ROLLGUARD_VERSION -> $ROLLGUARD_BASELINE_VERSION), action id $ROLLGUARD_ACTION_ID""#.into(),
                ],
                env: vec![],
                workdir: None,
            },
            timeout: Duration::from_secs(10),
            retries: 0,
            ..HookConfig::exec("announce", Vec::new())
        },
    );
    // The shipped template names `rollback` in on_fail; add the announcing hook for the demo.
    let http = std::fs::read_to_string(rules_dir.join("http-service.yaml"))?;
    std::fs::write(
        rules_dir.join("http-service.yaml"),
        http.replace("on_fail: [rollback", "on_fail: [rollback, announce"),
    )?;
    for name in ["promote", "step", "switch", "hold"] {
        config.hooks.insert(
            name.into(),
            HookConfig {
                name: name.into(),
                kind: HookKind::Exec {
                    argv: vec!["/bin/true".into()],
                    env: vec![],
                    workdir: None,
                },
                timeout: Duration::from_secs(5),
                retries: 0,
                ..HookConfig::exec(name, Vec::new())
            },
        );
    }
    config.notifiers.insert(
        "chat".into(),
        crate::config::NotifierConfig::new(crate::config::NotifierKind::Webhook {
            url: Secret::Inline(format!("http://{fleet_addr}/chat")),
            secret: None,
        }),
    );
    Ok(config)
}

/// Prints each change of the checks' outcomes until the deployment ends (at most 115 s), then
/// the decision with its numbers. Returns whether it was rolled back.
async fn follow(daemon: &Daemon) -> anyhow::Result<bool> {
    let started = tokio::time::Instant::now();
    let mut last_print = String::new();
    let mut rolled = false;
    while started.elapsed() < Duration::from_secs(115) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(rec) = daemon.engine.store.get("checkout-v2")? else {
            continue;
        };
        let checks: Vec<CheckReport> =
            serde_json::from_value(rec.checks.clone()).unwrap_or_default();
        let line = checks
            .iter()
            .map(|c| format!("{} {}", c.name, c.outcome.as_str()))
            .collect::<Vec<_>>()
            .join(" | ");
        if line != last_print && !checks.is_empty() {
            println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            if let Some(c) = checks.iter().find(|c| c.name == "error-ratio") {
                println!("         error-ratio: {}", c.explanation);
            }
            last_print = line;
        }
        if rec.state.is_terminal() {
            println!(
                "\n=== decision after {:.0} s: {} ===",
                rec.elapsed_ms as f64 / 1000.0,
                rec.state.as_str().to_uppercase()
            );
            println!("{}", rec.reason);
            for c in checks
                .iter()
                .filter(|c| c.outcome == crate::judge::Outcome::Fail)
            {
                println!(
                    "  {}: evidence {:.0} (threshold {:.0})",
                    c.name,
                    c.evidence.min(1e9),
                    c.threshold
                );
                if let (Some(b), Some(k)) = (&c.baseline, &c.canary) {
                    println!(
                        "  baseline {:.3} % of {:.0} requests; canary {:.3} % of {:.0}",
                        b.value * 100.0,
                        b.n,
                        k.value * 100.0,
                        k.n
                    );
                }
            }
            rolled = rec.state == DState::RolledBack;
            break;
        }
    }
    Ok(rolled)
}

/// Waits (at most 15 s) for the hooks to finish and shows what they did.
async fn show_hooks(daemon: &Daemon) -> anyhow::Result<()> {
    let wait = tokio::time::Instant::now();
    loop {
        let actions = daemon.engine.store.actions_of("checkout-v2")?;
        let done = !actions.is_empty() && actions.iter().all(|a| !a.status.is_open());
        if done || wait.elapsed() > Duration::from_secs(15) {
            println!();
            for a in &actions {
                println!(
                    "hook `{}` ({}): {} — {}",
                    a.hook, a.purpose, a.status, a.summary
                );
                for l in a.output.lines().take(5) {
                    println!("    {l}");
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Runs the demo; `None` when Ctrl-C came before the decision.
async fn run(
    args: DemoArgs,
    interrupted: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<bool>> {
    let speed = args.speed.clamp(1.0, 100.0);
    let scenario = Scenario {
        name: "demo".into(),
        seed: args.seed,
        total_rps: 120.0,
        canary_share: 0.5,
        error_ratio: 0.01,
        fault: Fault::ErrorRatio { factor: args.fault },
        fault_at_s: 25.0 * speed,
        ..Scenario::default()
    };
    println!(
        "rollguard demo: a simulated fleet (2 baseline + 2 canary instances, {speed}x real time),"
    );
    println!(
        "the daemon with the shipped rules, and a canary whose 5xx ratio jumps x{} after ~25 s.\n",
        args.fault
    );
    let fleet = Fleet::new(&scenario, speed);
    let fleet_addr = fleet.serve().await?;

    let dir = tempfile::tempdir()?;
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    for (name, text) in SHIPPED_RULES {
        std::fs::write(rules_dir.join(name), text)?;
    }
    let mut config = demo_config(dir.path(), &rules_dir, &fleet_addr.to_string())?;
    config.listen = args.listen;
    let daemon = Daemon::start(config, StartOptions::default()).await?;
    println!(
        "daemon listening on http://{} with rules {}",
        daemon.addr,
        daemon.rules.status().analyses.join(", ")
    );

    let target = |n: &str| format!("http://{fleet_addr}/{n}/metrics");
    let body = serde_json::json!({
        "id": "checkout-v2",
        "service": "checkout",
        "analysis": "http-service",
        "params": { "job": "api" },
        "baseline": { "targets": [target("baseline-0"), target("baseline-1")], "version": "v1" },
        "canary": { "targets": [target("canary-0"), target("canary-1")], "version": "v2", "weight": 50 },
        "timing": { "interval": "2s", "warmup": "10s", "min_duration": "90s", "max_duration": "110s" }
    });
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/api/v1/deployments", daemon.addr))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "registration failed: {}",
        resp.text().await.unwrap_or_default()
    );
    println!("registered deployment checkout-v2 (POST /api/v1/deployments)");
    println!(
        "status page: http://{}/deployments/checkout-v2 (charts update live)\n",
        daemon.addr
    );

    let rolled = tokio::select! {
        r = follow(&daemon) => r?,
        _ = interrupted.cancelled() => {
            daemon.stop().await;
            return Ok(None);
        }
    };
    show_hooks(&daemon).await?;
    for l in fleet.log() {
        println!("{l}");
    }
    if !args.exit {
        println!(
            "\nthe status page stays at http://{}/deployments/checkout-v2 — Ctrl-C ends the demo",
            daemon.addr
        );
        interrupted.cancelled().await;
    }
    daemon.stop().await;
    Ok(Some(rolled && fleet.rolled_back()))
}

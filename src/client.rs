//! `rollguard deploy …`: the CLI client pipelines use. `deploy start --wait` registers a
//! deployment and follows it, exiting 0 when promoted, 1 when rolled back or aborted, 2 when
//! inconclusive — so a pipeline step is one line. The migration gates have their own codes
//! ([`EX_SCHEMA_PREFLIGHT`], [`EX_ROLLBACK_UNSAFE`], [`EX_CONTRACT_BLOCKED`]), and
//! `rollguard migrate check` asks the contract gate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::exit;

/// Where rollguard's API is and the token for it: the same flags on every client command.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// rollguard's API base URL.
    #[arg(
        long,
        env = "ROLLGUARD_URL",
        default_value = "http://127.0.0.1:9797",
        global = true
    )]
    pub server: String,
    /// File holding the API bearer token (or set ROLLGUARD_TOKEN).
    #[arg(long, env = "ROLLGUARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl ApiArgs {
    /// A client of the daemon at `--server` with the token from `--token-file` or
    /// `ROLLGUARD_TOKEN`; a token file that cannot be read is a usage error.
    fn client(&self) -> Result<Client, ExitCode> {
        crate::net::install_crypto_provider();
        let token = match (&self.token_file, std::env::var("ROLLGUARD_TOKEN").ok()) {
            (Some(f), _) => match std::fs::read_to_string(f) {
                Ok(t) => Some(t.trim().to_string()),
                Err(e) => {
                    eprintln!("cannot read {}: {e}", f.display());
                    return Err(ExitCode::from(exit::EX_USAGE));
                }
            },
            (None, t) => t,
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: self.server.clone(),
            token,
        })
    }
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DeployCommand,
}

// Parsed once per process; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Register a deployment (idempotent on --id).
    Start(StartArgs),
    /// Show one deployment.
    Status {
        /// The deployment id.
        id: String,
    },
    /// List deployments.
    List {
        /// Only deployments in this state (pending, analysing, held, promoted, rolled_back,
        /// inconclusive, aborted).
        #[arg(long)]
        state: Option<String>,
        /// Only deployments of this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Hold a deployment: no promotion or step until resumed (rollbacks still happen).
    Pause(ActArgs),
    /// Lift a pause: steps and promotion go on.
    Resume(ActArgs),
    /// Promote now, whatever the analysis says.
    Promote(ActArgs),
    /// Stop the analysis and run the rollback hooks.
    Abort(ActArgs),
    /// Follow a deployment until it finishes (exit codes as with `start --wait`).
    Wait {
        /// The deployment id.
        id: String,
        /// The whole budget, daemon restarts included; exit 3 when no verdict came by then.
        #[arg(long, default_value = "2h")]
        timeout: String,
    },
}

#[derive(Args, Debug)]
pub struct ActArgs {
    /// The deployment id.
    pub id: String,
    /// Why, for the timeline and the chat message.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who acted (default: $USER), for the timeline.
    #[arg(long, env = "USER")]
    pub who: Option<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The deployment id; registering the same id again is a no-op (pipelines may retry).
    #[arg(long)]
    pub id: String,
    /// The rule (`analysis:` name) that judges it.
    #[arg(long)]
    pub analysis: String,
    /// The service, for reports, chat and the migration gates.
    #[arg(long)]
    pub service: Option<String>,
    /// Baseline /metrics URLs.
    #[arg(long, num_args = 1..)]
    pub baseline: Vec<String>,
    /// Canary /metrics URLs.
    #[arg(long, num_args = 1..)]
    pub canary: Vec<String>,
    /// Baseline PromQL label matchers (Prometheus source), e.g. 'version="v1"'.
    #[arg(long)]
    pub baseline_selector: Option<String>,
    /// Canary PromQL label matchers (Prometheus source), e.g. 'version="v2"'.
    #[arg(long)]
    pub canary_selector: Option<String>,
    /// A rule parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_parser = crate::backtest::parse_kv)]
    pub params: Vec<(String, String)>,
    /// The baseline's version, for hooks, chat and reports.
    #[arg(long)]
    pub baseline_version: Option<String>,
    /// The canary's version, for hooks, chat and reports.
    #[arg(long)]
    pub canary_version: Option<String>,
    /// Oldest schema the baseline works with (migration gates; docs/migrations.md).
    #[arg(long)]
    pub baseline_schema_min: Option<String>,
    /// Newest schema the baseline tolerates: past it, rolling back is unsafe.
    #[arg(long)]
    pub baseline_schema_max: Option<String>,
    /// Oldest schema the canary needs: its migrations must have run.
    #[arg(long)]
    pub canary_schema_min: Option<String>,
    /// Newest schema the canary tolerates.
    #[arg(long)]
    pub canary_schema_max: Option<String>,
    /// Canary share of traffic in percent (enables the traffic-split check).
    #[arg(long)]
    pub canary_weight: Option<f64>,
    /// Baseline share of traffic in percent, when it is not 100 minus the canary's.
    #[arg(long)]
    pub baseline_weight: Option<f64>,
    /// Baseline targets from this file_sd file (under the daemon's `file_sd_dir`).
    #[arg(long)]
    pub baseline_file_sd: Option<String>,
    /// Canary targets from this file_sd file (under the daemon's `file_sd_dir`).
    #[arg(long)]
    pub canary_file_sd: Option<String>,
    /// Bake: read the baseline this far in the past (Prometheus source), e.g. 1d.
    #[arg(long)]
    pub baseline_offset: Option<String>,
    /// The rollout strategy (default: canary with --steps, else analysis).
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyKind>,
    /// Bake: how long the new version is watched (default 30m).
    #[arg(long)]
    pub watch: Option<String>,
    /// Blue-green: how long green is watched after the switch (default 10m).
    #[arg(long)]
    pub post_switch: Option<String>,
    /// Override the rule's interval for this deployment.
    #[arg(long)]
    pub interval: Option<String>,
    /// Override the rule's warm-up for this deployment.
    #[arg(long)]
    pub warmup: Option<String>,
    /// Override the rule's min_duration for this deployment.
    #[arg(long)]
    pub min_duration: Option<String>,
    /// Override the rule's max_duration for this deployment.
    #[arg(long)]
    pub max_duration: Option<String>,
    /// Canary steps in percent, e.g. 10,25,50,100.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<f64>,
    /// How long each canary step is judged before the next, e.g. 5m.
    #[arg(long)]
    pub step_duration: Option<String>,
    /// Follow the deployment until it finishes.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: the whole budget, daemon restarts included.
    #[arg(long, default_value = "2h")]
    pub timeout: String,
}

/// Exit codes of `--wait`.
pub fn exit_for(state: &str) -> ExitCode {
    match state {
        "promoted" => ExitCode::from(exit::OK),
        "rolled_back" | "aborted" => ExitCode::from(exit::ROLLED_BACK),
        "inconclusive" => ExitCode::from(exit::INCONCLUSIVE),
        _ => ExitCode::from(exit::UNREACHABLE),
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(m, format!("{}{path}", self.base.trim_end_matches('/')));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn call(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        // Every answer of 300 or more is an error, with the API's own `error` text.
        let (status, v) = self.call_any(m, path, body).await?;
        if status >= 300 {
            return Err(format!(
                "HTTP {status}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("")
            ));
        }
        Ok((status, v))
    }

    /// Like [`Client::call`], but any HTTP status is an answer (for the gates' own codes).
    async fn call_any(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut r = self.req(m, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| {
            format!(
                "cannot reach rollguard at {}: {}",
                self.base,
                crate::net::redact_error(&e)
            )
        })?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Like [`Client::call_any`], but rides out a daemon restart: a refused or dropped
    /// connection and a 502/503/504 are retried with backoff (0.1 s doubling to 2 s) until
    /// `until`, and no attempt runs past it. Only then is rollguard "unreachable". Safe for
    /// reads and for registration, which is idempotent on the deployment id.
    async fn call_until(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<Value>,
        until: Instant,
    ) -> Result<(u16, Value), String> {
        let mut backoff = Duration::from_millis(100);
        let mut told = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let err = match tokio::time::timeout(left, self.call_any(m.clone(), path, body.clone()))
                .await
            {
                Ok(Ok((status, v))) if !(502..=504).contains(&status) => return Ok((status, v)),
                Ok(Ok((status, _))) => format!("rollguard at {} answered HTTP {status}", self.base),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer from rollguard at {} in time", self.base),
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(err);
            }
            if !told {
                eprintln!("{err}; retrying until the timeout");
                told = true;
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// `rollguard deploy …`.
pub async fn main(args: DeployArgs) -> ExitCode {
    let client = match args.api.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(&client, &args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rollguard deploy: {e}");
            ExitCode::from(exit::UNREACHABLE)
        }
    }
}

/// The registration body of `deploy start`: the API's `DeploymentRequest` fields from the
/// command line.
fn start_body(s: &StartArgs) -> Value {
    let params: BTreeMap<String, String> = s.params.iter().cloned().collect();
    let mut body = json!({"id": s.id, "analysis": s.analysis, "params": params});
    // Sets `body[path…]` when the flag was given; the API's defaults apply otherwise.
    let mut set = |path: &[&str], v: Option<Value>| {
        let Some(v) = v else { return };
        let mut at = &mut body;
        for k in path {
            at = &mut at[*k];
        }
        *at = v;
    };
    let some = |v: &Option<String>| v.as_ref().map(|x| json!(x));
    set(&["service"], some(&s.service));
    for (arm, targets, selector, file_sd, version, weight, offset, min, max) in [
        (
            "baseline",
            &s.baseline,
            &s.baseline_selector,
            &s.baseline_file_sd,
            &s.baseline_version,
            s.baseline_weight,
            &s.baseline_offset,
            &s.baseline_schema_min,
            &s.baseline_schema_max,
        ),
        (
            "canary",
            &s.canary,
            &s.canary_selector,
            &s.canary_file_sd,
            &s.canary_version,
            s.canary_weight,
            &None,
            &s.canary_schema_min,
            &s.canary_schema_max,
        ),
    ] {
        set(&[arm], Some(json!({})));
        set(
            &[arm, "targets"],
            (!targets.is_empty()).then(|| json!(targets)),
        );
        set(&[arm, "selector"], some(selector));
        set(&[arm, "file_sd"], some(file_sd));
        set(&[arm, "version"], some(version));
        set(&[arm, "weight"], weight.map(|w| json!(w)));
        set(&[arm, "offset"], some(offset));
        set(&[arm, "schema", "min"], some(min));
        set(&[arm, "schema", "max"], some(max));
    }
    let strategy = s.strategy.unwrap_or(if s.steps.is_empty() {
        StrategyKind::Analysis
    } else {
        StrategyKind::Canary
    });
    set(&["strategy", "type"], Some(json!(strategy.as_api())));
    set(
        &["strategy", "steps"],
        (!s.steps.is_empty()).then(|| json!(s.steps)),
    );
    set(&["strategy", "step_duration"], some(&s.step_duration));
    set(&["strategy", "watch"], some(&s.watch));
    set(&["strategy", "post_switch"], some(&s.post_switch));
    set(&["timing", "interval"], some(&s.interval));
    set(&["timing", "warmup"], some(&s.warmup));
    set(&["timing", "min_duration"], some(&s.min_duration));
    set(&["timing", "max_duration"], some(&s.max_duration));
    body
}

/// `deploy start --strategy` (the API's `strategy.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyKind {
    /// One analysis window, then promote or roll back (the default without --steps).
    Analysis,
    /// Traffic steps (--steps, --step-duration; the default with --steps).
    Canary,
    /// After a full rollout, against the previous version's recorded behaviour (--watch,
    /// --baseline-offset).
    Bake,
    /// Green verified against blue before the switch, then watched (--post-switch).
    BlueGreen,
}

impl StrategyKind {
    fn as_api(self) -> &'static str {
        match self {
            StrategyKind::Analysis => "analysis",
            StrategyKind::Canary => "canary",
            StrategyKind::Bake => "bake",
            StrategyKind::BlueGreen => "blue-green",
        }
    }
}

async fn run(c: &Client, args: &DeployArgs) -> Result<ExitCode, String> {
    match &args.command {
        DeployCommand::Start(s) => {
            let body = start_body(s);
            // With --wait the pipeline gave rollguard `--timeout`: a daemon restarting right
            // now is waited for. Without it, one attempt.
            let path = "/api/v1/deployments";
            let (status, v) = if s.wait {
                let until = Instant::now() + crate::units::parse_duration(&s.timeout)?;
                c.call_until(reqwest::Method::POST, path, Some(body), until)
                    .await?
            } else {
                c.call_any(reqwest::Method::POST, path, Some(body)).await?
            };
            let error = v.get("error").and_then(Value::as_str).unwrap_or("");
            if status == 412 {
                eprintln!("rollguard deploy: refused by the migration gate: {error}");
                return Ok(ExitCode::from(exit::EX_SCHEMA_PREFLIGHT));
            }
            if status >= 300 {
                return Err(format!("HTTP {status}: {error}"));
            }
            if args.json && !s.wait {
                println!("{v}");
            } else {
                eprintln!(
                    "{} deployment {} (analysis {})",
                    if status == 201 {
                        "registered"
                    } else {
                        "already registered:"
                    },
                    s.id,
                    s.analysis
                );
            }
            if s.wait {
                return wait(c, &s.id, &s.timeout, args.json).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Status { id } => {
            let (_, v) = c
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/deployments/{id}"),
                    None,
                )
                .await?;
            if args.json {
                println!("{v}");
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::List { state, service } => {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(s) = service {
                q.push(format!("service={s}"));
            }
            let (_, v) = c
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/deployments?{}", q.join("&")),
                    None,
                )
                .await?;
            if args.json {
                println!("{v}");
            } else {
                println!(
                    "{:<28} {:<16} {:<14} {:<13} {:>8}  REASON",
                    "ID", "SERVICE", "ANALYSIS", "STATE", "ELAPSED"
                );
                for d in v["deployments"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<28} {:<16} {:<14} {:<13} {:>7.0}s  {}",
                        d["id"].as_str().unwrap_or(""),
                        d["request"]["service"].as_str().unwrap_or("-"),
                        d["analysis"].as_str().unwrap_or(""),
                        d["state"].as_str().unwrap_or(""),
                        d["elapsed_s"].as_f64().unwrap_or(0.0),
                        d["reason"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(60)
                            .collect::<String>()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Pause(a)
        | DeployCommand::Resume(a)
        | DeployCommand::Promote(a)
        | DeployCommand::Abort(a) => {
            let action = match &args.command {
                DeployCommand::Pause(_) => "pause",
                DeployCommand::Resume(_) => "resume",
                DeployCommand::Promote(_) => "promote",
                _ => "abort",
            };
            let body = json!({"who": a.who.clone().unwrap_or_else(|| "cli".into()), "reason": a.reason.clone().unwrap_or_default()});
            c.call(
                reqwest::Method::POST,
                &format!("/api/v1/deployments/{}/{action}", a.id),
                Some(body),
            )
            .await?;
            eprintln!("{action} accepted for {}", a.id);
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Wait { id, timeout } => wait(c, id, timeout, args.json).await,
    }
}

/// The step as hooks (`ROLLGUARD_STEP`) and chat number it: from 1, with the total and the
/// canary weight; the API's `step` is the 0-based index into `strategy.steps`.
fn step_text(v: &Value) -> String {
    let steps = v["request"]["strategy"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let index = v["step"].as_u64().unwrap_or(0) as usize;
    match steps.get(index) {
        Some(w) => format!("step {}/{} ({w} %)", index + 1, steps.len()),
        None => "no steps".to_string(),
    }
}

fn print_status(v: &Value) {
    println!(
        "deployment {}  state {}  {}  elapsed {:.0}s",
        v["id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        step_text(v),
        v["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    println!("reason: {}", v["reason"].as_str().unwrap_or(""));
    if let Some(s) = v.get("schema").filter(|s| s.is_object()) {
        let live = s["live"].as_str().map(str::to_string).unwrap_or_else(|| {
            format!(
                "unknown ({})",
                s["error"].as_str().unwrap_or("not probed yet")
            )
        });
        println!(
            "schema: {} live {live}",
            s["service"].as_str().unwrap_or("")
        );
        for arm in ["baseline", "canary"] {
            if let Some(r) = s.get(arm).filter(|r| r.is_object()) {
                println!(
                    "  {arm:<9} works with {} .. {}  ({})",
                    r["min"].as_str().unwrap_or("any"),
                    r["max"].as_str().unwrap_or("any"),
                    r["fit"].as_str().unwrap_or("")
                );
            }
        }
    }
    for c in v["checks"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {:<18} {:<12} {}",
            c["name"].as_str().unwrap_or(""),
            c["outcome"].as_str().unwrap_or(""),
            c["explanation"].as_str().unwrap_or("")
        );
    }
}

/// Follows a deployment until its verdict, for at most `timeout` in all: the long poll asks
/// for no more than the time left, and a daemon restart in between is ridden out
/// ([`Client::call_until`]), so the pipeline gets the verdict's exit code, not "unreachable".
async fn wait(c: &Client, id: &str, timeout: &str, json_out: bool) -> Result<ExitCode, String> {
    let until = Instant::now() + crate::units::parse_duration(timeout)?;
    let get = |path: String| async move {
        let (status, v) = c
            .call_until(reqwest::Method::GET, &path, None, until)
            .await?;
        if status >= 300 {
            return Err(format!(
                "HTTP {status}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("")
            ));
        }
        Ok::<Value, String>(v)
    };
    let finish = |full: Value| {
        if json_out {
            println!("{full}");
        } else {
            print_status(&full);
        }
    };
    let mut after = 0i64;
    loop {
        let poll = until
            .saturating_duration_since(Instant::now())
            .as_secs()
            .min(20);
        let v = match get(format!(
            "/api/v1/deployments/{id}/events?after={after}&wait={poll}"
        ))
        .await
        {
            Ok(v) => v,
            // The budget ran out during the call (a poll, or retries of an absent daemon).
            Err(e) if Instant::now() >= until => {
                eprintln!("timed out after {timeout} waiting for {id} ({e})");
                return Ok(ExitCode::from(exit::UNREACHABLE));
            }
            Err(e) => return Err(e),
        };
        let mut unsafe_rollback = false;
        for e in v["events"].as_array().cloned().unwrap_or_default() {
            if !json_out {
                eprintln!(
                    "{:<10} {}",
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
            unsafe_rollback |= e["kind"] == crate::store::EventKind::RollbackBlocked.as_str()
                && e["data"]["unsafe"] == true;
        }
        if unsafe_rollback {
            finish(get(format!("/api/v1/deployments/{id}")).await?);
            return Ok(ExitCode::from(exit::EX_ROLLBACK_UNSAFE));
        }
        after = v["next"].as_i64().unwrap_or(after);
        let state = v["state"].as_str().unwrap_or("").to_string();
        if matches!(
            state.as_str(),
            "promoted" | "rolled_back" | "aborted" | "inconclusive"
        ) {
            finish(get(format!("/api/v1/deployments/{id}")).await?);
            return Ok(exit_for(&state));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("timed out after {timeout} waiting for {id} (state {state})");
            return Ok(ExitCode::from(exit::UNREACHABLE));
        }
        // A poll of under a second returns at once: pace those.
        if poll == 0 {
            tokio::time::sleep(Duration::from_millis(200).min(left)).await;
        }
    }
}

/// `rollguard migrate …`: asks the daemon's migration gates (for pipelines, before a
/// contract migration).
#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the gate's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Exit 0 if contracting SERVICE's schema to TO is safe; exit 12 with the reasons while
    /// an active deployment or a still-serving version needs a schema below it.
    Check {
        /// The service whose schema is to be contracted (a `schemas:` entry).
        #[arg(long)]
        service: String,
        /// The schema version the contract migration would leave.
        #[arg(long)]
        to: String,
    },
}

/// `rollguard migrate check`.
pub async fn migrate(args: MigrateArgs) -> ExitCode {
    let c = match args.api.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let MigrateCommand::Check { service, to } = &args.command;
    let path = format!(
        "/api/v1/schemas/{}/contract?to={}",
        url::form_urlencoded::byte_serialize(service.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
    );
    match c.call_any(reqwest::Method::GET, &path, None).await {
        Ok((status, v)) => {
            if args.json {
                println!("{v}");
            }
            match status {
                200 => {
                    if !args.json {
                        println!(
                            "ok: contracting `{service}` to schema {to} is safe: no version in use needs an older schema"
                        );
                    }
                    ExitCode::SUCCESS
                }
                409 => {
                    if !args.json {
                        eprintln!(
                            "unsafe: contracting `{service}` to schema {to} would break versions still in use:"
                        );
                        for r in v["reasons"].as_array().cloned().unwrap_or_default() {
                            eprintln!("  - {}", r.as_str().unwrap_or(""));
                        }
                    }
                    ExitCode::from(exit::EX_CONTRACT_BLOCKED)
                }
                _ => {
                    eprintln!(
                        "rollguard migrate: HTTP {status}: {}",
                        v.get("error").and_then(Value::as_str).unwrap_or("")
                    );
                    ExitCode::from(exit::UNREACHABLE)
                }
            }
        }
        Err(e) => {
            eprintln!("rollguard migrate: {e}");
            ExitCode::from(exit::UNREACHABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy start`'s arguments from a command line (`deploy start …`).
    fn start_args(argv: &[&str]) -> StartArgs {
        #[derive(clap::Parser)]
        struct Deploy {
            #[command(flatten)]
            args: DeployArgs,
        }
        use clap::Parser;
        match Deploy::try_parse_from(argv) {
            Ok(Deploy {
                args:
                    DeployArgs {
                        command: DeployCommand::Start(s),
                        ..
                    },
            }) => s,
            other => panic!("{argv:?}: {:?}", other.err()),
        }
    }

    /// Bake and blue-green take their own settings from `deploy start`.
    #[test]
    fn bake_and_blue_green_flags_set_their_strategy() {
        for (flags, want) in [
            (
                &["--strategy", "bake", "--watch", "1h"][..],
                json!({"type": "bake", "watch": "1h"}),
            ),
            (
                &["--strategy", "blue-green", "--post-switch", "15m"],
                json!({"type": "blue-green", "post_switch": "15m"}),
            ),
        ] {
            let mut argv = vec!["deploy", "start", "--id", "x", "--analysis", "a"];
            argv.extend_from_slice(flags);
            let s = start_args(&argv);
            let body = start_body(&s);
            assert_eq!(body["strategy"], want);
            serde_json::from_value::<crate::deploy::DeploymentRequest>(body).expect("parses");
        }
    }

    /// Every registration field of the API is reachable from `deploy start`: a command line
    /// with every flag gives a request the API parses (unknown fields are errors there) with
    /// every optional field set.
    #[test]
    fn deploy_start_reaches_every_registration_field() {
        let s = start_args(&[
            "deploy",
            "start",
            "--id",
            "d1",
            "--analysis",
            "http-service",
            "--service",
            "checkout",
            "--baseline",
            "http://b/metrics",
            "--canary",
            "http://c/metrics",
            "--baseline-selector",
            "version=\"v1\"",
            "--canary-selector",
            "version=\"v2\"",
            "--baseline-file-sd",
            "b.json",
            "--canary-file-sd",
            "c.json",
            "--param",
            "job=api",
            "--baseline-version",
            "v1",
            "--canary-version",
            "v2",
            "--baseline-weight",
            "90",
            "--canary-weight",
            "10",
            "--baseline-offset",
            "1d",
            "--baseline-schema-min",
            "40",
            "--baseline-schema-max",
            "42",
            "--canary-schema-min",
            "41",
            "--canary-schema-max",
            "43",
            "--strategy",
            "canary",
            "--steps",
            "10,50,100",
            "--step-duration",
            "5m",
            "--interval",
            "5s",
            "--warmup",
            "30s",
            "--min-duration",
            "2m",
            "--max-duration",
            "20m",
        ]);
        let body = start_body(&s);
        let req: crate::deploy::DeploymentRequest =
            serde_json::from_value(body.clone()).expect("the API parses the body");
        assert_eq!(req.service.as_deref(), Some("checkout"));
        for (arm, a) in [("baseline", &req.baseline), ("canary", &req.canary)] {
            assert!(
                !a.targets.is_empty() && a.selector.is_some() && a.file_sd.is_some(),
                "{arm}"
            );
            assert!(
                a.version.is_some() && a.weight.is_some() && a.schema.is_some(),
                "{arm}"
            );
        }
        assert!(req.baseline.offset.is_some());
        assert!(matches!(
            req.strategy,
            crate::deploy::Strategy::Canary {
                step_duration: Some(_),
                ..
            }
        ));
        let t = req.timing.expect("timing overrides");
        assert!(
            t.interval.is_some()
                && t.warmup.is_some()
                && t.min_duration.is_some()
                && t.max_duration.is_some()
        );
        assert_eq!(req.params.get("job").map(String::as_str), Some("api"));
    }

    /// Numbered as hooks and chat number it (ROLLGUARD_STEP=1 for the first step).
    #[test]
    fn status_numbers_steps_from_one() {
        let v = json!({"step": 0, "request": {"strategy": {"type": "canary", "steps": [10.0, 50.0, 100.0]}}});
        assert_eq!(step_text(&v), "step 1/3 (10.0 %)");
        let v =
            json!({"step": 2, "request": {"strategy": {"type": "canary", "steps": [10, 50, 100]}}});
        assert_eq!(step_text(&v), "step 3/3 (100 %)");
        assert_eq!(step_text(&json!({"step": 0, "request": {}})), "no steps");
    }
}

//! The HTTP API (axum): deployments for pipelines and people, rules status, health and
//! rollguard's own metrics. JSON in and out; errors are JSON objects with a clear message.
//! A bearer token is required on `/api/` whenever one is configured (and the config demands
//! one when the listener is not loopback).
//!
//! `/healthz`, `/readyz` and `/metrics` are the admin paths ([`is_admin_path`]): the daemon
//! answers them on the API's own runtime thread, never queued behind the analysis engine,
//! and their handlers take no lock the engine holds for long.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::deploy::engine::{Control, Engine, EngineError, describe};
use crate::deploy::{DeploymentRequest, State as DState};
use crate::reload::Rules;
use crate::source::promql::PromClient;
use crate::store::Store;

/// Largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    pub engine: Arc<Engine>,
    pub rules: Arc<Rules>,
    pub token: Option<Arc<str>>,
    pub readiness: Arc<Readiness>,
    /// With a PostgreSQL store: this daemon's role and the lease (`None`: the only daemon).
    pub leadership: Option<Arc<crate::leader::Leadership>>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let status = match &self {
            EngineError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Finished { .. } | EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Schema(_) => StatusCode::PRECONDITION_FAILED,
        };
        error(status, self.to_string())
    }
}

/// Builds the router.
pub fn router(api: Api) -> Router {
    let protected = Router::new()
        .route("/api/v1/deployments", post(create).get(list))
        .route("/api/v1/deployments/{id}", get(show))
        .route("/api/v1/deployments/{id}/events", get(events))
        .route("/api/v1/deployments/{id}/verdict", get(verdict))
        .route("/api/v1/deployments/{id}/{action}", post(act))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/schemas", get(schemas))
        .route("/api/v1/schemas/{service}/contract", get(contract))
        .route("/api/v1/flagger/gate", post(flagger_gate))
        .route("/api/v1/flagger/rollback", post(flagger_rollback))
        .route("/api/v1/leader", get(leader))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            changes_on_leader,
        ))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .merge(protected)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn auth(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &api.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            );
        }
    }
    next.run(req).await
}

/// On a standby, a request that would change something gets 503 naming the leader (reads
/// are served from the shared store). A load balancer that routes by `/readyz?role=leader`
/// never sends one here.
async fn changes_on_leader(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(l) = &api.leadership else {
        return next.run(req).await;
    };
    // Flagger's webhooks are POSTs that only read the deployment's state.
    let reads =
        req.method() == axum::http::Method::GET || req.uri().path().starts_with("/api/v1/flagger/");
    if reads || l.role() == crate::leader::Role::Leader {
        return next.run(req).await;
    }
    let status = l.status();
    let leader = status.lease.as_ref().filter(|v| v.expires_in > 0.0);
    let msg = match leader {
        Some(v) => format!(
            "this rollguard ({}) is a standby: send changes to the leader, {} at {}",
            status.node, v.node, v.url
        ),
        None => format!(
            "this rollguard ({}) is a standby and no leader holds the lease right now; retry shortly",
            status.node
        ),
    };
    let body = json!({ "error": msg, "role": status.role, "leader": leader });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// This daemon's role and the lease as the database shows it (`single` without PostgreSQL).
async fn leader(State(api): State<Api>) -> Response {
    Json(leader_status(&api)).into_response()
}

fn leader_status(api: &Api) -> serde_json::Value {
    match &api.leadership {
        Some(l) => serde_json::to_value(l.status()).unwrap_or_default(),
        None => json!({ "role": crate::leader::Role::Single }),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn create(
    State(api): State<Api>,
    body: Result<Json<DeploymentRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                e.status(),
                format!("invalid deployment request: {}", e.body_text()),
            );
        }
    };
    // Migrations before code: refused here (412) before anything is registered.
    if let Err(e) = api.engine.preflight(&req).await {
        return e.into_response();
    }
    match api.engine.register(req) {
        Ok((rec, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(describe(&rec))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
}

async fn list(State(api): State<Api>, Query(q): Query<ListQuery>) -> Response {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => match DState::parse(s) {
            Some(s) => Some(s),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown state `{s}`")),
        },
    };
    match api.engine.store.list(
        state,
        q.service.as_deref(),
        q.limit.unwrap_or(100).min(1000),
    ) {
        Ok(v) => Json(json!({ "deployments": v.iter().map(describe).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn show(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let store = &api.engine.store;
    match store.get(&id) {
        Ok(Some(rec)) => {
            let mut v = describe(&rec);
            if let Some(o) = v.as_object_mut() {
                if let Some(s) = api.engine.schema_view(&rec) {
                    o.insert("schema".into(), s);
                }
                o.insert(
                    "events".into(),
                    serde_json::to_value(store.events(&id, 0, 500).unwrap_or_default())
                        .unwrap_or_default(),
                );
                o.insert(
                    "actions".into(),
                    serde_json::to_value(store.actions_of(&id).unwrap_or_default())
                        .unwrap_or_default(),
                );
            }
            Json(v).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("deployment `{id}` not found"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    /// Long-poll: wait up to this many seconds for a new event.
    wait: Option<u64>,
}

async fn events(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let after = q.after.unwrap_or(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let mut rx = api.engine.changes.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let evs = match api.engine.store.events(&id, after, 500) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let state = match api.engine.store.get(&id) {
            Ok(s) => s,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let Some(rec) = state else {
            return error(
                StatusCode::NOT_FOUND,
                format!("deployment `{id}` not found"),
            );
        };
        if !evs.is_empty() || rec.state.is_terminal() || tokio::time::Instant::now() >= deadline {
            let last = evs.last().map_or(after, |e| e.seq);
            return Json(json!({ "state": rec.state, "events": evs, "next": last }))
                .into_response();
        }
        // Wait for any change (or the deadline), then look again.
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                match rx.recv().await {
                    Ok(c) if c.deployment == id => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Argo Rollouts' web metric provider and other simple pollers: one small JSON object.
async fn verdict(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.engine.store.get(&id) {
        Ok(Some(rec)) => {
            let verdict = match rec.state {
                DState::Promoted => "promote",
                DState::RolledBack | DState::Aborted => "rollback",
                DState::Inconclusive => "inconclusive",
                _ => "pending",
            };
            Json(json!({
                "id": id,
                "state": rec.state,
                "verdict": verdict,
                "finished": rec.state.is_terminal(),
                "successful": rec.state == DState::Promoted,
                "failed": matches!(rec.state, DState::RolledBack | DState::Aborted),
                "reason": rec.reason,
            }))
            .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("deployment `{id}` not found"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActBody {
    who: Option<String>,
    reason: Option<String>,
}

async fn act(
    State(api): State<Api>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<ActBody>>,
) -> Response {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let who = b
        .who
        .or_else(|| {
            headers
                .get("x-rollguard-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "api".into());
    let Some(c) = Control::parse(&action, who, b.reason.unwrap_or_default()) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action `{action}` (use pause, resume, promote or abort)"),
        );
    };
    match api.engine.control(&id, c).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "action": action, "accepted": true })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every configured service's live schema, as last probed.
async fn schemas(State(api): State<Api>) -> Response {
    let v: Vec<serde_json::Value> = api
        .engine
        .schemas
        .services()
        .map(|c| api.engine.live_view(&c.service))
        .collect();
    Json(json!({ "schemas": v })).into_response()
}

#[derive(Deserialize)]
struct ContractQuery {
    to: String,
}

/// The contract gate for pipelines: 200 when contracting `service` to `to` is safe, 409 with
/// the reasons while a version still in use works only with an older schema.
async fn contract(
    State(api): State<Api>,
    Path(service): Path<String>,
    Query(q): Query<ContractQuery>,
) -> Response {
    match api.engine.contract_check(&service, &q.to) {
        Ok(a) => {
            let status = if a.safe {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            if !a.safe {
                v["error"] = json!(format!(
                    "contracting `{service}` to schema {} is unsafe: {}",
                    q.to,
                    a.reasons.join("; ")
                ));
            }
            (status, Json(v)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn rules(State(api): State<Api>) -> Response {
    Json(api.rules.status()).into_response()
}

/// Flagger webhooks send `{"name", "namespace", "phase", "metadata"}`; the deployment id is
/// `metadata.rollguard_id` or `<namespace>-<name>`. A gate answers 200 to open, 403 to close.
#[derive(Deserialize)]
struct FlaggerHook {
    name: String,
    namespace: String,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

fn flagger_id(h: &FlaggerHook) -> String {
    h.metadata
        .get("rollguard_id")
        .cloned()
        .unwrap_or_else(|| format!("{}-{}", h.namespace, h.name))
}

async fn flagger_gate(State(api): State<Api>, Json(h): Json<FlaggerHook>) -> Response {
    let id = flagger_id(&h);
    match api.engine.store.get(&id) {
        Ok(Some(r)) if r.state == DState::Promoted => {
            (StatusCode::OK, "promoted\n").into_response()
        }
        Ok(Some(r)) => (StatusCode::FORBIDDEN, format!("{}\n", r.state)).into_response(),
        Ok(None) => error(
            StatusCode::FORBIDDEN,
            format!("deployment `{id}` not registered"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn flagger_rollback(State(api): State<Api>, Json(h): Json<FlaggerHook>) -> Response {
    let id = flagger_id(&h);
    match api.engine.store.get(&id) {
        Ok(Some(r)) if matches!(r.state, DState::RolledBack | DState::Aborted) => {
            (StatusCode::OK, "rollback\n").into_response()
        }
        Ok(Some(r)) => (StatusCode::FORBIDDEN, format!("{}\n", r.state)).into_response(),
        Ok(None) => (StatusCode::FORBIDDEN, "not registered\n").into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    if let Some(l) = &api.leadership {
        let s = l.status();
        let t = &api.engine.telemetry;
        t.leader
            .set(i64::from(s.role == crate::leader::Role::Leader));
        t.lease_age.set(s.lease_age.unwrap_or(f64::NAN));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.engine.telemetry.encode(),
    )
        .into_response()
}

/// Paths answered on the API runtime itself, even while every engine worker is busy: the
/// probes systemd, load balancers and Prometheus rely on.
pub fn is_admin_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Liveness: the process accepts connections and its API runtime runs. Deliberately checks
/// nothing else, so a slow dependency never gets a healthy daemon restarted.
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// How long one readiness probe of a dependency may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a Prometheus probe result is reused (probes may come every second).
const PROBE_CACHE: Duration = Duration::from_secs(5);

/// What `/readyz` checks, with its own Prometheus client so that probing never waits behind
/// the engine's back-off state or its queries.
pub struct Readiness {
    state_dir: PathBuf,
    prometheus: Option<PromClient>,
    stopping: AtomicBool,
    store_probe_running: Arc<AtomicBool>,
    last_prometheus: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Builds the probes for a validated config.
    pub fn new(config: &Config) -> Result<Readiness, String> {
        let prometheus = match &config.prometheus {
            Some(p) => Some(PromClient::new(p)?),
            None => None,
        };
        Ok(Readiness {
            state_dir: config.state_dir.clone(),
            prometheus,
            stopping: AtomicBool::new(false),
            store_probe_running: Arc::new(AtomicBool::new(false)),
            last_prometheus: tokio::sync::Mutex::new(None),
        })
    }

    /// From now on `/readyz` answers 503: the daemon is shutting down.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the state directory and the SQLite store accept writes. Runs on the blocking
    /// pool with a deadline: a store locked by another process (a backup, an operator's
    /// `sqlite3` session) makes writes wait up to the busy timeout, and the probe must say
    /// "busy" rather than hang. At most one probe waits at a time.
    async fn store_writable(&self, store: Arc<dyn Store>) -> Result<(), String> {
        if self.store_probe_running.swap(true, Ordering::SeqCst) {
            return Err(
                "busy: the previous write probe is still waiting for the database lock".into(),
            );
        }
        let running = self.store_probe_running.clone();
        let dir = self.state_dir.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let f = dir.join(".readyz-probe");
                std::fs::write(&f, b"ok")
                    .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
                let _ = std::fs::remove_file(&f);
                store.check_writable().map_err(|e| e.to_string())
            })();
            running.store(false, Ordering::SeqCst);
            result
        });
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("write probe failed: {e}")),
            Err(_) => Err(format!(
                "busy: no write within {}s (database locked?)",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    }

    /// Whether the configured Prometheus answers a trivial query (cached briefly). Errors
    /// name the (redacted) URL.
    async fn prometheus_reachable(&self) -> Option<Result<(), String>> {
        let client = self.prometheus.as_ref()?;
        let mut last = self.last_prometheus.lock().await;
        if let Some((_, r)) = last.as_ref().filter(|(at, _)| at.elapsed() < PROBE_CACHE) {
            return Some(r.clone());
        }
        let r = match tokio::time::timeout(PROBE_TIMEOUT, client.instant("vector(1)")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        *last = Some((tokio::time::Instant::now(), r.clone()));
        Some(r)
    }
}

#[derive(Deserialize)]
struct ReadyQuery {
    /// `leader`: ready only on the daemon that leads (for a load balancer in front of a
    /// pair).
    role: Option<String>,
}

/// Readiness: the configuration and rules are loaded (always true once the API answers,
/// since the daemon validates before binding), the state store accepts writes, and the
/// metrics sources are reachable. 200 with the details, or 503 with `problems`.
async fn readyz(State(api): State<Api>, Query(q): Query<ReadyQuery>) -> Response {
    let r = &api.readiness;
    let mut problems = Vec::new();
    if r.stopping.load(Ordering::SeqCst) {
        problems.push("shutting down".to_string());
    }
    let role = api
        .leadership
        .as_ref()
        .map_or(crate::leader::Role::Single, |l| l.role());
    if q.role.as_deref() == Some("leader") && role == crate::leader::Role::Standby {
        problems.push("standby: not the leader".to_string());
    }
    let rules = api.rules.status();
    let store = match r.store_writable(api.engine.store.clone()).await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            problems.push(format!("state store not writable: {e}"));
            e
        }
    };
    let mut sources = serde_json::Map::new();
    if let Some(result) = r.prometheus_reachable().await {
        let v = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                problems.push(format!("metrics source unreachable: {e}"));
                e
            }
        };
        sources.insert("prometheus".into(), v.into());
    }
    if api.engine.telemetry.backend_down.get() > 0 {
        problems.push(
            "metrics backend considered down: most running deployments cannot fetch metrics"
                .to_string(),
        );
        sources.insert("deployments".into(), "most cannot fetch metrics".into());
    } else {
        sources.insert("deployments".into(), "ok".into());
    }
    let ready = problems.is_empty();
    let body = json!({
        "ready": ready,
        "role": role,
        "leader": leader_status(&api),
        "rules": rules.version,
        "checks": {
            "config": "loaded",
            "rules": { "version": rules.version, "analyses": rules.analyses.len(), "last_reload_error": rules.last_error },
            "state_store": store,
            "sources": sources,
        },
        "problems": problems,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {

    /// docs/openapi.yaml documents exactly the API paths the router serves (the status
    /// pages, routed in `status::web` and merged by the daemon, are for people and
    /// documented in docs/status.md).
    #[test]
    fn openapi_lists_every_route() {
        let source = include_str!("api.rs");
        let mut routes: Vec<&str> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|p| p.starts_with('/'))
            .collect();
        routes.sort_unstable();
        let doc: serde_json::Value =
            serde_saphyr::from_str(include_str!("../docs/openapi.yaml")).expect("openapi.yaml");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        assert_eq!(routes, documented);
    }
}

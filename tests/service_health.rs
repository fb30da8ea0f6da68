//! Issue 8: `/healthz` (alive) and `/readyz` (config loaded, state store writable, sources
//! reachable), both answered while the analysis engine is busy or blocked.

use crate::support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::FleetServer;
use support::http::{get, http_within, post};
use support::service::{NOOP_HOOKS, Service, ServiceDir};
use support::slow_rule;

const T: Duration = Duration::from_secs(20);

fn start(dir: &ServiceDir) -> (Service, String) {
    dir.start_logged(dir.command())
}

/// GET with a short timeout; returns the status and how long the answer took.
fn timed(url: &str) -> (u16, serde_json::Value, Duration) {
    let t = Instant::now();
    let (code, v) = http_within("GET", url, None, Duration::from_secs(10));
    (code, v, t.elapsed())
}

#[test]
fn probes_answer_while_the_state_store_is_locked_and_the_engine_waits_on_it() {
    let fleet = FleetServer::healthy(21, 20.0);
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], NOOP_HOOKS);
    let (mut svc, url) = start(&dir);
    let (code, v) = get(&format!("{url}/readyz"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["state_store"], "ok", "{v}");

    // Several deployments persisting every second: the engine's tasks all need the store.
    for i in 0..6 {
        let (code, v) = post(
            &format!("{url}/api/v1/deployments"),
            &json!({"id": format!("busy-{i}"), "analysis": "errors",
                    "baseline": {"targets": [fleet.target("baseline-0")]}, "canary": {"targets": [fleet.target("canary-0")]}}),
        );
        assert_eq!(code, 201, "{v}");
    }
    // Another process takes the database's write lock (a backup, an operator's sqlite3).
    // The engine's writes now wait up to SQLite's busy timeout, holding its workers.
    let db = rusqlite::Connection::open(dir.path().join("state/rollguard.db")).expect("open store");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    let (code, _, took) = timed(&format!("{url}/healthz"));
    assert_eq!(code, 200);
    assert!(
        took < Duration::from_secs(1),
        "/healthz took {took:?} while the store was locked"
    );
    let (code, v, took) = timed(&format!("{url}/readyz"));
    assert_eq!(code, 503, "{v}");
    assert!(
        v["checks"]["state_store"]
            .as_str()
            .unwrap_or_default()
            .contains("busy"),
        "{v}"
    );
    assert!(took < Duration::from_millis(3500), "/readyz took {took:?}");
    let (code, _, took) = timed(&format!("{url}/metrics"));
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
    // A second probe while the first write probe still waits answers at once.
    let (code, v, took) = timed(&format!("{url}/readyz"));
    assert_eq!(code, 503, "{v}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Release (within SQLite's 5 s busy timeout, so the engine's waiting writes go
    // through): the daemon is ready again.
    db.execute_batch("COMMIT").expect("unlock");
    drop(db);
    let start = Instant::now();
    loop {
        let (code, v) = get(&format!("{url}/readyz"));
        if code == 200 {
            break;
        }
        assert!(start.elapsed() < T, "not ready after the lock went: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, v) = get(&format!("{url}/api/v1/deployments?state=analysing"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["deployments"].as_array().map(Vec::len), Some(6), "{v}");
    svc.signal(Signal::SIGTERM);
    assert!(
        svc.wait(T).is_some_and(|s| s.success()),
        "log:\n{}",
        dir.log()
    );
}

#[test]
fn readyz_reports_an_unreachable_prometheus_and_healthz_does_not_care() {
    // Port 9 (discard) has no listener on loopback here: connection refused.
    let dir = ServiceDir::new(
        &[("errors.yaml", &slow_rule())],
        &format!("{NOOP_HOOKS}prometheus:\n  url: http://127.0.0.1:9\n"),
    );
    let (mut svc, url) = start(&dir);
    let (code, _) = get(&format!("{url}/healthz"));
    assert_eq!(code, 200);
    let (code, v) = get(&format!("{url}/readyz"));
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["state_store"], "ok", "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("metrics source unreachable: Prometheus at http://127.0.0.1:9/"),
        "{v}"
    );
    assert_eq!(v["checks"]["config"], "loaded");
    assert_eq!(v["checks"]["rules"]["analyses"], 1, "{v}");
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
}

#[test]
fn readyz_is_ready_with_a_reachable_prometheus() {
    let (addr, _rt) = prometheus_api();
    let dir = ServiceDir::new(
        &[("errors.yaml", &slow_rule())],
        &format!("{NOOP_HOOKS}prometheus:\n  url: http://{addr}\n"),
    );
    let (mut svc, url) = start(&dir);
    let (code, v) = get(&format!("{url}/readyz"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["checks"]["sources"]["prometheus"], "ok", "{v}");
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
}

/// A real HTTP server answering the Prometheus query API the way Prometheus answers
/// `vector(1)` (the readiness probe's query).
fn prometheus_api() -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = crate::support::http::runtime();
    let addr = rt.block_on(async {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(|| async {
                axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "1"]}]}}))
            }),
        );
        crate::support::http::serve(app).await
    });
    (addr, rt)
}

//! The real binary scraping targets that misbehave: no crash, no rollback, the failures are
//! visible in rollguard's own `/metrics`, and credentials appear in no log line or label.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use support::{Daemon, FleetServer, RATIO_RULE};

/// Targets that fail in every way a scrape can fail, served on their own runtime thread.
struct Chaos {
    base: String,
    _rt: tokio::runtime::Runtime,
}

async fn rotating(State(n): State<Arc<AtomicU64>>) -> Response {
    let i = n.fetch_add(1, Ordering::SeqCst);
    let ok = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
    };
    match i % 5 {
        // When it answers well, it is as healthy as the fleet (about 1 % errors).
        0 => ok(format!("http_requests_total{{job=\"api\",code=\"200\"}} {}\nhttp_requests_total{{job=\"api\",code=\"500\"}} {i}\n", i * 99)),
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        2 => ok("<html>maintenance</html>\n".into()),
        3 => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            ok(String::new())
        }
        _ => ok("http_requests_total{job=\"api\",code=\"500\"} NaN\nhttp_requests_total{job=\"api\",code=\"500\"} 7\n".into()),
    }
}

async fn big() -> Response {
    let chunk = "x{a=\"b\"} 1\n".repeat(6000);
    let stream =
        futures_util::stream::iter((0..800).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    axum::body::Body::from_stream(stream).into_response()
}

async fn needs_token(headers: HeaderMap) -> Response {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer tok-e2e-sEcReT") => {
            "http_requests_total{job=\"api\",code=\"200\"} 1\n".into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

impl Chaos {
    fn start() -> Chaos {
        let rt = crate::support::http::runtime();
        let addr = rt.block_on(async {
            let app = Router::new()
                .route("/rotating", get(rotating))
                .route("/hang", get(std::future::pending::<&'static str>))
                .route(
                    "/500",
                    get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
                )
                .route("/garbage", get(|| async { "{{{ not metrics\n" }))
                .route("/big", get(big))
                .route(
                    "/dup",
                    get(|| async {
                        "http_requests_total{code=\"500\"} 1\nhttp_requests_total{code=\"500\"} 9\n"
                    }),
                )
                .route("/token", get(needs_token))
                .with_state(Arc::new(AtomicU64::new(0)));
            crate::support::http::serve(app).await
        });
        Chaos {
            base: format!("http://{addr}"),
            _rt: rt,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

const SCRAPE: &str = "scrape:\n  timeout: 500ms\n  max_body: 1MiB\n";

#[test]
fn a_canary_whose_every_target_fails_is_held_never_rolled_back() {
    let fleet = FleetServer::healthy(41, 20.0);
    let chaos = Chaos::start();
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], SCRAPE);
    let canary = vec![
        chaos.url("/hang"),
        chaos.url("/500"),
        chaos.url("/garbage"),
        chaos.url("/big"),
        chaos.url("/dup"),
    ];
    let body = json!({
        "id": "broken", "analysis": "errors",
        "baseline": { "targets": [fleet.target("baseline-0"), fleet.target("baseline-1")] },
        "canary": { "targets": canary },
        "timing": { "max_duration": "10s" }
    });
    d.register(&body);
    let v = d.wait_state("broken", &["held"], Duration::from_secs(30));
    support::daemon::assert_held_by_failing_source(&v);
    let m = d.metrics();
    for (path, reason) in [
        ("/hang", "timeout"),
        ("/500", "status"),
        ("/garbage", "parse"),
        ("/big", "body"),
        ("/dup", "duplicate"),
    ] {
        let series = format!(
            "rollguard_target_up{{deployment=\"broken\",role=\"canary\",target=\"{}\"}} 0",
            chaos.url(path)
        );
        assert!(m.contains(&series), "{series} missing from:\n{m}");
        assert!(
            m.contains(&format!(
                "rollguard_scrape_errors_total{{reason=\"{reason}\"}}"
            )),
            "{reason}:\n{m}"
        );
    }
    assert!(
        m.contains(&format!(
            "rollguard_target_up{{deployment=\"broken\",role=\"baseline\",target=\"{}\"}} 1",
            fleet.target("baseline-0")
        )),
        "{m}"
    );
    let v = d.wait_done("broken", Duration::from_secs(30));
    assert_eq!(v["state"], "inconclusive", "{v:#}");
    assert!(
        d.marker_lines().is_empty(),
        "no hook may run: {:?}",
        d.marker_lines()
    );
    let (code, _) = support::http("GET", &format!("{}/healthz", d.url), None, None);
    assert_eq!(code, 200);
    // The finished deployment's per-target series are gone.
    let m = d.metrics();
    assert!(!m.contains("deployment=\"broken\""), "{m}");
}

#[test]
fn a_flapping_target_beside_healthy_ones_never_causes_a_rollback() {
    let fleet = FleetServer::good(42);
    let chaos = Chaos::start();
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], SCRAPE);
    let body = json!({
        "id": "flap", "analysis": "errors",
        "baseline": { "targets": [fleet.target("baseline-0"), fleet.target("baseline-1")] },
        "canary": { "targets": [fleet.target("canary-0"), fleet.target("canary-1"), chaos.url("/rotating")] }
    });
    d.register(&body);
    let v = d.wait_done("flap", Duration::from_secs(60));
    assert_ne!(v["state"], "rolled_back", "{v:#}");
    d.assert_no_rollback("a flapping target is no reason to roll back");
}

#[test]
fn credentials_never_reach_logs_or_labels() {
    let fleet = FleetServer::healthy(43, 20.0);
    let chaos = Chaos::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-e2e-sEcReT\n").unwrap();
    let extra = format!(
        "scrape:\n  timeout: 500ms\n  bearer_token: {{file: {}}}\n",
        token.display()
    );
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], &extra);
    let body = json!({
        "id": "secret", "analysis": "errors",
        "baseline": { "targets": [chaos.url("/token"), fleet.target("baseline-0")] },
        // A dead target with a password in its URL, and one the token does not open.
        "canary": { "targets": ["http://scraper:pa55w0rd-in-url@127.0.0.1:9/metrics", chaos.url("/500")] },
        "timing": { "max_duration": "10s" }
    });
    d.register(&body);
    let m = support::wait_for(Duration::from_secs(30), || {
        let m = d.metrics();
        m.contains("target=\"http://127.0.0.1:9/metrics\"")
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("no target_up series for the dead target; log:\n{}", d.log()));
    assert!(
        m.contains(&format!(
            "rollguard_target_up{{deployment=\"secret\",role=\"baseline\",target=\"{}\"}} 1",
            chaos.url("/token")
        )),
        "{m}"
    );
    d.wait_done("secret", Duration::from_secs(30));
    let log = d.log();
    assert!(log.contains("scrape failed"), "{log}");
    let (_, api) = d.get("/api/v1/deployments/secret");
    let api = api.to_string();
    assert!(api.contains("http://127.0.0.1:9/metrics"), "{api}");
    for secret in ["tok-e2e-sEcReT", "pa55w0rd-in-url"] {
        assert!(!log.contains(secret), "`{secret}` in the log:\n{log}");
        assert!(!m.contains(secret), "`{secret}` in /metrics:\n{m}");
        assert!(!api.contains(secret), "`{secret}` in the API:\n{api}");
    }
}

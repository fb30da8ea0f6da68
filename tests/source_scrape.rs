//! The direct scrape source against real HTTP targets on 127.0.0.1 that behave well and badly:
//! every bad target is a `source_error` for its interval (never a crash, never a value made
//! up), the good targets still count, and the limits (timeout, body size, concurrency) hold.

use crate::support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rollguard::config::{BasicAuth, ScrapeConfig, Secret, TlsConfig};
use rollguard::query::{Arms, Fetch, MetricQuery, Observed, QueryKind};
use rollguard::selector::Selector;
use rollguard::source::scrape::{ScrapeError, Scraper};
use rollguard::source::{ArmTargets, DeploymentSource, Source};
use rollguard::telemetry::Telemetry;
use support::raw::{
    Reply, header as head_header, ok, raw_server, raw_tls_server, tls_acceptor, tls_file,
};

/// Per-test state of the axum targets.
#[derive(Clone, Default)]
struct Targets {
    scrapes: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Targets {
    /// Counts a scrape of `name`; returns how many there were before.
    fn bump(&self, name: &str) -> u64 {
        let mut m = self.scrapes.lock().unwrap();
        let n = m.entry(name.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// A healthy instance: 10 requests and 1 error more at every scrape.
fn healthy_body(n: u64) -> String {
    format!(
        "# TYPE req_total counter\nreq_total{{code=\"200\"}} {}\nreq_total{{code=\"500\"}} {}\n# TYPE mem_bytes gauge\nmem_bytes 1000\n",
        n * 9,
        n
    )
}

async fn good(State(t): State<Targets>, Path(name): Path<String>) -> Response {
    let n = t.bump(&name);
    text(healthy_body(n))
}

async fn slow(State(t): State<Targets>) -> Response {
    t.bump("slow");
    // Slower than every scrape timeout used here: the target is slow, not the test.
    tokio::time::sleep(Duration::from_secs(5)).await;
    text(healthy_body(1))
}

async fn big() -> Response {
    // 50 MB of valid lines, streamed in 64 KiB chunks (never held in memory here).
    let line = "req_total{code=\"200\",padding=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"} 1\n";
    let chunk: String = line.repeat(65536 / line.len());
    let chunks = 50 * 1024 * 1024 / chunk.len() + 1;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn gzipped(State(t): State<Targets>, headers: HeaderMap) -> Response {
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .contains("gzip");
    if !accepts {
        return (StatusCode::NOT_ACCEPTABLE, "this target only speaks gzip").into_response();
    }
    let n = t.bump("gzip");
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        gzip(healthy_body(n).as_bytes()),
    )
        .into_response()
}

async fn bomb() -> Response {
    // 4 MiB of valid text compressed to a few KiB; the scraper's limit is 1 MiB.
    let body = "req_total{code=\"200\"} 1\n".repeat(4 * 1024 * 1024 / 24);
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        gzip(body.as_bytes()),
    )
        .into_response()
}

async fn openmetrics(State(t): State<Targets>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let n = t.bump("om");
    if accept.starts_with("application/openmetrics-text") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let body = format!(
            "# TYPE req counter\nreq_total{{code=\"200\"}} {} {now:.3}\nreq_created{{code=\"200\"}} 1.7e9\nreq_total{{code=\"500\"}} {} {now:.3}\n# EOF\n",
            n * 9,
            n
        );
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response()
    } else {
        (StatusCode::NOT_ACCEPTABLE, "OpenMetrics only").into_response()
    }
}

async fn changing(State(t): State<Targets>) -> Response {
    let body = match t.bump("changing") {
        0 => "req_total{code=\"200\"} 10\n",
        // A new error series appears (client libraries create it on the first error).
        1 => "req_total{code=\"200\"} 15\nreq_total{code=\"500\"} 2\n",
        // The whole family disappears.
        2 => "other_total 1\n",
        // Back, after a restart: counters start from small values again.
        3 => "req_total{code=\"200\"} 1\nreq_total{code=\"500\"} 1\n",
        _ => "req_total{code=\"200\"} 4\nreq_total{code=\"500\"} 1\n",
    };
    text(body.to_string())
}

async fn stale(State(t): State<Targets>) -> Response {
    let n = t.bump("stale");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A live series, and one a caching exporter stopped updating ten minutes ago.
    text(format!(
        "req_total{{code=\"500\"}} {n} {now_ms}\nreq_total{{code=\"503\"}} {} {}\n",
        100 + n * 50,
        now_ms - 600_000
    ))
}

async fn concurrent(State(t): State<Targets>) -> Response {
    let now = t.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    t.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.in_flight.fetch_sub(1, Ordering::SeqCst);
    text(healthy_body(1))
}

async fn bearer(headers: HeaderMap) -> Response {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer token-from-file-2") => text(healthy_body(1)),
        Some("Bearer token-from-file-1") => text(healthy_body(0)),
        _ => (StatusCode::UNAUTHORIZED, "no").into_response(),
    }
}

async fn basic(headers: HeaderMap) -> Response {
    // "scraper:pa55" in base64.
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some("Basic c2NyYXBlcjpwYTU1") => text(healthy_body(1)),
        _ => (StatusCode::UNAUTHORIZED, "no").into_response(),
    }
}

async fn serve_targets() -> (String, Targets) {
    let t = Targets::default();
    let app = Router::new()
        .route("/good/{name}/metrics", get(good))
        .route("/slow", get(slow))
        .route(
            "/500",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/garbage",
            get(|| async { text("<html><body>It works!</body></html>\n{{{ not metrics\n".into()) }),
        )
        .route("/empty", get(|| async { text(String::new()) }))
        .route(
            "/latin1",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    vec![b'x', 0xE9, b' ', b'1', b'\n'],
                )
            }),
        )
        .route("/big", get(big))
        .route("/gzip", get(gzipped))
        .route("/bomb", get(bomb))
        .route("/om", get(openmetrics))
        .route("/changing", get(changing))
        .route("/stale", get(stale))
        .route("/conc/{i}", get(concurrent))
        .route("/bearer", get(bearer))
        .route("/basic", get(basic))
        .with_state(t.clone());
    let addr = crate::support::http::serve(app).await;
    (format!("http://{addr}"), t)
}

fn cfg(timeout_ms: u64) -> ScrapeConfig {
    ScrapeConfig {
        timeout: Duration::from_millis(timeout_ms),
        ..ScrapeConfig::default()
    }
}

/// A scraper to share between sources, as the daemon shares one.
fn new_scraper(c: ScrapeConfig) -> Arc<Scraper> {
    Arc::new(Scraper::new(&c).unwrap())
}

fn q(kind: QueryKind, sel: &str) -> MetricQuery {
    MetricQuery::series(kind, Selector::parse(sel).unwrap())
}

fn errors_q() -> MetricQuery {
    q(QueryKind::Counter, r#"req_total{code=~"5.."}"#)
}

fn source(
    scraper: &Arc<Scraper>,
    baseline: Vec<String>,
    canary: Vec<String>,
    telemetry: &Arc<Telemetry>,
) -> DeploymentSource {
    let s = Source::Scrape {
        scraper: scraper.clone(),
        arms: Arms {
            baseline: ArmTargets::Urls(baseline),
            canary: ArmTargets::Urls(canary),
        },
    };
    DeploymentSource::new(s, "t", telemetry.clone())
}

fn counter(f: &Fetch) -> f64 {
    match f {
        Fetch::Value(Observed::Counter(v)) => *v,
        other => panic!("expected a counter value, got {other:?}"),
    }
}

/// The counter increases of a two-query scrape, in query order, to compare at once: the pair
/// says both values on a mismatch, and `counter` names the fetch that is not a value.
fn counters(f: &[Fetch]) -> (f64, f64) {
    (counter(&f[0]), counter(&f[1]))
}

fn error_text(f: &Fetch) -> &str {
    match f {
        Fetch::Error(e) => e,
        other => panic!("expected a source error, got {other:?}"),
    }
}

/// Scrapes a canary arm made of one bad target twice (so counters could have produced a
/// value), next to a healthy baseline; returns the canary's answer and the time taken.
async fn canary_only(base: &str, scraper: &Arc<Scraper>, canary: String) -> (Fetch, Duration) {
    let t = Arc::new(Telemetry::new());
    let mut s = source(
        scraper,
        vec![format!("{base}/good/{}/metrics", canary.len())],
        vec![canary],
        &t,
    );
    s.fetch(&[errors_q()]).await;
    let start = tokio::time::Instant::now();
    let f = s.fetch(&[errors_q()]).await;
    assert!(
        matches!(f.values[0].baseline, Fetch::Value(_)),
        "the healthy baseline still counts: {:?}",
        f.values[0].baseline
    );
    (f.values[0].canary.clone(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_target_is_a_source_error_for_its_interval() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(800));
    let cases: Vec<(&str, String, &str)> = vec![
        ("slow", format!("{base}/slow"), "timed out after 800ms"),
        ("500", format!("{base}/500"), "HTTP status 500"),
        ("garbage", format!("{base}/garbage"), "malformed line"),
        ("empty", format!("{base}/empty"), "no samples"),
        ("not utf-8", format!("{base}/latin1"), "not UTF-8"),
        (
            "50 MB",
            format!("{base}/big"),
            "body larger than the 16777216-byte limit",
        ),
        (
            "refused",
            "http://127.0.0.1:9/metrics".to_string(),
            "connection failed",
        ),
        ("404", format!("{base}/nope"), "HTTP status 404"),
    ];
    all_source_errors(&base, &scraper, cases, Duration::from_secs(3)).await;
}

/// Each case's target, alone in the canary, is a source error that says `expect`, found
/// within `within`: `(what, url, expect)`.
async fn all_source_errors(
    base: &str,
    scraper: &Arc<Scraper>,
    cases: impl IntoIterator<Item = (&str, String, &str)>,
    within: Duration,
) {
    for (what, url, expect) in cases {
        let (f, took) = canary_only(base, scraper, url).await;
        let e = error_text(&f);
        assert!(e.contains(expect), "{what}: {e}");
        assert!(
            took < within,
            "{what} took {took:?}: the timeout must bound the scrape"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_and_cut_off_targets_are_source_errors() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(600));
    let full = "req_total{code=\"500\"} 1\nreq_total{code=\"200\"} 9\n";
    // Accepts and never answers.
    let (hang, _) = raw_server(|_| Reply::Hang).await;
    // Headers, then part of the body, then silence: a slow drip that never ends.
    let (drip, _) = raw_server(move |_| {
        let mut b = ok("text/plain; version=0.0.4", full);
        b.truncate(b.len() - 10);
        Reply::BytesThenHang(b)
    })
    .await;
    // Content-Length promises more than is sent before the connection closes.
    let (cut, _) = raw_server(move |_| {
        let mut b = ok("text/plain; version=0.0.4", full);
        b.truncate(b.len() - 10);
        Reply::Bytes(b)
    })
    .await;
    // Chunked, closed before the last chunk: a clean cut at a line boundary that only the
    // framing reveals.
    let (chunked, _) = raw_server(|_| {
        Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nTransfer-Encoding: chunked\r\n\r\n19\r\nreq_total{code=\"500\"} 1\n\r\n".to_vec())
    })
    .await;
    let cases = [
        ("hang", format!("http://{hang}/metrics"), "timed out"),
        ("drip", format!("http://{drip}/metrics"), "timed out"),
        (
            "cut",
            format!("http://{cut}/metrics"),
            "connection failed while reading the body",
        ),
        (
            "chunked",
            format!("http://{chunked}/metrics"),
            "connection failed while reading the body",
        ),
    ];
    all_source_errors(&base, &scraper, cases, Duration::from_millis(2500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_target_does_not_hide_the_good_ones() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(500));
    let t = Arc::new(Telemetry::new());
    let canary = vec![
        format!("{base}/good/c0/metrics"),
        format!("{base}/500"),
        format!("{base}/good/c1/metrics"),
    ];
    let mut s = source(
        &scraper,
        vec![format!("{base}/good/b0/metrics")],
        canary,
        &t,
    );
    s.fetch(&[errors_q()]).await;
    let f = s.fetch(&[errors_q()]).await;
    assert_eq!(
        counter(&f.values[0].canary),
        2.0,
        "two healthy canaries, one error each"
    );
    assert!(s.backend_error().is_none());
    let metrics = t.encode();
    let up = |target: &str| {
        format!("rollguard_target_up{{deployment=\"t\",role=\"canary\",target=\"{target}\"}}")
    };
    assert!(
        metrics.contains(&format!("{} 0", up(&format!("{base}/500")))),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("{} 1", up(&format!("{base}/good/c0/metrics")))),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollguard_scrape_duration_seconds{deployment=\"t\",role=\"canary\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollguard_scrape_errors_total{reason=\"status\"}"),
        "{metrics}"
    );
    // A finished deployment's series leave /metrics.
    drop(s);
    assert!(
        !t.encode().contains("rollguard_target_up{"),
        "{}",
        t.encode()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changing_series_set_counts_new_series_and_resets_and_says_no_data_when_gone() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(500));
    let t = Arc::new(Telemetry::new());
    let mut s = source(
        &scraper,
        vec![format!("{base}/good/b/metrics")],
        vec![format!("{base}/changing")],
        &t,
    );
    let qs = [errors_q(), q(QueryKind::Counter, "req_total")];
    let mut next = async || {
        s.fetch(&qs)
            .await
            .values
            .into_iter()
            .map(|a| a.canary)
            .collect::<Vec<_>>()
    };
    // First scrape: counters need a previous value.
    let f = next().await;
    assert!(
        matches!(&f[1], Fetch::NoData(m) if m.contains("first scrape")),
        "{f:?}"
    );
    // The 500 series appears with 2 errors: on a known instance it counts from zero.
    assert_eq!(counters(&next().await), (2.0, 7.0));
    // The whole family is gone: no data (not zero), and says why.
    let f = next().await;
    assert!(
        matches!(&f[0], Fetch::NoData(m) if m.contains("no series matched req_total{code=~\"5..\"}")),
        "{f:?}"
    );
    // Back after a restart: 2 -> 1 and 15 -> 1 are resets, the new values are the increase.
    assert_eq!(counters(&next().await), (1.0, 2.0));
    assert_eq!(counters(&next().await), (0.0, 3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_negotiated_and_a_gzip_bomb_is_refused() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(ScrapeConfig {
        max_body_bytes: 1024 * 1024,
        ..cfg(2000)
    });
    let body = scraper.fetch(&format!("{base}/gzip")).await.unwrap();
    assert!(
        body.text.starts_with("# TYPE req_total counter"),
        "{}",
        body.text
    );
    let e = scraper.fetch(&format!("{base}/bomb")).await.err().unwrap();
    assert_eq!(
        e,
        ScrapeError::Body("body larger than the 1048576-byte limit".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_preferred_and_parsed_by_content_type() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(2000));
    let (f, _) = canary_only(&base, &scraper, format!("{base}/om")).await;
    assert_eq!(counter(&f), 1.0, "{f:?}");
    // What was sent, as a raw server sees it.
    let (addr, heads) =
        raw_server(|_| Reply::Bytes(ok("text/plain; version=0.0.4", "x 1\n"))).await;
    scraper
        .fetch(&format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let head = heads.lock().unwrap()[0].clone();
    let accept = head_header(&head, "accept").unwrap();
    assert!(
        accept.starts_with("application/openmetrics-text;version=1.0.0,"),
        "{accept}"
    );
    assert!(
        accept.contains("text/plain;version=0.0.4;q=0.5"),
        "{accept}"
    );
    assert!(
        head_header(&head, "accept-encoding")
            .unwrap()
            .contains("gzip"),
        "{head}"
    );
    assert_eq!(
        head_header(&head, "x-prometheus-scrape-timeout-seconds"),
        Some("2.000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_exposed_timestamps_do_not_count() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(2000));
    let (f, _) = canary_only(&base, &scraper, format!("{base}/stale")).await;
    // Only the live 500 series (+1); the 503 series moved by 50 but is ten minutes old.
    assert_eq!(counter(&f), 1.0, "{f:?}");
    // With honor_timestamps off, every sample counts as of the scrape.
    let scraper = new_scraper(ScrapeConfig {
        honor_timestamps: false,
        ..cfg(2000)
    });
    let (f, _) = canary_only(&base, &scraper, format!("{base}/stale")).await;
    assert_eq!(counter(&f), 51.0, "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_concurrency_limit_holds() {
    let (base, t) = serve_targets().await;
    let scraper = new_scraper(ScrapeConfig {
        concurrency: 4,
        ..cfg(5000)
    });
    let tel = Arc::new(Telemetry::new());
    // Two deployments share the scraper, as all deployments of a daemon do.
    let urls = |from: usize| {
        (from..from + 12)
            .map(|i| format!("{base}/conc/{i}"))
            .collect::<Vec<_>>()
    };
    let mut a = source(&scraper, urls(0), urls(12), &tel);
    let mut b = source(&scraper, urls(24), urls(36), &tel);
    let qs = [errors_q()];
    let start = tokio::time::Instant::now();
    let (fa, fb) = tokio::join!(a.fetch(&qs), b.fetch(&qs));
    assert!(
        matches!(fa.values[0].canary, Fetch::NoData(_))
            && matches!(fb.values[0].canary, Fetch::NoData(_))
    );
    assert_eq!(
        t.max_in_flight.load(Ordering::SeqCst),
        4,
        "48 targets, 4 at a time"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(12 * 50),
        "48 × 50 ms / 4 ≥ 600 ms: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_scrapes_never_outlasts_the_analysis_interval() {
    let (base, _) = serve_targets().await;
    // One slot, targets that each hold it for 5 s, and a scrape timeout longer than that:
    // without a round deadline this round would take 20 s, two intervals and more.
    let scraper = new_scraper(ScrapeConfig {
        concurrency: 1,
        ..cfg(10_000)
    });
    let tel = Arc::new(Telemetry::new());
    let slow = || vec![format!("{base}/slow"), format!("{base}/slow")];
    let mut s = source(&scraper, slow(), slow(), &tel);
    s.set_round_budget(Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    let f = s.fetch(&[errors_q()]).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "the round took {took:?}");
    for arm in [&f.values[0].baseline, &f.values[0].canary] {
        assert!(
            error_text(arm).contains("not scraped within the analysis interval (1s)"),
            "{arm:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_files_and_are_reread() {
    let (base, _) = serve_targets().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "token-from-file-1\n").unwrap();
    let scraper = Scraper::new(&ScrapeConfig {
        bearer_token: Some(Secret::File {
            file: token.clone(),
        }),
        ..cfg(2000)
    })
    .unwrap();
    let b = scraper.fetch(&format!("{base}/bearer")).await.unwrap();
    assert!(b.text.contains("req_total{code=\"500\"} 0"), "{}", b.text);
    std::fs::write(&token, "token-from-file-2").unwrap();
    let b = scraper.fetch(&format!("{base}/bearer")).await.unwrap();
    assert!(
        b.text.contains("req_total{code=\"500\"} 1"),
        "a rotated token is used at the next scrape: {}",
        b.text
    );
    std::fs::remove_file(&token).unwrap();
    let e = scraper
        .fetch(&format!("{base}/bearer"))
        .await
        .err()
        .unwrap();
    assert_eq!(e.reason(), "credentials");
    assert!(
        e.to_string().contains(&token.display().to_string()),
        "names the file: {e}"
    );

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pa55").unwrap();
    let basic = Scraper::new(&ScrapeConfig {
        basic_auth: Some(BasicAuth {
            username: "scraper".into(),
            password: Secret::File { file: pw },
        }),
        ..cfg(2000)
    })
    .unwrap();
    assert!(basic.fetch(&format!("{base}/basic")).await.is_ok());
    assert_eq!(
        scraper.fetch(&format!("{base}/basic")).await.err(),
        Some(ScrapeError::Credentials(format!(
            "cannot read secret file {}: No such file or directory (os error 2)",
            token.display()
        )))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_a_client_certificate() {
    let body = "req_total{code=\"500\"} 3\n";
    let (addr, heads) = raw_tls_server(tls_acceptor(), move |_| {
        Reply::Bytes(ok("text/plain; version=0.0.4", body))
    })
    .await;
    let url = format!("https://127.0.0.1:{}/metrics", addr.port());
    let full = TlsConfig {
        ca_file: Some(tls_file("ca.pem")),
        cert_file: Some(tls_file("client.pem")),
        key_file: Some(tls_file("client.key")),
        insecure_skip_verify: false,
    };
    let scraper = Scraper::new(&ScrapeConfig {
        tls: full.clone(),
        ..cfg(2000)
    })
    .unwrap();
    assert_eq!(scraper.fetch(&url).await.unwrap().text, body);
    assert_eq!(heads.lock().unwrap().len(), 1);
    // Without a client certificate the server refuses the handshake.
    let no_cert = Scraper::new(&ScrapeConfig {
        tls: TlsConfig {
            cert_file: None,
            key_file: None,
            ..full.clone()
        },
        ..cfg(2000)
    })
    .unwrap();
    let e = no_cert.fetch(&url).await.err().unwrap();
    assert_eq!(e.reason(), "http", "{e}");
    // A server certificate from an unknown CA is refused by the scraper.
    let wrong_ca = Scraper::new(&ScrapeConfig {
        tls: TlsConfig {
            ca_file: Some(tls_file("other-ca.pem")),
            ..full
        },
        ..cfg(2000)
    })
    .unwrap();
    let e = wrong_ca.fetch(&url).await.err().unwrap();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert_eq!(
        heads.lock().unwrap().len(),
        1,
        "no request went out over an unverified connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_targets_are_followed_and_a_broken_file_keeps_the_last_good_list() {
    let (base, _) = serve_targets().await;
    let host = base.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("canary.json");
    let write = |names: &[&str]| {
        let groups: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"targets": [host], "labels": {"__metrics_path__": format!("/good/{n}/metrics")}}))
            .collect();
        std::fs::write(&sd, serde_json::to_string(&groups).unwrap()).unwrap();
    };
    write(&["f0", "f1"]);
    let scraper = new_scraper(cfg(2000));
    let tel = Arc::new(Telemetry::new());
    let s = Source::Scrape {
        scraper: scraper.clone(),
        arms: Arms {
            baseline: ArmTargets::Urls(vec![format!("{base}/good/fb/metrics")]),
            canary: ArmTargets::FileSd(sd.clone()),
        },
    };
    let mut s = DeploymentSource::new(s, "sd", tel.clone());
    s.fetch(&[errors_q()]).await;
    assert_eq!(counter(&s.fetch(&[errors_q()]).await.values[0].canary), 2.0);
    // One instance leaves: it stops contributing at once, and its series leave /metrics.
    write(&["f0"]);
    assert_eq!(counter(&s.fetch(&[errors_q()]).await.values[0].canary), 1.0);
    assert!(
        !tel.encode().contains("/good/f1/metrics"),
        "{}",
        tel.encode()
    );
    // A half-written file keeps the last good list.
    std::fs::write(&sd, "[{\"targets\": [").unwrap();
    assert_eq!(counter(&s.fetch(&[errors_q()]).await.values[0].canary), 1.0);
    // A new instance counts from its second scrape.
    write(&["f0", "f2"]);
    assert_eq!(counter(&s.fetch(&[errors_q()]).await.values[0].canary), 1.0);
    assert_eq!(counter(&s.fetch(&[errors_q()]).await.values[0].canary), 2.0);
    // A file that was never readable is a source error naming it.
    let missing = Source::Scrape {
        scraper,
        arms: Arms {
            baseline: ArmTargets::Urls(vec![format!("{base}/good/fb/metrics")]),
            canary: ArmTargets::FileSd(dir.path().join("nope.yaml")),
        },
    };
    let mut m = DeploymentSource::new(missing, "sd2", tel);
    let f = m.fetch(&[errors_q()]).await;
    assert!(
        error_text(&f.values[0].canary).contains("nope.yaml"),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_arm_reports_the_backend_down_but_a_bad_answer_does_not() {
    let (base, _) = serve_targets().await;
    let scraper = new_scraper(cfg(500));
    let tel = Arc::new(Telemetry::new());
    let mut dead = source(
        &scraper,
        vec!["http://127.0.0.1:9/metrics".into()],
        vec!["http://127.0.0.1:9/m".into()],
        &tel,
    );
    dead.fetch(&[errors_q()]).await;
    assert!(
        dead.backend_error()
            .is_some_and(|e| e.contains("connection failed")),
        "{:?}",
        dead.backend_error()
    );
    let mut garbage = source(
        &scraper,
        vec![format!("{base}/garbage")],
        vec![format!("{base}/500")],
        &tel,
    );
    garbage.fetch(&[errors_q()]).await;
    assert_eq!(
        garbage.backend_error(),
        None,
        "targets that answer badly are not an outage"
    );
}

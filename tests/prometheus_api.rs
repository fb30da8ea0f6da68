//! The PromQL source against a real Prometheus (counts, no data, NaN, bad queries, result
//! types, a route prefix, a tenant header enforced by a gateway in front of it), and against
//! a scripted API server for what a real Prometheus will not do on demand: 429 with
//! `Retry-After`, 5xx, 422, partial answers (Thanos warnings, VictoriaMetrics `isPartial`),
//! native histograms, duplicates, bad bodies, hangs.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rollguard::config::{PrometheusConfig, Secret, parse_config};
use rollguard::query::{Arms, Fetch, MetricQuery, Observed, PromqlQuery, QueryKind, SeriesQuery};
use rollguard::selector::{Selector, parse_matchers};
use rollguard::source::promql::{self, PromClient, QueryError};
use rollguard::source::scrape::epoch_ms;
use rollguard::source::{DeploymentSource, Source};
use rollguard::telemetry::Telemetry;
use support::prometheus::{Prometheus, Target};

/// Two baseline and two canary instances whose counters grow by one error and nine successes
/// per scrape, plus a NaN gauge; served on their own runtime thread so Prometheus can scrape
/// them whatever the test does.
struct Fleet {
    addr: std::net::SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Fleet {
    fn start() -> Fleet {
        let rt = crate::support::http::runtime();
        let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let addr = rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/{name}/metrics",
                    get(|State(c): State<Arc<Mutex<BTreeMap<String, u64>>>>, UrlPath(name): UrlPath<String>| async move {
                        let n = {
                            let mut m = c.lock().unwrap();
                            let n = m.entry(name).or_insert(0);
                            *n += 1;
                            *n
                        };
                        format!(
                            "req_total{{code=\"200\"}} {}\nreq_total{{code=\"500\"}} {n}\nmem_bytes 1000\nnan_gauge NaN\n",
                            9 * n
                        )
                    }),
                )
                .with_state(counts);
            crate::support::http::serve(app).await
        });
        Fleet { addr, _rt: rt }
    }

    fn targets(&self) -> Vec<Target> {
        ["baseline-0", "baseline-1", "canary-0", "canary-1"]
            .iter()
            .map(|name| Target {
                address: self.addr.to_string(),
                path: format!("/{name}/metrics"),
                labels: vec![
                    ("instance".into(), name.to_string()),
                    ("role".into(), name.split('-').next().unwrap().to_string()),
                ],
            })
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn q(kind: QueryKind, sel: &str) -> MetricQuery {
    MetricQuery::series(kind, Selector::parse(sel).unwrap())
}

fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

fn arms() -> Arms<Vec<rollguard::selector::Matcher>> {
    Arms {
        baseline: parse_matchers(r#"role="baseline""#).unwrap(),
        canary: parse_matchers(r#"role="canary""#).unwrap(),
    }
}

/// The sum of an instant query's values at `at_ms`, through Prometheus' own aggregation.
fn prom_sum(p: &Prometheus, promql: &str, at_ms: i64) -> f64 {
    let v = p.query(&format!(
        "sum({promql} @ {}.{:03})",
        at_ms / 1000,
        at_ms % 1000
    ));
    v.first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The fleet and a real Prometheus that has scraped every instance for four seconds.
fn scraped_fleet() -> (Fleet, Prometheus) {
    let fleet = Fleet::start();
    let prom = Prometheus::start(&fleet.targets());
    prom.wait_series(
        "count_over_time(req_total{code=\"500\"}[10s]) >= 4",
        4,
        Duration::from_secs(30),
    );
    (fleet, prom)
}

#[test]
fn counts_match_prometheus_and_missing_nan_and_bad_queries_say_what_they_are() {
    let (_fleet, prom) = scraped_fleet();
    runtime().block_on(async {
        let client = PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap();
        let errors = q(QueryKind::Counter, r#"req_total{code=~"5.."}"#);
        // `req_total` overlaps the errors selector: the 500 series comes back in both answers.
        let queries = [
            errors.clone(),
            q(QueryKind::Counter, "absent_total"),
            q(QueryKind::Gauge, "nan_gauge"),
            q(QueryKind::Gauge, "mem_bytes"),
            q(QueryKind::Counter, "req_total"),
        ];
        let canary = arms().canary;
        let (t1, t2) = (now_ms() - 3000, now_ms() - 1000);
        let mut col = rollguard::series::ArmCollector::new();
        let first = promql::collect(&mut col, &queries, &client.fetch_arm(&queries, &canary, "canary", t1).await);
        assert!(matches!(&first[0], Fetch::NoData(m) if m.contains("first scrape")), "{first:?}");
        let a = client.fetch_arm(&queries, &canary, "canary", t2).await;
        assert_eq!(a.instances.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["canary-0", "canary-1"]);
        let second = promql::collect(&mut col, &queries, &a);
        // The same increase Prometheus computes from the same two instants.
        let expected = prom_sum(&prom, r#"req_total{code=~"5..",role="canary"}"#, t2) - prom_sum(&prom, r#"req_total{code=~"5..",role="canary"}"#, t1);
        assert!(expected >= 2.0, "{expected}");
        assert_eq!(second[0], Fetch::Value(Observed::Counter(expected)));
        assert_eq!(second[1], Fetch::NoData(r#"no series for `absent_total{role="canary"}`"#.into()));
        assert!(matches!(&second[2], Fetch::NoData(m) if m.contains("only NaN")), "{:?}", second[2]);
        assert_eq!(second[3], Fetch::Value(Observed::Gauge(vec![1000.0, 1000.0])));
        let all = prom_sum(&prom, r#"req_total{role="canary"}"#, t2) - prom_sum(&prom, r#"req_total{role="canary"}"#, t1);
        assert_eq!(second[4], Fetch::Value(Observed::Counter(all)));
        assert_eq!(all, 10.0 * expected);

        // One evaluation time gives one answer, whenever it is asked.
        let again = client.instant_at(r#"req_total{role="canary"}"#, t1).await.unwrap();
        assert_eq!(again, client.instant_at(r#"req_total{role="canary"}"#, t1).await.unwrap());
        assert!(client.instant_at("req_total", t1 - 3_600_000).await.unwrap().is_empty(), "before the data existed");

        // A wrong query is the rule's problem, and says so.
        let e = client.instant_at("rate(req_total[", t2).await.unwrap_err();
        assert!(matches!(&e, QueryError::Rejected(m) if m.contains("bad_data") && m.contains("problem in the rule")), "{e:?}");
        assert!(!e.is_backend());
        // Only instant vectors of raw series are expected.
        let e = client.instant_at("req_total[1m]", t2).await.unwrap_err();
        assert!(matches!(&e, QueryError::Invalid(m) if m.contains("a range vector")), "{e:?}");
        let e = client.instant_at(r#""text""#, t2).await.unwrap_err();
        assert!(matches!(&e, QueryError::Invalid(m) if m.contains("a string")), "{e:?}");
        // A scalar (a written query may end in `scalar(...)`) is one value without labels.
        let one = client.instant_at("1 + 1", t2).await.unwrap();
        assert_eq!((one.len(), one[0].value), (1, 2.0));
    });
}

/// A rule's interval shorter than the scrape interval reads the same sample again: Prometheus
/// answers an instant query with the latest sample in its lookback. The source asks for each
/// gauge's `timestamp()` too, so the collector counts a sample once.
#[test]
fn a_gauge_sample_read_again_before_the_next_scrape_counts_once() {
    let (_fleet, prom) = scraped_fleet();
    runtime().block_on(async {
        let client = PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap();
        let queries = [q(QueryKind::Gauge, "mem_bytes")];
        let t = now_ms() - 3000;
        let mut cols: Arms<rollguard::series::ArmCollector> = Arms::default();
        let (a, client) = (arms(), &client);
        let mut read = async |at_ms: i64| {
            let b = client
                .fetch_arm(&queries, &a.baseline, "baseline", at_ms)
                .await;
            let c = client.fetch_arm(&queries, &a.canary, "canary", at_ms).await;
            // Each sample carries when Prometheus scraped it: within a scrape interval (1 s).
            for (_, samples) in b.instances.iter().chain(&c.instances) {
                for s in samples {
                    let ts = s.timestamp_ms.expect("a gauge's sample time");
                    assert!(ts <= at_ms && ts > at_ms - 2000, "{ts} vs {at_ms}");
                }
            }
            let fb = promql::collect(&mut cols.baseline, &queries, &b);
            let fc = promql::collect(&mut cols.canary, &queries, &c);
            rollguard::series::frame(&mut cols, &queries, fb, fc)
                .values
                .remove(0)
        };
        let both = Arms {
            baseline: Fetch::Value(Observed::Gauge(vec![1000.0, 1000.0])),
            canary: Fetch::Value(Observed::Gauge(vec![1000.0, 1000.0])),
        };
        assert_eq!(read(t).await, both);
        let again = read(t).await;
        for f in [&again.baseline, &again.canary] {
            assert!(
                matches!(f, Fetch::NoData(m) if m.contains("scraped less often")),
                "{again:?}"
            );
        }
        assert_eq!(read(t + 1500).await, both);
    });
}

/// Rule-written PromQL: the arm's matchers and role are filled per arm, each series of the
/// answer is one value, and empty, NaN-only and rejected answers say what they are.
#[test]
fn written_queries_are_filled_per_arm_and_give_one_value_per_series() {
    let (_fleet, prom) = scraped_fleet();
    runtime().block_on(async {
        let client = PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap();
        let w = |t: &str| MetricQuery::Promql(PromqlQuery { text: t.into() });
        let queries = [
            w("sum by (instance) (mem_bytes{ {{arm}} }) / 1000"),
            w("scalar(sum(mem_bytes{{{arm}}}))"),
            w(r#"sum(rate(req_total{ {{arm}}, code="500" }[10s])) / sum(rate(req_total{ {{arm}} }[10s]))"#),
            w("nan_gauge{ {{arm}} }"),
            w(r#"mem_bytes{ {{arm}}, instance="{{role}}-9" }"#),
            w("rate(req_total{ {{arm}} })"),
            q(QueryKind::Gauge, "mem_bytes"),
        ];
        let at = now_ms();
        for (role, arm) in [("baseline", &arms().baseline), ("canary", &arms().canary)] {
            let a = client.fetch_arm(&queries, arm, role, at).await;
            assert_eq!(
                a.written[&0].0,
                format!(r#"sum by (instance) (mem_bytes{{ role="{role}" }}) / 1000"#)
            );
            assert_eq!(
                a.written[&4].0,
                format!(r#"mem_bytes{{ role="{role}", instance="{role}-9" }}"#)
            );
            let f = promql::collect(&mut rollguard::series::ArmCollector::new(), &queries, &a);
            assert_eq!(f[0], Fetch::Value(Observed::Gauge(vec![1.0, 1.0])), "{role}");
            assert_eq!(f[1], Fetch::Value(Observed::Gauge(vec![2000.0])), "{role}");
            match &f[2] {
                Fetch::Value(Observed::Gauge(v)) => {
                    assert!(v.len() == 1 && (v[0] - 0.1).abs() < 1e-6, "{v:?}")
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(&f[3], Fetch::NoData(m) if m.contains("only NaN")), "{:?}", f[3]);
            assert!(matches!(&f[4], Fetch::NoData(m) if m.contains("no series for")), "{:?}", f[4]);
            assert!(
                matches!(&f[5], Fetch::Error(m) if m.contains("bad_data") && m.contains("problem in the rule")),
                "{:?}",
                f[5]
            );
            assert_eq!(f[6], Fetch::Value(Observed::Gauge(vec![1000.0, 1000.0])));
        }
    });
}

#[test]
fn deployment_source_reads_both_arms_at_one_time_and_reports_backend_health() {
    let fleet = Fleet::start();
    let prom = Prometheus::start(&fleet.targets());
    prom.wait_series(r#"req_total{code="500"}"#, 4, Duration::from_secs(30));
    runtime().block_on(async {
        let tel = Arc::new(Telemetry::new());
        let client = Arc::new(PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap());
        let mut s = DeploymentSource::new(
            Source::Prometheus {
                client,
                arms: arms(),
                baseline_offset: Duration::ZERO,
            },
            "d",
            tel.clone(),
        );
        assert_eq!(s.kind(), "prometheus");
        let qs = [q(QueryKind::Gauge, "mem_bytes")];
        let f = s.fetch(&qs).await;
        assert_eq!(
            f.values[0].baseline,
            Fetch::Value(Observed::Gauge(vec![1000.0, 1000.0]))
        );
        assert_eq!(s.backend_error(), None);
        // A rule mistake is not an outage.
        let bad = [SeriesQuery {
            kind: QueryKind::Gauge,
            selector: Selector::parse("mem_bytes").unwrap(),
            divide_by: Some(Selector::parse("nope").unwrap()),
        }
        .into()];
        s.fetch(&bad).await;
        assert_eq!(s.backend_error(), None);
        // A dead backend is.
        let dead = Arc::new(PromClient::new(&PrometheusConfig::new("http://127.0.0.1:9")).unwrap());
        let mut d = DeploymentSource::new(
            Source::Prometheus {
                client: dead,
                arms: arms(),
                baseline_offset: Duration::ZERO,
            },
            "d2",
            tel.clone(),
        );
        let f = d.fetch(&qs).await;
        assert!(
            matches!(&f.values[0].canary, Fetch::Error(m) if m.contains("connection failed")),
            "{f:?}"
        );
        assert!(
            d.backend_error().is_some_and(|e| e.contains("127.0.0.1:9")),
            "{:?}",
            d.backend_error()
        );
        assert!(
            tel.encode()
                .contains("rollguard_source_errors_total{source=\"prometheus\"} 2"),
            "{}",
            tel.encode()
        );
    });
}

#[test]
fn a_path_prefix_works_and_a_missing_one_says_so() {
    let fleet = Fleet::start();
    let prom = Prometheus::start_with_prefix(&fleet.targets(), "/prometheus");
    assert!(prom.url.ends_with("/prometheus"));
    prom.wait_series("mem_bytes", 4, Duration::from_secs(30));
    runtime().block_on(async {
        let ok = PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap();
        assert_eq!(ok.instant_at("mem_bytes", now_ms()).await.unwrap().len(), 4);
        let without = PromClient::new(&PrometheusConfig::new(prom.url.trim_end_matches("/prometheus"))).unwrap();
        let e = without.instant_at("mem_bytes", now_ms()).await.unwrap_err();
        assert!(matches!(&e, QueryError::Config(m) if m.contains("HTTP 404") && m.contains("path prefix")), "{e:?}");
    });
}

/// A gateway in front of the real Prometheus that, like Mimir, requires a tenant header and
/// serves the API under `/prometheus`.
async fn tenant_gateway(upstream: String) -> String {
    let app = Router::new()
        .route(
            "/prometheus/api/v1/query",
            post(
                |State(up): State<String>, headers: HeaderMap, body: String| async move {
                    match headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()) {
                        Some("team-a") => {}
                        _ => return (StatusCode::UNAUTHORIZED, "no org id\n").into_response(),
                    }
                    let r = reqwest::Client::new()
                        .post(format!("{up}/api/v1/query"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await;
                    match r {
                        Ok(r) => (
                            StatusCode::from_u16(r.status().as_u16()).unwrap(),
                            r.text().await.unwrap_or_default(),
                        )
                            .into_response(),
                        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                    }
                },
            ),
        )
        .with_state(upstream);
    let addr = crate::support::http::serve(app).await;
    format!("http://{addr}/prometheus")
}

#[test]
fn a_tenant_header_from_a_file_reaches_a_multi_tenant_gateway() {
    let fleet = Fleet::start();
    let prom = Prometheus::start(&fleet.targets());
    prom.wait_series("mem_bytes", 4, Duration::from_secs(30));
    runtime().block_on(async {
        let gw = tenant_gateway(prom.url.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let tenant = dir.path().join("tenant");
        std::fs::write(&tenant, "team-a\n").unwrap();
        let mut cfg = PrometheusConfig::new(&gw);
        cfg.headers.insert("X-Scope-OrgID".into(), Secret::File { file: tenant.clone() });
        let c = PromClient::new(&cfg).unwrap();
        assert_eq!(c.instant_at("mem_bytes", now_ms()).await.unwrap().len(), 4);
        std::fs::write(&tenant, "team-b").unwrap();
        let e = c.instant_at("mem_bytes", now_ms()).await.unwrap_err();
        assert!(matches!(&e, QueryError::Config(m) if m.contains("HTTP 401") && m.contains("tenant header") && m.contains("no org id")), "{e:?}");
        assert!(e.is_backend(), "every deployment is affected");
    });
}

/// One request to the scripted server: the case (path prefix), the form, the headers.
type Received = (String, BTreeMap<String, String>, HeaderMap);

/// What the scripted API server received.
#[derive(Clone, Default)]
struct Script {
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Script {
    fn count(&self, case: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == case)
            .count()
    }
}

fn json(status: u16, v: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn vector(items: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": items}})
}

async fn scripted(
    State(s): State<Script>,
    UrlPath(case): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let n = {
        let mut r = s.requests.lock().unwrap();
        r.push((case.clone(), form, headers));
        r.iter().filter(|x| x.0 == case).count()
    };
    let one =
        serde_json::json!([{"metric": {"__name__": "up", "instance": "a"}, "value": [1.0, "1"]}]);
    match case.as_str() {
        "ok" => json(200, vector(one)),
        "overloaded" if n == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        "overloaded" => json(200, vector(one)),
        "down" => json(
            503,
            serde_json::json!({"status": "error", "errorType": "unavailable", "error": "ingesters unhealthy"}),
        ),
        "unprocessable" => json(
            422,
            serde_json::json!({"status": "error", "errorType": "execution", "error": "query processing would load too many samples"}),
        ),
        "unauthorized" => (StatusCode::UNAUTHORIZED, "no org id").into_response(),
        "warnings" => {
            let mut v = vector(one);
            v["warnings"] = serde_json::json!([
                "No StoreAPIs matched for this query",
                "store 10.0.0.7:10901 unavailable"
            ]);
            json(200, v)
        }
        "vmpartial" => {
            let mut v = vector(one);
            v["isPartial"] = serde_json::json!(true);
            json(200, v)
        }
        "dup" => json(
            200,
            vector(serde_json::json!([
                {"metric": {"__name__": "req_total", "instance": "a", "code": "500"}, "value": [1.0, "3"]},
                {"metric": {"__name__": "req_total", "code": "500", "instance": "a"}, "value": [1.0, "4"]}
            ])),
        ),
        "native" => json(
            200,
            vector(
                serde_json::json!([{"metric": {"__name__": "lat", "instance": "a"}, "histogram": [1.0, {"count": "3"}]}]),
            ),
        ),
        "badvalue" => json(
            200,
            vector(serde_json::json!([{"metric": {"__name__": "up"}, "value": [1.0, "lots"]}])),
        ),
        "html" => (StatusCode::OK, "<html>login page</html>").into_response(),
        "hang" => std::future::pending::<Response>().await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn script_server() -> (String, Script) {
    let s = Script::default();
    let app = Router::new()
        .route("/{case}/api/v1/query", post(scripted))
        .with_state(s.clone());
    let addr = crate::support::http::serve(app).await;
    (format!("http://{addr}"), s)
}

fn client(base: &str, case: &str, edit: impl FnOnce(&mut PrometheusConfig)) -> PromClient {
    let mut cfg = PrometheusConfig::new(&format!("{base}/{case}"));
    cfg.timeout = Duration::from_millis(800);
    edit(&mut cfg);
    PromClient::new(&cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_sent_time_timeout_params_and_credentials() {
    let (base, script) = script_server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let c = client(&base, "ok", |c| {
        c.params.insert("dedup".into(), "true".into());
        c.params.insert("partial_response".into(), "false".into());
        c.headers
            .insert("X-Scope-OrgID".into(), Secret::Inline("team-a".into()));
        c.bearer_token = Some(Secret::File {
            file: dir.path().join("token"),
        });
    });
    let samples = c
        .instant_at(r#"up{job="x"}"#, 1_700_000_000_123)
        .await
        .unwrap();
    assert_eq!(samples.len(), 1);
    let (_, form, headers) = script.requests.lock().unwrap()[0].clone();
    assert_eq!(form["query"], r#"up{job="x"}"#);
    assert_eq!(form["time"], "1700000000.123");
    assert_eq!(form["timeout"], "800ms");
    assert_eq!(
        (form["dedup"].as_str(), form["partial_response"].as_str()),
        ("true", "false")
    );
    assert_eq!(headers["x-scope-orgid"], "team-a");
    assert_eq!(headers["authorization"], "Bearer s3cret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_backs_off_as_long_as_retry_after_asks_then_resumes() {
    let (base, script) = script_server().await;
    let c = client(&base, "overloaded", |c| {
        c.max_backoff = Duration::from_secs(30)
    });
    let e = c.instant_at("up", now_ms()).await.unwrap_err();
    assert!(
        matches!(&e, QueryError::Unreachable(m) if m.contains("HTTP 429 (Retry-After 1s)")),
        "{e:?}"
    );
    // Within the wait: fail fast, without a request.
    let e = c.instant_at("up", now_ms()).await.unwrap_err();
    assert!(
        matches!(&e, QueryError::Unreachable(m) if m.contains("backing off") && m.contains("HTTP 429")),
        "{e:?}"
    );
    assert_eq!(script.count("overloaded"), 1);
    // The wait is the server's second, not our exponential guess.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.instant_at("up", now_ms()).await.unwrap().len(), 1);
    assert_eq!(script.count("overloaded"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_backoff_episode_not_one_per_query() {
    let (base, script) = script_server().await;
    let c = Arc::new(client(&base, "down", |c| {
        c.max_backoff = Duration::from_secs(30)
    }));
    let all = futures_util::future::join_all((0..10).map(|_| c.instant_at("up", now_ms()))).await;
    for e in &all {
        assert!(
            matches!(e, Err(QueryError::Unreachable(m)) if m.contains("HTTP 503") && m.contains("ingesters unhealthy")),
            "{e:?}"
        );
    }
    let sent = script.count("down");
    // Ten failures at once are one episode: the wait is 1 s, not 2^10 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(c.instant_at("up", now_ms()).await.is_err());
    assert_eq!(
        script.count("down"),
        sent + 1,
        "tried again after one second"
    );
    // The second episode waits 2 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = c.instant_at("up", now_ms()).await.unwrap_err();
    assert!(e.to_string().contains("backing off"), "{e}");
    assert_eq!(script.count("down"), sent + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_answer_is_classified() {
    let (base, _) = script_server().await;
    // The kind of error, by name, and what its message says.
    let kind = |e: &QueryError| match e {
        QueryError::Unreachable(_) => "unreachable",
        QueryError::Config(_) => "config",
        QueryError::Degraded(_) => "degraded",
        QueryError::Rejected(_) => "rejected",
        QueryError::Invalid(_) => "invalid",
    };
    let cases = [
        (
            "unprocessable",
            "degraded",
            "HTTP 422 execution: query processing would load too many samples",
        ),
        (
            "unauthorized",
            "config",
            "refused the credentials (HTTP 401: no org id)",
        ),
        ("nope", "config", "path prefix"),
        (
            "warnings",
            "degraded",
            "partial answer to `up` (No StoreAPIs matched for this query; store 10.0.0.7:10901 unavailable)",
        ),
        ("vmpartial", "degraded", "isPartial: true"),
        ("native", "invalid", "a native histogram for lat"),
        ("badvalue", "invalid", "unreadable value `lots`"),
        (
            "html",
            "invalid",
            "not the API's JSON: <html>login page</html>",
        ),
        ("hang", "unreachable", "timed out"),
    ];
    for (case, want, text) in cases {
        let e = client(&base, case, |_| {})
            .instant_at("up", now_ms())
            .await
            .unwrap_err();
        assert_eq!(kind(&e), want, "{case}: {e:?}");
        assert!(e.to_string().contains(text), "{case}: {e:?}");
    }
    // Partial answers can be accepted on purpose.
    assert_eq!(
        client(&base, "warnings", |c| c.accept_partial = true)
            .instant_at("up", now_ms())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_series_twice_for_one_instance_is_an_error_that_says_so() {
    let (base, _) = script_server().await;
    let c = client(&base, "dup", |_| {});
    let queries = [q(QueryKind::Counter, "req_total")];
    let a = c.fetch_arm(&queries, &[], "canary", now_ms()).await;
    let f = promql::collect(&mut rollguard::series::ArmCollector::new(), &queries, &a);
    assert!(
        matches!(&f[0], Fetch::Error(m) if m.contains(r#"a: series req_total{code="500",instance="a"} appears more than once"#)),
        "{f:?}"
    );
}

fn config(text: &str) -> Result<rollguard::config::Config, Vec<String>> {
    parse_config(
        Path::new("/etc/rollguard/config.yaml"),
        &format!("rules_dir: rules\n{text}"),
    )
    .map_err(|d| d.iter().map(|x| x.to_string()).collect())
}

#[test]
fn prometheus_and_scrape_settings_parse_and_bad_ones_are_located() {
    let c = config(
        "scrape:\n  honor_timestamps: false\nprometheus:\n  url: http://mimir:8080/prometheus/\n  headers:\n    X-Scope-OrgID: {file: tenant}\n  params: {dedup: 'true'}\n  concurrency: 4\n  eval_delay: 30s\n  max_backoff: 1m\n  accept_partial: true\n",
    )
    .unwrap();
    let p = c.prometheus.unwrap();
    assert_eq!(p.url, "http://mimir:8080/prometheus");
    assert_eq!(
        (p.concurrency, p.eval_delay, p.max_backoff, p.accept_partial),
        (4, Duration::from_secs(30), Duration::from_secs(60), true)
    );
    assert_eq!(p.params["dedup"], "true");
    assert!(!c.scrape.honor_timestamps);
    let defaults = config("prometheus:\n  url: http://p:9090\n")
        .unwrap()
        .prometheus
        .unwrap();
    assert_eq!(defaults, PrometheusConfig::new("http://p:9090"));

    let e = config("prometheus:\n  url: http://p:9090/api/v1/query\n").unwrap_err();
    assert!(e[0].contains("config.yaml:3:8: `prometheus.url` is the base URL; rollguard appends /api/v1/query itself (use `http://p:9090`)"), "{e:?}");
    let e = config("prometheus:\n  url: http://p/x?a=b\n  concurrency: 0\n  eval_delay: 1h\n  params: {time: '1'}\n").unwrap_err();
    assert_eq!(e.len(), 4, "{e:#?}");
    for want in [
        "`prometheus.concurrency` must be between 1 and 1000",
        "`prometheus.eval_delay` must be at most 10m",
        "must not set `time`",
    ] {
        assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
    }
}

/// A range query answers, at each step, what an instant query at that time answers: the
/// backtest from Prometheus sees what the daemon saw.
#[test]
fn range_answers_equal_instant_answers_at_every_step() {
    let (_fleet, prom) = scraped_fleet();
    runtime().block_on(async {
        let client = PromClient::new(&PrometheusConfig::new(&prom.url)).unwrap();
        let queries = [
            q(QueryKind::Counter, r#"req_total{code=~"5.."}"#),
            q(QueryKind::Counter, "req_total"),
            // A gauge: its samples' times come from `timestamp()`, over a range as well.
            q(QueryKind::Gauge, "mem_bytes"),
            MetricQuery::Promql(PromqlQuery {
                text: "sum by (instance) (mem_bytes{ {{arm}} }) / 1000".into(),
            }),
        ];
        let end = now_ms() / 1000 * 1000 - 1000;
        let range = client
            .fetch_arm_range(&queries, &arms().canary, "canary", (end - 4000, end, 1000))
            .await;
        assert_eq!(range.len(), 5);
        assert!(!range[4].1.instances.is_empty());
        let sorted = |a: &promql::ArmAnswer| {
            let mut i = a.instances.clone();
            for (_, s) in &mut i {
                s.sort_by(|x, y| (&x.name, &x.labels).cmp(&(&y.name, &y.labels)));
            }
            let mut w: Vec<_> = a.written.values().cloned().collect();
            w.sort_by(|x, y| x.0.cmp(&y.0));
            (i, w)
        };
        for (t, from_range) in &range {
            let instant = client
                .fetch_arm(&queries, &arms().canary, "canary", *t)
                .await;
            assert_eq!(sorted(from_range), sorted(&instant), "at {t}");
        }
        let gauges = range[4].1.instances.iter().flat_map(|(_, s)| s);
        let gauges: Vec<_> = gauges.filter(|s| s.name == "mem_bytes").collect();
        assert_eq!(gauges.len(), 2);
        assert!(
            gauges.iter().all(|s| s.timestamp_ms.is_some()),
            "{gauges:?}"
        );
        // More steps than Prometheus gives in one answer (11 000) are asked for in parts.
        let fine = client
            .range_at(
                r#"req_total{code="500",role="canary"}"#,
                end - 12_000,
                end,
                1,
            )
            .await
            .unwrap();
        // Every millisecond from the first scrape on, across the parts' seam at `end - 500`.
        let first = *fine.keys().next().unwrap();
        assert!(first < end - 500, "{first} {end}");
        assert_eq!(fine.len() as i64, end - first + 1);
        assert_eq!(fine[&end].len(), 2, "both canary instances at the end");
        // A range query the server rejects fails every step of that query, as a rule problem.
        let bad = [MetricQuery::Promql(PromqlQuery {
            text: "rate(req_total{ {{arm}} })".into(),
        })];
        let r = client
            .fetch_arm_range(&bad, &arms().canary, "canary", (end - 2000, end, 1000))
            .await;
        assert_eq!(r.len(), 3);
        for (_, a) in &r {
            let f = promql::collect(&mut rollguard::series::ArmCollector::new(), &bad, a);
            assert!(
                matches!(&f[0], Fetch::Error(m) if m.contains("problem in the rule")),
                "{f:?}"
            );
        }
    });
}

/// A Prometheus-compatible backend that answers with `warnings` (Thanos and Mimir report
/// missing stores that way; Prometheus 2.50+ annotates queries, which Debian's 2.42 cannot
/// yet, so this one backend is a local server answering the documented shape). An annotation
/// is counted and its answer used; any other warning is a partial answer, not judged.
#[test]
fn annotations_are_counted_and_used_but_partial_answers_are_not_judged() {
    async fn backend(warning: &'static str) -> String {
        let app = Router::new().route(
            "/api/v1/query",
            axum::routing::any(move || async move {
                axum::Json(serde_json::json!({
                    "status": "success",
                    "data": {"resultType": "vector",
                             "result": [{"metric": {"instance": "a"}, "value": [1, "5"]}]},
                    "warnings": [warning],
                }))
            }),
        );
        format!("http://{}", crate::support::http::serve(app).await)
    }
    runtime().block_on(async {
        let annotated = backend(
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"x\"",
        )
        .await;
        let client = PromClient::new(&PrometheusConfig::new(&annotated)).unwrap();
        let got = client.instant_at("rate(x[1m])", now_ms()).await;
        assert_eq!(got.map(|v| v.len()), Ok(1), "an annotated answer is used");
        assert_eq!(client.warnings_seen(), 1);

        let partial = backend("No StoreAPIs matched for this query").await;
        let client = PromClient::new(&PrometheusConfig::new(&partial)).unwrap();
        let e = client.instant_at("x", now_ms()).await.unwrap_err();
        assert!(matches!(&e, QueryError::Degraded(m) if m.contains("partial answer") && m.contains("No StoreAPIs")), "{e:?}");
        assert_eq!(client.warnings_seen(), 0);
    });
}

//! Simulated targets serving `/metrics` on 127.0.0.1 from the test or bench process.
//!
//! [`FleetServer`]: one simulated fleet (`rollguard::demo::Fleet`: baselines and canaries,
//! a fault of the test's choosing, simulated time running faster than the clock).
//!
//! [`Farm`]: the targets of many deployments for the scale and reaction benches (the daemon
//! under test is a separate process, so the farm's CPU is not counted against it).
//!
//! The farm's `GET /d/{deployment}/{role}/{instance}/metrics` answers a Prometheus text body
//! of about 200 series (request counters by route and code, a latency histogram per route,
//! memory and a dozen process gauges), whose counters advance with wall time at 50 requests
//! per second per instance. The bodies are re-rendered once a second and shared by every
//! target (cheap, static-but-changing); a deployment marked faulty gets a canary body whose
//! 5xx share jumps from 1 % to 10 % at the moment [`Farm::start_fault`] is called.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const ROUTES: usize = 10;
const RPS: f64 = 50.0;
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Cumulative share of requests at or below each bucket edge.
const CDF: [f64; 12] = [
    0.02, 0.06, 0.22, 0.50, 0.78, 0.94, 0.985, 0.996, 0.999, 0.9997, 0.9999, 1.0,
];

struct Bodies {
    baseline: Bytes,
    good: Bytes,
    bad: Bytes,
}

struct Shared {
    start: Instant,
    bodies: RwLock<Arc<Bodies>>,
    faulty: RwLock<HashSet<usize>>,
    /// Seconds since `start` at which the fault began, if it has.
    fault_at: RwLock<Option<f64>>,
    requests: std::sync::atomic::AtomicU64,
}

/// The check the benches' rules judge the farm's targets with first (a `checks:` entry): the
/// 5xx share of `job="api"`, which [`Farm::start_fault`] raises from 1 % to 10 %.
pub const FARM_ERROR_RATIO_CHECK: &str = r#"  - name: error-ratio
    kind: ratio
    errors: 'http_requests_total{job="api",code=~"5.."}'
    requests: 'http_requests_total{job="api"}'
    tolerance: 1.1
"#;

/// The running farm; dropping it stops the server.
pub struct Farm {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

/// One instance's body at `t` seconds, with extra 5xx from `fault` (seconds since start).
fn render(instance_rss: f64, t: f64, fault_since: Option<f64>) -> Bytes {
    let mut s = String::with_capacity(24 * 1024);
    let per_route = RPS / ROUTES as f64 * t;
    let extra = fault_since.map_or(0.0, |f| (t - f).max(0.0) * RPS / ROUTES as f64 * 0.09);
    s.push_str("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
    for r in 0..ROUTES {
        for (code, share) in [
            ("200", 0.975),
            ("404", 0.015),
            ("500", 0.008),
            ("503", 0.002),
        ] {
            let mut v = per_route * share;
            if code == "500" {
                v += extra;
            }
            let _ = writeln!(
                s,
                "http_requests_total{{job=\"api\",route=\"/api/v1/r{r}/{{id}}\",method=\"GET\",code=\"{code}\"}} {v:.0}"
            );
        }
    }
    s.push_str("# HELP http_request_duration_seconds Latency.\n# TYPE http_request_duration_seconds histogram\n");
    for r in 0..ROUTES {
        let n = (per_route + extra).floor();
        for (le, f) in BUCKETS.iter().zip(CDF) {
            let _ = writeln!(
                s,
                "http_request_duration_seconds_bucket{{job=\"api\",route=\"/api/v1/r{r}/{{id}}\",le=\"{le}\"}} {:.0}",
                (n * f).floor()
            );
        }
        let _ = writeln!(
            s,
            "http_request_duration_seconds_sum{{job=\"api\",route=\"/api/v1/r{r}/{{id}}\"}} {:.3}\nhttp_request_duration_seconds_count{{job=\"api\",route=\"/api/v1/r{r}/{{id}}\"}} {n:.0}",
            n * 0.061
        );
    }
    let rss = instance_rss + 4.0e6 * (t / 47.0).sin();
    let _ = writeln!(
        s,
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss:.0}"
    );
    for (name, v) in [
        ("process_open_fds", 87.0),
        ("process_max_fds", 1_048_576.0),
        ("process_virtual_memory_bytes", 1.9e9),
        ("go_goroutines", 143.0),
        ("go_threads", 14.0),
        ("go_memstats_heap_inuse_bytes", 9.3e7),
        ("go_memstats_heap_objects", 412_345.0),
        ("hikaricp_connections_active", 6.0),
        ("hikaricp_connections_max", 20.0),
        ("hikaricp_connections_pending", 0.0),
        ("process_start_time_seconds", 1.767e9),
    ] {
        let _ = writeln!(s, "# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(
        s,
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.2}",
        t * 0.21
    );
    Bytes::from(s)
}

fn rebuild(sh: &Shared) {
    let t = sh.start.elapsed().as_secs_f64().floor();
    let fault = *sh.fault_at.read().unwrap_or_else(|p| p.into_inner());
    let b = Bodies {
        baseline: render(2.1e8, t, None),
        good: render(2.1e8, t, None),
        bad: render(2.1e8, t, fault),
    };
    *sh.bodies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(b);
}

async fn serve(
    State(sh): State<Arc<Shared>>,
    Path((dep, role, _inst)): Path<(usize, String, usize)>,
) -> Response {
    sh.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bodies = sh.bodies.read().unwrap_or_else(|p| p.into_inner()).clone();
    let body = match role.as_str() {
        "baseline" => bodies.baseline.clone(),
        "canary"
            if sh
                .faulty
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&dep) =>
        {
            bodies.bad.clone()
        }
        "canary" => bodies.good.clone(),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

impl Farm {
    pub fn start() -> Farm {
        let rt = super::http::runtime();
        let shared = Arc::new(Shared {
            start: Instant::now(),
            bodies: RwLock::new(Arc::new(Bodies {
                baseline: Bytes::new(),
                good: Bytes::new(),
                bad: Bytes::new(),
            })),
            faulty: RwLock::new(HashSet::new()),
            fault_at: RwLock::new(None),
            requests: std::sync::atomic::AtomicU64::new(0),
        });
        rebuild(&shared);
        let sh = shared.clone();
        let addr = rt.block_on(async move {
            let app = axum::Router::new()
                .route("/d/{dep}/{role}/{inst}/metrics", axum::routing::get(serve))
                .with_state(sh.clone());
            let addr = super::http::serve(app).await;
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    rebuild(&sh);
                }
            });
            addr
        });
        Farm {
            addr,
            shared,
            _rt: rt,
        }
    }

    /// The four targets (two per arm) of deployment `dep`.
    pub fn targets(&self, dep: usize, role: &str) -> Vec<String> {
        (0..2)
            .map(|i| format!("http://{}/d/{dep}/{role}/{i}/metrics", self.addr))
            .collect()
    }

    /// Size of one body, for the report.
    pub fn body_len(&self) -> usize {
        self.shared
            .bodies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .baseline
            .len()
    }

    /// Number of series in one body.
    pub fn series(&self) -> usize {
        let b = self
            .shared
            .bodies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .baseline
            .clone();
        String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count()
    }

    pub fn requests(&self) -> u64 {
        self.shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks deployments whose canary goes bad at the next [`Farm::start_fault`].
    pub fn set_faulty(&self, deps: impl IntoIterator<Item = usize>) {
        let mut f = self
            .shared
            .faulty
            .write()
            .unwrap_or_else(|p| p.into_inner());
        f.clear();
        f.extend(deps);
    }

    /// The faulty canaries' 5xx share goes from 1 % to 10 % now. Returns the wall time.
    /// Bodies are re-rendered at once, so the next scrape sees the fault.
    pub fn start_fault(&self) -> f64 {
        let at = super::measure::wall();
        *self
            .shared
            .fault_at
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.shared.start.elapsed().as_secs_f64());
        rebuild(&self.shared);
        at
    }

    pub fn clear_fault(&self) {
        *self
            .shared
            .fault_at
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.set_faulty([]);
        rebuild(&self.shared);
    }
}

/// A simulated fleet served over HTTP on its own runtime thread.
pub struct FleetServer {
    pub addr: std::net::SocketAddr,
    pub fleet: rollguard::demo::Fleet,
    _rt: tokio::runtime::Runtime,
}

impl FleetServer {
    /// A fleet whose canaries return 8× the baseline's errors from the start (simulated time
    /// at 20× speed): the rollback case of most tests.
    pub fn bad(seed: u64) -> FleetServer {
        Self::failing_from(0.0, seed, 20.0)
    }

    /// A fleet whose canaries return 8× the baseline's errors from simulated second
    /// `fault_at_s` on, with simulated time at `speed`× the clock's.
    pub fn failing_from(fault_at_s: f64, seed: u64, speed: f64) -> FleetServer {
        Self::start(
            rollguard::sim::Scenario {
                fault: rollguard::sim::Fault::ErrorRatio { factor: 8.0 },
                fault_at_s,
                seed,
                ..rollguard::sim::Scenario::default()
            },
            speed,
        )
    }

    /// A fleet with no fault (simulated time at 50× speed): the promotion case.
    pub fn good(seed: u64) -> FleetServer {
        Self::healthy(seed, 50.0)
    }

    /// A fleet with no fault, simulated time at `speed`× the clock's.
    pub fn healthy(seed: u64, speed: f64) -> FleetServer {
        Self::start(
            rollguard::sim::Scenario {
                seed,
                ..rollguard::sim::Scenario::default()
            },
            speed,
        )
    }

    pub fn start(scenario: rollguard::sim::Scenario, speed: f64) -> FleetServer {
        let rt = super::http::runtime();
        let fleet = rt.block_on(async { rollguard::demo::Fleet::new(&scenario, speed) });
        let addr = rt.block_on(fleet.serve()).expect("serve fleet");
        FleetServer {
            addr,
            fleet,
            _rt: rt,
        }
    }

    pub fn target(&self, instance: &str) -> String {
        format!("http://{}/{instance}/metrics", self.addr)
    }

    /// A deployment of `checkout` judged by RATIO_RULE: this fleet's two baselines (v1)
    /// against the `canaries` targets (v2).
    pub fn deployment(&self, id: &str, canaries: &[String]) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "service": "checkout",
            "analysis": "errors",
            "baseline": { "targets": [self.target("baseline-0"), self.target("baseline-1")], "version": "v1" },
            "canary": { "targets": canaries, "version": "v2" }
        })
    }

    /// The fleet's two canaries, as targets.
    pub fn canaries(&self) -> Vec<String> {
        vec![self.target("canary-0"), self.target("canary-1")]
    }
}

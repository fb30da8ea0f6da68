//! The simulated fleet: instances of an HTTP service whose metrics behave like real ones
//! (request counters by code and route, a latency histogram, RSS with a GC sawtooth, a
//! database connection pool, upstream calls that can be rate limited), with faults and
//! nuisances that can be switched on at a given time.
//!
//! One model serves three purposes: the demo serves it over HTTP, `rollguard simulate`
//! writes recorded runs for `backtest`, and the judge's evaluation (docs/judge.md) replays
//! hundreds of those runs. Everything is deterministic for a seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::stats::rng::Rng;

/// Classic Prometheus default latency buckets (seconds).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Pool acquire-time buckets (seconds).
pub const ACQUIRE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const ROUTES: [(&str, f64); 3] = [
    ("/api/v1/cart/{id}", 0.6),
    ("/api/v1/checkout", 0.3),
    ("/api/v1/search?q=a,b", 0.1),
];
const MIB: f64 = 1024.0 * 1024.0;

/// Live memory per request per second, with `Nuisances::load_memory`.
const LOAD_MEMORY_PER_RPS: f64 = 0.5 * MIB;

/// A regression the canary may carry, starting at `Scenario::fault_at_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    None,
    /// 5xx ratio multiplied by `factor`.
    ErrorRatio {
        factor: f64,
    },
    /// Median latency multiplied by `factor`.
    LatencyMedian {
        factor: f64,
    },
    /// A `share` of requests become `factor` times slower (tail only).
    LatencyTail {
        share: f64,
        factor: f64,
    },
    /// RSS grows by this many MiB per minute.
    Leak {
        mib_per_min: f64,
    },
    /// The database pool saturates: every connection in use, acquire waits of ~0.5 s.
    PoolExhaustion,
    /// Connections taken from the pool and never given back (a leak on an error path), this
    /// many per minute: connections in use climb long before the pool runs dry; once the
    /// leaked ones leave too few for the load, requests wait for a connection.
    ConnectionLeak {
        per_min: f64,
    },
    /// Upstream answers 429 to this share of calls.
    RateLimit {
        share: f64,
    },
}

/// Disturbances that must not cause a rollback.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Nuisances {
    /// One instance per arm restarts (counters reset, RSS drops, 30 s without scrapes).
    #[serde(default)]
    pub restarts: bool,
    /// 3 % of scrapes are missing.
    #[serde(default)]
    pub gaps: bool,
    /// Gauges sometimes read NaN.
    #[serde(default)]
    pub nan: bool,
    /// Traffic triples for five minutes in both arms.
    #[serde(default)]
    pub surge: bool,
    /// Both arms fail 30 % of requests for two minutes (a shared dependency outage).
    #[serde(default)]
    pub shared_outage: bool,
    /// The canary's traffic share steps to 50 % at 4 minutes (a background analysis that
    /// runs across a rollout's weight steps), from the scenario's `canary_share`.
    #[serde(default)]
    pub weight_step: bool,
    /// The baseline has run for a day (the stable pods of an in-place canary), so only the
    /// canary warms up after the deployment.
    #[serde(default)]
    pub old_baseline: bool,
    /// Live memory follows the instance's load (buffers, connections, a heap sized to the
    /// allocation rate): the RSS floor rises with requests per second, within a minute. At an
    /// uneven split the arms' floors differ, and a weight step or the load wave moves them.
    #[serde(default)]
    pub load_memory: bool,
}

/// A recorded run to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub duration_s: f64,
    pub scrape_interval_s: f64,
    pub instances_per_arm: usize,
    /// Requests per second over both arms.
    pub total_rps: f64,
    /// Canary's share of requests (0-1).
    pub canary_share: f64,
    /// Baseline 5xx ratio.
    pub error_ratio: f64,
    /// Upstream 429 share in normal operation.
    pub upstream_429: f64,
    pub fault: Fault,
    pub fault_at_s: f64,
    #[serde(default)]
    pub nuisances: Nuisances,
    /// How different the arms' hosts are, as a relative latency offset (real fleets are never
    /// identical; A/A runs use a small value).
    #[serde(default)]
    pub host_jitter: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "aa".into(),
            seed: 1,
            duration_s: 1800.0,
            scrape_interval_s: 10.0,
            instances_per_arm: 2,
            total_rps: 120.0,
            canary_share: 0.5,
            error_ratio: 0.01,
            upstream_429: 0.002,
            fault: Fault::None,
            fault_at_s: 120.0,
            nuisances: Nuisances::default(),
            host_jitter: 0.02,
        }
    }
}

/// One sample: (family, sample name, labels, value).
pub type SampleRow = (String, String, Vec<(String, String)>, f64);

/// Unix time of a simulated run's t = 0 (2026-01-01T00:00:00Z): recordings are stamped
/// from it, and instances report their start time against it.
const RECORDING_START: f64 = 1_767_225_600.0;

/// A recorded series: (sample name, labels, (time, value) points).
type RecordedSeries = (String, Vec<(String, String)>, Vec<(f64, f64)>);

/// One simulated instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
    pub canary: bool,
    rng: Rng,
    t: f64,
    rps: f64,
    error_ratio: f64,
    upstream_429: f64,
    latency_median: f64,
    latency_sigma: f64,
    fault: Fault,
    fault_at: f64,
    nuisances: Nuisances,
    gc_period: f64,
    gc_phase: f64,
    gc_amplitude: f64,
    rss_base: f64,
    restart_at: Option<f64>,
    restarted: bool,
    /// When the traffic share steps, and the instance's requests per second from then.
    rps_step: Option<(f64, f64)>,
    started_at: f64,
    // counters
    requests: BTreeMap<(usize, &'static str), f64>,
    latency: Vec<f64>,
    latency_sum: f64,
    latency_count: f64,
    upstream: BTreeMap<&'static str, f64>,
    acquire: Vec<f64>,
    acquire_sum: f64,
    acquire_count: f64,
    pool_in_use: f64,
    pool_pending: f64,
    leak: f64,
    /// Live memory that follows load (`Nuisances::load_memory`), in bytes.
    load_memory: f64,
    /// Connections leaked so far (the `ConnectionLeak` fault).
    leaked_connections: f64,
}

impl Instance {
    /// An instance of `scenario`; `index` numbers instances within the arm.
    pub fn new(s: &Scenario, canary: bool, index: usize) -> Instance {
        let n = s.instances_per_arm.max(1) as f64;
        let share_of = |canary_share: f64| {
            if canary {
                canary_share
            } else {
                1.0 - canary_share
            }
        };
        let share = share_of(s.canary_share);
        let mut rng = Rng::new(
            s.seed
                .wrapping_mul(1_000_003)
                .wrapping_add(index as u64 * 2 + u64::from(canary)),
        );
        let jitter = 1.0 + s.host_jitter * (rng.uniform() * 2.0 - 1.0);
        let restart_at = (s.nuisances.restarts && index == 0)
            .then(|| s.duration_s * (0.35 + 0.1 * f64::from(u8::from(canary))));
        Instance {
            name: format!("{}-{index}", if canary { "canary" } else { "baseline" }),
            canary,
            t: 0.0,
            rps: s.total_rps * share / n,
            error_ratio: s.error_ratio,
            upstream_429: s.upstream_429,
            latency_median: 0.08 * jitter,
            latency_sigma: 0.55,
            fault: if canary { s.fault.clone() } else { Fault::None },
            fault_at: s.fault_at_s,
            nuisances: s.nuisances.clone(),
            gc_period: 60.0 + rng.uniform() * 60.0,
            gc_phase: rng.uniform(),
            gc_amplitude: 24.0 * MIB * (0.8 + 0.4 * rng.uniform()),
            rss_base: 140.0 * MIB * (0.97 + 0.06 * rng.uniform()),
            restart_at,
            restarted: false,
            rps_step: s
                .nuisances
                .weight_step
                .then(|| (240.0, s.total_rps * share_of(0.5) / n)),
            started_at: if s.nuisances.old_baseline && !canary {
                -86_400.0
            } else {
                0.0
            },
            requests: BTreeMap::new(),
            latency: vec![0.0; LATENCY_BUCKETS.len()],
            latency_sum: 0.0,
            latency_count: 0.0,
            upstream: BTreeMap::new(),
            acquire: vec![0.0; ACQUIRE_BUCKETS.len()],
            acquire_sum: 0.0,
            acquire_count: 0.0,
            pool_in_use: 0.0,
            pool_pending: 0.0,
            leak: 0.0,
            load_memory: if s.nuisances.load_memory {
                LOAD_MEMORY_PER_RPS * s.total_rps * share / n
            } else {
                0.0
            },
            leaked_connections: 0.0,
            rng,
        }
    }

    /// Serves `rps` requests per second from now on (a new traffic split).
    pub fn set_rps(&mut self, rps: f64) {
        self.rps = rps;
        self.rps_step = None;
    }

    /// Removes the instance's fault (the demo's rollback switches the canary back).
    pub fn clear_fault(&mut self) {
        self.fault = Fault::None;
    }

    fn faulty(&self) -> bool {
        self.t >= self.fault_at
    }

    /// Whether the instance is down (restarting) at its current time.
    pub fn down(&self) -> bool {
        self.restart_at
            .is_some_and(|r| self.t >= r && self.t < r + 30.0)
    }

    /// Advances the simulation to time `t` (seconds) in steps of at most one second.
    pub fn advance_to(&mut self, t: f64) {
        while self.t < t {
            let dt = (t - self.t).min(1.0);
            self.step(dt);
            self.t += dt;
        }
    }

    fn step(&mut self, dt: f64) {
        if let Some(r) = self.restart_at {
            if self.t >= r && !self.restarted {
                self.restarted = true;
                self.requests.clear();
                self.latency.iter_mut().for_each(|x| *x = 0.0);
                self.latency_sum = 0.0;
                self.latency_count = 0.0;
                self.upstream.clear();
                self.acquire.iter_mut().for_each(|x| *x = 0.0);
                self.acquire_sum = 0.0;
                self.acquire_count = 0.0;
                self.leak = 0.0;
                self.leaked_connections = 0.0;
                self.started_at = r + 30.0;
            }
            if self.down() {
                return;
            }
        }
        let mut rps = match self.rps_step {
            Some((at, stepped)) if self.t >= at => stepped,
            _ => self.rps,
        };
        if self.nuisances.surge && self.t >= 900.0 && self.t < 1200.0 {
            rps *= 3.0;
        }
        // A gentle load wave, shared by both arms.
        rps *= 1.0 + 0.2 * (self.t / 600.0 * std::f64::consts::TAU).sin();
        if self.nuisances.load_memory {
            let want = LOAD_MEMORY_PER_RPS * rps;
            self.load_memory += (want - self.load_memory) * (dt / 60.0).min(1.0);
        }
        let n = self.rng.poisson(rps * dt) as f64;
        let mut err = self.error_ratio;
        if self.faulty()
            && let Fault::ErrorRatio { factor } = self.fault
        {
            err *= factor;
        }
        let outage = self.nuisances.shared_outage && self.t >= 600.0 && self.t < 720.0;
        if outage {
            err = 0.3;
        }
        let pool_exhausted = self.faulty() && self.fault == Fault::PoolExhaustion;
        if pool_exhausted {
            err = (err + 0.02).min(1.0);
        }
        for (ri, (_, w)) in ROUTES.iter().enumerate() {
            let nr = self.rng.binomial(n as u64, *w) as f64;
            let e5 = self.rng.binomial(nr as u64, err.clamp(0.0, 1.0)) as f64;
            let e4 = self.rng.binomial((nr - e5) as u64, 0.03) as f64;
            let e503 = self.rng.binomial(e5 as u64, 0.3) as f64;
            *self.requests.entry((ri, "500")).or_default() += e5 - e503;
            *self.requests.entry((ri, "503")).or_default() += e503;
            *self.requests.entry((ri, "404")).or_default() += e4;
            *self.requests.entry((ri, "200")).or_default() += nr - e5 - e4;
        }
        // Latency: log-normal, with the fault's changes; bucket counts by sequential binomials.
        let (mut med, mut tail_share, mut tail_factor) = (self.latency_median, 0.0, 1.0);
        if self.faulty() {
            match self.fault {
                Fault::LatencyMedian { factor } => med *= factor,
                Fault::LatencyTail { share, factor } => {
                    tail_share = share;
                    tail_factor = factor;
                }
                Fault::PoolExhaustion => med += 0.4,
                _ => {}
            }
        }
        let slow = self.rng.binomial(n as u64, tail_share) as f64;
        self.observe_lognormal(n - slow, med, self.latency_sigma, false);
        self.observe_lognormal(slow, med * tail_factor, self.latency_sigma, false);
        // Upstream calls: one per request; 429 share rises under the rate-limit fault.
        let mut r429 = self.upstream_429;
        if self.faulty()
            && let Fault::RateLimit { share } = self.fault
        {
            r429 = share;
        }
        let limited = self.rng.binomial(n as u64, r429) as f64;
        *self.upstream.entry("429").or_default() += limited;
        *self.upstream.entry("200").or_default() += n - limited;
        // Pool: in-use follows load; acquire waits are tiny unless exhausted.
        let max = 20.0;
        if pool_exhausted {
            self.pool_in_use = max;
            self.pool_pending = 5.0 + self.rng.poisson(10.0) as f64;
            self.observe_lognormal(n, 0.5, 0.4, true);
        } else {
            let load = (rps / 60.0).clamp(0.05, 0.9);
            // What the requests need now, next to the connections leaked so far.
            let demand = self.rng.binomial(max as u64, load * 0.4) as f64;
            let held = self.leaked_connections.floor().min(max);
            let short = (held + demand - max).max(0.0);
            self.pool_in_use = (held + demand).min(max);
            if short > 0.0 {
                // Requests beyond what is free wait for a connection.
                self.pool_pending = short + self.rng.poisson(short) as f64;
                let waiting = self.rng.binomial(n as u64, (short / demand).min(1.0)) as f64;
                self.observe_lognormal(n - waiting, 0.0008, 0.6, true);
                self.observe_lognormal(waiting, 0.25, 0.5, true);
            } else {
                self.pool_pending = 0.0;
                self.observe_lognormal(n, 0.0008, 0.6, true);
            }
        }
        if self.faulty()
            && let Fault::Leak { mib_per_min } = self.fault
        {
            self.leak += mib_per_min * MIB / 60.0 * dt;
        }
        if self.faulty()
            && let Fault::ConnectionLeak { per_min } = self.fault
        {
            self.leaked_connections += per_min / 60.0 * dt;
        }
    }

    fn observe_lognormal(&mut self, n: f64, median: f64, sigma: f64, acquire: bool) {
        if n <= 0.0 {
            return;
        }
        let (buckets, counts): (&[f64], &mut Vec<f64>) = if acquire {
            (&ACQUIRE_BUCKETS, &mut self.acquire)
        } else {
            (&LATENCY_BUCKETS, &mut self.latency)
        };
        let mut left = n as u64;
        let mut prev = 0.0;
        let mut cum = 0.0;
        let mut sum = 0.0;
        for (i, &b) in buckets.iter().enumerate() {
            let p_le = normal_cdf((b / median).ln() / sigma);
            let p_here = ((p_le - prev) / (1.0 - prev)).clamp(0.0, 1.0);
            let k = self.rng.binomial(left, p_here);
            left -= k;
            cum += k as f64;
            counts[i] += cum;
            sum += k as f64 * (b * 0.75).max(median.min(b));
            prev = p_le;
        }
        sum += left as f64 * buckets[buckets.len() - 1] * 1.5;
        if acquire {
            self.acquire_sum += sum;
            self.acquire_count += n;
        } else {
            self.latency_sum += sum;
            self.latency_count += n;
        }
    }

    fn rss(&mut self) -> f64 {
        let up = self.t - self.started_at;
        let phase = ((up / self.gc_period) + self.gc_phase).fract();
        let warm = (1.0 - (-up / 120.0).exp()) * 80.0 * MIB;
        self.rss_base
            + warm
            + phase * self.gc_amplitude
            + self.leak
            + self.load_memory
            + self.rng.normal() * 0.5 * MIB
    }

    /// Every sample of the instance now: (name, labels, value), in family order.
    pub fn samples(&mut self) -> Vec<SampleRow> {
        let mut out = Vec::new();
        let job = [
            ("job".to_string(), "api".to_string()),
            ("instance".to_string(), self.name.clone()),
        ];
        let base = |extra: &[(&str, String)]| {
            let mut v: Vec<(String, String)> = job.to_vec();
            v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.clone())));
            v
        };
        for ((ri, code), v) in &self.requests {
            out.push((
                "http_requests".into(),
                "http_requests_total".into(),
                base(&[("route", ROUTES[*ri].0.into()), ("code", (*code).into())]),
                *v,
            ));
        }
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            out.push((
                "http_request_duration_seconds".into(),
                "http_request_duration_seconds_bucket".into(),
                base(&[("le", fmt_le(*b))]),
                self.latency[i],
            ));
        }
        out.push((
            "http_request_duration_seconds".into(),
            "http_request_duration_seconds_bucket".into(),
            base(&[("le", "+Inf".into())]),
            self.latency_count,
        ));
        out.push((
            "http_request_duration_seconds".into(),
            "http_request_duration_seconds_sum".into(),
            base(&[]),
            self.latency_sum,
        ));
        out.push((
            "http_request_duration_seconds".into(),
            "http_request_duration_seconds_count".into(),
            base(&[]),
            self.latency_count,
        ));
        for (code, v) in &self.upstream {
            out.push((
                "http_client_requests".into(),
                "http_client_requests_total".into(),
                base(&[("upstream", "payments".into()), ("code", (*code).into())]),
                *v,
            ));
        }
        out.push((
            "process_start_time_seconds".into(),
            "process_start_time_seconds".into(),
            base(&[]),
            RECORDING_START + self.started_at,
        ));
        let nan = self.nuisances.nan && self.rng.uniform() < 0.02;
        let rss = if nan { f64::NAN } else { self.rss() };
        out.push((
            "process_resident_memory_bytes".into(),
            "process_resident_memory_bytes".into(),
            base(&[]),
            rss.round(),
        ));
        out.push((
            "hikaricp_connections_active".into(),
            "hikaricp_connections_active".into(),
            base(&[("pool", "main".into())]),
            self.pool_in_use,
        ));
        out.push((
            "hikaricp_connections_max".into(),
            "hikaricp_connections_max".into(),
            base(&[("pool", "main".into())]),
            20.0,
        ));
        out.push((
            "hikaricp_connections_pending".into(),
            "hikaricp_connections_pending".into(),
            base(&[("pool", "main".into())]),
            self.pool_pending,
        ));
        for (i, b) in ACQUIRE_BUCKETS.iter().enumerate() {
            out.push((
                "hikaricp_connections_acquire_seconds".into(),
                "hikaricp_connections_acquire_seconds_bucket".into(),
                base(&[("pool", "main".into()), ("le", fmt_le(*b))]),
                self.acquire[i],
            ));
        }
        out.push((
            "hikaricp_connections_acquire_seconds".into(),
            "hikaricp_connections_acquire_seconds_bucket".into(),
            base(&[("pool", "main".into()), ("le", "+Inf".into())]),
            self.acquire_count,
        ));
        out.push((
            "hikaricp_connections_acquire_seconds".into(),
            "hikaricp_connections_acquire_seconds_count".into(),
            base(&[("pool", "main".into())]),
            self.acquire_count,
        ));
        out
    }

    /// The instance's `/metrics` body in the Prometheus text format 0.0.4.
    pub fn exposition(&mut self) -> String {
        let mut s = String::new();
        let mut last_family = String::new();
        for (family, name, labels, v) in self.samples() {
            if family != last_family {
                let kind = family_type(&family);
                let tname = if kind == "counter" {
                    format!("{family}_total")
                } else {
                    family.clone()
                };
                let _ = writeln!(
                    s,
                    "# HELP {tname} Simulated {family}.\n# TYPE {tname} {kind}"
                );
                last_family = family;
            }
            let _ = writeln!(s, "{name}{} {}", render_labels(&labels), fmt_value(v));
        }
        s
    }
}

fn normal_cdf(z: f64) -> f64 {
    crate::stats::special::normal_cdf(z)
}

fn fmt_le(b: f64) -> String {
    let s = format!("{b}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn family_type(f: &str) -> &'static str {
    match f {
        "http_requests" | "http_client_requests" => "counter",
        "http_request_duration_seconds" | "hikaricp_connections_acquire_seconds" => "histogram",
        _ => "gauge",
    }
}

/// `{a="x",b="y"}` with escaping.
pub fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// A recorded run: one OpenMetrics text per instance, with timestamps on every sample.
pub struct Recorded {
    pub baseline: Vec<String>,
    pub canary: Vec<String>,
}

impl Recorded {
    /// Writes each instance's text to `dir` as `baseline-<n>.om` and `canary-<n>.om`; the
    /// baseline's paths and the canary's.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let write = |arm: &str, texts: &[String]| -> std::io::Result<Vec<PathBuf>> {
            let mut paths = Vec::with_capacity(texts.len());
            for (i, t) in texts.iter().enumerate() {
                let p = dir.join(format!("{arm}-{i}.om"));
                std::fs::write(&p, t)?;
                paths.push(p);
            }
            Ok(paths)
        };
        Ok((
            write("baseline", &self.baseline)?,
            write("canary", &self.canary)?,
        ))
    }
}

/// Simulates a scenario and renders it as OpenMetrics files with timestamps (the format
/// `promtool tsdb create-blocks-from openmetrics` takes: one family at a time, `# EOF`).
pub fn record(s: &Scenario) -> Recorded {
    let start = RECORDING_START;
    let mut arms = [Vec::new(), Vec::new()];
    for (ai, canary) in [false, true].into_iter().enumerate() {
        for i in 0..s.instances_per_arm.max(1) {
            let mut inst = Instance::new(s, canary, i);
            let mut gap_rng = Rng::new(s.seed ^ 0x9e37_79b9 ^ (i as u64) << 8 ^ u64::from(canary));
            // family → series (name+labels) → points
            let mut fams: Vec<(String, Vec<RecordedSeries>)> = Vec::new();
            let mut t = 0.0;
            while t <= s.duration_s + 1e-9 {
                inst.advance_to(t);
                let missing = inst.down() || (s.nuisances.gaps && gap_rng.uniform() < 0.03);
                if !missing {
                    // Scrapes land a little after the tick, as real ones do.
                    let ts = start + t + (i as f64) * 0.137;
                    for (family, name, labels, v) in inst.samples() {
                        let fi = match fams.iter().position(|f| f.0 == family) {
                            Some(p) => p,
                            None => {
                                fams.push((family.clone(), Vec::new()));
                                fams.len() - 1
                            }
                        };
                        let series = &mut fams[fi].1;
                        match series.iter_mut().find(|x| x.0 == name && x.1 == labels) {
                            Some(x) => x.2.push((ts, v)),
                            None => series.push((name, labels, vec![(ts, v)])),
                        }
                    }
                }
                t += s.scrape_interval_s;
            }
            let mut out = String::new();
            for (family, series) in fams {
                let kind = family_type(&family);
                let _ = writeln!(out, "# TYPE {family} {kind}");
                if family.ends_with("_bytes") {
                    let _ = writeln!(out, "# UNIT {family} bytes");
                }
                for (name, labels, pts) in series {
                    for (ts, v) in pts {
                        let _ = writeln!(
                            out,
                            "{name}{} {} {ts:.3}",
                            render_labels(&labels),
                            fmt_value(v)
                        );
                    }
                }
            }
            out.push_str("# EOF\n");
            arms[ai].push(out);
        }
    }
    let [baseline, canary] = arms;
    Recorded { baseline, canary }
}

/// The scenario catalogue used by `rollguard simulate` and the judge evaluation.
pub fn catalogue(seed: u64) -> Vec<(Scenario, bool)> {
    let base = Scenario {
        seed,
        ..Scenario::default()
    };
    let mut v = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&mut Scenario), faulty: bool| {
        let mut s = base.clone();
        s.name = name.to_string();
        f(&mut s);
        v.push((s, faulty));
    };
    add("aa", &|_| {}, false);
    add("aa-low-rate", &|s| s.error_ratio = 0.001, false);
    add("aa-restarts", &|s| s.nuisances.restarts = true, false);
    add(
        "aa-gaps-nan",
        &|s| {
            s.nuisances.gaps = true;
            s.nuisances.nan = true;
        },
        false,
    );
    add("aa-surge", &|s| s.nuisances.surge = true, false);
    add("aa-low-traffic-canary", &|s| s.canary_share = 0.02, false);
    add(
        "aa-weight-step",
        &|s| {
            s.canary_share = 0.1;
            s.nuisances.weight_step = true;
        },
        false,
    );
    // Memory that follows load, with the canary's share raised from 10 % to 50 %: the floor
    // difference moves by tens of MiB within a minute.
    add(
        "aa-weight-step-load-memory",
        &|s| {
            s.canary_share = 0.1;
            s.nuisances.weight_step = true;
            s.nuisances.load_memory = true;
        },
        false,
    );
    add(
        "aa-old-baseline",
        &|s| s.nuisances.old_baseline = true,
        false,
    );
    add(
        "aa-shared-outage",
        &|s| s.nuisances.shared_outage = true,
        false,
    );
    for (rate, tag) in [(0.001, "0.1pct"), (0.01, "1pct")] {
        for f in [1.5, 2.0, 5.0, 20.0] {
            add(
                &format!("errors-x{f}-{tag}"),
                &|s| {
                    s.error_ratio = rate;
                    s.fault = Fault::ErrorRatio { factor: f };
                },
                true,
            );
        }
    }
    add(
        "latency-median-x1.2",
        &|s| s.fault = Fault::LatencyMedian { factor: 1.2 },
        true,
    );
    add(
        "latency-tail",
        &|s| {
            s.fault = Fault::LatencyTail {
                share: 0.03,
                factor: 8.0,
            }
        },
        true,
    );
    for m in [0.5, 2.0, 10.0] {
        add(
            &format!("leak-{m}mib-min"),
            &|s| s.fault = Fault::Leak { mib_per_min: m },
            true,
        );
    }
    add(
        "leak-2mib-min-weight-step",
        &|s| {
            s.fault = Fault::Leak { mib_per_min: 2.0 };
            s.canary_share = 0.1;
            s.nuisances.weight_step = true;
            s.nuisances.load_memory = true;
        },
        true,
    );
    // The db-pool template where a canary pod's load differs from a baseline pod's: a mesh
    // weight that does not follow the pod counts, and a weight raised mid-analysis.
    for (name, share, step) in [
        ("pool-aa", 0.5, false),
        ("pool-aa-share0.1", 0.1, false),
        ("pool-aa-share0.8", 0.8, false),
        ("pool-aa-weight-step", 0.1, true),
    ] {
        add(
            name,
            &|s| {
                s.canary_share = share;
                s.nuisances.weight_step = step;
            },
            false,
        );
    }
    add(
        "pool-exhaustion",
        &|s| s.fault = Fault::PoolExhaustion,
        true,
    );
    for per_min in [1.0, 3.0] {
        add(
            &format!("connection-leak-{per_min}-min"),
            &|s| s.fault = Fault::ConnectionLeak { per_min },
            true,
        );
        add(
            &format!("connection-leak-{per_min}-min-share0.1"),
            &|s| {
                s.fault = Fault::ConnectionLeak { per_min };
                s.canary_share = 0.1;
            },
            true,
        );
    }
    add(
        "upstream-429",
        &|s| s.fault = Fault::RateLimit { share: 0.05 },
        true,
    );
    v
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Directory to write `<scenario>/{baseline,canary}-<n>.om` and `truth.json` into.
    #[arg(long, default_value = "recorded")]
    pub out: PathBuf,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Seed of the simulated fleet's randomness (the same seed writes the same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run length in seconds.
    #[arg(long)]
    pub duration: Option<f64>,
}

/// `rollguard simulate`.
pub fn main(args: SimulateArgs) -> ExitCode {
    for (mut s, faulty) in catalogue(args.seed) {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !s.name.contains(o.as_str()))
        {
            continue;
        }
        if let Some(d) = args.duration {
            s.duration_s = d;
        }
        let dir = args.out.join(&s.name);
        let r = record(&s);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            r.write_to(&dir)?;
            let truth = serde_json::json!({ "scenario": s, "faulty": faulty });
            std::fs::write(
                dir.join("truth.json"),
                serde_json::to_string_pretty(&truth).unwrap_or_default(),
            )
        };
        if let Err(e) = write() {
            eprintln!("cannot write {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        println!("{}", dir.display());
    }
    ExitCode::SUCCESS
}

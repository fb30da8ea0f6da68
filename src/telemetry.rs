//! rollguard's own Prometheus metrics (`GET /metrics`), through prometheus-client.
//!
//! Each family is created here once; modules bump them through [`Telemetry`]. The events
//! module is the main writer, so a log line and its metric never disagree.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

/// Registers families in one registry and notes each one's exported name and type for
/// [`Telemetry::families`], so the list the dashboard test reads cannot drift from what is
/// registered.
struct Registrar<'a> {
    registry: &'a mut Registry,
    names: Vec<(String, &'static str)>,
}

impl Registrar<'_> {
    /// Registers `m` as `name` and notes its exported name and type.
    fn add<M: Metric + TypedMetric>(&mut self, name: &str, help: &str, m: M) {
        let kind = match M::TYPE {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Info => "info",
            _ => "unknown",
        };
        self.names.push((format!("rollguard_{name}"), kind));
        self.registry.register(name, help, m);
    }
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// All metric families of the daemon.
pub struct Telemetry {
    registry: Registry,
    /// Every family's exported name and type (`rollguard_hook_runs`, `counter`), also the
    /// ones with no series yet, which the exposition leaves out.
    families: Vec<(String, &'static str)>,
    pub target_up: Family<Labels, Gauge>,
    pub scrape_duration: Family<Labels, Gauge<f64, AtomicU64>>,
    pub scrape_errors: Family<Labels, Counter>,
    pub source_errors: Family<Labels, Counter>,
    pub deployments_started: Family<Labels, Counter>,
    pub deployments_finished: Family<Labels, Counter>,
    pub active_deployments: Family<Labels, Gauge>,
    pub time_to_detect: Histogram,
    pub decision_to_hook: Histogram,
    pub hook_runs: Family<Labels, Counter>,
    pub notifications: Family<Labels, Counter>,
    pub rule_reloads: Family<Labels, Counter>,
    pub rules_last_success: Gauge<f64, AtomicU64>,
    pub check_evidence: Family<Labels, Gauge<f64, AtomicU64>>,
    /// The evidence each check of each running deployment needs to fail (next to
    /// `check_evidence` on a dashboard).
    pub check_threshold: Family<Labels, Gauge<f64, AtomicU64>>,
    pub backend_down: Gauge,
    /// With a PostgreSQL store: 1 while this daemon leads, 0 on a standby.
    pub leader: Gauge,
    /// Seconds since this daemon last renewed its lease (leader) or read it (standby).
    pub lease_age: Gauge<f64, AtomicU64>,
    pub analysis_steps: Counter,
    /// Schema probes per service and result (`ok`, `error`).
    pub schema_probes: Family<Labels, Counter>,
    /// Rollbacks the live schema made unsafe (no rollback hook ran), per service.
    pub rollbacks_blocked: Family<Labels, Counter>,
    /// Annotations (`PromQL info:`/`warning:`) the query backend returned with good data.
    pub query_warnings: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("rollguard");
        let t = Telemetry {
            target_up: Family::default(),
            scrape_duration: Family::default(),
            scrape_errors: Family::default(),
            source_errors: Family::default(),
            deployments_started: Family::default(),
            deployments_finished: Family::default(),
            active_deployments: Family::default(),
            time_to_detect: Histogram::new([
                10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
            ]),
            decision_to_hook: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            hook_runs: Family::default(),
            notifications: Family::default(),
            rule_reloads: Family::default(),
            rules_last_success: Gauge::default(),
            check_evidence: Family::default(),
            check_threshold: Family::default(),
            backend_down: Gauge::default(),
            leader: Gauge::default(),
            lease_age: Gauge::default(),
            analysis_steps: Counter::default(),
            schema_probes: Family::default(),
            rollbacks_blocked: Family::default(),
            query_warnings: Counter::default(),
            registry: Registry::default(),
            families: Vec::new(),
        };
        let families = t.register(&mut r);
        Telemetry {
            registry: r,
            families,
            ..t
        }
    }

    /// Names and describes every family in `r` (one place to read what `/metrics` exports).
    fn register(&self, r: &mut Registry) -> Vec<(String, &'static str)> {
        let mut f = Registrar {
            registry: r,
            names: Vec::new(),
        };
        f.add(
            "target_up",
            "Whether the last scrape of a target succeeded (1) or not (0)",
            self.target_up.clone(),
        );
        f.add(
            "scrape_duration_seconds",
            "Duration of the last scrape of a target",
            self.scrape_duration.clone(),
        );
        f.add(
            "scrape_errors",
            "Failed scrapes by reason",
            self.scrape_errors.clone(),
        );
        f.add(
            "query_warnings",
            "Annotations (PromQL info or warning) the query backend returned with an answer that was used",
            self.query_warnings.clone(),
        );
        f.add(
            "source_errors",
            "Failed metric fetches by source",
            self.source_errors.clone(),
        );
        f.add(
            "deployments_started",
            "Deployments registered, by service",
            self.deployments_started.clone(),
        );
        f.add(
            "deployments_finished",
            "Deployments finished, by service and outcome",
            self.deployments_finished.clone(),
        );
        f.add(
            "active_deployments",
            "Unfinished deployments by state",
            self.active_deployments.clone(),
        );
        f.add(
            "time_to_detect_seconds",
            "Analysis time from start to a rollback decision",
            self.time_to_detect.clone(),
        );
        f.add(
            "decision_to_hook_seconds",
            "Time from a persisted decision to its hook starting",
            self.decision_to_hook.clone(),
        );
        f.add(
            "hook_runs",
            "Hook attempts by hook and result",
            self.hook_runs.clone(),
        );
        f.add(
            "notifications",
            "Notification deliveries by notifier and result",
            self.notifications.clone(),
        );
        f.add(
            "rule_reloads",
            "Rule reloads by result",
            self.rule_reloads.clone(),
        );
        f.add(
            "rules_last_success_timestamp_seconds",
            "When the rules were last loaded successfully",
            self.rules_last_success.clone(),
        );
        f.add(
            "check_evidence",
            "Latest evidence (e-value) of each check of each running deployment",
            self.check_evidence.clone(),
        );
        f.add(
            "check_threshold",
            "Evidence each check of each running deployment needs to fail",
            self.check_threshold.clone(),
        );
        f.add(
            "metrics_backend_down",
            "1 while the circuit breaker considers the metrics backend down",
            self.backend_down.clone(),
        );
        f.add(
            "analysis_steps",
            "Judge updates performed (one per deployment per interval)",
            self.analysis_steps.clone(),
        );
        f.add(
            "schema_probes",
            "Live schema probes per service and result (ok, error: a source error the gates hold on)",
            self.schema_probes.clone(),
        );
        f.add(
            "rollbacks_blocked",
            "Rollbacks not run because the baseline does not work on the live schema",
            self.rollbacks_blocked.clone(),
        );
        f.add(
            "leader",
            "With a PostgreSQL store: 1 while this daemon holds the leader lease, 0 on a standby",
            self.leader.clone(),
        );
        f.add(
            "lease_age_seconds",
            "With a PostgreSQL store: seconds since the lease was last renewed (leader) or read (standby)",
            self.lease_age.clone(),
        );
        f.names
    }

    /// Every family's exported name and type, also the ones with no series yet (the
    /// dashboard test checks its queries against this list).
    pub fn families(&self) -> &[(String, &'static str)] {
        &self.families
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    pub fn inc(family: &Family<Labels, Counter>, pairs: &[(&str, &str)]) {
        family.get_or_create(&labels(pairs)).inc();
    }

    pub fn set(family: &Family<Labels, Gauge>, pairs: &[(&str, &str)], v: i64) {
        family.get_or_create(&labels(pairs)).set(v);
    }

    pub fn set_f(family: &Family<Labels, Gauge<f64, AtomicU64>>, pairs: &[(&str, &str)], v: f64) {
        family.get_or_create(&labels(pairs)).set(v);
    }

    /// Removes one series (a finished deployment's target or check).
    pub fn remove<M>(family: &Family<Labels, M>, pairs: &[(&str, &str)]) {
        family.remove(&labels(pairs));
    }
}

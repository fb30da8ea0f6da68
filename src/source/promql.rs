//! The Prometheus HTTP API v1 as a source (Prometheus, Thanos, Mimir, VictoriaMetrics).
//!
//! For each query rollguard sends the rule's selector with the arm's label matchers added
//! as an instant query, receives the raw series, and computes increases itself with the same
//! collector the scrape source and `backtest` use — so the same data gives the same verdict
//! whichever way it arrives, and counter resets are handled per series. Instances are told
//! apart by the `instance` label (configurable).
//!
//! A 429 or 5xx answer or a timeout is a `source_error` (never "no data", never "zero"),
//! and the client backs off, honouring `Retry-After`. A 4xx is a rule problem and says so.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::config::PrometheusConfig;
use crate::net;
use crate::query::{Fetch, MetricQuery};
use crate::selector::{Matcher, Selector};
use crate::series::{ArmCollector, OwnedSample, TargetSamples};

/// Largest query answer accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A client for one Prometheus-compatible endpoint, shared by all deployments.
pub struct PromClient {
    http: reqwest::Client,
    cfg: PrometheusConfig,
    backoff: Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    until: Option<tokio::time::Instant>,
    failures: u32,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// One answered arm: per instance, the samples of every query.
pub type ArmAnswer = Result<Vec<(String, Vec<OwnedSample>)>, String>;

impl PromClient {
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, String> {
        Ok(PromClient {
            http: net::client(&cfg.tls, cfg.timeout)?,
            cfg: cfg.clone(),
            backoff: Mutex::new(Backoff::default()),
        })
    }

    /// The PromQL sent for a selector on one arm.
    pub fn promql(sel: &Selector, arm: &[Matcher]) -> String {
        sel.to_promql(arm)
    }

    fn backing_off(&self) -> Option<Duration> {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.until
            .and_then(|u| u.checked_duration_since(tokio::time::Instant::now()))
    }

    fn record(&self, ok: bool, retry_after: Option<Duration>) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *b = Backoff::default();
        } else {
            b.failures = b.failures.saturating_add(1);
            let exp = Duration::from_secs(1u64 << b.failures.min(6)).min(Duration::from_secs(60));
            let wait = retry_after.unwrap_or(exp);
            b.until = Some(tokio::time::Instant::now() + wait);
        }
    }

    /// Runs one instant query.
    pub async fn instant(&self, query: &str) -> Result<Vec<OwnedSample>, String> {
        if let Some(w) = self.backing_off() {
            return Err(format!(
                "Prometheus is backing off after errors ({}s left)",
                w.as_secs().max(1)
            ));
        }
        let url = format!("{}/api/v1/query", self.cfg.url);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish();
        let mut req = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .timeout(self.cfg.timeout);
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v.resolve()?);
        }
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t.resolve()?);
        }
        if let Some(b) = &self.cfg.basic_auth {
            req = req.basic_auth(&b.username, Some(b.password.resolve()?));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.record(false, None);
                return Err(format!(
                    "Prometheus at {}: {}",
                    net::redact_url(&self.cfg.url),
                    net::redact_error(&e)
                ));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = net::retry_after(resp.headers());
        let body = match net::read_body_capped(resp, MAX_RESPONSE).await {
            Ok(b) => b,
            Err(e) => {
                self.record(false, None);
                return Err(format!("Prometheus answer: {e}"));
            }
        };
        if status == 429 || status >= 500 {
            self.record(false, retry_after);
            return Err(format!(
                "Prometheus answered HTTP {status}{}",
                retry_after
                    .map(|d| format!(" (retry after {}s)", d.as_secs()))
                    .unwrap_or_default()
            ));
        }
        let parsed: Result<ApiResponse, _> = serde_json::from_slice(&body);
        let api = match parsed {
            Ok(a) => a,
            Err(e) => {
                self.record(false, None);
                return Err(format!(
                    "Prometheus answered HTTP {status} with an unreadable body: {e}"
                ));
            }
        };
        if status >= 400 || api.status != "success" {
            // 4xx: the query itself is wrong — a rule problem, not an outage.
            self.record(true, None);
            return Err(format!(
                "Prometheus rejected the query `{query}` ({}): {}",
                api.error_type.unwrap_or_else(|| format!("HTTP {status}")),
                api.error.unwrap_or_default()
            ));
        }
        self.record(true, None);
        for w in &api.warnings {
            tracing::warn!(query, warning = %w, "Prometheus returned a warning (results may be partial)");
        }
        let Some(data) = api.data else {
            return Ok(Vec::new());
        };
        if data.result_type != "vector" {
            return Err(format!(
                "expected an instant vector from `{query}`, got {}",
                data.result_type
            ));
        }
        let items: Vec<VectorItem> = serde_json::from_value(data.result)
            .map_err(|e| format!("unexpected result shape: {e}"))?;
        Ok(items
            .into_iter()
            .map(|mut it| {
                let name = it.metric.remove("__name__").unwrap_or_default();
                let value = match it.value.1.as_str() {
                    "NaN" => f64::NAN,
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or(f64::NAN),
                };
                OwnedSample {
                    name,
                    labels: it.metric.into_iter().collect(),
                    value,
                }
            })
            .collect())
    }

    /// Fetches every selector the queries need for one arm, grouped by instance.
    pub async fn fetch_arm(&self, queries: &[MetricQuery], arm: &[Matcher]) -> ArmAnswer {
        let mut sels: Vec<Selector> = Vec::new();
        for q in queries {
            for s in std::iter::once(q.sample_selector()).chain(q.divide_by.clone()) {
                if !sels.contains(&s) {
                    sels.push(s);
                }
            }
        }
        let texts: Vec<String> = sels.iter().map(|s| Self::promql(s, arm)).collect();
        let answers = futures_util::future::join_all(texts.iter().map(|q| self.instant(q))).await;
        let mut by_instance: BTreeMap<String, Vec<OwnedSample>> = BTreeMap::new();
        for a in answers {
            for s in a? {
                let inst = s
                    .labels
                    .iter()
                    .find(|(k, _)| *k == self.cfg.instance_label)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                by_instance.entry(inst).or_default().push(s);
            }
        }
        Ok(by_instance.into_iter().collect())
    }
}

/// Feeds one arm's answer into its collector.
pub fn collect(col: &mut ArmCollector, queries: &[MetricQuery], answer: ArmAnswer) -> Vec<Fetch> {
    match answer {
        Err(e) => queries.iter().map(|_| Fetch::Error(e.clone())).collect(),
        Ok(instances) => {
            let targets: Vec<TargetSamples<'_, OwnedSample>> = instances
                .iter()
                .map(|(i, s)| TargetSamples {
                    target: i.as_str(),
                    samples: Ok(s.as_slice()),
                })
                .collect();
            col.collect(queries, &targets)
        }
    }
}

//! The Prometheus HTTP API v1 as a source (Prometheus, Thanos, Mimir, VictoriaMetrics).
//!
//! # What is sent
//!
//! For each selector a rule needs, rollguard adds the arm's label matchers and sends it as an
//! **instant query of the raw series** (`POST {url}/api/v1/query`, form `query`, `time`,
//! `timeout`, plus any configured `params`). It does not send `increase(...)`: increases are
//! computed by [`crate::series::ArmCollector`], the same code the scrape source and
//! `rollguard backtest` use, because
//!
//! * the same data then gives the same verdict whichever way it arrives (a backtest of the
//!   recorded series replays exactly these numbers);
//! * the count tests need event counts; `increase()` extrapolates to the window edges and
//!   returns fractions (2 errors may read as 2.4);
//! * an error series that a client library creates on the first error counts from zero on a
//!   known instance, where `increase()` needs two points and misses sparse errors — the very
//!   thing a canary judge must see;
//! * consecutive intervals never overlap or leave gaps, whatever the query latency.
//!
//! Every query of one interval — all selectors, both arms — is evaluated at **one `time`**
//! (the wall clock at the interval's tick, minus `eval_delay`). Without it, the errors and
//! the requests query could straddle a scrape and give a ratio from two different moments,
//! and each arm would be read at a slightly different instant. At a given `time`, the API
//! answers with each series' latest sample within the lookback (5 minutes), the rule
//! `backtest` applies to recorded files.
//!
//! Instances are told apart by the `instance` label (configurable); each is one "target" for
//! the collector, so counter resets and new series are handled per instance.
//!
//! A check may instead carry PromQL written in the rule (`query:`, see [`crate::written`]).
//! It is filled per arm and sent as is, at the same `time`; each series of its answer is one
//! value (a gauge per instance), never a count.
//!
//! # How answers are read
//!
//! * no series: `no_data` naming the PromQL sent (never zero);
//! * NaN/Inf values: skipped; only such values: `no_data` that says so;
//! * the same series twice for one instance: `source_error` that says one was expected;
//! * Prometheus' own annotations on the query (`PromQL info: …`, `PromQL warning: …`, and the
//!   `infos` field): logged and counted (`rollguard_query_warnings_total`), the answer used —
//!   they are about the query, not about missing data;
//! * other warnings (Thanos and Mimir report missing stores that way) or a VictoriaMetrics
//!   `isPartial` answer: `source_error` ("partial answer"), unless `accept_partial` — a
//!   missing shard can hold one arm's data;
//! * 400 / `bad_data`: the query is wrong, a rule problem — `source_error` that says so,
//!   with no backoff (other queries are fine);
//! * 401/403/404: a configuration problem (credentials, tenant, URL prefix), said so;
//! * 422 (`execution`): the backend could not run the query;
//! * 429, 5xx, timeouts, refused connections: `source_error`, and the client backs off
//!   (exponentially to `max_backoff`, or as long as `Retry-After` asks), failing fast
//!   meanwhile so a struggling backend is not hammered by every deployment at once.
//!
//! A failed selector fails only the queries that use it.
//!
//! `rollguard backtest --prometheus` sends the same queries as **range queries**
//! (`/api/v1/query_range`, `step` = the interval; [`PromClient::fetch_arm_range`]): at each
//! step a range query answers what an instant query at that time would, so a past window is
//! replayed through the same collector and judge in one request per query.

use prometheus_client::metrics::counter::Counter;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::PrometheusConfig;
use crate::net;
use crate::query::{Fetch, MetricQuery, Observed, QueryKind};
use crate::selector::{Matcher, Selector};
use crate::series::{ArmCollector, OwnedSample, TargetSamples};

/// Largest query answer accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why one query gave no samples.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The backend could not be reached or is overloaded (refused, timeout, 429, 5xx, backing
    /// off). Counts towards "metrics backend down".
    #[error("{0}")]
    Unreachable(String),
    /// The backend refused our credentials or has no API at the URL. Also a backend-wide
    /// failure: every deployment is affected.
    #[error("{0}")]
    Config(String),
    /// The backend could not run the query (422) or answered with only part of the data.
    #[error("{0}")]
    Degraded(String),
    /// The query itself is wrong (400 `bad_data`): a rule problem.
    #[error("{0}")]
    Rejected(String),
    /// The answer was not what an instant query of raw series returns.
    #[error("{0}")]
    Invalid(String),
}

impl QueryError {
    /// Whether the failure is the backend's (for the circuit breaker) rather than one rule's.
    pub fn is_backend(&self) -> bool {
        matches!(
            self,
            QueryError::Unreachable(_) | QueryError::Config(_) | QueryError::Degraded(_)
        )
    }
}

/// A client for one Prometheus-compatible endpoint, shared by all deployments.
pub struct PromClient {
    http: reqwest::Client,
    cfg: PrometheusConfig,
    backoff: Mutex<Backoff>,
    limit: Arc<Semaphore>,
    /// Annotations answered with otherwise good data.
    warnings: Counter,
}

/// Prometheus' annotations describe the query (a rate over something that may not be a
/// counter, a histogram bucket without `le`), not data the backend failed to read.
fn is_annotation(warning: &str) -> bool {
    warning.starts_with("PromQL info:") || warning.starts_with("PromQL warning:")
}

#[derive(Default)]
struct Backoff {
    until: Option<tokio::time::Instant>,
    /// Failure episodes in a row (failures that arrive while already backing off are the
    /// same episode: twelve queries refused at once are one outage, not twelve).
    failures: u32,
    last_error: String,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    /// Prometheus 3: informational annotations, apart from `warnings`.
    #[serde(default)]
    infos: Vec<String>,
    /// VictoriaMetrics cluster: some storage nodes did not answer.
    #[serde(default, rename = "isPartial")]
    is_partial: Option<bool>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of a vector (`value`, `histogram`) or matrix (`values`, `histograms`) answer:
/// one type for both, since they differ only in which pair of fields is filled.
#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    /// Native histograms come in these fields instead of `value` or `values`.
    histogram: Option<serde_json::Value>,
    #[serde(default)]
    histograms: Vec<serde_json::Value>,
}

impl Series {
    /// The metric name, taken out of the labels (a sample carries it apart).
    fn take_name(&mut self) -> String {
        self.metric.remove("__name__").unwrap_or_default()
    }
}

/// The answer's `result` read as `T`, or an error naming the query: every result type goes
/// through here, so a backend answering in an unexpected form is reported the same way.
fn result_as<T: serde::de::DeserializeOwned>(
    result: serde_json::Value,
    query: &str,
) -> Result<T, QueryError> {
    serde_json::from_value(result)
        .map_err(|e| QueryError::Invalid(format!("unexpected answer shape for `{query}`: {e}")))
}

/// One arm's answers for one interval.
#[derive(Debug, Default)]
pub struct ArmAnswer {
    /// Per instance, the samples of every selector that answered.
    pub instances: Vec<(String, Vec<OwnedSample>)>,
    /// Per selector (rendered without the arm matchers): the PromQL sent, and the error if it
    /// failed or the number of series it returned.
    pub selectors: HashMap<String, (String, Result<usize, QueryError>)>,
    /// Per written query (by its index in the queries): the PromQL sent, and its values (one
    /// per series, NaN included) or the error.
    pub written: HashMap<usize, (String, Result<Vec<f64>, QueryError>)>,
}

impl ArmAnswer {
    /// The errors of the failed selectors and written queries.
    pub fn errors(&self) -> impl Iterator<Item = &QueryError> {
        let selectors = self.selectors.values().map(|(_, r)| r.as_ref().err());
        let written = self.written.values().map(|(_, r)| r.as_ref().err());
        selectors.chain(written).flatten()
    }

    /// How many queries were sent.
    pub fn sent(&self) -> usize {
        self.selectors.len() + self.written.len()
    }
}

impl PromClient {
    /// One client per daemon: the backoff and the concurrency limit protect one backend, so
    /// they must be shared by every deployment that queries it.
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, String> {
        Ok(PromClient {
            http: net::client(&cfg.tls, cfg.timeout)?,
            cfg: cfg.clone(),
            backoff: Mutex::new(Backoff::default()),
            limit: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            warnings: Counter::default(),
        })
    }

    /// Counts the backend's annotations into `counter` (the daemon's
    /// `rollguard_query_warnings_total`).
    pub fn with_warning_counter(mut self, counter: Counter) -> Self {
        self.warnings = counter;
        self
    }

    /// How many annotations the backend returned so far.
    pub fn warnings_seen(&self) -> u64 {
        self.warnings.get()
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &PrometheusConfig {
        &self.cfg
    }

    /// The PromQL sent for a selector on one arm.
    pub fn promql(sel: &Selector, arm: &[Matcher]) -> String {
        sel.to_promql(arm)
    }

    /// Where the queries go, without credentials or path details, for messages.
    pub fn describe(&self) -> String {
        format!("Prometheus at {}", net::redact_url(&self.cfg.url))
    }

    fn backing_off(&self) -> Option<(Duration, String)> {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let left = b
            .until
            .and_then(|u| u.checked_duration_since(tokio::time::Instant::now()))?;
        Some((left, b.last_error.clone()))
    }

    fn succeeded(&self) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        *b = Backoff::default();
    }

    fn failed(&self, retry_after: Option<Duration>, msg: &str) {
        let now = tokio::time::Instant::now();
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if b.until.is_none_or(|u| u <= now) {
            b.failures = b.failures.saturating_add(1);
        }
        let exp = Duration::from_secs(1u64 << b.failures.saturating_sub(1).min(16))
            .min(self.cfg.max_backoff);
        // `Retry-After` is the server's word on when to come back: honoured even beyond
        // `max_backoff` (net::retry_after caps it at an hour).
        let wait = retry_after.unwrap_or(exp);
        let until = now + wait;
        b.until = Some(b.until.map_or(until, |u| u.max(until)));
        b.last_error = msg.to_string();
    }

    /// Runs one instant query now, with the error as text (the readiness probe's view).
    pub async fn instant(&self, query: &str) -> Result<Vec<OwnedSample>, String> {
        let now = crate::source::scrape::epoch_ms(std::time::SystemTime::now());
        self.instant_at(query, now).await.map_err(|e| e.to_string())
    }

    /// Runs one instant query evaluated at `at_ms` (milliseconds since the Unix epoch).
    pub async fn instant_at(
        &self,
        query: &str,
        at_ms: i64,
    ) -> Result<Vec<OwnedSample>, QueryError> {
        let Some(data) = self
            .call("query", query, &[("time", api_time(at_ms))])
            .await?
        else {
            return Ok(Vec::new());
        };
        // A written `query:` may end in `scalar(...)`: one value, no labels.
        if data.result_type == "scalar" {
            let (_, text): (f64, String) = result_as(data.result, query)?;
            return Ok(vec![OwnedSample {
                name: String::new(),
                labels: Vec::new(),
                value: parse_value(&text, query, "the scalar")?,
                timestamp_ms: None,
            }]);
        }
        if data.result_type != "vector" {
            let what = match data.result_type.as_str() {
                "matrix" => "a range vector",
                "string" => "a string",
                _ => "an unknown result type",
            };
            return Err(QueryError::Invalid(format!(
                "`{query}` returned {what} ({}); an instant vector or a scalar is expected",
                data.result_type
            )));
        }
        let items: Vec<Series> = result_as(data.result, query)?;
        let mut out = Vec::with_capacity(items.len());
        for mut it in items {
            let name = it.take_name();
            let Some((_, text)) = it.value else {
                return Err(not_a_float(query, &name, it.histogram.is_some()));
            };
            let value = parse_value(&text, query, &name)?;
            out.push(OwnedSample {
                name,
                labels: it.metric.into_iter().collect(),
                value,
                timestamp_ms: None,
            });
        }
        Ok(out)
    }

    /// Runs one range query: the query evaluated at `start_ms`, `start_ms + step_ms`, … up
    /// to `end_ms`, exactly what an instant query at each of those times returns (this is
    /// how `rollguard backtest --prometheus` replays a past window in one request per
    /// query). Returns, per evaluation time (ms), the samples at that time.
    pub async fn range_at(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<BTreeMap<i64, Vec<OwnedSample>>, QueryError> {
        // Prometheus refuses more than 11 000 points per series in one range query: a long
        // window at a short interval is asked for in parts.
        const MAX_STEPS: i64 = 10_000;
        let step_ms = step_ms.max(1);
        let mut out = BTreeMap::new();
        let mut from = start_ms;
        while from <= end_ms {
            let to = end_ms.min(from.saturating_add(step_ms * (MAX_STEPS - 1)));
            let params = [
                ("start", api_time(from)),
                ("end", api_time(to)),
                ("step", format!("{step_ms}ms")),
            ];
            if let Some(data) = self.call("query_range", query, &params).await? {
                add_matrix(data, query, &mut out)?;
            }
            from = to + step_ms;
        }
        Ok(out)
    }

    /// One call of the API (`endpoint` is `query` or `query_range`), with the backoff, the
    /// concurrency limit, credentials, and every failure classified; the answer's data, if any.
    async fn call(
        &self,
        endpoint: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<Option<ApiData>, QueryError> {
        if let Some((left, last)) = self.backing_off() {
            return Err(QueryError::Unreachable(format!(
                "{} is backing off after errors ({}s left; last error: {last})",
                self.describe(),
                left.as_secs().max(1)
            )));
        }
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| QueryError::Unreachable("shutting down".into()))?;
        let req = self.request(endpoint, query, params)?;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("{}: {}", self.describe(), net::redact_error(&e));
                self.failed(None, &msg);
                return Err(QueryError::Unreachable(msg));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = net::retry_after(resp.headers());
        let body = match net::read_body_capped(resp, MAX_RESPONSE).await {
            Ok(b) => b,
            Err(e) => {
                let msg = format!(
                    "{} answered HTTP {status} but the body failed: {e}",
                    self.describe()
                );
                self.failed(None, &msg);
                return Err(QueryError::Unreachable(msg));
            }
        };
        let api: Option<ApiResponse> = serde_json::from_slice(&body).ok();
        let api_error = || match &api {
            Some(a) => format!(
                "{}: {}",
                a.error_type.as_deref().unwrap_or("error"),
                crate::diag::one_line(a.error.as_deref().unwrap_or(""))
            ),
            None => snippet(&body),
        };
        let api_error = api_error();
        if status == 429 || status >= 500 {
            let wait = retry_after
                .map(|d| format!(" (Retry-After {}s)", d.as_secs()))
                .unwrap_or_default();
            let msg = format!(
                "{} answered HTTP {status}{wait}: {}",
                self.describe(),
                api_error
            );
            self.failed(retry_after, &msg);
            return Err(QueryError::Unreachable(msg));
        }
        // The backend answered: whatever follows is not an outage.
        self.succeeded();
        match status {
            401 | 403 => {
                return Err(QueryError::Config(format!(
                    "{} refused the credentials (HTTP {status}: {}); check `prometheus.bearer_token`, `basic_auth` or the tenant header",
                    self.describe(),
                    api_error
                )));
            }
            404 => {
                return Err(QueryError::Config(format!(
                    "{} has no /api/v1/{endpoint} (HTTP 404); check `prometheus.url` and its path prefix (Mimir: /prometheus, VictoriaMetrics cluster: /select/<tenant>/prometheus)",
                    self.describe()
                )));
            }
            422 => {
                return Err(QueryError::Degraded(format!(
                    "the backend could not run `{query}` (HTTP 422 {})",
                    api_error
                )));
            }
            s if s >= 400 => {
                return Err(QueryError::Rejected(format!(
                    "the query `{query}` was rejected (HTTP {s} {}); this is a problem in the rule (its selector or query), not an outage",
                    api_error
                )));
            }
            _ => {}
        }
        let Some(api) = api else {
            return Err(QueryError::Invalid(format!(
                "{} answered HTTP {status} with a body that is not the API's JSON: {}",
                self.describe(),
                snippet(&body)
            )));
        };
        if api.status != "success" {
            return Err(QueryError::Rejected(format!(
                "the query `{query}` failed ({})",
                api_error
            )));
        }
        self.check_warnings(query, &api)?;
        Ok(api.data)
    }

    /// The POST of one query: form-encoded parameters, the server-side timeout, the
    /// configured extra parameters and credentials (secrets read now, so rotated files count).
    fn request(
        &self,
        endpoint: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, QueryError> {
        let url = format!("{}/api/v1/{endpoint}", self.cfg.url);
        let form = {
            let mut f = url::form_urlencoded::Serializer::new(String::new());
            f.append_pair("query", query);
            for (k, v) in params {
                f.append_pair(k, v);
            }
            f.append_pair("timeout", &format!("{}ms", self.cfg.timeout.as_millis()));
            for (k, v) in &self.cfg.params {
                f.append_pair(k, v);
            }
            f.finish()
        };
        let mut req = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .timeout(self.cfg.timeout);
        // Secrets are read per request so rotated files take effect; errors name the file.
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v.resolve().map_err(QueryError::Config)?);
        }
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t.resolve().map_err(QueryError::Config)?);
        }
        if let Some(b) = &self.cfg.basic_auth {
            req = req.basic_auth(
                &b.username,
                Some(b.password.resolve().map_err(QueryError::Config)?),
            );
        }
        Ok(req)
    }

    /// Annotations are noted and counted; any other warning, or `isPartial`, makes the answer
    /// partial, which is not judged unless `accept_partial`.
    fn check_warnings(&self, query: &str, api: &ApiResponse) -> Result<(), QueryError> {
        let (notes, missing): (Vec<&String>, Vec<&String>) =
            api.warnings.iter().partition(|w| is_annotation(w));
        for note in notes.iter().copied().chain(&api.infos) {
            tracing::info!(query, note = %note, "the query backend annotated the answer");
            self.warnings.inc();
        }
        if !missing.is_empty() || api.is_partial == Some(true) {
            let why = if missing.is_empty() {
                "isPartial: true".to_string()
            } else {
                missing
                    .iter()
                    .map(|w| w.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            tracing::warn!(query, warning = %why, "the query backend returned a partial answer");
            if !self.cfg.accept_partial {
                return Err(QueryError::Degraded(format!(
                    "partial answer to `{query}` ({why}); not judged, since a missing shard can hold one arm's data (set `prometheus.accept_partial` to use such answers)"
                )));
            }
        }
        Ok(())
    }

    /// Fetches every selector and written query the queries need for one arm (`role` is
    /// `baseline` or `canary`), evaluated at `at_ms`; selector samples are grouped by instance.
    pub async fn fetch_arm(
        &self,
        queries: &[MetricQuery],
        arm: &[Matcher],
        role: &str,
        at_ms: i64,
    ) -> ArmAnswer {
        let plan = Plan::new(queries, arm, role);
        let (selectors, written, stamps) = tokio::join!(
            join_all(
                plan.selectors
                    .iter()
                    .map(|(_, q)| self.instant_at(q, at_ms))
            ),
            join_all(plan.written.iter().map(|(_, q)| self.instant_at(q, at_ms))),
            join_all(plan.stamps.iter().map(|(_, q)| self.instant_at(q, at_ms)))
        );
        self.assemble(&plan, selectors, written, stamps)
    }

    /// The same as [`fetch_arm`](Self::fetch_arm) at every `step_ms` from `start_ms` to
    /// `end_ms`, with one range query per selector and written query instead of one instant
    /// query per time: the answers per evaluation time, oldest first.
    pub async fn fetch_arm_range(
        &self,
        queries: &[MetricQuery],
        arm: &[Matcher],
        role: &str,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
    ) -> Vec<(i64, ArmAnswer)> {
        let plan = Plan::new(queries, arm, role);
        let (selectors, written, stamps) = tokio::join!(
            join_all(
                plan.selectors
                    .iter()
                    .map(|(_, q)| self.range_at(q, start_ms, end_ms, step_ms))
            ),
            join_all(
                plan.written
                    .iter()
                    .map(|(_, q)| self.range_at(q, start_ms, end_ms, step_ms))
            ),
            join_all(
                plan.stamps
                    .iter()
                    .map(|(_, q)| self.range_at(q, start_ms, end_ms, step_ms))
            )
        );
        let at = |all: &[Result<BTreeMap<i64, Vec<OwnedSample>>, QueryError>], t: i64| {
            all.iter()
                .map(|r| match r {
                    Ok(by_time) => Ok(by_time.get(&t).cloned().unwrap_or_default()),
                    Err(e) => Err(e.clone()),
                })
                .collect::<Vec<_>>()
        };
        (0..)
            .map(|k| start_ms + k * step_ms.max(1))
            .take_while(|t| *t <= end_ms)
            .map(|t| {
                let (s, w, st) = (at(&selectors, t), at(&written, t), at(&stamps, t));
                (t, self.assemble(&plan, s, w, st))
            })
            .collect()
    }

    /// One arm's answer from the answers to a plan's queries at one time.
    fn assemble(
        &self,
        plan: &Plan,
        selectors: Vec<Result<Vec<OwnedSample>, QueryError>>,
        written: Vec<Result<Vec<OwnedSample>, QueryError>>,
        stamps: Vec<Result<Vec<OwnedSample>, QueryError>>,
    ) -> ArmAnswer {
        let stamps = sample_times(&plan.stamps, stamps);
        let mut by_instance: BTreeMap<String, Vec<OwnedSample>> = BTreeMap::new();
        // Overlapping selectors (`x{code=~"5.."}` and `x`) return the same series, evaluated at
        // the same time, so with the same value: it is one series and is kept once. A series
        // repeated within one selector's answer is kept twice, for the collector to refuse.
        let mut from: HashMap<(String, Vec<(String, String)>), usize> = HashMap::new();
        let mut out = ArmAnswer::default();
        for (i, ((sel, text), a)) in plan.selectors.iter().zip(selectors).enumerate() {
            let r = a.map(|samples| {
                let n = samples.len();
                for mut s in samples {
                    let mut labels = s.labels.clone();
                    labels.sort_unstable();
                    s.timestamp_ms = stamps.get(&i).and_then(|t| t.get(&labels)).copied();
                    if *from.entry((s.name.clone(), labels)).or_insert(i) != i {
                        continue;
                    }
                    let inst = s
                        .labels
                        .iter()
                        .find(|(k, _)| *k == self.cfg.instance_label)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    by_instance.entry(inst).or_default().push(s);
                }
                n
            });
            out.selectors.insert(sel.to_string(), (text.clone(), r));
        }
        out.instances = by_instance.into_iter().collect();
        for ((i, text), a) in plan.written.iter().zip(written) {
            let values = a.map(|samples| samples.into_iter().map(|s| s.value).collect());
            out.written.insert(*i, (text.clone(), values));
        }
        out
    }
}

/// What to send for one arm: each distinct selector with its PromQL, and each written query
/// (by its index in the queries) filled for the arm.
struct Plan {
    selectors: Vec<(Selector, String)>,
    written: Vec<(usize, String)>,
    /// For the selectors of gauges (by index in `selectors`): `timestamp(...)` of the same
    /// PromQL, which answers with when each series' sample was scraped. An instant query
    /// answers with the latest sample in the lookback, so under a rule's interval shorter
    /// than the scrape interval the same sample comes back again; the collector counts it
    /// once by its timestamp (see [`ArmCollector`]). Counters need no such query: a repeated
    /// sample adds nothing to an increase.
    stamps: Vec<(usize, String)>,
}

impl Plan {
    fn new(queries: &[MetricQuery], arm: &[Matcher], role: &str) -> Plan {
        let mut sels: Vec<Selector> = Vec::new();
        let mut gauges: Vec<Selector> = Vec::new();
        let mut written = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            match q {
                MetricQuery::Series(q) => {
                    for s in std::iter::once(q.sample_selector()).chain(q.divide_by.clone()) {
                        if q.kind == QueryKind::Gauge && !gauges.contains(&s) {
                            gauges.push(s.clone());
                        }
                        if !sels.contains(&s) {
                            sels.push(s);
                        }
                    }
                }
                MetricQuery::Promql(q) => {
                    written.push((i, crate::written::fill_arm(&q.text, arm, role)))
                }
            }
        }
        let selectors: Vec<(Selector, String)> = sels
            .into_iter()
            .map(|s| {
                let text = PromClient::promql(&s, arm);
                (s, text)
            })
            .collect();
        let stamps = selectors
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| gauges.contains(s))
            .map(|(i, (_, text))| (i, format!("timestamp({text})")))
            .collect();
        Plan {
            selectors,
            written,
            stamps,
        }
    }
}

/// When each gauge selector's series were sampled: per selector index, by sorted labels
/// without the name (as `timestamp()` answers), in ms. Only gauge selectors have an entry, so
/// the samples of counters are not looked up. A failed `timestamp()` query only leaves its
/// samples without a time: they are then used every interval, as before timestamps were read.
fn sample_times(
    plan: &[(usize, String)],
    answers: Vec<Result<Vec<OwnedSample>, QueryError>>,
) -> HashMap<usize, HashMap<Vec<(String, String)>, i64>> {
    let mut out: HashMap<usize, HashMap<_, _>> = HashMap::new();
    for ((i, _), a) in plan.iter().zip(answers) {
        let times = out.entry(*i).or_default();
        for s in a.into_iter().flatten() {
            let mut labels = s.labels;
            labels.sort_unstable();
            if s.value.is_finite() {
                times.insert(labels, (s.value * 1000.0).round() as i64);
            }
        }
    }
    out
}

/// Adds one range answer (at most 11 000 steps) to `out`, per evaluation time (ms).
fn add_matrix(
    data: ApiData,
    query: &str,
    out: &mut BTreeMap<i64, Vec<OwnedSample>>,
) -> Result<(), QueryError> {
    if data.result_type != "matrix" {
        return Err(QueryError::Invalid(format!(
            "the range query `{query}` returned {} instead of a matrix",
            data.result_type
        )));
    }
    let items: Vec<Series> = result_as(data.result, query)?;
    for mut it in items {
        let name = it.take_name();
        if it.values.is_empty() {
            return Err(not_a_float(query, &name, !it.histograms.is_empty()));
        }
        let labels: Vec<(String, String)> = it.metric.into_iter().collect();
        for (t, text) in it.values {
            out.entry((t * 1000.0).round() as i64)
                .or_default()
                .push(OwnedSample {
                    name: name.clone(),
                    labels: labels.clone(),
                    value: parse_value(&text, query, &name)?,
                    timestamp_ms: None,
                });
        }
    }
    Ok(())
}

/// The API's time format: seconds since the epoch, with milliseconds.
fn api_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A series with no float value: a native histogram, or nothing usable.
fn not_a_float(query: &str, name: &str, histogram: bool) -> QueryError {
    let what = if histogram {
        "a native histogram"
    } else {
        "no value"
    };
    QueryError::Invalid(format!(
        "`{query}` returned {what} for {name}; rules need classic counters, gauges and `_bucket` series"
    ))
}

/// A sample value as the API writes it (a string, with `NaN` and `±Inf` spelled out).
fn parse_value(text: &str, query: &str, what: &str) -> Result<f64, QueryError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        v => v.parse().map_err(|_| {
            QueryError::Invalid(format!(
                "`{query}` returned an unreadable value `{v}` for {what}"
            ))
        }),
    }
}

/// The start of a non-JSON body, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let one = crate::diag::one_line(text.trim());
    if one.is_empty() {
        "(empty body)".into()
    } else {
        one
    }
}

/// Feeds one arm's answer into its collector. Queries whose selectors failed get that error;
/// queries whose selectors returned no series at all get `no_data` naming the PromQL sent.
/// Written queries are answered from their own results: one value per series.
pub fn collect(col: &mut ArmCollector, queries: &[MetricQuery], answer: &ArmAnswer) -> Vec<Fetch> {
    let targets: Vec<TargetSamples<'_, OwnedSample>> = answer
        .instances
        .iter()
        .map(|(i, s)| TargetSamples {
            target: i.as_str(),
            samples: Ok(s.as_slice()),
        })
        .collect();
    let collected = col.collect(queries, &targets);
    queries
        .iter()
        .enumerate()
        .zip(collected)
        .map(|((i, q), fetched)| {
            let q = match q {
                MetricQuery::Series(q) => q,
                MetricQuery::Promql(_) => return written_fetch(answer.written.get(&i)),
            };
            let sels = std::iter::once(q.sample_selector()).chain(q.divide_by.clone());
            let mut empty = None;
            for s in sels {
                match answer.selectors.get(&s.to_string()) {
                    Some((_, Err(e))) => return Fetch::Error(e.to_string()),
                    Some((text, Ok(0))) => {
                        empty.get_or_insert_with(|| text.clone());
                    }
                    _ => {}
                }
            }
            match (fetched, empty) {
                (Fetch::NoData(_), Some(text)) => Fetch::NoData(format!("no series for `{text}`")),
                (f, _) => f,
            }
        })
        .collect()
}

/// A written query's answer: its finite values, `no_data` for no series or only NaN (a
/// ratio with no traffic is 0/0), or the error.
fn written_fetch(answer: Option<&(String, Result<Vec<f64>, QueryError>)>) -> Fetch {
    let Some((text, r)) = answer else {
        return Fetch::Error("the written query was not sent".into());
    };
    match r {
        Err(e) => Fetch::Error(e.to_string()),
        Ok(v) if v.is_empty() => Fetch::NoData(format!("no series for `{text}`")),
        Ok(v) => {
            let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            if finite.is_empty() {
                Fetch::NoData(format!("`{text}` returned only NaN or infinite values"))
            } else {
                Fetch::Value(Observed::Gauge(finite))
            }
        }
    }
}

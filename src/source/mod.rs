//! Metric sources: where an arm's samples come from each interval.
//!
//! - [`scrape`]: rollguard fetches the instances' `/metrics` itself (targets given as URLs,
//!   or discovered from a Prometheus [`file_sd`] file);
//! - [`promql`]: a Prometheus-compatible server answers instant queries;
//! - recorded files (`rollguard backtest`, in [`crate::backtest`]).
//!
//! All of them hand raw samples to [`crate::series::ArmCollector`], so counter arithmetic is
//! identical whichever source is used. A [`DeploymentSource`] also reports, after each fetch,
//! whether the metrics backend looked down ([`DeploymentSource::backend_error`]); the
//! engine's circuit breaker reads that rather than the checks' outcomes, so a broken rule
//! (a bad selector) is never mistaken for an outage.

pub mod file_sd;
pub mod promql;
pub mod scrape;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::join_all;

use crate::query::{Arms, Fetch, Frame, MetricQuery};
use crate::selector::Matcher;
use crate::series::{ArmCollector, TargetSamples};
use crate::telemetry::Telemetry;

/// Where one arm's instances are found.
#[derive(Clone, Debug)]
pub enum ArmTargets {
    /// Fixed `/metrics` URLs.
    Urls(Vec<String>),
    /// A Prometheus `file_sd` file, re-read every interval.
    FileSd(PathBuf),
}

/// A deployment's source.
pub enum Source {
    Scrape {
        scraper: Arc<scrape::Scraper>,
        arms: Arms<ArmTargets>,
    },
    Prometheus {
        client: Arc<promql::PromClient>,
        arms: Arms<Vec<Matcher>>,
        /// The baseline is read this long in the past (a bake against recorded behaviour).
        baseline_offset: std::time::Duration,
    },
}

impl Source {
    /// `scrape` or `prometheus`: the circuit breaker judges each kind of backend on its own.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Scrape { .. } => "scrape",
            Source::Prometheus { .. } => "prometheus",
        }
    }
}

/// A source plus the counter memory of both arms, for one deployment.
pub struct DeploymentSource {
    source: Source,
    collectors: Arms<ArmCollector>,
    deployment: String,
    telemetry: Arc<Telemetry>,
    /// Last good target list of a `file_sd` arm.
    file_sd_last: Arms<Option<Vec<String>>>,
    /// Targets whose `target_up` series this deployment exports, with their last state
    /// (to log only changes, and to remove the series when the target or deployment goes).
    exported: BTreeMap<(&'static str, String), bool>,
    backend_error: Option<String>,
    /// How long one round of scrapes may take (the analysis interval): a target not scraped
    /// by then is missing for this interval.
    round_budget: Option<std::time::Duration>,
    /// Whether the log has said that gauges are scraped less often than the interval.
    told_sparse: bool,
}

impl DeploymentSource {
    /// A source for one deployment; the counter memory starts empty, so the first fetch of a
    /// (re)started analysis establishes baselines rather than counting since process start.
    pub fn new(source: Source, deployment: &str, telemetry: Arc<Telemetry>) -> Self {
        DeploymentSource {
            source,
            collectors: Arms::default(),
            deployment: deployment.to_string(),
            telemetry,
            file_sd_last: Arms::default(),
            exported: BTreeMap::new(),
            backend_error: None,
            round_budget: None,
            told_sparse: false,
        }
    }

    /// `scrape` or `prometheus`.
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }

    /// After a fetch: why the metrics backend looked down (every target unreachable, or every
    /// query failed for the backend's reasons), or `None` if something answered.
    pub fn backend_error(&self) -> Option<&str> {
        self.backend_error.as_deref()
    }

    /// Bounds each round of scrapes to `budget` (the analysis interval), so that slow targets
    /// behind a saturated concurrency limit cost an interval's data, never the schedule.
    pub fn set_round_budget(&mut self, budget: std::time::Duration) {
        self.round_budget = Some(budget);
    }

    /// Fetches every query for both arms for the interval ending now.
    pub async fn fetch(&mut self, queries: &[MetricQuery]) -> Frame {
        let (b, c) = match &self.source {
            Source::Scrape { scraper, arms } => {
                let (scraper, arms) = (scraper.clone(), arms.clone());
                self.fetch_scrape(&scraper, &arms, queries).await
            }
            Source::Prometheus {
                client,
                arms,
                baseline_offset,
            } => {
                let (client, arms, offset) = (client.clone(), arms.clone(), *baseline_offset);
                self.fetch_prometheus(&client, &arms, offset, queries).await
            }
        };
        let frame = crate::series::frame(&mut self.collectors, queries, b, c);
        if !self.told_sparse
            && [&self.collectors.baseline, &self.collectors.canary]
                .iter()
                .any(|c| c.gauges_waiting())
        {
            self.told_sparse = true;
            tracing::info!(
                deployment = %self.deployment,
                "gauge samples arrive less often than the rule's interval: each is judged once, when both arms have a new one (docs/sources.md)"
            );
        }
        frame
    }

    async fn fetch_prometheus(
        &mut self,
        client: &promql::PromClient,
        arms: &Arms<Vec<Matcher>>,
        baseline_offset: std::time::Duration,
        queries: &[MetricQuery],
    ) -> (Vec<Fetch>, Vec<Fetch>) {
        // One evaluation instant for every selector of both arms (see `promql`); a bake's
        // baseline is the same instant, `baseline_offset` ago.
        let at = SystemTime::now()
            .checked_sub(client.config().eval_delay)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let at_ms = scrape::epoch_ms(at);
        let (b, c) = tokio::join!(
            client.fetch_arm(
                queries,
                &arms.baseline,
                "baseline",
                at_ms - baseline_offset.as_millis() as i64
            ),
            client.fetch_arm(queries, &arms.canary, "canary", at_ms)
        );
        let total = b.sent() + c.sent();
        let errors: Vec<&promql::QueryError> = b.errors().chain(c.errors()).collect();
        for _ in &errors {
            Telemetry::inc(&self.telemetry.source_errors, &[("source", "prometheus")]);
        }
        let down = total > 0 && errors.len() == total && errors.iter().all(|e| e.is_backend());
        let was = self.backend_error.is_some();
        self.backend_error =
            down.then(|| errors.first().map(|e| e.to_string()).unwrap_or_default());
        match (&self.backend_error, errors.first()) {
            (Some(e), _) if !was => {
                tracing::warn!(deployment = %self.deployment, error = %e, "Prometheus source failing")
            }
            (None, Some(e)) => {
                tracing::debug!(deployment = %self.deployment, error = %e, "some Prometheus queries failed")
            }
            (None, None) if was => {
                tracing::info!(deployment = %self.deployment, "Prometheus source answering again")
            }
            _ => {}
        }
        (
            promql::collect(&mut self.collectors.baseline, queries, &b),
            promql::collect(&mut self.collectors.canary, queries, &c),
        )
    }

    async fn fetch_scrape(
        &mut self,
        scraper: &scrape::Scraper,
        arms: &Arms<ArmTargets>,
        queries: &[MetricQuery],
    ) -> (Vec<Fetch>, Vec<Fetch>) {
        let targets_b = resolve(
            &arms.baseline,
            &mut self.file_sd_last.baseline,
            &self.deployment,
        )
        .await;
        let targets_c = resolve(
            &arms.canary,
            &mut self.file_sd_last.canary,
            &self.deployment,
        )
        .await;
        let deadline = self
            .round_budget
            .map(|b| (tokio::time::Instant::now() + b, b));
        let (bodies_b, bodies_c) = tokio::join!(
            scrape_all(scraper, &targets_b, deadline),
            scrape_all(scraper, &targets_c, deadline)
        );

        let cfg = scraper.config();
        let parse = |bodies| parse_all(bodies, cfg.strict, cfg.honor_timestamps);
        let parsed_b = parse(&bodies_b);
        let parsed_c = parse(&bodies_c);

        // Telemetry and logs per target; only changes of state are logged.
        let mut seen = Vec::new();
        let (mut attempted, mut unreachable, mut first_error) = (0usize, 0usize, None::<String>);
        for (role, parsed) in [("baseline", &parsed_b), ("canary", &parsed_c)] {
            for (target, result, duration) in parsed {
                attempted += 1;
                let labels = [
                    ("deployment", self.deployment.as_str()),
                    ("role", role),
                    ("target", *target),
                ];
                let up = result.is_ok();
                Telemetry::set(&self.telemetry.target_up, &labels, i64::from(up));
                if let Some(d) = duration {
                    Telemetry::set_f(&self.telemetry.scrape_duration, &labels, d.as_secs_f64());
                }
                let key = (role, target.to_string());
                let before = self.exported.insert(key.clone(), up);
                seen.push(key);
                if let Err(e) = result {
                    Telemetry::inc(&self.telemetry.scrape_errors, &[("reason", e.reason())]);
                    if e.is_unreachable() {
                        unreachable += 1;
                    }
                    first_error.get_or_insert_with(|| format!("{target}: {e}"));
                    if before != Some(false) {
                        tracing::warn!(deployment = %self.deployment, role, target, error = %e, "scrape failed");
                    }
                } else if before == Some(false) {
                    tracing::info!(deployment = %self.deployment, role, target, "target answering again");
                }
            }
        }
        // Targets that left the arm (file_sd) stop being exported.
        let gone: Vec<(&'static str, String)> = self
            .exported
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.unexport(&k);
            self.exported.remove(&k);
        }
        self.backend_error =
            (attempted > 0 && unreachable == attempted).then(|| first_error.unwrap_or_default());

        let tb = to_targets(&parsed_b, &targets_b);
        let tc = to_targets(&parsed_c, &targets_c);
        (
            self.collectors.baseline.collect(queries, &tb),
            self.collectors.canary.collect(queries, &tc),
        )
    }

    fn unexport(&self, (role, target): &(&'static str, String)) {
        let labels = [
            ("deployment", self.deployment.as_str()),
            ("role", *role),
            ("target", target.as_str()),
        ];
        Telemetry::remove(&self.telemetry.target_up, &labels);
        Telemetry::remove(&self.telemetry.scrape_duration, &labels);
    }
}

impl Drop for DeploymentSource {
    /// A finished deployment's per-target series leave rollguard's `/metrics`, so a daemon
    /// that watches thousands of deployments does not grow without bound.
    fn drop(&mut self) {
        for k in self.exported.keys() {
            self.unexport(k);
        }
    }
}

/// One target's parse result (with the scrape's network time, when it got a body).
type Parsed<'a> = (
    &'a str,
    Result<crate::expo::Exposition<'a>, scrape::ScrapeError>,
    Option<std::time::Duration>,
);

fn parse_all(
    bodies: &[(String, Result<scrape::Body, scrape::ScrapeError>)],
    strict: bool,
    honor_timestamps: bool,
) -> Vec<Parsed<'_>> {
    bodies
        .iter()
        .map(|(t, r)| {
            let parsed = r
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|b| scrape::parse_body(b, strict, honor_timestamps));
            (t.as_str(), parsed, r.as_ref().ok().map(|b| b.duration))
        })
        .collect()
}

/// The collector's view of one arm: every target's samples or error, plus a `file_sd` failure
/// when the arm's targets could not be listed at all.
fn to_targets<'a>(
    parsed: &'a [Parsed<'a>],
    resolved: &Result<Vec<String>, String>,
) -> Vec<TargetSamples<'a, crate::expo::Sample<'a>>> {
    let mut v: Vec<TargetSamples<'a, crate::expo::Sample<'a>>> = parsed
        .iter()
        .map(|(t, p, _)| TargetSamples {
            target: t,
            samples: p
                .as_ref()
                .map(|e| e.samples.as_slice())
                .map_err(ToString::to_string),
        })
        .collect();
    if let Err(e) = resolved {
        v.push(TargetSamples {
            target: "file_sd",
            samples: Err(e.clone()),
        });
    }
    v
}

/// An arm's target URLs for this interval (credentials in URLs are removed from the names used
/// in labels and messages; the request still uses the URL as given).
async fn resolve(
    arm: &ArmTargets,
    last: &mut Option<Vec<String>>,
    deployment: &str,
) -> Result<Vec<String>, String> {
    match arm {
        ArmTargets::Urls(u) => Ok(u.clone()),
        ArmTargets::FileSd(path) => {
            let p = path.clone();
            let read = tokio::task::spawn_blocking(move || file_sd::read_targets(&p))
                .await
                .unwrap_or_else(|e| Err(format!("file_sd reader failed: {e}")));
            match read {
                Ok(urls) => {
                    *last = Some(urls.clone());
                    Ok(urls)
                }
                Err(e) => match last {
                    Some(prev) => {
                        tracing::warn!(deployment, file = %path.display(), error = %e, "file_sd unreadable; keeping the last good target list");
                        Ok(prev.clone())
                    }
                    None => Err(format!("file_sd {}: {e}", path.display())),
                },
            }
        }
    }
}

/// Scrapes every target of one arm concurrently (the scraper's semaphore bounds the total),
/// each given up at the round's deadline.
async fn scrape_all(
    scraper: &scrape::Scraper,
    targets: &Result<Vec<String>, String>,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
) -> Vec<(String, Result<scrape::Body, scrape::ScrapeError>)> {
    let Ok(urls) = targets else { return Vec::new() };
    let results = join_all(urls.iter().map(|u| scraper.fetch_by(u, deadline))).await;
    urls.iter()
        .map(|u| crate::net::redact_userinfo(u))
        .zip(results)
        .collect()
}

//! Metric sources: where an arm's samples come from each interval.
//!
//! - [`scrape`]: rollguard fetches the instances' `/metrics` itself;
//! - [`promql`]: a Prometheus-compatible server answers instant queries;
//! - recorded files (`rollguard backtest`, in [`crate::backtest`]).
//!
//! All of them hand raw samples to [`crate::series::ArmCollector`], so counter arithmetic is
//! identical whichever source is used.

pub mod file_sd;
pub mod promql;
pub mod scrape;

use std::sync::Arc;

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
    FileSd(std::path::PathBuf),
}

/// A deployment's source, with the per-arm counter memory.
pub enum Source {
    Scrape {
        scraper: Arc<scrape::Scraper>,
        arms: Arms<ArmTargets>,
    },
    Prometheus {
        client: Arc<promql::PromClient>,
        arms: Arms<Vec<Matcher>>,
    },
}

/// A source plus the counter memory of both arms.
pub struct DeploymentSource {
    pub source: Source,
    collectors: Arms<ArmCollector>,
    deployment: String,
    telemetry: Arc<Telemetry>,
}

impl DeploymentSource {
    pub fn new(source: Source, deployment: &str, telemetry: Arc<Telemetry>) -> Self {
        DeploymentSource {
            source,
            collectors: Arms::default(),
            deployment: deployment.to_string(),
            telemetry,
        }
    }

    /// Fetches every query for both arms for the interval ending now.
    pub async fn fetch(&mut self, queries: &[MetricQuery]) -> Frame {
        let (b, c) = match &self.source {
            Source::Scrape { scraper, arms } => {
                let (b, c) = tokio::join!(
                    scrape_arm(
                        scraper,
                        &arms.baseline,
                        "baseline",
                        &self.deployment,
                        &self.telemetry
                    ),
                    scrape_arm(
                        scraper,
                        &arms.canary,
                        "canary",
                        &self.deployment,
                        &self.telemetry
                    )
                );
                (
                    self.collect_scraped(queries, b, true),
                    self.collect_scraped(queries, c, false),
                )
            }
            Source::Prometheus { client, arms } => {
                let (b, c) = tokio::join!(
                    client.fetch_arm(queries, &arms.baseline),
                    client.fetch_arm(queries, &arms.canary)
                );
                if b.is_err() || c.is_err() {
                    Telemetry::inc(&self.telemetry.source_errors, &[("source", "prometheus")]);
                }
                (
                    promql::collect(&mut self.collectors.baseline, queries, b),
                    promql::collect(&mut self.collectors.canary, queries, c),
                )
            }
        };
        Frame {
            values: b
                .into_iter()
                .zip(c)
                .map(|(baseline, canary)| Arms { baseline, canary })
                .collect(),
        }
    }

    fn collect_scraped(
        &mut self,
        queries: &[MetricQuery],
        fetched: Vec<(String, Result<scrape::Body, String>)>,
        baseline: bool,
    ) -> Vec<Fetch> {
        let strict = match &self.source {
            Source::Scrape { scraper, .. } => scraper.strict(),
            Source::Prometheus { .. } => true,
        };
        let parsed: Vec<(String, Result<crate::expo::Exposition<'_>, String>)> = fetched
            .iter()
            .map(|(t, r)| {
                let p = match r {
                    Ok(body) => scrape::parse_body(body, strict).map_err(|e| {
                        Telemetry::inc(&self.telemetry.scrape_errors, &[("reason", e.reason())]);
                        Telemetry::set(
                            &self.telemetry.target_up,
                            &[("deployment", &self.deployment), ("target", t)],
                            0,
                        );
                        e.to_string()
                    }),
                    Err(e) => Err(e.clone()),
                };
                (t.clone(), p)
            })
            .collect();
        let targets: Vec<TargetSamples<'_, crate::expo::Sample<'_>>> = parsed
            .iter()
            .map(|(t, p)| TargetSamples {
                target: t.as_str(),
                samples: p
                    .as_ref()
                    .map(|e| e.samples.as_slice())
                    .map_err(Clone::clone),
            })
            .collect();
        let col = if baseline {
            &mut self.collectors.baseline
        } else {
            &mut self.collectors.canary
        };
        col.collect(queries, &targets)
    }
}

async fn scrape_arm(
    scraper: &scrape::Scraper,
    arm: &ArmTargets,
    role: &str,
    deployment: &str,
    telemetry: &Telemetry,
) -> Vec<(String, Result<scrape::Body, String>)> {
    let urls = match arm {
        ArmTargets::Urls(u) => u.clone(),
        ArmTargets::FileSd(path) => match file_sd::read_targets(path) {
            Ok(u) => u,
            Err(e) => {
                return vec![(
                    format!("file_sd:{}", path.display()),
                    Err(format!("{role}: {e}")),
                )];
            }
        },
    };
    let results = join_all(urls.iter().map(|u| scraper.fetch(u))).await;
    urls.into_iter()
        .zip(results)
        .map(|(u, r)| {
            let labels = [("deployment", deployment), ("target", u.as_str())];
            match &r {
                Ok(b) => {
                    Telemetry::set(&telemetry.target_up, &labels, 1);
                    Telemetry::set_f(
                        &telemetry.scrape_duration,
                        &labels,
                        b.duration.as_secs_f64(),
                    );
                }
                Err(e) => {
                    Telemetry::set(&telemetry.target_up, &labels, 0);
                    Telemetry::inc(&telemetry.scrape_errors, &[("reason", e.reason())]);
                    tracing::warn!(deployment, target = %u, role, error = %e, "scrape failed");
                }
            }
            let r = r.map_err(|e| e.to_string());
            (u, r)
        })
        .collect()
}

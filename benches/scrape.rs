//! Scrape + parse throughput of the direct scrape source for 1 000 targets served locally.
//!
//! An axum server on its own runtime (one worker thread, on the same 2-core machine, so it
//! competes with the scraper for CPU: the figures are a floor) serves 1 000 `/metrics`
//! endpoints. Each round scrapes all of them through one [`Scraper`] (the daemon's global
//! concurrency limit, timeout and size cap) and parses every body with the strict rules the
//! daemon applies (`parse_body`: malformed lines, duplicates, stale timestamps). Reported per
//! concurrency limit and body size: targets/s and MB/s over a whole round, and p50/p99 of the
//! per-target scrape time (network time once a permit is held: what `scrape_duration_seconds`
//! shows). A last table runs the full per-deployment path (`DeploymentSource::fetch`: scrape,
//! parse, counter collection for four queries) for 500 baseline + 500 canary targets.
//!
//! Bodies: "small" is a simulated HTTP service (`rollguard::sim::Instance`: request counters,
//! two histograms, process and pool gauges); "large" adds the first ~60 KB of the
//! node_exporter-like fixture of `benches/parse.rs`. Uncompressed (loopback).
//!
//! Run: `cargo bench --bench scrape` (under `cargo test` it runs once on 20 targets as a
//! smoke test).

#[path = "../tests/data/expo/realistic.rs"]
mod realistic;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use futures_util::future::join_all;
use rollguard::config::ScrapeConfig;
use rollguard::query::{Arms, MetricQuery, QueryKind, SeriesQuery};
use rollguard::selector::Selector;
use rollguard::sim::{Instance, Scenario};
use rollguard::source::scrape::{Scraper, parse_body};
use rollguard::source::{ArmTargets, DeploymentSource, Source};
use rollguard::telemetry::Telemetry;
use tokio::time::Instant;

/// The two bodies, shared by every endpoint.
struct Bodies {
    small: Arc<str>,
    large: Arc<str>,
}

fn bodies() -> Bodies {
    let mut inst = Instance::new(&Scenario::default(), false, 0);
    inst.advance_to(600.0);
    let small = inst.exposition();
    let node = realistic::realistic_body(true);
    let mut cut = 0;
    for (i, _) in node.match_indices('\n') {
        if i > 60_000 {
            break;
        }
        cut = i + 1;
    }
    let large = format!("{small}{}", &node[..cut]);
    Bodies {
        small: small.into(),
        large: large.into(),
    }
}

/// Serves `/{size}/{i}/metrics` on 127.0.0.1 from a runtime of its own.
fn serve(b: Bodies) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = crate::support::http::runtime();
    let state = Arc::new(b);
    let addr = rt.block_on(async move {
        let app =
                Router::new()
                    .route(
                        "/{size}/{i}/metrics",
                        get(
                            |State(b): State<Arc<Bodies>>,
                             Path((size, _i)): Path<(String, u32)>| async move {
                                let body = if size == "large" {
                                    b.large.clone()
                                } else {
                                    b.small.clone()
                                };
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4",
                                    )],
                                    body.to_string(),
                                )
                            },
                        ),
                    )
                    .with_state(state);
        crate::support::http::serve(app).await
    });
    (addr, rt)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Round {
    seconds: f64,
    bytes: usize,
    samples: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
}

async fn round(scraper: &Scraper, urls: &[String]) -> Round {
    let start = Instant::now();
    let results = join_all(urls.iter().map(|u| async move {
        let body = scraper.fetch(u).await.ok()?;
        let samples = parse_body(&body, true, true).ok()?.samples.len();
        Some((
            body.text.len(),
            samples,
            body.duration.as_secs_f64() * 1000.0,
        ))
    }))
    .await;
    let seconds = start.elapsed().as_secs_f64();
    let mut r = Round {
        seconds,
        bytes: 0,
        samples: 0,
        failed: 0,
        latencies_ms: Vec::new(),
    };
    for x in results {
        match x {
            Some((b, s, l)) => {
                r.bytes += b;
                r.samples += s;
                r.latencies_ms.push(l);
            }
            None => r.failed += 1,
        }
    }
    r
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (targets, rounds) = if bench { (1000usize, 7usize) } else { (20, 1) };
    rollguard::net::install_crypto_provider();
    let b = bodies();
    let (small_len, large_len) = (b.small.len(), b.large.len());
    let (addr, _server) = serve(b);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    println!(
        "scrape + parse, {targets} targets on 127.0.0.1, {rounds} rounds each (server: 1 tokio worker on the same machine)"
    );
    println!(
        "bodies: small {:.1} KiB, large {:.1} KiB; text 0.0.4, uncompressed",
        small_len as f64 / 1024.0,
        large_len as f64 / 1024.0
    );
    println!();
    println!(
        "| body | concurrency limit | round p50 | targets/s | MB/s | samples/s | scrape p50 | scrape p99 | failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for size in ["small", "large"] {
        for concurrency in [16usize, 64, 256] {
            let cfg = ScrapeConfig {
                concurrency,
                timeout: Duration::from_secs(10),
                ..ScrapeConfig::default()
            };
            let scraper = Scraper::new(&cfg).expect("scraper");
            let urls: Vec<String> = (0..targets)
                .map(|i| format!("http://{addr}/{size}/{i}/metrics"))
                .collect();
            rt.block_on(round(&scraper, &urls)); // warm-up: connections, allocator
            let mut all: Vec<Round> = Vec::new();
            for _ in 0..rounds {
                all.push(rt.block_on(round(&scraper, &urls)));
            }
            all.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let mid = &all[all.len() / 2];
            let mut lat: Vec<f64> = all
                .iter()
                .flat_map(|r| r.latencies_ms.iter().copied())
                .collect();
            lat.sort_by(f64::total_cmp);
            let failed: usize = all.iter().map(|r| r.failed).sum();
            println!(
                "| {size} | {concurrency} | {:.0} ms | {:.0} | {:.1} | {:.0} | {:.2} ms | {:.2} ms | {failed} |",
                mid.seconds * 1000.0,
                targets as f64 / mid.seconds,
                mid.bytes as f64 / mid.seconds / 1e6,
                mid.samples as f64 / mid.seconds,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
            );
        }
    }

    // The whole per-interval path of one deployment with 500 + 500 targets.
    println!();
    println!("| path | targets | concurrency limit | round p50 | targets/s |");
    println!("|---|---:|---:|---:|---:|");
    let cfg = ScrapeConfig {
        timeout: Duration::from_secs(10),
        ..ScrapeConfig::default()
    };
    let scraper = Arc::new(Scraper::new(&cfg).expect("scraper"));
    let half = targets / 2;
    let arm = |from: usize| {
        ArmTargets::Urls(
            (from..from + half)
                .map(|i| format!("http://{addr}/small/{i}/metrics"))
                .collect(),
        )
    };
    let q = |kind, s: &str| -> MetricQuery {
        SeriesQuery {
            kind,
            selector: Selector::parse(s).expect("selector"),
            divide_by: None,
        }
        .into()
    };
    let queries = [
        q(QueryKind::Counter, r#"http_requests_total{code=~"5.."}"#),
        q(QueryKind::Counter, "http_requests_total"),
        q(QueryKind::Histogram, "http_request_duration_seconds"),
        q(QueryKind::Gauge, "process_resident_memory_bytes"),
    ];
    let mut src = DeploymentSource::new(
        Source::Scrape {
            scraper: scraper.clone(),
            arms: Arms {
                baseline: arm(0),
                canary: arm(half),
            },
        },
        "bench",
        Arc::new(Telemetry::new()),
    );
    rt.block_on(src.fetch(&queries));
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            rt.block_on(src.fetch(&queries));
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mid = times[times.len() / 2];
    println!(
        "| DeploymentSource::fetch (scrape, parse, 4 queries collected) | {} | {} | {:.0} ms | {:.0} |",
        2 * half,
        cfg.concurrency,
        mid * 1000.0,
        (2 * half) as f64 / mid
    );
}

//! What the status pages cost at 1 000 deployments (`cargo bench --bench status_page`).
//!
//! A SQLite store (WAL, on the bench's temp directory) holds 1 000 deployments: 100 running
//! (`analysing`) and 900 finished (`rolled_back` or `promoted`). Each has a full chart
//! history: the `http-service` analysis' three checks plus the traffic split, at the
//! 240-point bound, and 40 timeline events. Timed:
//!
//! - `list/store`: what `GET /` reads (every running deployment and the 100 latest finished
//!   ones, records without their charts);
//! - `list/render`: the list page from those records;
//! - `deployment/store`: what `GET /deployments/<id>` reads (the record with its chart, its
//!   timeline, hook actions and notifications);
//! - `deployment/render`: that page (8 SVG charts of 240 points each);
//! - `chart/encode`: the chart's JSON, which the daemon writes with every analysis step
//!   (values rounded to five significant digits).
//!
//! The page sizes and the chart's stored size are printed once.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rollguard::chart::{Decision, History, MAX_POINTS, Point, Series};
use rollguard::deploy::{DeploymentRecord, DeploymentRequest, State};
use rollguard::judge::Outcome;
use rollguard::rules::CheckKind;
use rollguard::status::web::list_records;
use rollguard::status::{DeploymentView, deployment_page, list_page};
use rollguard::store::{EventKind, SqliteStore, Store, TimelineEvent, Writes, new_record, now};

const DEPLOYMENTS: usize = 1000;
const RUNNING: usize = 100;

/// A full history: four series at the bound, evidence rising to the threshold.
fn history() -> History {
    let checks = [
        ("error-ratio", Some(CheckKind::Ratio)),
        ("latency", Some(CheckKind::Histogram)),
        ("memory-growth", Some(CheckKind::Growth)),
        ("traffic-split", None),
    ];
    History {
        stride: 8,
        checks: checks
            .iter()
            .enumerate()
            .map(|(c, (name, kind))| Series {
                name: (*name).into(),
                kind: *kind,
                measure: "rate ratio".into(),
                points: (1..=MAX_POINTS as u64)
                    .map(|i| Point {
                        t: i * 80_000,
                        n: 8,
                        // Values as the judge reports them: ratios of counts and
                        // e-values at full precision.
                        baseline: (31 + (i + c as u64) % 7) as f64 / (2_917 + 13 * i) as f64,
                        canary: (37 + (i * 3 + c as u64) % 11) as f64 / (3_001 + 11 * i) as f64,
                        evidence: 1.031f64.powf(i as f64 + 0.37 * c as f64),
                        threshold: 300.0,
                        outcome: if i % 50 == 0 {
                            Outcome::NoData
                        } else {
                            Outcome::Pending
                        },
                    })
                    .collect(),
            })
            .collect(),
        decision: Some(Decision {
            t: MAX_POINTS as u64 * 80_000,
            verdict: "rollback".into(),
            check: Some("error-ratio".into()),
            reason: "error-ratio: canary 1.9 % vs baseline 1.0 % — worse than the x1.1 tolerance"
                .into(),
        }),
    }
}

fn store_with_deployments(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir).expect("store");
    let chart = history();
    let events: Vec<TimelineEvent> = (0..40)
        .map(|i| TimelineEvent {
            kind: if i == 0 {
                EventKind::Registered
            } else {
                EventKind::CheckFailed
            },
            message: format!("event {i}: canary error-ratio 1.9 % vs baseline 1.0 % over 12 587 / 12 619 requests"),
            data: serde_json::Value::Null,
        })
        .collect();
    for i in 0..DEPLOYMENTS {
        let req: DeploymentRequest = serde_json::from_value(serde_json::json!({
            "id": format!("checkout-{i:04}"), "service": format!("svc-{}", i % 20),
            "analysis": "http-service",
            "labels": { "team": "payments", "commit": "4f2a9c1" },
            "baseline": {"targets": ["http://127.0.0.1:1/metrics"]},
            "canary": {"targets": ["http://127.0.0.1:2/metrics"]}
        }))
        .expect("request");
        let mut rec = new_record(req, "http-service.yaml".into(), "v1".into(), String::new());
        store.register(&rec, "registered").expect("register");
        rec.state = if i < RUNNING {
            State::Analysing
        } else if i % 5 == 0 {
            State::RolledBack
        } else {
            State::Promoted
        };
        if rec.state.is_terminal() {
            rec.finished_at = Some(now());
        }
        rec.reason = "error-ratio: canary 1.9 % vs baseline 1.0 % — worse than the x1.1 tolerance (evidence 7260 ≥ 300)".into();
        rec.elapsed_ms = MAX_POINTS as u64 * 80_000;
        rec.chart = chart.clone();
        store.save(&rec, Writes::events(&events)).expect("save");
    }
    store
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_deployments(dir.path());
    let id = "checkout-0042";

    let (running, recent) = list_records(&store).expect("list");
    assert_eq!(running.len(), RUNNING);
    let list = list_page(&running, &recent, now());
    let rec: DeploymentRecord = store.get(id).expect("get").expect("record");
    let events = store.events(id, 0, 500).expect("events");
    let page = deployment_page(&DeploymentView {
        rec: &rec,
        events: &events,
        actions: &[],
        notifications: &[],
        now: now(),
    });
    let chart_json = serde_json::to_string(&rec.chart).expect("chart json");
    println!(
        "status_page: list page {} KB ({} running + {} recent rows); deployment page {} KB; stored chart {} KB",
        list.len() / 1024,
        running.len(),
        recent.len(),
        page.len() / 1024,
        chart_json.len() / 1024
    );

    let mut g = c.benchmark_group("status_page/1000");
    g.bench_function("list/store", |b| {
        b.iter(|| black_box(list_records(&store).expect("list")))
    });
    g.bench_function("list/render", |b| {
        b.iter(|| black_box(list_page(&running, &recent, now())))
    });
    g.bench_function("deployment/store", |b| {
        b.iter(|| {
            let rec = store.get(id).expect("get");
            let ev = store.events(id, 0, 500).expect("events");
            let ac = store.actions_of(id).expect("actions");
            let ob = store.outbox_of(id).expect("outbox");
            black_box((rec, ev, ac, ob))
        })
    });
    g.bench_function("deployment/render", |b| {
        b.iter(|| {
            black_box(deployment_page(&DeploymentView {
                rec: &rec,
                events: &events,
                actions: &[],
                notifications: &[],
                now: now(),
            }))
        })
    });
    g.bench_function("chart/encode", |b| {
        b.iter(|| black_box(serde_json::to_string(&rec.chart).expect("json")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);

//! Cost of one interval of the judge, per check kind (`cargo bench --bench judge_step`).
//!
//! Each kind gets a one-check analysis (10 s interval, 1 min warm-up, `min_duration` 10 min,
//! `max_duration` 30 min). Its input frames are real: the simulated fleet's instances (two per
//! arm) render their `/metrics` bodies, `expo::parse` parses them and `series::ArmCollector`
//! turns them into counter increases, gauges and bucket increases, as the daemon does with a
//! scrape. The judge is fed `k` intervals, then one more step is timed (the judge is cloned
//! outside the timed part), at `k` = 7 (70 s, the first step after the 1 min warm-up), 60
//! (10 min, `min_duration`: the Mann-Whitney check's only evaluation) and 179 (30 min, the
//! longest history).
//!
//! Also timed: serialising the judge to JSON, which the daemon does every interval to persist
//! it (`Engine::persist`), with its size; and, for the shipped `http-service` analysis (ratio +
//! histogram + growth), the whole per-interval persist: the JSON plus `Store::save` of the
//! record into SQLite (WAL, `synchronous=NORMAL`, on the bench's temp directory).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rollguard::deploy::DeploymentRequest;
use rollguard::expo::{Format, parse};
use rollguard::judge::Judge;
use rollguard::query::{Arms, Frame};
use rollguard::rules::{AnalysisSpec, parse_rule_file};
use rollguard::series::{ArmCollector, TargetSamples};
use rollguard::sim::{Instance, Scenario};
use rollguard::store::{SqliteStore, Store, Writes, new_record};

const HEADER: &str =
    "interval: 10s\nwarmup: 1m\nmin_duration: 10m\nmax_duration: 30m\nalpha: 0.01\nchecks:\n";

/// (label, check YAML) for every check kind; `gauge` both ways (saturation level and level
/// difference), `threshold` both ways (ratio and gauge).
const KINDS: &[(&str, &str)] = &[
    (
        "ratio",
        "  - name: c\n    kind: ratio\n    errors: 'http_requests_total{code=~\"5..\"}'\n    requests: 'http_requests_total'\n",
    ),
    (
        "histogram",
        "  - name: c\n    kind: histogram\n    metric: 'http_request_duration_seconds'\n    quantiles: [0.5, 0.9, 0.99]\n",
    ),
    (
        "growth",
        "  - name: c\n    kind: growth\n    metric: 'process_resident_memory_bytes'\n    max_extra_slope: 1MiB/min\n    limit: 2GiB\n",
    ),
    (
        "gauge-above",
        "  - name: c\n    kind: gauge\n    metric: 'hikaricp_connections_active'\n    divide_by: 'hikaricp_connections_max'\n    above: 0.9\n",
    ),
    (
        "gauge-level",
        "  - name: c\n    kind: gauge\n    metric: 'hikaricp_connections_pending'\n    tolerance: 1\n",
    ),
    (
        "threshold-ratio",
        "  - name: c\n    kind: threshold\n    errors: 'http_requests_total{code=~\"5..\"}'\n    requests: 'http_requests_total'\n    max: 0.05\n",
    ),
    (
        "threshold-gauge",
        "  - name: c\n    kind: threshold\n    metric: 'process_resident_memory_bytes'\n    max: 4e9\n    for: 1m\n",
    ),
    (
        "mann-whitney",
        "  - name: c\n    kind: mann-whitney\n    metric: 'hikaricp_connections_active'\n",
    ),
];

const POINTS: [usize; 3] = [7, 60, 179];

fn spec(kind: &str, check: &str) -> AnalysisSpec {
    let text = format!("analysis: {kind}\n{HEADER}{check}");
    let t = parse_rule_file(Path::new("bench.yaml"), &text, None)
        .unwrap_or_else(|d| panic!("{kind}: {d:?}"));
    t.instantiate(&BTreeMap::new()).expect("instantiate")
}

/// One arm's frames for 181 intervals, built from scraped-and-parsed bodies.
fn frames(spec: &AnalysisSpec, scenario: &Scenario) -> Vec<Frame> {
    let mut arms: Vec<Vec<Instance>> = [false, true]
        .iter()
        .map(|&canary| {
            (0..scenario.instances_per_arm)
                .map(|i| Instance::new(scenario, canary, i))
                .collect()
        })
        .collect();
    let mut cols = [ArmCollector::new(), ArmCollector::new()];
    let mut out = Vec::new();
    for k in 0..=180 {
        let t = k as f64 * 10.0;
        let mut fetched = Vec::new();
        for (arm, col) in arms.iter_mut().zip(cols.iter_mut()) {
            let bodies: Vec<String> = arm
                .iter_mut()
                .map(|inst| {
                    inst.advance_to(t);
                    inst.exposition()
                })
                .collect();
            let parsed: Vec<_> = bodies
                .iter()
                .map(|b| parse(b, Format::Prometheus))
                .collect();
            let names: Vec<String> = (0..parsed.len()).map(|i| format!("i{i}")).collect();
            let targets: Vec<TargetSamples<'_, _>> = parsed
                .iter()
                .zip(&names)
                .map(|(p, n)| TargetSamples {
                    target: n.as_str(),
                    samples: Ok(p.samples.as_slice()),
                })
                .collect();
            fetched.push(col.collect(&spec.queries, &targets));
        }
        let c = fetched.pop().unwrap_or_default();
        let b = fetched.pop().unwrap_or_default();
        out.push(Frame {
            values: b
                .into_iter()
                .zip(c)
                .map(|(baseline, canary)| Arms { baseline, canary })
                .collect(),
        });
    }
    out
}

fn bench_steps(c: &mut Criterion) {
    let scenario = Scenario {
        seed: 7,
        ..Scenario::default()
    };
    println!();
    for (kind, check) in KINDS {
        let spec = spec(kind, check);
        let frames = frames(&spec, &scenario);
        let mut g = c.benchmark_group(format!("judge_step/{kind}"));
        for &k in &POINTS {
            let mut judge = Judge::new(&spec);
            for (i, f) in frames.iter().take(k).enumerate() {
                judge.step(&spec, Duration::from_secs(i as u64 * 10), f, None);
            }
            let t = Duration::from_secs(k as u64 * 10);
            let frame = &frames[k];
            g.bench_function(format!("step_at_{}s", k * 10), |b| {
                b.iter_batched_ref(
                    || judge.clone(),
                    |j| black_box(j.step(&spec, t, black_box(frame), None)),
                    BatchSize::SmallInput,
                )
            });
            if k == *POINTS.last().unwrap_or(&0) {
                let json = serde_json::to_string(&judge).unwrap_or_default();
                println!(
                    "{kind}: judge state after {k} intervals = {} bytes of JSON",
                    json.len()
                );
                g.bench_function("persist_json", |b| {
                    b.iter(|| serde_json::to_string(black_box(&judge)))
                });
            }
        }
        g.finish();
    }
}

/// The per-interval persist of a whole analysis (`Engine::persist`): judge JSON + one SQLite
/// transaction, after 1, 10 and 30 minutes of analysis.
fn bench_persist(c: &mut Criterion) {
    let text =
        include_str!("../rules/http-service.yaml").replace("min_duration: 5m", "min_duration: 30m");
    let t = parse_rule_file(Path::new("http-service.yaml"), &text, None).expect("rule");
    let spec = t.instantiate(&BTreeMap::new()).expect("spec");
    let scenario = Scenario {
        seed: 7,
        ..Scenario::default()
    };
    let frames = frames(&spec, &scenario);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let req: DeploymentRequest = serde_json::from_value(serde_json::json!({
        "id": "bench", "analysis": "http-service",
        "baseline": {"targets": ["http://127.0.0.1:1/metrics"]},
        "canary": {"targets": ["http://127.0.0.1:2/metrics"]}
    }))
    .expect("request");
    let mut rec = new_record(
        req,
        "http-service.yaml".into(),
        spec.version.clone(),
        text.clone(),
    );
    store.register(&rec, "registered").expect("register");
    let mut g = c.benchmark_group("persist/http-service");
    let mut judge = Judge::new(&spec);
    let mut done = 0;
    for k in [7usize, 60, 179] {
        let mut last = None;
        for (i, f) in frames.iter().enumerate().take(k).skip(done) {
            last = Some(judge.step(&spec, Duration::from_secs(i as u64 * 10), f, None));
        }
        done = k;
        if let Some(step) = last {
            rec.checks = serde_json::to_value(&step.checks).unwrap_or_default();
        }
        rec.judge = serde_json::to_string(&judge).ok();
        println!(
            "http-service after {k} intervals: judge JSON {} bytes, record JSON {} bytes",
            rec.judge.as_ref().map_or(0, String::len),
            serde_json::to_string(&rec).map_or(0, |s| s.len())
        );
        g.bench_function(format!("json_and_save_at_{}s", k * 10), |b| {
            b.iter(|| {
                rec.judge = serde_json::to_string(black_box(&judge)).ok();
                store.save(&rec, Writes::default()).expect("save");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_steps, bench_persist);
criterion_main!(benches);

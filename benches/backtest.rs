//! `rollguard backtest` on a 30-minute recording of four instances (two per arm, a sample
//! every 10 s: 181 scrapes each), `cargo bench --bench backtest`.
//!
//! The rule is the shipped `http-service` template (error ratio, latency histogram, memory
//! growth) with `min_duration: 30m`, so that a healthy canary is not promoted early and every
//! one of the 181 intervals is judged: the longest replay this recording allows. Timed:
//!
//! * in process: parsing the four recordings (`backtest::recordings`), the replay
//!   (`backtest::replay`), and both together, with criterion;
//! * the real binary on files (`rollguard backtest --format json`), wall time of the whole
//!   process (start, read, parse, replay, print), 15 runs, median and range.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use criterion::Criterion;
use rollguard::backtest::{recordings, replay};
use rollguard::query::Arms;
use rollguard::rules::{AnalysisSpec, parse_rule_file};
use rollguard::sim::{Scenario, record};

const BIN: &str = env!("CARGO_BIN_EXE_rollguard");
const SHIPPED: &str = include_str!("../rules/http-service.yaml");

fn rule_text() -> String {
    SHIPPED.replace("min_duration: 5m", "min_duration: 30m")
}

fn spec() -> AnalysisSpec {
    let t = parse_rule_file(Path::new("http-service.yaml"), &rule_text(), None).expect("rule");
    t.instantiate(&BTreeMap::new()).expect("instantiate")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: only check it starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("backtest: run with `cargo bench --bench backtest`");
        return;
    }
    let scenario = Scenario {
        seed: 3,
        ..Scenario::default()
    };
    let rec = record(&scenario);
    let bytes: usize = rec
        .baseline
        .iter()
        .chain(&rec.canary)
        .map(String::len)
        .sum();
    let spec = spec();
    let b = recordings(&rec.baseline, "baseline").expect("baseline");
    let c = recordings(&rec.canary, "canary").expect("canary");
    let out = replay(
        &spec,
        Arms {
            baseline: &b,
            canary: &c,
        },
        None,
    );
    println!(
        "\nrecording: {} instances, {:.0} s, {:.2} MB of OpenMetrics; replay: {} intervals judged, verdict {} at {:?} s",
        rec.baseline.len() + rec.canary.len(),
        scenario.duration_s,
        bytes as f64 / 1e6,
        out.timeline.len(),
        out.verdict,
        out.decided_at_s
    );

    let mut c_ = Criterion::default()
        .configure_from_args()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(5))
        .sample_size(20);
    let mut g = c_.benchmark_group("backtest_30min_4_instances");
    g.bench_function("parse_recordings", |bn| {
        bn.iter(|| {
            let b = recordings(black_box(&rec.baseline), "baseline").expect("b");
            let c = recordings(black_box(&rec.canary), "canary").expect("c");
            (b.len(), c.len())
        })
    });
    g.bench_function("replay", |bn| {
        bn.iter(|| {
            replay(
                &spec,
                Arms {
                    baseline: black_box(&b),
                    canary: black_box(&c),
                },
                None,
            )
            .timeline
            .len()
        })
    });
    g.bench_function("parse_and_replay", |bn| {
        bn.iter(|| {
            let b = recordings(black_box(&rec.baseline), "baseline").expect("b");
            let c = recordings(black_box(&rec.canary), "canary").expect("c");
            replay(
                &spec,
                Arms {
                    baseline: &b,
                    canary: &c,
                },
                None,
            )
            .timeline
            .len()
        })
    });
    g.finish();

    // The real binary on files.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("http-service.yaml"), rule_text()).expect("rule");
    let (bf, cf) = rec.write_to(dir.path()).expect("write recordings");
    let run = || {
        let start = Instant::now();
        let o = Command::new(BIN)
            .arg("backtest")
            .arg("--rules")
            .arg(&rules)
            .args([
                "--analysis",
                "http-service",
                "--format",
                "json",
                "--baseline",
            ])
            .args(&bf)
            .arg("--canary")
            .args(&cf)
            .output()
            .expect("run rollguard backtest");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        (ms, v)
    };
    let (_, v) = run();
    let mut times: Vec<f64> = (0..15).map(|_| run().0).collect();
    let med = median(&mut times);
    println!(
        "real binary: `rollguard backtest --format json` on the 4 files: median {med:.1} ms \
         (min {:.1}, max {:.1}, 15 runs); verdict {} at {}",
        times[0],
        times[times.len() - 1],
        v["verdict"],
        v["decided_at_s"]
    );
    c_.final_summary();
}

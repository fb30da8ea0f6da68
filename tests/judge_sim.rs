//! The judge under continuous monitoring: the false-rollback rate of A/A runs stays under
//! alpha with a look every interval (issue 2, item 3), and no sequence of inputs, however
//! broken, makes it panic (issue 9).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use crate::support::prop::awkward_f64;
use rollguard::judge::{Judge, Verdict};
use rollguard::query::{Arms, Fetch, Frame, Observed};
use rollguard::rules::{AnalysisSpec, parse_rule_file};
use rollguard::series::{ArmCollector, OwnedSample, TargetSamples, frame};
use rollguard::stats::rng::Rng;

fn spec(text: &str) -> AnalysisSpec {
    parse_rule_file(Path::new("t.yaml"), text, None)
        .expect("rule")
        .instantiate(&BTreeMap::new())
        .expect("spec")
}

const RATIO_AA: &str = "analysis: aa\ninterval: 10s\nwarmup: 1m\nmin_duration: 30m\nmax_duration: 30m\nalpha: 0.05\nchecks:\n  - name: e\n    kind: ratio\n    errors: 'e_total'\n    requests: 'r_total'\n    tolerance: 1.0\n";

/// One A/A run at the null boundary (equal error rates): Poisson traffic with load varying
/// over the run and a given canary share. Returns whether the judge ever rolled back.
fn aa_run(spec: &AnalysisSpec, seed: u64, share: f64, rate: f64) -> bool {
    let mut rng = Rng::new(seed);
    rolls_back(spec, |k| {
        let load = 1200.0 * (1.0 + 0.5 * (k as f64 / 40.0).sin());
        let nb = rng.poisson(load * share) as f64;
        let na = rng.poisson(load * (1.0 - share)) as f64;
        let eb = rng.binomial(nb as u64, rate) as f64;
        let ea = rng.binomial(na as u64, rate) as f64;
        vec![
            Arms {
                baseline: Fetch::Value(Observed::Counter(ea)),
                canary: Fetch::Value(Observed::Counter(eb)),
            },
            Arms {
                baseline: Fetch::Value(Observed::Counter(na)),
                canary: Fetch::Value(Observed::Counter(nb)),
            },
        ]
    })
}

/// Looks at every one of 180 ten-second intervals, with `values(k)` the queries' answers in
/// the `k`th: whether the judge ever rolled back.
fn rolls_back(spec: &AnalysisSpec, mut values: impl FnMut(u64) -> Vec<Arms<Fetch>>) -> bool {
    let mut judge = Judge::new(spec);
    (1..=180u64).any(|k| {
        let frame = Frame { values: values(k) };
        let step = judge.step(spec, Duration::from_secs(10 * k), &frame, None);
        matches!(step.verdict, Verdict::Rollback { .. })
    })
}

#[test]
fn ratio_false_rollbacks_stay_under_alpha_with_a_look_every_interval() {
    let s = spec(RATIO_AA);
    within_alpha("ratio, 180 looks each", 600, |i| {
        aa_run(&s, 1000 + i, [0.5, 0.1, 0.02][i as usize % 3], 0.01)
    });
}

/// Runs `runs` A/A runs (`rolls_back(i)` for the `i`th) and asserts that at most alpha (5 %)
/// of them rolled back, saying how many did.
fn within_alpha(what: &str, runs: u64, mut rolls_back: impl FnMut(u64) -> bool) {
    let false_rollbacks = (0..runs).filter(|&i| rolls_back(i)).count();
    let rate = false_rollbacks as f64 / runs as f64;
    eprintln!("A/A false rollbacks, {what}: {false_rollbacks}/{runs} = {rate:.4} (alpha 0.05)");
    assert!(
        rate <= 0.05,
        "{what}: false-rollback rate {rate} above alpha"
    );
}

/// A growth check alone at alpha 0.05 over 30 minutes.
fn growth_aa(max_extra_slope: &str) -> String {
    format!(
        "analysis: aa\ninterval: 10s\nwarmup: 1m\nmin_duration: 30m\nmax_duration: 30m\nalpha: 0.05\nchecks:\n  - name: g\n    kind: growth\n    metric: 'rss'\n    max_extra_slope: {max_extra_slope}\n"
    )
}

/// A garbage-collected instance's resident memory (MiB): a base, a sawtooth of its own
/// period, height and phase, and scrape noise.
struct Sawtooth {
    base: f64,
    period: f64,
    phase: f64,
    height: f64,
}

impl Sawtooth {
    /// A period between `period` and twice it (s), a tooth within 20 % of `height` (MiB).
    fn new(rng: &mut Rng, (period, height): (f64, f64)) -> Sawtooth {
        Sawtooth {
            base: 140.0 * (0.97 + 0.06 * rng.uniform()),
            period: period * (1.0 + rng.uniform()),
            phase: rng.uniform(),
            height: height * (0.8 + 0.4 * rng.uniform()),
        }
    }

    fn at(&self, t: f64, rng: &mut Rng) -> f64 {
        let tooth = (t / self.period + self.phase).fract();
        (self.base + tooth * self.height + 0.5 * rng.normal()) * 1_048_576.0
    }
}

/// One A/A run of the growth check: two instances per arm whose sawtooths beat against each
/// other. Returns whether the judge ever rolled back.
fn growth_aa_run(spec: &AnalysisSpec, seed: u64, gc: (f64, f64)) -> bool {
    let mut rng = Rng::new(seed);
    let arms: Vec<Vec<Sawtooth>> = (0..2)
        .map(|_| (0..2).map(|_| Sawtooth::new(&mut rng, gc)).collect())
        .collect();
    rolls_back(spec, |k| {
        let t = 10.0 * k as f64;
        let [baseline, canary] = [0, 1].map(|a| {
            let values = arms[a].iter().map(|i| i.at(t, &mut rng)).collect();
            Fetch::Value(Observed::Gauge(values))
        });
        vec![Arms { baseline, canary }]
    })
}

/// Instances scraped every `every` intervals, each at its own offset, and read through the
/// collector at every interval as the daemon reads them: each sample is judged once, in an
/// interval where both arms have a new one (`rollguard::series::frame`).
struct Sparse {
    every: u64,
    /// Per arm and instance: the scrape offset (intervals), and the last sample (ms, value).
    instances: [[(u64, i64, f64); 2]; 2],
    cols: Arms<ArmCollector>,
}

impl Sparse {
    fn new(rng: &mut Rng, every: u64) -> Sparse {
        let mut instance = || ((rng.uniform() * every as f64) as u64, -1, 0.0);
        Sparse {
            every,
            instances: [[instance(), instance()], [instance(), instance()]],
            cols: Arms::default(),
        }
    }

    /// The frame of interval `k` for a rule whose one query reads `name`; `draw(arm,
    /// instance, t)` is the value an instance's scrape at `t` seconds gives.
    fn frame(
        &mut self,
        spec: &AnalysisSpec,
        (k, name): (u64, &str),
        mut draw: impl FnMut(usize, usize, f64) -> f64,
    ) -> Vec<Arms<Fetch>> {
        let [b, c] = [0, 1].map(|a| {
            let targets: Vec<(String, Vec<OwnedSample>)> = (0..2)
                .map(|i| {
                    let (phase, ms, value) = &mut self.instances[a][i];
                    if (k + *phase) % self.every == 0 {
                        (*ms, *value) = (10_000 * k as i64, draw(a, i, 10.0 * k as f64));
                    }
                    let sample = OwnedSample {
                        name: name.into(),
                        labels: Vec::new(),
                        value: *value,
                        timestamp_ms: Some(*ms),
                    };
                    (
                        format!("{a}-{i}"),
                        if *ms < 0 { vec![] } else { vec![sample] },
                    )
                })
                .collect();
            let targets: Vec<TargetSamples<'_, OwnedSample>> = targets
                .iter()
                .map(|(t, s)| TargetSamples {
                    target: t,
                    samples: Ok(s.as_slice()),
                })
                .collect();
            let col = if a == 0 {
                &mut self.cols.baseline
            } else {
                &mut self.cols.canary
            };
            col.collect(&spec.queries, &targets)
        });
        frame(&mut self.cols, &spec.queries, b, c).values
    }
}

/// One A/A run of the growth check whose samples come every `every` intervals (a Prometheus
/// scraping every minute under a rule's 10 s interval). Returns whether the judge ever rolled
/// back.
fn sparse_growth_aa_run(spec: &AnalysisSpec, seed: u64, gc: (f64, f64), every: u64) -> bool {
    let mut rng = Rng::new(seed);
    let arms: Vec<Vec<Sawtooth>> = (0..2)
        .map(|_| (0..2).map(|_| Sawtooth::new(&mut rng, gc)).collect())
        .collect();
    let mut sparse = Sparse::new(&mut rng, every);
    rolls_back(spec, |k| {
        sparse.frame(spec, (k, "rss"), |a, i, t| arms[a][i].at(t, &mut rng))
    })
}

/// Samples a minute apart under a rule's 10 s interval, through the collector (the growth
/// check reads every instance's latest sample every interval: a repeated sample leaves a
/// floor unchanged). The two-minute floor window then holds two samples per instance and
/// follows the teeth more than the troughs. Measured at alpha 0.05, 400 runs each, GC cycles
/// of 30–120 s: at the templates' 1 MiB/min, 0 false rollbacks with a sample every 30 s and
/// at most 6 (1.5 %) with one a minute; at `max_extra_slope: 0` with one a minute, 22–28
/// (5.5–7 %, above alpha: such data wants `interval: 1m`, whose window holds six samples: 0–4;
/// docs/sources.md).
#[test]
fn growth_false_rollbacks_stay_under_alpha_with_samples_every_minute() {
    let s = spec(&growth_aa("1MiB/min"));
    within_alpha("growth at 1MiB/min, a sample a minute", 400, |i| {
        sparse_growth_aa_run(&s, 7000 + i, (30.0, 24.0), 6)
    });
}

/// Issue 13: the growth check's false-rollback rate stays within alpha for any
/// `max_extra_slope`, 0 included, looked at every interval. Two instances' sawtooths beating
/// in an arm's mean read as trends; the floor follows the lowest instance instead.
#[test]
fn growth_false_rollbacks_stay_under_alpha_at_no_extra_slope_at_all() {
    growth_false_rollbacks_stay_under_alpha("0MiB/min", (60.0, 24.0));
}

/// GC cycles of 5 to 20 minutes (a JVM's old generation) are longer than the rule's floor
/// window: the window must grow to the cycle, or floors follow the teeth.
#[test]
fn growth_false_rollbacks_stay_under_alpha_with_gc_cycles_longer_than_the_window() {
    growth_false_rollbacks_stay_under_alpha("1MiB/min", (300.0, 100.0));
    growth_false_rollbacks_stay_under_alpha("1MiB/min", (600.0, 100.0));
}

fn growth_false_rollbacks_stay_under_alpha(max_extra_slope: &str, gc: (f64, f64)) {
    let s = spec(&growth_aa(max_extra_slope));
    let what = format!("growth at {max_extra_slope}, GC cycles from {} s", gc.0);
    within_alpha(&what, 400, |i| growth_aa_run(&s, 5000 + i, gc));
}

/// A level check alone (`gauge` without `above`) at alpha 0.05 over 30 minutes, tolerance 2.
const GAUGE_AA: &str = "analysis: aa\ninterval: 10s\nwarmup: 1m\nmin_duration: 30m\nmax_duration: 30m\nalpha: 0.05\nchecks:\n  - name: l\n    kind: gauge\n    metric: 'inuse'\n    tolerance: 2\n";

/// One run of the level check at the null boundary: each canary instance holds on average
/// exactly the tolerance (2 connections) more than the baseline's, both of two instances per
/// arm drawing connections in use as a binomial around a load they share, plus per-instance
/// noise that carries over between scrapes with correlation `phi` (slow queries, batch
/// jobs). Returns whether the judge ever rolled back.
fn gauge_aa_run(spec: &AnalysisSpec, seed: u64, phi: f64) -> bool {
    let mut rng = Rng::new(seed);
    let mut wander = [[0.0f64; 2]; 2];
    rolls_back(spec, |k| {
        let load = 0.2 * (1.0 + 0.5 * (k as f64 / 30.0).sin());
        let [baseline, canary] = [0, 1].map(|a| {
            let values = (0..2)
                .map(|i| {
                    let w = &mut wander[a][i];
                    *w = phi * *w + (1.0 - phi * phi).sqrt() * 1.5 * rng.normal();
                    rng.binomial(20, load) as f64 + *w + 2.0 * a as f64
                })
                .collect();
            Fetch::Value(Observed::Gauge(values))
        });
        vec![Arms { baseline, canary }]
    })
}

/// The level check at the null boundary with samples every 30 s under a 10 s interval, each
/// instance scraped at its own offset: each sample judged once, in pairs of the arms' new
/// samples taken up to 20 s apart.
#[test]
fn gauge_level_false_rollbacks_stay_under_alpha_with_samples_every_30s() {
    let s = spec(GAUGE_AA);
    within_alpha("gauge level, a sample every 30 s", 400, |i| {
        let mut rng = Rng::new(9500 + i);
        let mut sparse = Sparse::new(&mut rng, 3);
        rolls_back(&s, |k| {
            let load = 0.2 * (1.0 + 0.5 * (k as f64 / 30.0).sin());
            sparse.frame(&s, (k, "inuse"), |a, _, _| {
                rng.binomial(20, load) as f64 + 2.0 * a as f64
            })
        })
    });
}

/// The level check's false-rollback rate stays within alpha at the null boundary, looked at
/// every interval, whether scrapes are independent or carry over (phi 0.5 and 0.8: a wander
/// that lasts about 15 s and 45 s).
#[test]
fn gauge_level_false_rollbacks_stay_under_alpha() {
    let s = spec(GAUGE_AA);
    for phi in [0.0, 0.5, 0.8] {
        within_alpha(&format!("gauge level, phi {phi}"), 400, |i| {
            gauge_aa_run(&s, 9000 + i, phi)
        });
    }
}

/// The level check compared at equal load (`requests:`), alpha 0.05, tolerance 2.
const GAUGE_AT_LOAD_AA: &str = "analysis: aa\ninterval: 10s\nwarmup: 1m\nmin_duration: 30m\nmax_duration: 30m\nalpha: 0.05\nchecks:\n  - name: l\n    kind: gauge\n    metric: 'inuse'\n    requests: 'r_total'\n    tolerance: 2\n";

/// The level check compared at equal load stays within alpha at the null boundary when a
/// canary pod serves a fifth, or three times, a baseline pod's requests (a mesh weight that
/// does not follow the pod counts). Connections in use are those of an M/G/∞ pool: Poisson
/// with mean requests per second × hold time (Little's law), the hold time the same in both
/// arms, and each canary instance holds exactly the tolerance more. Unscaled, the fifth
/// reads as far within the tolerance (a leak would hide under it) and three times as far
/// beyond it (a healthy canary rolled back).
#[test]
fn gauge_level_at_equal_load_false_rollbacks_stay_under_alpha() {
    let s = spec(GAUGE_AT_LOAD_AA);
    for per_pod in [0.2, 3.0] {
        within_alpha(
            &format!("gauge level at equal load, canary pods at x{per_pod} the load"),
            400,
            |i| {
                let mut rng = Rng::new(9700 + i);
                rolls_back(&s, |k| {
                    let rps = 30.0 * (1.0 + 0.5 * (k as f64 / 30.0).sin());
                    let [baseline, canary] = [(1.0, 0.0), (per_pod, 2.0)].map(|(f, extra)| {
                        let in_use = (0..2)
                            .map(|_| rng.poisson(rps * f * 0.1) as f64 + extra)
                            .collect();
                        let requests = rng.poisson(2.0 * rps * f * 10.0) as f64;
                        (in_use, requests)
                    });
                    vec![
                        Arms {
                            baseline: Fetch::Value(Observed::Gauge(baseline.0)),
                            canary: Fetch::Value(Observed::Gauge(canary.0)),
                        },
                        Arms {
                            baseline: Fetch::Value(Observed::Counter(baseline.1)),
                            canary: Fetch::Value(Observed::Counter(canary.1)),
                        },
                    ]
                })
            },
        );
    }
}

const ALL_KINDS: &str = r#"analysis: all
interval: 10s
warmup: 20s
min_duration: 1m
max_duration: 10m
alpha: 0.01
checks:
  - { name: r, kind: ratio, errors: 'e_total', requests: 'r_total' }
  - { name: h, kind: histogram, metric: 'lat', quantiles: [0.5, 0.99] }
  - { name: g, kind: growth, metric: 'rss', max_extra_slope: 1MiB/min, limit: 1GiB }
  - { name: s, kind: gauge, metric: 'inuse', above: 0.9 }
  - { name: l, kind: gauge, metric: 'inuse' }
  - { name: lr, kind: gauge, metric: 'inuse', requests: 'r_total' }
  - { name: t, kind: threshold, errors: 'e_total', requests: 'r_total', max: 0.05 }
  - { name: tg, kind: threshold, metric: 'inuse', max: 0.95, for: 30s }
  - { name: m, kind: mann-whitney, metric: 'rss' }
"#;

/// Observed values: the awkward ones and ordinary counts and gauges, each of the eight
/// kinds equally often.
fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => awkward_f64(),
        1 => 0.0..1e6f64,
        1 => -1e3..1e3f64,
    ]
}

fn arb_observed() -> impl Strategy<Value = Observed> {
    prop_oneof![
        arb_f64().prop_map(Observed::Counter),
        prop::collection::vec(arb_f64(), 0..4).prop_map(Observed::Gauge),
        prop::collection::vec((arb_f64(), arb_f64()), 0..6).prop_map(Observed::Buckets),
    ]
}

fn arb_fetch() -> impl Strategy<Value = Fetch> {
    prop_oneof![
        6 => arb_observed().prop_map(Fetch::Value),
        1 => Just(Fetch::NoData("none".into())),
        1 => Just(Fetch::Error("boom".into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]
    #[test]
    fn the_judge_never_panics(frames in prop::collection::vec(prop::collection::vec((arb_fetch(), arb_fetch()), 0..8), 1..40), share in prop::option::of(-1.0..2.0f64)) {
        let s = spec(ALL_KINDS);
        let mut judge = Judge::new(&s);
        for (k, f) in frames.into_iter().enumerate() {
            let frame = Frame { values: f.into_iter().map(|(baseline, canary)| Arms { baseline, canary }).collect() };
            let step = judge.step(&s, Duration::from_secs(10 * (k as u64 + 1)), &frame, share);
            prop_assert_eq!(step.checks.len(), s.checks.len());
            // The state always serialises and restores (the daemon persists it every step).
            let json = serde_json::to_string(&judge).expect("serialise");
            judge = Judge::restore(&s, Some(&json));
        }
    }
}

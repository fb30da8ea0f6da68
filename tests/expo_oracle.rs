//! Differential tests against prometheus-parse 0.2.5, used only as an oracle (dev-dependency)
//! on inputs it is known to handle correctly: no braces, commas, equals signs, colons, quotes or
//! escapes in label values, no `:` in names, no `{}`. On those inputs both parsers must return
//! the same samples (name, labels, value, and timestamp where prometheus-parse keeps it).
//!
//! Also checks the realistic ~2 MB body used by the benchmark, in both variants.

#[path = "data/expo/realistic.rs"]
mod realistic;

use std::collections::BTreeMap;

use proptest::prelude::*;
use rollguard::expo::{Exposition, Format, MetricType, parse};

/// One data point in a form both parsers can be reduced to: name, sorted labels, the bucket
/// bound or quantile (prometheus-parse folds those out of the labels), value bits, timestamp.
type Point = (
    String,
    Vec<(String, String)>,
    Option<(&'static str, u64)>,
    u64,
    Option<i64>,
);

fn bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn le_bits(s: &str) -> u64 {
    // The same conversion prometheus-parse applies to `le` and `quantile`.
    bits(s.to_lowercase().parse::<f64>().unwrap_or(f64::NAN))
}

/// Our samples as points, with histogram buckets and summary quantiles folded like
/// prometheus-parse does (by family, `le`/`quantile` removed from the labels). Timestamps of
/// folded points are dropped because prometheus-parse keeps only one per group.
fn ours(e: &Exposition<'_>) -> Vec<Point> {
    let mut out = Vec::new();
    for f in &e.families {
        for s in e.family_samples(f) {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            let fold = match f.kind {
                MetricType::Histogram if s.name.strip_prefix(f.name) == Some("_bucket") => {
                    Some("le")
                }
                MetricType::Summary if s.name == f.name => Some("quantile"),
                _ => None,
            };
            let point = match fold {
                Some(key) => {
                    let at = labels.iter().position(|(n, _)| n == key).unwrap();
                    let (_, v) = labels.remove(at);
                    labels.sort();
                    (
                        f.name.to_string(),
                        labels,
                        Some((key, le_bits(&v))),
                        bits(s.value),
                        None,
                    )
                }
                None => {
                    labels.sort();
                    (
                        s.name.to_string(),
                        labels,
                        None,
                        bits(s.value),
                        s.timestamp_ms,
                    )
                }
            };
            out.push(point);
        }
    }
    out.sort();
    out
}

/// Timestamps at or after this are prometheus-parse's "now" filled in for lines without one;
/// the generators only write timestamps below it. (Taking `now` avoids naming chrono, which is
/// not our dependency.)
const NOW_CUTOFF_MS: i64 = 1_000_000_000_000;

fn theirs(body: &str) -> Vec<Point> {
    use prometheus_parse::{Scrape, Value};
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = Scrape::parse(lines).unwrap();
    let mut out = Vec::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let ts = s.timestamp.timestamp_millis();
        let ts = (ts < NOW_CUTOFF_MS).then_some(ts);
        // Histograms and summaries: a row per bucket or quantile, labelled with its bound.
        let (bound, rows): (&'static str, Vec<(f64, f64)>) = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                out.push((s.metric.clone(), labels, None, bits(*v), ts));
                continue;
            }
            Value::Histogram(b) => ("le", b.iter().map(|b| (b.less_than, b.count)).collect()),
            Value::Summary(q) => (
                "quantile",
                q.iter().map(|q| (q.quantile, q.count)).collect(),
            ),
        };
        for (at, count) in rows {
            let at = Some((bound, bits(at)));
            out.push((s.metric.clone(), labels.clone(), at, bits(count), None));
        }
    }
    out.sort();
    out
}

#[test]
fn realistic_body_is_deterministic_and_about_2_mb() {
    let a = realistic::realistic_body(true);
    let b = realistic::realistic_body(true);
    assert_eq!(a, b);
    assert!(
        (1_800_000..2_400_000).contains(&a.len()),
        "size {} bytes",
        a.len()
    );
    let nb = realistic::realistic_body(false);
    assert!(a.contains("/{id}") && !nb.contains("/{"));
    assert_eq!(realistic::sample_lines(&a), realistic::sample_lines(&nb));
}

#[test]
fn realistic_body_parses_completely_in_both_variants() {
    for braces in [true, false] {
        let body = realistic::realistic_body(braces);
        let e = parse(&body, Format::Prometheus);
        assert!(
            e.errors.is_empty(),
            "{:?}",
            &e.errors[..e.errors.len().min(5)]
        );
        assert_eq!(e.samples.len(), realistic::sample_lines(&body));
        let hist: Vec<_> = e
            .families
            .iter()
            .filter(|f| f.kind == MetricType::Histogram)
            .collect();
        assert_eq!(hist.len(), 6);
        for f in hist {
            let series = e.histogram_series(f).unwrap();
            assert_eq!(series.len(), 20 * 6, "{}", f.name);
            for s in &series {
                assert_eq!(s.buckets.len(), 12);
                assert!(
                    s.buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
                );
                assert_eq!(s.buckets.last().map(|b| b.0), Some(f64::INFINITY));
                assert_eq!(s.count, s.buckets.last().map(|b| b.1));
                assert!(s.sum.is_some());
            }
        }
        let cart = e
            .samples
            .iter()
            .filter(|s| s.name == "http_requests_total")
            .filter(|s| {
                s.label("route")
                    == Some(if braces {
                        "/api/v1/cart/{id}"
                    } else {
                        "/api/v1/cart/:id"
                    })
            })
            .count();
        assert_eq!(cart, 6);
    }
}

#[test]
fn same_samples_as_prometheus_parse_on_the_realistic_body_without_braces() {
    let body = realistic::realistic_body(false);
    let e = parse(&body, Format::Prometheus);
    assert!(e.errors.is_empty());
    let (a, b) = (ours(&e), theirs(&body));
    assert_eq!(a.len(), realistic::sample_lines(&body));
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "first difference: {:?}",
        a.iter().zip(&b).find(|(x, y)| x != y)
    );
}

/// Regression record of the bug that made us write this module (crates.md §1.3): with `{id}`
/// route templates prometheus-parse silently drops every affected sample; we keep them all.
#[test]
fn prometheus_parse_silently_drops_samples_with_braces_in_label_values() {
    let body = realistic::realistic_body(true);
    let ours = ours(&parse(&body, Format::Prometheus));
    let theirs = theirs(&body);
    assert_eq!(ours.len(), realistic::sample_lines(&body));
    // 6 templated routes × 6 (method, status) × (6 histograms × 14 lines + 8 families).
    assert_eq!(ours.len() - theirs.len(), 6 * 6 * (6 * 14 + 8));
}

// ---- generated inputs -------------------------------------------------------------------------

/// A label value prometheus-parse reads correctly.
fn safe_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ./_#-]{0,12}"
}

fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-z_][a-z0-9_]{0,6}", safe_value(), 0..5).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| k != "le" && k != "quantile")
            .collect()
    })
}

/// Numbers as exporters write them.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..10_000_000_000).prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:?}")),
        (-1e6f64..1e6).prop_map(realistic::go_e),
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-Inf".to_string()),
        Just(".5".to_string()),
    ]
}

fn render_labels(labels: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Labels as `(name, value)` pairs.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
enum Fam {
    Plain {
        kind: &'static str,
        /// labels, value, timestamp
        series: Vec<(Labels, String, Option<i64>)>,
    },
    Histogram {
        /// labels, per-bucket increments, sum
        series: Vec<(Labels, Vec<u64>, String)>,
    },
    Summary {
        /// labels, quantile values, sum, count
        series: Vec<(Labels, Vec<String>, String, u64)>,
    },
}

fn family() -> impl Strategy<Value = Fam> {
    let ts = prop::option::of(0i64..NOW_CUTOFF_MS);
    prop_oneof![
        (
            prop::sample::select(vec!["counter", "gauge", "untyped", ""]),
            prop::collection::vec((label_set(), number(), ts), 1..5)
        )
            .prop_map(|(kind, series)| Fam::Plain { kind, series }),
        prop::collection::vec(
            (
                label_set(),
                prop::collection::vec(0u64..1000, 1..6),
                number()
            ),
            1..4
        )
        .prop_map(|series| Fam::Histogram { series }),
        prop::collection::vec(
            (
                label_set(),
                prop::collection::vec(number(), 1..4),
                number(),
                0u64..1000
            ),
            1..4
        )
        .prop_map(|series| Fam::Summary { series }),
    ]
}

fn render(fams: &[(String, Fam)]) -> String {
    let mut out = String::new();
    for (name, fam) in fams {
        match fam {
            Fam::Plain { kind, series } => {
                if !kind.is_empty() {
                    out += &format!("# HELP {name} Some help.\n# TYPE {name} {kind}\n");
                }
                for (labels, v, ts) in series {
                    let ts = ts.map(|t| format!(" {t}")).unwrap_or_default();
                    out += &format!("{name}{} {v}{ts}\n", render_labels(labels, None));
                }
            }
            Fam::Histogram { series } => {
                out += &format!("# TYPE {name} histogram\n");
                for (labels, increments, sum) in series {
                    let mut cumulative = 0;
                    for (k, inc) in increments.iter().enumerate() {
                        cumulative += inc;
                        let le = if k + 1 == increments.len() {
                            "+Inf".to_string()
                        } else {
                            format!("{}", 0.25 * (k + 1) as f64)
                        };
                        out += &format!(
                            "{name}_bucket{} {cumulative}\n",
                            render_labels(labels, Some(("le", &le)))
                        );
                    }
                    out += &format!("{name}_sum{} {sum}\n", render_labels(labels, None));
                    out += &format!("{name}_count{} {cumulative}\n", render_labels(labels, None));
                }
            }
            Fam::Summary { series } => {
                out += &format!("# TYPE {name} summary\n");
                for (labels, values, sum, count) in series {
                    for (k, v) in values.iter().enumerate() {
                        let q = format!("{}", (k as f64 + 1.0) / (values.len() as f64 + 1.0));
                        out += &format!(
                            "{name}{} {v}\n",
                            render_labels(labels, Some(("quantile", &q)))
                        );
                    }
                    out += &format!("{name}_sum{} {sum}\n", render_labels(labels, None));
                    out += &format!("{name}_count{} {count}\n", render_labels(labels, None));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_samples_as_prometheus_parse_on_generated_expositions(
        fams in prop::collection::vec(("[a-z][a-z0-9_]{0,8}", family()), 0..6)
    ) {
        // Unique family names (a suffix keeps `x` and `x_sum` style clashes impossible).
        let fams: Vec<(String, Fam)> = fams
            .into_iter()
            .enumerate()
            .map(|(i, (n, f))| (format!("{n}_f{i}"), f))
            .collect();
        let body = render(&fams);
        let e = parse(&body, Format::Prometheus);
        prop_assert!(e.errors.is_empty(), "{:?}\n{}", e.errors, body);
        prop_assert_eq!(e.samples.len(), realistic::sample_lines(&body));
        prop_assert_eq!(ours(&e), theirs(&body), "body:\n{}", body);
    }
}

#[test]
fn label_values_that_prometheus_parse_mangles_are_kept_exactly() {
    // Outside the oracle's domain on purpose: these are the values it gets wrong.
    let body = "m{a=\"x,y\",b=\"k=v\",c=\"{id}\",d=\"q\\\"q\"} 1\njob:rate5m 2\nm2{} 3\n";
    let e = parse(body, Format::Prometheus);
    assert!(e.errors.is_empty());
    let got: BTreeMap<&str, &str> = e.samples[0]
        .labels
        .iter()
        .map(|l| (l.name, l.value.as_ref()))
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([("a", "x,y"), ("b", "k=v"), ("c", "{id}"), ("d", "q\"q")])
    );
    assert_eq!(e.samples.len(), 3);
    assert!(theirs(body).len() < 3);
}

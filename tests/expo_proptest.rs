//! Property tests: `parse` never panics and keeps its structural promises on arbitrary input,
//! and rendering a random valid exposition (any label value, any float, escapes, quoted names,
//! exemplars, both formats) and parsing it back gives exactly what was rendered. Plus huge
//! hostile inputs that would expose quadratic behaviour.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rollguard::expo::{Exposition, Format, MAX_ERRORS, MetricType, parse};

use crate::support::expo::check_invariants;

const FRAGMENTS: &[&str] = &[
    "m",
    "x_bucket",
    "x_sum",
    "x_count",
    "x_total",
    "x_created",
    "job:rate",
    "le",
    "quantile",
    "{",
    "}",
    "\"",
    "\\",
    "\\\"",
    "\\n",
    "\\\\",
    "=",
    ",",
    ", ",
    "#",
    " # ",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "1",
    "-1",
    ".5",
    "1e3",
    "1.5e+06",
    "NaN",
    "+Inf",
    "-Inf",
    "Inf",
    "0x1p3",
    "1700000000.123",
    "1700000000123",
    "# TYPE ",
    "# HELP ",
    "# UNIT ",
    "# EOF",
    "# EOF\n",
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "untyped",
    "le=\"+Inf\"",
    "{\"my.metric\"",
    "\"a.b\"=",
    "Zürich",
    "é",
    "\u{feff}",
    "\0",
    "🦀",
    "99999999999999999999",
    "_",
    ":",
    "a=\"b\"",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..80).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_strings(s in any::<String>()) {
        for f in [Format::Prometheus, Format::OpenMetrics] {
            check_invariants(&s, &parse(&s, f));
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..600)) {
        let s = String::from_utf8_lossy(&b);
        for f in [Format::Prometheus, Format::OpenMetrics] {
            check_invariants(&s, &parse(&s, f));
        }
    }

    #[test]
    fn never_panics_on_exposition_like_soup(s in soup()) {
        for f in [Format::Prometheus, Format::OpenMetrics] {
            check_invariants(&s, &parse(&s, f));
        }
    }
}

// ---- round trip --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GenLabel {
    name: String,
    quoted: bool,
    value: String,
}

#[derive(Debug, Clone)]
struct GenSample {
    suffix: prop::sample::Index,
    labels: Vec<GenLabel>,
    value: f64,
    timestamp_ms: Option<i64>,
    exemplar: Option<(Vec<GenLabel>, f64, Option<i64>)>,
}

#[derive(Debug, Clone)]
struct GenFamily {
    base: String,
    quoted: bool,
    kind: MetricType,
    help: Option<String>,
    unit: bool,
    samples: Vec<GenSample>,
}

const KINDS: &[MetricType] = &[
    MetricType::Counter,
    MetricType::Gauge,
    MetricType::Histogram,
    MetricType::GaugeHistogram,
    MetricType::Summary,
    MetricType::Info,
    MetricType::StateSet,
    MetricType::Unknown,
];

fn suffixes(kind: MetricType) -> &'static [&'static str] {
    match kind {
        MetricType::Counter => &["", "_total", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Summary => &["", "_sum", "_count", "_created"],
        MetricType::Info => &["_info", ""],
        _ => &[""],
    }
}

/// Text that is usually full of the characters that need escaping or confuse naive parsers,
/// and sometimes anything at all.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zé🦀\"\\\\\n{},=# \t\r/:.-]{0,16}",
        1 => any::<String>(),
    ]
}

fn gen_labels() -> impl Strategy<Value = Vec<GenLabel>> {
    prop::collection::btree_map(
        prop_oneof![
            "[a-zA-Z_][a-zA-Z0-9_]{0,8}".prop_map(|n| (n, false)),
            "[a-z][a-z0-9_.:/-]{0,8}".prop_map(|n| (n, true)),
        ],
        tricky_text(),
        0..5,
    )
    .prop_map(|m| {
        let mut seen = std::collections::HashSet::new();
        m.into_iter()
            .filter(|((n, _), _)| seen.insert(n.clone()))
            .map(|((name, quoted), value)| GenLabel {
                name,
                quoted,
                value,
            })
            .collect()
    })
}

fn gen_sample() -> impl Strategy<Value = GenSample> {
    (
        any::<prop::sample::Index>(),
        gen_labels(),
        any::<f64>(),
        prop::option::of(any::<i64>()),
        prop::option::weighted(
            0.3,
            (gen_labels(), any::<f64>(), prop::option::of(any::<i64>())),
        ),
    )
        .prop_map(
            |(suffix, labels, value, timestamp_ms, exemplar)| GenSample {
                suffix,
                labels,
                value,
                timestamp_ms,
                exemplar,
            },
        )
}

fn gen_family() -> impl Strategy<Value = GenFamily> {
    (
        prop_oneof![
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,10}".prop_map(|n| (n, false)),
            "[a-zA-Z0-9_.:/ -]{1,10}".prop_map(|n| (n, true)),
        ],
        prop::sample::select(KINDS),
        // HELP text: anything, except what the format cannot carry (leading blanks are
        // separators, a final `\r` is a line ending).
        prop::option::of(tricky_text().prop_filter("representable help", |h| {
            !h.starts_with([' ', '\t']) && !h.ends_with('\r')
        })),
        any::<bool>(),
        prop::collection::vec(gen_sample(), 0..5),
    )
        .prop_map(|((base, quoted), kind, help, unit, samples)| GenFamily {
            base,
            quoted,
            kind,
            help,
            unit,
            samples,
        })
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str, format: Format) -> String {
    let v = v.replace('\\', "\\\\").replace('\n', "\\n");
    match format {
        Format::OpenMetrics => v.replace('"', "\\\""),
        Format::Prometheus => v,
    }
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn render_ts(ms: i64, format: Format) -> String {
    match format {
        Format::Prometheus => ms.to_string(),
        Format::OpenMetrics => {
            let a = ms.unsigned_abs();
            let sign = if ms < 0 { "-" } else { "" };
            format!("{sign}{}.{:03}", a / 1000, a % 1000)
        }
    }
}

fn render_label_set(name: Option<&str>, labels: &[GenLabel]) -> String {
    let mut items: Vec<String> = Vec::new();
    if let Some(n) = name {
        items.push(format!("\"{n}\""));
    }
    for l in labels {
        let n = if l.quoted {
            format!("\"{}\"", l.name)
        } else {
            l.name.clone()
        };
        items.push(format!("{n}=\"{}\"", escape_value(&l.value)));
    }
    format!("{{{}}}", items.join(","))
}

fn family_name(i: usize, f: &GenFamily) -> String {
    // A distinct ending per family keeps consecutive families apart; it doubles as the unit.
    format!("{}_u{i}", f.base)
}

/// Renders the families; also returns, per family, the rendered sample names.
fn render(fams: &[GenFamily], format: Format) -> (String, Vec<Vec<String>>) {
    let mut out = String::new();
    let mut names = Vec::new();
    for (i, f) in fams.iter().enumerate() {
        let name = family_name(i, f);
        let shown = if f.quoted {
            format!("\"{name}\"")
        } else {
            name.clone()
        };
        let word = match (f.kind, format) {
            (MetricType::Unknown, Format::Prometheus) => "untyped",
            (k, _) => k.as_str(),
        };
        out += &format!("# TYPE {shown} {word}\n");
        if f.unit && format == Format::OpenMetrics {
            out += &format!("# UNIT {shown} u{i}\n");
        }
        if let Some(h) = &f.help {
            out += &format!("# HELP {shown} {}\n", escape_help(h, format));
        }
        let mut fam_names = Vec::new();
        for s in &f.samples {
            let sname = format!("{name}{}", s.suffix.get(suffixes(f.kind)));
            let head = if f.quoted {
                render_label_set(Some(&sname), &s.labels)
            } else if s.labels.is_empty() && s.value.is_sign_negative() {
                sname.clone() // also exercise the no-braces form
            } else {
                format!("{sname}{}", render_label_set(None, &s.labels))
            };
            out += &format!("{head} {}", render_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                out += &format!(" {}", render_ts(ts, format));
            }
            if let (Format::OpenMetrics, Some((labels, v, ts))) = (format, &s.exemplar) {
                out += &format!(" # {} {}", render_label_set(None, labels), render_value(*v));
                if let Some(ts) = ts {
                    out += &format!(" {}", render_ts(*ts, format));
                }
            }
            out.push('\n');
            fam_names.push(sname);
        }
        names.push(fam_names);
    }
    if format == Format::OpenMetrics {
        out += "# EOF\n";
    }
    (out, names)
}

fn bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn round_trip(fams: &[GenFamily], format: Format) -> Result<(), TestCaseError> {
    let (text, names) = render(fams, format);
    let e = parse(&text, format);
    prop_assert!(e.errors.is_empty(), "{:?}\n{}", e.errors, text);
    prop_assert_eq!(e.families.len(), fams.len(), "{}", text);
    let mut index = 0;
    for (i, (f, got)) in fams.iter().zip(&e.families).enumerate() {
        prop_assert_eq!(got.name, family_name(i, f));
        prop_assert_eq!(got.kind, f.kind);
        prop_assert_eq!(
            got.help.as_deref(),
            f.help.as_deref().filter(|h| !h.is_empty())
        );
        let unit = format!("u{i}");
        let want_unit = (f.unit && format == Format::OpenMetrics).then_some(unit.as_str());
        prop_assert_eq!(got.unit, want_unit);
        prop_assert_eq!(got.samples.clone(), index..index + f.samples.len());
        for (s, name) in f.samples.iter().zip(&names[i]) {
            let p = &e.samples[index];
            prop_assert_eq!(p.name, name.as_str());
            let want: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let have: Vec<(&str, &str)> = p
                .labels
                .iter()
                .map(|l| (l.name, l.value.as_ref()))
                .collect();
            prop_assert_eq!(have, want);
            prop_assert_eq!(bits(p.value), bits(s.value));
            prop_assert_eq!(p.timestamp_ms, s.timestamp_ms);
            index += 1;
        }
    }
    prop_assert_eq!(index, e.samples.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn render_then_parse_gives_the_same_samples(
        fams in prop::collection::vec(gen_family(), 0..6)
    ) {
        round_trip(&fams, Format::Prometheus)?;
        round_trip(&fams, Format::OpenMetrics)?;
    }
}

// ---- huge inputs --------------------------------------------------------------------------------

/// Runs `parse` on a hostile input and fails if it takes long enough to suggest quadratic
/// behaviour. Sizes are chosen so a quadratic algorithm needs ~10^10 steps (minutes even in
/// release), while the linear one takes well under a second in a debug build; the bound is
/// generous because the machine is shared.
fn timed<'a>(text: &'a str, format: Format) -> Exposition<'a> {
    let t = Instant::now();
    let e = parse(text, format);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} for {} bytes",
        text.len()
    );
    e
}

#[test]
fn many_labels_on_one_line_are_linear() {
    let n = 200_000;
    let mut line = String::from("m{");
    for k in 0..n {
        line += &format!("l{k}=\"v\",");
    }
    let ok = format!("{line}}} 1\n");
    let e = timed(&ok, Format::Prometheus);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(e.samples[0].labels.len(), n);

    let dup = format!("{line}l7=\"w\"}} 1\n");
    let e = timed(&dup, Format::Prometheus);
    assert_eq!(
        e.errors[0].to_string(),
        "line 1:2: duplicate label name 'l7'"
    );

    let unclosed = format!("{line} 1\n");
    let e = timed(&unclosed, Format::Prometheus);
    assert_eq!(e.errors.len(), 1);
}

#[test]
fn huge_values_and_escapes_are_linear() {
    let plain = format!("m{{a=\"{}\"}} 1\n", "x".repeat(5_000_000));
    let e = timed(&plain, Format::Prometheus);
    assert_eq!(e.samples[0].labels[0].value.len(), 5_000_000);

    let escaped = format!("m{{a=\"{}\"}} 1\n", "\\\"\\n\\\\".repeat(1_000_000));
    let e = timed(&escaped, Format::Prometheus);
    assert_eq!(e.samples[0].labels[0].value.len(), 3_000_000);

    let help = format!("# HELP m {}\nm 1\n", "\\n".repeat(2_000_000));
    let e = timed(&help, Format::Prometheus);
    assert_eq!(e.families[0].help.as_deref().map(str::len), Some(2_000_000));

    let unterminated = format!("m{{a=\"{}", "\\\\".repeat(2_000_000));
    let e = timed(&unterminated, Format::Prometheus);
    assert_eq!(e.errors.len(), 1);
}

#[test]
fn many_bad_lines_are_linear_and_capped() {
    let body = "m{a=\"1\" 1\n".repeat(300_000);
    let e = timed(&body, Format::Prometheus);
    assert_eq!(e.errors.len(), MAX_ERRORS + 1);
    assert_eq!(
        e.errors.last().map(|e| e.message.as_str()),
        Some("299000 more errors not listed (only the first 1000 are kept)")
    );
    let body = format!("# EOF\n{}", "x\n".repeat(1_000_000));
    let e = timed(&body, Format::OpenMetrics);
    assert_eq!(e.errors.len(), 1);
}

#[test]
fn many_families_and_samples_are_linear() {
    let mut body = String::new();
    for k in 0..100_000 {
        body += &format!("# TYPE f{k} histogram\nf{k}_bucket{{le=\"+Inf\"}} 1\nf{k}_count 1\n");
    }
    body += "# TYPE big histogram\n";
    for k in 0..200_000 {
        body += &format!("big_bucket{{s=\"{k}\",le=\"1\"}} 1\n");
    }
    let e = timed(&body, Format::Prometheus);
    assert!(e.errors.is_empty());
    assert_eq!(e.families.len(), 100_001);
    let t = Instant::now();
    let series = e.histogram_series(&e.families[100_000]).unwrap();
    assert_eq!(series.len(), 200_000);
    assert!(t.elapsed() < Duration::from_secs(30));
}

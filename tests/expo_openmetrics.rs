//! OpenMetrics specifics (`# EOF`, `_total`/`_created`, exemplars, float timestamps, `# UNIT`)
//! and the grouping of histograms and summaries into families and bucket lists.

use rollguard::expo::{Exposition, Format, MetricType, parse};

fn om(text: &str) -> Exposition<'_> {
    parse(text, Format::OpenMetrics)
}

/// A body that must parse without errors.
fn clean(e: Exposition<'_>) -> Exposition<'_> {
    assert!(e.errors.is_empty(), "unexpected errors: {:?}", e.errors);
    e
}

fn errors(e: &Exposition<'_>) -> Vec<String> {
    e.errors.iter().map(ToString::to_string).collect()
}

fn families<'a>(e: &'a Exposition<'a>) -> Vec<(&'a str, MetricType, std::ops::Range<usize>)> {
    e.families
        .iter()
        .map(|f| (f.name, f.kind, f.samples.clone()))
        .collect()
}

/// A complete exposition as the Python and Java clients write it.
const CLIENT_OUTPUT: &str = "\
# TYPE http_requests counter
# UNIT http_requests requests
# HELP http_requests Requests handled, by \\\"route\\\".
http_requests_total{route=\"/cart/{id}\",code=\"200\"} 1027 1700000000.5 # {trace_id=\"4bf92f3577b34da6\"} 1 1699999999.9
http_requests_created{route=\"/cart/{id}\",code=\"200\"} 1.6999e9
http_requests_total{route=\"/cart/{id}\",code=\"500\"} 3
http_requests_created{route=\"/cart/{id}\",code=\"500\"} 1.6999e9
# TYPE latency_seconds histogram
# UNIT latency_seconds seconds
latency_seconds_bucket{le=\"0.1\"} 10 # {trace_id=\"a\"} 0.05
latency_seconds_bucket{le=\"1.0\"} 12
latency_seconds_bucket{le=\"+Inf\"} 13 # {} 7.5 1700000000
latency_seconds_count 13
latency_seconds_sum 9.25
latency_seconds_created 1.6999e9
# TYPE rpc summary
rpc{quantile=\"0.5\"} 0.2
rpc{quantile=\"0.99\"} 0.9
rpc_sum 100
rpc_count 400
rpc_created 1.6999e9
# TYPE temperature gauge
temperature 21.5
# EOF
";

#[test]
fn a_complete_client_exposition_parses_cleanly() {
    let e = clean(om(CLIENT_OUTPUT));
    assert_eq!(
        families(&e),
        [
            ("http_requests", MetricType::Counter, 0..4),
            ("latency_seconds", MetricType::Histogram, 4..10),
            ("rpc", MetricType::Summary, 10..15),
            ("temperature", MetricType::Gauge, 15..16),
        ]
    );
    let f = &e.families[0];
    assert_eq!(f.unit, Some("requests"));
    assert_eq!(f.help.as_deref(), Some("Requests handled, by \"route\"."));
    let s = &e.samples[0];
    assert_eq!(s.name, "http_requests_total");
    assert_eq!(s.label("route"), Some("/cart/{id}"));
    assert_eq!(s.value, 1027.0);
    assert_eq!(s.timestamp_ms, Some(1_700_000_000_500));
    assert_eq!(e.samples[1].name, "http_requests_created");
    assert_eq!(e.samples[1].value, 1.6999e9);
    assert_eq!(e.families[1].unit, Some("seconds"));

    let series = e.histogram_series(&e.families[1]).unwrap();
    assert_eq!(series.len(), 1);
    assert!(series[0].labels.is_empty());
    assert_eq!(
        series[0].buckets,
        [(0.1, 10.0), (1.0, 12.0), (f64::INFINITY, 13.0)]
    );
    assert_eq!((series[0].sum, series[0].count), (Some(9.25), Some(13.0)));
}

#[test]
fn eof_is_required() {
    let e = om("a 1\n");
    assert_eq!(
        errors(&e),
        ["line 2:1: missing '# EOF' at the end of the OpenMetrics exposition"]
    );
    assert_eq!(e.samples.len(), 1, "the good lines are still returned");
    let e = om("a 1");
    assert_eq!(
        errors(&e),
        ["line 2:1: missing '# EOF' at the end of the OpenMetrics exposition"]
    );
    let e = om("");
    assert_eq!(
        errors(&e),
        ["line 1:1: missing '# EOF' at the end of the OpenMetrics exposition"]
    );
}

#[test]
fn anything_after_eof_is_an_error() {
    for (body, want) in [
        (
            "a 1\n# EOF\nb 2\n",
            "line 3:1: unexpected content after '# EOF'",
        ),
        (
            "a 1\n# EOF\n\n",
            "line 3:1: unexpected content after '# EOF'",
        ),
        (
            "a 1\n# EOF\n# EOF\n",
            "line 3:1: unexpected content after '# EOF'",
        ),
        (
            "a 1\n# EOF trailing\n",
            "line 2:7: unexpected text after '# EOF'",
        ),
    ] {
        let e = om(body);
        assert!(
            errors(&e).contains(&want.to_string()),
            "{body:?}: {:?}",
            e.errors
        );
        assert_eq!(e.samples.len(), 1, "{body:?}");
    }
    // Only one error for the whole tail, however long it is.
    let long_tail = format!("# EOF\n{}", "x 1\n".repeat(10_000));
    let e = om(&long_tail);
    assert_eq!(e.errors.len(), 1);
    assert!(e.samples.is_empty());
    // Trailing blanks on the EOF line itself are tolerated.
    clean(om("a 1\n# EOF  \n"));
}

#[test]
fn eof_unit_and_exemplars_are_not_openmetrics_only_syntax_in_0_0_4() {
    // In 0.0.4, `# EOF` and `# UNIT` are free comments and do not end anything.
    let e = clean(parse(
        "# EOF\na 1\n# UNIT a whatever it says\n",
        Format::Prometheus,
    ));
    assert_eq!(e.samples.len(), 1);
    assert_eq!(e.families[0].unit, None);
}

#[test]
fn total_and_created_belong_to_the_counter_family() {
    let e = clean(om(
        "# TYPE foo counter\nfoo_total 1\nfoo_created 2\nfoo_other 3\n# EOF\n",
    ));
    assert_eq!(
        families(&e),
        [
            ("foo", MetricType::Counter, 0..2),
            ("foo_other", MetricType::Unknown, 2..3),
        ]
    );
    // The same grouping applies to a 0.0.4 body that declares the family OpenMetrics-style,
    // and to the usual 0.0.4 style where the family is named with the suffix.
    let e = parse(
        "# TYPE foo counter\nfoo_total 1\n# TYPE bar_total counter\nbar_total 2\n",
        Format::Prometheus,
    );
    assert_eq!(
        families(&e),
        [
            ("foo", MetricType::Counter, 0..1),
            ("bar_total", MetricType::Counter, 1..2),
        ]
    );
}

#[test]
fn exemplars_are_checked_and_skipped() {
    let ok = [
        "a_total 1 # {trace_id=\"x\"} 1",
        "a_total 1 # {trace_id=\"x\"} 1 1700000000.001",
        "a_total 1 123 # {trace_id=\"x\",span_id=\"y\"} 0.5",
        "a_total 1 # {} 1",
        "a_total 1 # {a=\"} # {\"} -Inf",
        "a_total{x=\"#\"} 1\t#\t{a=\"1\", } 2",
    ];
    for line in ok {
        let body = format!("{line}\n# EOF\n");
        let e = om(&body);
        assert!(e.errors.is_empty(), "{line:?}: {:?}", e.errors);
        assert_eq!(e.samples.len(), 1, "{line:?}");
        assert_eq!(e.samples[0].value, 1.0);
    }
    let bad = [
        ("a 1 #", "line 1:6: expected ' ' after '#' of an exemplar"),
        (
            "a 1 #{a=\"x\"} 1",
            "line 1:6: expected ' ' after '#' of an exemplar",
        ),
        (
            "a 1 # trace 1",
            "line 1:7: expected '{' to start the exemplar's labels",
        ),
        (
            "a 1 # {a=\"x\"}",
            "line 1:14: invalid exemplar value '': expected a number",
        ),
        (
            "a 1 # {a=\"x} 1",
            "line 1:10: unterminated quoted string (missing closing '\"' on this line)",
        ),
        (
            "a 1 # {\"q\"} 1",
            "line 1:11: expected '=' after label name",
        ),
        (
            "a 1 # {a=\"x\"} one",
            "line 1:15: invalid exemplar value 'one': expected a number",
        ),
        (
            "a 1 # {a=\"x\"} 1 noon",
            "line 1:17: invalid exemplar timestamp 'noon': expected seconds",
        ),
        (
            "a 1 # {a=\"x\"} 1 2 3",
            "line 1:19: unexpected text after the exemplar",
        ),
    ];
    for (line, want) in bad {
        let body = format!("{line}\n# EOF\n");
        let e = om(&body);
        assert_eq!(errors(&e), [want], "{line:?}");
        assert!(e.samples.is_empty(), "a malformed line yields no sample");
    }
}

#[test]
fn float_second_timestamps_become_milliseconds() {
    let cases = [
        ("1700000000", 1_700_000_000_000),
        ("1700000000.123", 1_700_000_000_123),
        ("1700000000.1236", 1_700_000_000_124),
        ("1.7e9", 1_700_000_000_000),
        ("-0.5", -500),
        ("0", 0),
    ];
    for (ts, want) in cases {
        let body = format!("m 1 {ts}\n# EOF\n");
        let e = om(&body);
        assert!(e.errors.is_empty(), "{ts}: {:?}", e.errors);
        assert_eq!(e.samples[0].timestamp_ms, Some(want), "{ts}");
    }
    for ts in ["NaN", "+Inf", "1e300", "12:00"] {
        let body = format!("m 1 {ts}\n# EOF\n");
        let e = om(&body);
        assert_eq!(
            errors(&e),
            [format!(
                "line 1:5: invalid timestamp '{ts}': expected seconds"
            )],
            "{ts}"
        );
    }
}

#[test]
fn unit_must_be_the_suffix_of_the_family_name() {
    let e = om("# UNIT latency seconds\n# EOF\n");
    assert_eq!(
        errors(&e),
        ["line 1:16: unit 'seconds' is not the suffix of the family name 'latency'"]
    );
    let e = om("# UNIT latencyseconds seconds\n# EOF\n");
    assert_eq!(e.errors.len(), 1);
    let e = om("# UNIT latency_seconds\n# EOF\n");
    assert!(
        e.errors.is_empty(),
        "an empty unit is allowed: {:?}",
        e.errors
    );
    assert_eq!(e.families[0].unit, None);
    let e = om("# UNIT a_seconds seconds\n# UNIT a_seconds seconds\n# EOF\n");
    assert_eq!(errors(&e), ["line 2:8: second UNIT line for 'a_seconds'"]);
}

#[test]
fn families_tile_the_samples_in_order() {
    let body = "\
a 1
a 2
b 3
# TYPE h histogram
h_bucket{le=\"1\"} 1
h_bucket{le=\"+Inf\"} 1
h_sum 1
h_count 1
h_total 5
# HELP only_help No samples follow.
# TYPE s summary
s 1
s_sum 2
s_count 3
s_bucket 4
a 5
";
    let e = clean(parse(body, Format::Prometheus));
    assert_eq!(
        families(&e),
        [
            ("a", MetricType::Unknown, 0..2),
            ("b", MetricType::Unknown, 2..3),
            ("h", MetricType::Histogram, 3..7),
            ("h_total", MetricType::Unknown, 7..8),
            ("only_help", MetricType::Unknown, 8..8),
            ("s", MetricType::Summary, 8..11),
            ("s_bucket", MetricType::Unknown, 11..12),
            ("a", MetricType::Unknown, 12..13),
        ]
    );
    let mut next = 0;
    for f in &e.families {
        assert_eq!(f.samples.start, next);
        next = f.samples.end;
    }
    assert_eq!(next, e.samples.len());
    assert_eq!(
        e.family("only_help").unwrap().help.as_deref(),
        Some("No samples follow.")
    );
}

#[test]
fn histogram_series_group_by_label_set_regardless_of_label_order() {
    let body = "\
# TYPE lat histogram
lat_bucket{route=\"/a/{id}\",method=\"GET\",le=\"+Inf\"} 9
lat_bucket{le=\"0.5\",method=\"GET\",route=\"/a/{id}\"} 4
lat_bucket{method=\"POST\",route=\"/a/{id}\",le=\"0.5\"} 1
lat_bucket{method=\"GET\",route=\"/a/{id}\",le=\"1e-1\"} 2
lat_sum{method=\"GET\",route=\"/a/{id}\"} 3.25
lat_count{route=\"/a/{id}\",method=\"GET\"} 9
lat_count{method=\"POST\",route=\"/a/{id}\"} 1
lat_created{method=\"POST\",route=\"/a/{id}\"} 1
";
    let e = clean(parse(body, Format::Prometheus));
    let series = e.histogram_series(&e.families[0]).unwrap();
    assert_eq!(series.len(), 2);
    let labels: Vec<Vec<(&str, &str)>> = series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|l| (l.name, l.value.as_ref()))
                .collect()
        })
        .collect();
    assert_eq!(
        labels,
        [
            vec![("route", "/a/{id}"), ("method", "GET")],
            vec![("method", "POST"), ("route", "/a/{id}")],
        ]
    );
    assert_eq!(
        series[0].buckets,
        [(0.1, 2.0), (0.5, 4.0), (f64::INFINITY, 9.0)]
    );
    assert_eq!((series[0].sum, series[0].count), (Some(3.25), Some(9.0)));
    assert_eq!(series[1].buckets, [(0.5, 1.0)]);
    assert_eq!((series[1].sum, series[1].count), (None, Some(1.0)));
}

#[test]
fn histogram_series_report_bad_buckets_with_their_line() {
    // The error grouping the first family of a 0.0.4 body into histogram series gives.
    let error = |text: &str| {
        let e = parse(text, Format::Prometheus);
        e.histogram_series(&e.families[0]).unwrap_err().to_string()
    };
    assert_eq!(
        error("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{x=\"1\"} 2\n"),
        "line 3: histogram bucket without an 'le' label"
    );
    assert_eq!(
        error("# TYPE h histogram\nh_bucket{le=\"fast\"} 1\n"),
        "line 2: histogram bucket with invalid 'le' value 'fast'"
    );
    error("# TYPE h histogram\nh_bucket{le=\"NaN\"} 1\n");
    assert_eq!(
        error("# TYPE g gauge\ng 1\n"),
        "family 'g' is a gauge, not a histogram"
    );
}

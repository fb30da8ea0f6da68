//! The tricky-input corpus of research/crates.md §1.4, a test per row or per kind of row
//! (rows 1-35; rows 33-35 with the malformed-line messages). Expected results are exact:
//! values after unescaping, timestamps in milliseconds, and errors as `line L:C: message`.

use std::borrow::Cow;
use std::ops::Range;

use rollguard::expo::{Exposition, Family, Format, MetricType, Sample, parse};

fn prom(text: &str) -> Exposition<'_> {
    parse(text, Format::Prometheus)
}

fn om(text: &str) -> Exposition<'_> {
    parse(text, Format::OpenMetrics)
}

/// The only sample of a body that must parse without errors.
fn only<'a>(e: &'a Exposition<'a>) -> &'a Sample<'a> {
    assert!(e.errors.is_empty(), "unexpected errors: {:?}", e.errors);
    assert_eq!(e.samples.len(), 1, "{:?}", e.samples);
    &e.samples[0]
}

/// A body that must parse without errors.
fn clean(e: Exposition<'_>) -> Exposition<'_> {
    assert!(e.errors.is_empty(), "unexpected errors: {:?}", e.errors);
    e
}

/// A family's name, type and samples, to compare at once.
fn family<'a>(f: &Family<'a>) -> (&'a str, MetricType, Range<usize>) {
    (f.name, f.kind, f.samples.clone())
}

fn labels<'a>(s: &'a Sample<'a>) -> Vec<(&'a str, &'a str)> {
    s.labels
        .iter()
        .map(|l| (l.name, l.value.as_ref()))
        .collect()
}

fn errors(e: &Exposition<'_>) -> Vec<String> {
    e.errors.iter().map(ToString::to_string).collect()
}

fn names<'a>(e: &'a Exposition<'a>) -> Vec<&'a str> {
    e.samples.iter().map(|s| s.name).collect()
}

#[test]
fn row01_escaped_quote_in_label_value() {
    let e = prom("m{path=\"/a\\\"b\"} 1\n");
    let s = only(&e);
    assert_eq!(labels(s), [("path", "/a\"b")]);
    assert!(matches!(s.labels[0].value, Cow::Owned(_)));
}

/// Rows whose one sample's labels are the point: 2, 3, 5, 7, 8, 9 and 11.
#[test]
fn row02_03_05_07_08_09_11_label_values_and_label_sets() {
    let rows: [(&str, &[(&str, &str)]); 8] = [
        ("m{msg=\"line1\\nline2\"} 1\n", &[("msg", "line1\nline2")]),
        ("m{p=\"C:\\\\\",q=\"x\"} 1\n", &[("p", "C:\\"), ("q", "x")]),
        ("m{q=\"a=b\"} 1\n", &[("q", "a=b")]),
        ("m{a=\"x # y\"} 1\n", &[("a", "x # y")]),
        ("m{a=\"1\", b=\"2\"} 1\n", &[("a", "1"), ("b", "2")]),
        ("m{ a = \"1\" ,\tb=\"2\" } 1\n", &[("a", "1"), ("b", "2")]),
        ("m{a=\"1\",} 1\n", &[("a", "1")]),
        ("m{city=\"Zürich\"} 1\n", &[("city", "Zürich")]),
    ];
    for (text, want) in rows {
        assert_eq!(labels(only(&prom(text))), want, "input {text:?}");
    }
    // Row 7 also in OpenMetrics, where ` # ` after the value starts an exemplar.
    let e = om("m{a=\"x # y\"} 1\n# EOF\n");
    assert_eq!(labels(only(&e)), [("a", "x # y")]);
}

#[test]
fn row04_comma_in_label_value() {
    let e = prom("m{a=\"x,y\",b=\"z\"} 1\n");
    let s = only(&e);
    assert_eq!(labels(s), [("a", "x,y"), ("b", "z")]);
    assert!(
        matches!(s.labels[0].value, Cow::Borrowed("x,y")),
        "no escape: zero-copy"
    );
}

#[test]
fn row06_closing_brace_in_label_value() {
    let e = prom("m{a=\"}\"} 1\n");
    assert_eq!(labels(only(&e)), [("a", "}")]);
    // The realistic case that cost prometheus-parse 27.7 % of a scrape.
    let e =
        prom("http_requests_total{method=\"GET\",route=\"/api/v1/cart/{id}\",code=\"200\"} 1027\n");
    let s = only(&e);
    assert_eq!(s.label("route"), Some("/api/v1/cart/{id}"));
    assert_eq!(s.value, 1027.0);
}

#[test]
fn blanks_between_name_and_label_set() {
    // "Tokens can be separated by any number of blanks" (exposition format spec).
    let e = clean(prom("m {a=\"1\"} 1\nn\t{} 2\n"));
    assert_eq!(labels(&e.samples[0]), [("a", "1")]);
    assert_eq!(names(&e), ["m", "n"]);
}

#[test]
fn row10_empty_label_set() {
    let e = prom("m{} 1\n");
    let s = only(&e);
    assert_eq!(s.name, "m");
    assert!(s.labels.is_empty());
    assert_eq!(s.value, 1.0);
}

#[test]
fn row12_help_escapes() {
    let e = clean(prom(
        "# HELP m Path C:\\\\temp\\nnext line, \\\"as is\\\" in 0.0.4\nm 1\n",
    ));
    assert_eq!(
        e.families[0].help.as_deref(),
        Some("Path C:\\temp\nnext line, \\\"as is\\\" in 0.0.4")
    );
    // OpenMetrics also decodes \".
    let e = clean(om("# HELP m say \\\"hi\\\"\\\\\nm 1\n# EOF\n"));
    assert_eq!(e.families[0].help.as_deref(), Some("say \"hi\"\\"));
}

#[test]
fn row13_empty_help() {
    let e = prom("# HELP m\nm 1\n");
    let s = only(&e);
    assert_eq!(s.name, "m");
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].name, "m");
    assert_eq!(e.families[0].help, None);
    assert_eq!(e.families[0].samples, 0..1);
}

#[test]
fn row14_blank_lines_and_free_comments() {
    let e = prom("\n# a comment\n#no-space comment\n\n   \n\t\n#\n# HELPER not metadata\nm 1\n");
    let s = only(&e);
    assert_eq!(s.line, 9);
}

#[test]
fn row15_millisecond_timestamp() {
    let e = prom("m 1 1700000000123\n");
    assert_eq!(only(&e).timestamp_ms, Some(1_700_000_000_123));
}

#[test]
fn row16_negative_timestamp() {
    let e = prom("m 1 -1000\n");
    assert_eq!(only(&e).timestamp_ms, Some(-1000));
}

#[test]
fn row17_float_seconds_timestamp() {
    let e = om("m 1 1700000000.123\n# EOF\n");
    assert_eq!(only(&e).timestamp_ms, Some(1_700_000_000_123));
    // In the 0.0.4 format a timestamp is integer milliseconds: say so, never guess.
    let e = prom("ok 1\nm 1 1700000000.123\n");
    assert_eq!(
        errors(&e),
        [
            "line 2:5: invalid timestamp '1700000000.123': expected an integer number of milliseconds"
        ]
    );
    assert_eq!(names(&e), ["ok"]);
}

#[test]
fn row18_nan_and_infinities() {
    let e = clean(prom("a NaN\nb +Inf\nc -Inf\nd Inf\ne nan\nf +inf\n"));
    let v: Vec<f64> = e.samples.iter().map(|s| s.value).collect();
    assert!(v[0].is_nan());
    assert_eq!(v[1], f64::INFINITY);
    assert_eq!(v[2], f64::NEG_INFINITY);
    assert_eq!(v[3], f64::INFINITY);
    assert!(v[4].is_nan());
    assert_eq!(v[5], f64::INFINITY);
}

#[test]
fn row19_exponents_and_leading_dot() {
    let e = clean(prom(
        "a 1.5e+06\nb -3E-2\nc 6.02e23\nd .5\ne 1.234560e+05\nf -0\ng 5.\n",
    ));
    let v: Vec<f64> = e.samples.iter().map(|s| s.value).collect();
    assert_eq!(v, [1.5e6, -0.03, 6.02e23, 0.5, 123_456.0, 0.0, 5.0]);
}

#[test]
fn row20_colons_in_metric_names() {
    let e = prom(
        "# HELP job:http_requests:rate5m Recorded.\n# TYPE job:http_requests:rate5m gauge\n\
         job:http_requests:rate5m{job=\"api\"} 1.5\n",
    );
    let s = only(&e);
    assert_eq!(s.name, "job:http_requests:rate5m");
    assert_eq!(s.value, 1.5);
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].name, "job:http_requests:rate5m");
    assert_eq!(e.families[0].kind, MetricType::Gauge);
    assert_eq!(e.families[0].help.as_deref(), Some("Recorded."));
}

#[test]
fn row21_no_type_line_is_untyped() {
    let e = prom("m 1\n");
    only(&e);
    assert_eq!(e.families[0].kind, MetricType::Unknown);
    assert_eq!(e.families[0].samples, 0..1);
}

#[test]
fn row22_declared_untyped() {
    let e = prom("# TYPE m untyped\nm 1\n");
    only(&e);
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].kind, MetricType::Unknown);
}

#[test]
fn row23_24_histogram_with_labels_two_series() {
    let body = "\
# HELP rpc_seconds RPC latency.
# TYPE rpc_seconds histogram
rpc_seconds_bucket{svc=\"a\",le=\"0.1\"} 2
rpc_seconds_bucket{svc=\"a\",le=\"1\"} 5
rpc_seconds_bucket{svc=\"a\",le=\"+Inf\"} 6
rpc_seconds_sum{svc=\"a\"} 3.5
rpc_seconds_count{svc=\"a\"} 6
rpc_seconds_bucket{svc=\"b\",le=\"0.1\"} 0
rpc_seconds_bucket{svc=\"b\",le=\"1\"} 1
rpc_seconds_bucket{svc=\"b\",le=\"+Inf\"} 1
rpc_seconds_sum{svc=\"b\"} 0.7
rpc_seconds_count{svc=\"b\"} 1
";
    let e = clean(prom(body));
    assert_eq!(e.families.len(), 1);
    let f = &e.families[0];
    assert_eq!(family(f), ("rpc_seconds", MetricType::Histogram, 0..10));
    let series = e.histogram_series(f).unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(labels_of(&series[0].labels), [("svc", "a")]);
    assert_eq!(
        series[0].buckets,
        [(0.1, 2.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
    );
    assert_eq!((series[0].sum, series[0].count), (Some(3.5), Some(6.0)));
    assert_eq!(labels_of(&series[1].labels), [("svc", "b")]);
    assert_eq!(
        series[1].buckets,
        [(0.1, 0.0), (1.0, 1.0), (f64::INFINITY, 1.0)]
    );
    assert_eq!((series[1].sum, series[1].count), (Some(0.7), Some(1.0)));
}

fn labels_of<'a>(l: &'a [rollguard::expo::Label<'a>]) -> Vec<(&'a str, &'a str)> {
    l.iter().map(|l| (l.name, l.value.as_ref())).collect()
}

#[test]
fn row25_summary() {
    let body = "\
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile=\"0\"} 1.1e-05
go_gc_duration_seconds{quantile=\"0.5\"} 3.2e-05
go_gc_duration_seconds{quantile=\"1\"} 0.0012
go_gc_duration_seconds_sum 0.5
go_gc_duration_seconds_count 1234
go_goroutines 42
";
    let e = clean(prom(body));
    assert_eq!(e.families.len(), 2);
    let f = &e.families[0];
    assert_eq!(
        family(f),
        ("go_gc_duration_seconds", MetricType::Summary, 0..5)
    );
    assert_eq!(e.family_samples(f)[1].label("quantile"), Some("0.5"));
    assert_eq!(e.family_samples(f)[4].value, 1234.0);
    assert_eq!(e.families[1].name, "go_goroutines");
    assert_eq!(e.families[1].kind, MetricType::Unknown);
    assert!(
        e.histogram_series(f).is_err(),
        "a summary is not a histogram"
    );
}

#[test]
fn row26_openmetrics_counter_exemplar_created_eof() {
    let body = "\
# TYPE c counter
# HELP c Requests.
c_total 5 # {trace_id=\"abc\"} 1.0 1.7e9
c_created 1.7e9
# EOF
";
    let e = clean(om(body));
    assert_eq!(names(&e), ["c_total", "c_created"]);
    assert_eq!(e.samples[0].value, 5.0);
    assert!(e.samples[0].labels.is_empty());
    assert_eq!(e.samples[1].value, 1.7e9);
    assert_eq!(e.families.len(), 1);
    let f = &e.families[0];
    assert_eq!(family(f), ("c", MetricType::Counter, 0..2));
    assert_eq!(f.help.as_deref(), Some("Requests."));
}

#[test]
fn row27_openmetrics_gaugehistogram_unit_info_stateset() {
    let body = "\
# TYPE queue_wait_seconds gaugehistogram
# UNIT queue_wait_seconds seconds
queue_wait_seconds_bucket{le=\"0.5\"} 3
queue_wait_seconds_bucket{le=\"+Inf\"} 4
queue_wait_seconds_gcount 4
queue_wait_seconds_gsum 1.25
# TYPE build info
build_info{version=\"1.2.3\"} 1
# TYPE feature stateset
feature{feature=\"a\"} 1
feature{feature=\"b\"} 0
# EOF
";
    let e = clean(om(body));
    let fams: Vec<_> = e
        .families
        .iter()
        .map(|f| (f.name, f.kind, f.unit, f.samples.clone()))
        .collect();
    assert_eq!(
        fams,
        [
            (
                "queue_wait_seconds",
                MetricType::GaugeHistogram,
                Some("seconds"),
                0..4
            ),
            ("build", MetricType::Info, None, 4..5),
            ("feature", MetricType::StateSet, None, 5..7),
        ]
    );
    let series = e.histogram_series(&e.families[0]).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].buckets, [(0.5, 3.0), (f64::INFINITY, 4.0)]);
    assert_eq!((series[0].sum, series[0].count), (Some(1.25), Some(4.0)));
}

#[test]
fn row28_quoted_utf8_names() {
    let e = prom("{\"my.metric\",a=\"b\"} 1\n");
    let s = only(&e);
    assert_eq!(s.name, "my.metric");
    assert_eq!(labels(s), [("a", "b")]);

    let body = "\
# TYPE \"http.server.duration\" histogram
{\"http.server.duration_bucket\", \"url.scheme\"=\"https\", le=\"+Inf\"} 3
{\"http.server.duration_count\",\"url.scheme\"=\"https\"} 3
{\"only.name\"} 7
";
    let e = clean(prom(body));
    assert_eq!(
        names(&e),
        [
            "http.server.duration_bucket",
            "http.server.duration_count",
            "only.name"
        ]
    );
    assert_eq!(e.samples[0].label("url.scheme"), Some("https"));
    assert_eq!(e.families[0].name, "http.server.duration");
    assert_eq!(e.families[0].kind, MetricType::Histogram);
    assert_eq!(e.families[0].samples, 0..2);
    assert_eq!(e.samples[2].value, 7.0);
}

#[test]
fn row29_leading_blanks_and_tabs() {
    let e = clean(prom(
        "   m{a=\"1\"}\t1\t 1000 \n\t# TYPE n gauge\n \tn  2\n",
    ));
    assert_eq!(names(&e), ["m", "n"]);
    assert_eq!(e.samples[0].timestamp_ms, Some(1000));
    assert_eq!(e.families[1].kind, MetricType::Gauge);
}

#[test]
fn row30_crlf() {
    let e = clean(prom(
        "# HELP m Help.\r\n# TYPE m gauge\r\nm{a=\"1\"} 1\r\nn 2 1000\r\n",
    ));
    assert_eq!(e.families[0].help.as_deref(), Some("Help."));
    assert_eq!(e.families[0].kind, MetricType::Gauge);
    assert_eq!(e.samples[1].timestamp_ms, Some(1000));
    clean(om("m 1\r\n# EOF\r\n"));
}

#[test]
fn row31_no_final_newline() {
    let e = clean(prom("a 1\nb 2"));
    assert_eq!(names(&e), ["a", "b"]);
    assert_eq!(e.samples[1].value, 2.0);
    clean(om("a 1\n# EOF"));
}

#[test]
fn row32_duplicate_series_are_kept() {
    let e = clean(prom("m{a=\"1\"} 1\nm{a=\"1\"} 2\n"));
    assert_eq!(e.samples.len(), 2);
    assert_eq!((e.samples[0].value, e.samples[1].value), (1.0, 2.0));
    assert_eq!(e.families.len(), 1);
}

/// Each malformed line gives exactly one error, at the right place, and the good lines around
/// it survive. Messages are what an SRE reads in the scrape-failure alert.
#[test]
fn malformed_lines_are_reported_with_position_and_plain_message() {
    let cases: &[(&str, &str)] = &[
        // Rows 33 to 35 of the corpus.
        (
            "m{a=\"1} 1",
            "1:5: unterminated quoted string (missing closing '\"' on this line)",
        ),
        (
            "m{a=\"1\"} abc",
            "1:10: invalid sample value 'abc': expected a number, NaN, +Inf or -Inf",
        ),
        (
            "this is not a metric line",
            "1:6: invalid sample value 'is': expected a number, NaN, +Inf or -Inf",
        ),
        ("m{a\"1\"} 1", "1:4: expected '=' after label name"),
        ("m{a=1} 1", "1:5: expected '\"' to start the label value"),
        (
            "m{a=\"1\" b=\"2\"} 1",
            "1:9: expected ',' or '}' after the label value",
        ),
        (
            "m{a=\"1\"",
            "1:8: expected ',' or '}' after the label value (the label set is not closed)",
        ),
        (
            "m{a=\"1\",",
            "1:9: expected a label name or '}' (the label set is not closed)",
        ),
        (
            "m{,} 1",
            "1:3: expected a label name, found ',' (allowed: a-z A-Z 0-9 _, or a quoted name)",
        ),
        ("m{a:b=\"1\"} 1", "1:4: expected '=' after label name"),
        ("m", "1:2: expected a value after the metric name"),
        ("m{} ", "1:5: expected a sample value"),
        ("m 1 2 3", "1:7: unexpected text after the timestamp"),
        (
            "m 1 abc",
            "1:5: invalid timestamp 'abc': expected an integer number of milliseconds",
        ),
        (
            "m 1 99999999999999999999",
            "1:5: invalid timestamp '99999999999999999999': expected an integer number of milliseconds",
        ),
        (
            "m-x 1",
            "1:2: invalid character '-' in metric name (allowed: a-z A-Z 0-9 _ :)",
        ),
        (
            "9m 1",
            "1:1: expected a metric name, a '#' comment or a blank line",
        ),
        (
            "{a=\"b\"} 1",
            "1:1: missing metric name (put a quoted name first inside the braces: {\"name\",...})",
        ),
        (
            "m{\"x\"} 1",
            "1:3: metric name given both before and inside the braces",
        ),
        ("{a=\"b\",\"x\"} 1", "1:11: expected '=' after label name"),
        (
            "{\"m\\\"x\"} 1",
            "1:4: escape sequences in quoted names are not supported",
        ),
        ("{\"\"} 1", "1:2: empty metric name"),
        ("m{a=\"1\",a=\"2\"} 1", "1:2: duplicate label name 'a'"),
        (
            "m 1 # {a=\"b\"} 1",
            "1:5: unexpected '#' after the sample: exemplars are only valid in OpenMetrics",
        ),
        (
            "# TYPE m flurb",
            "1:10: unknown metric type 'flurb' (expected counter, gauge, histogram, summary, untyped, gaugehistogram, stateset, info or unknown)",
        ),
        ("# TYPE m", "1:9: expected a metric type after the name"),
        (
            "# TYPE m gauge extra",
            "1:16: unexpected text after the metric type",
        ),
        ("# TYPE", "1:7: expected a metric name"),
        (
            "# HELP 9x text",
            "1:8: invalid metric name starting with '9'",
        ),
        (
            "# TYPE m-x gauge",
            "1:9: invalid character '-' in metric name (allowed: a-z A-Z 0-9 _ :)",
        ),
        (
            "städte{a=\"b\"} 1",
            "1:3: invalid character 'ä' in metric name (allowed: a-z A-Z 0-9 _ :)",
        ),
        (
            "m{ü=\"1\"} 1",
            "1:3: expected a label name, found 'ü' (allowed: a-z A-Z 0-9 _, or a quoted name)",
        ),
        (
            "m{city=\"Zürich} 1",
            "1:8: unterminated quoted string (missing closing '\"' on this line)",
        ),
        (
            "m{a=\"x\\\"} 1",
            "1:5: unterminated quoted string (missing closing '\"' on this line)",
        ),
    ];
    for (line, want) in cases {
        let body = format!("before 1\n{line}\nafter 2\n");
        let e = prom(&body);
        let want = format!("line 2:{}", want.strip_prefix("1:").unwrap());
        assert_eq!(errors(&e), [want.as_str()], "input {line:?}");
        assert_eq!(names(&e), ["before", "after"], "input {line:?}");
    }
}

#[test]
fn error_columns_count_characters_not_bytes() {
    let e = prom("m{city=\"Zürich\",x=1} 1\n");
    assert_eq!(
        errors(&e),
        ["line 1:19: expected '\"' to start the label value"]
    );
}

#[test]
fn unknown_escapes_are_kept_verbatim_like_prometheus() {
    let e = prom("m{a=\"tab\\there\",b=\"\\u00e9\"} 1\n");
    assert_eq!(labels(only(&e)), [("a", "tab\\there"), ("b", "\\u00e9")]);
}

#[test]
fn several_errors_are_all_reported_in_order() {
    let e = prom("a 1\nb{ 2\nc 3\nd x\n# TYPE e nope\nf 4\n");
    assert_eq!(
        errors(&e),
        [
            "line 2:4: expected a label name, found '2' (allowed: a-z A-Z 0-9 _, or a quoted name)",
            "line 4:3: invalid sample value 'x': expected a number, NaN, +Inf or -Inf",
            "line 5:10: unknown metric type 'nope' (expected counter, gauge, histogram, summary, untyped, gaugehistogram, stateset, info or unknown)",
        ]
    );
    assert_eq!(names(&e), ["a", "c", "f"]);
}

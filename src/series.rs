//! Turns raw samples (scraped, queried or recorded) into per-interval values.
//!
//! Counters become increases per series, with resets handled the way PromQL's `increase`
//! does (a drop means the process restarted, so the new value is the increase). Unlike
//! `increase`, a series that appears on an instance we have already seen counts from zero:
//! client libraries create an error series only when the first error happens, and sparse
//! errors are exactly what a canary judge must not lose. The same collector serves every
//! source, so scrape, Prometheus and backtest see identical arithmetic.
//!
//! Two inputs are refused rather than guessed at, because either would silently bend the
//! counts a verdict rests on: the same series twice in one target's answer (which sample is
//! the truth? a duplicated exporter or an undeduplicated HA pair would double-count), which
//! makes the query a `source_error` saying so; and series whose only values are NaN or
//! infinite, which are `no_data` with that reason rather than "no series matched".

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::query::{Fetch, MetricQuery, Observed, QueryKind, SeriesQuery};
use crate::selector::Selector;

/// A sample as any source presents it.
pub trait SeriesRef {
    fn name(&self) -> &str;
    fn label(&self, name: &str) -> Option<&str>;
    /// All labels, in any order.
    fn labels(&self) -> Vec<(&str, &str)>;
    fn value(&self) -> f64;
    /// When the sample was taken (ms since the Unix epoch), if the source says: a recorded
    /// line's, an exporter's, or Prometheus' `timestamp()`. A gauge sample no newer than the
    /// last one read is not a new observation (see [`ArmCollector`]).
    fn timestamp_ms(&self) -> Option<i64> {
        None
    }
}

impl SeriesRef for crate::expo::Sample<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn label(&self, name: &str) -> Option<&str> {
        crate::expo::Sample::label(self, name)
    }
    fn labels(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .map(|l| (l.name, l.value.as_ref()))
            .collect()
    }
    fn value(&self) -> f64 {
        self.value
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

/// An owned sample, used for Prometheus API answers and recorded files.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// When the sample was taken, where the source says (see [`SeriesRef::timestamp_ms`]).
    pub timestamp_ms: Option<i64>,
}

impl SeriesRef for OwnedSample {
    fn name(&self) -> &str {
        &self.name
    }
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn labels(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    fn value(&self) -> f64 {
        self.value
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

fn selected<S: SeriesRef>(sel: &Selector, s: &S) -> bool {
    s.name() == sel.name && sel.matchers.iter().all(|m| m.matches(s.label(&m.label)))
}

/// Identity of a series: its name and sorted label set, hashed.
fn series_key<S: SeriesRef>(query: usize, s: &S) -> u64 {
    let mut labels = s.labels();
    labels.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    query.hash(&mut h);
    s.name().hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

/// `name{a="1",b="2"}` for messages about one series.
fn describe_series<S: SeriesRef>(s: &S) -> String {
    let mut labels = s.labels();
    labels.sort_unstable();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{}{{{}}}", s.name(), inner.join(","))
}

/// The message for a series seen twice in one target's answer.
fn duplicate_message<S: SeriesRef>(target: &str, s: &S) -> String {
    format!(
        "{target}: series {} appears more than once in one answer; exactly one sample per series is expected \
         (a duplicated exporter, or an HA pair the query backend does not deduplicate)",
        describe_series(s)
    )
}

/// One target's samples for one interval, or why there are none.
pub struct TargetSamples<'a, S> {
    /// Stable identity of the instance (scrape URL, or the `instance` label).
    pub target: &'a str,
    pub samples: Result<&'a [S], String>,
}

#[derive(Debug, Default)]
struct CounterMemory {
    value: f64,
    /// Collect round in which the series was last seen, for pruning churned series.
    seen_round: u64,
}

#[derive(Debug, Default)]
struct TargetMemory {
    scraped_before: bool,
    counters: HashMap<u64, CounterMemory>,
    /// Per gauge query: the newest sample read, and its value until an interval judges it.
    gauges: HashMap<usize, GaugeMemory>,
}

#[derive(Debug, Default)]
struct GaugeMemory {
    /// Time of the newest sample read (none for samples without a time: each read is new).
    newest_ms: Option<i64>,
    /// The newest sample's value, while no judged interval has used it.
    unused: Option<f64>,
}

/// Remembers the last counter values of one arm's targets between intervals, and which gauge
/// samples were already used.
///
/// A gauge is read at every interval, but a series scraped less often than that (Prometheus
/// scraping every 30 s under a rule's `interval: 10s`) answers with the same sample two
/// intervals in three. Counted again, one sample would pass for three observations: the
/// saturation counts triple, and the level check's variance, estimated from differences
/// between intervals, shrinks towards zero, so a leaking pool was once promoted in five
/// minutes. So where samples carry times, each target's gauge sample is kept until an interval
/// uses it, and a sample no newer than the last one read is not new; [`frame`] judges a gauge
/// only when both arms have a sample not used before (their targets are scraped at their own
/// offsets, so the arms' new samples seldom arrive in the same interval).
#[derive(Debug, Default)]
pub struct ArmCollector {
    targets: HashMap<String, TargetMemory>,
    round: u64,
    /// Gauge queries that had values this round, all used already.
    waiting: HashSet<usize>,
}

/// Series unseen for this many rounds are forgotten (bounded memory under label churn).
const PRUNE_AFTER_ROUNDS: u64 = 30;

impl ArmCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes every query's value for this interval from the targets' samples.
    pub fn collect<S: SeriesRef>(
        &mut self,
        queries: &[MetricQuery],
        targets: &[TargetSamples<'_, S>],
    ) -> Vec<Fetch> {
        self.round += 1;
        let round = self.round;
        // Targets no longer listed stop contributing and are forgotten.
        self.targets
            .retain(|k, _| targets.iter().any(|t| t.target == k));

        let mut out: Vec<Acc> = queries
            .iter()
            .map(|q| match q {
                MetricQuery::Series(q) => Acc::new(q.kind),
                MetricQuery::Promql(_) => Acc::new(QueryKind::Gauge),
            })
            .collect();
        let mut errors = Vec::new();
        let mut ok_targets = 0usize;
        let mut seen: HashSet<u64> = HashSet::new();
        for t in targets {
            let samples = match &t.samples {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{}: {e}", t.target));
                    continue;
                }
            };
            ok_targets += 1;
            let mem = self.targets.entry(t.target.to_string()).or_default();
            let first = !mem.scraped_before;
            for (qi, q) in queries.iter().enumerate() {
                let acc = &mut out[qi];
                let MetricQuery::Series(q) = q else { continue };
                match q.kind {
                    QueryKind::Counter | QueryKind::Histogram => {
                        fold_counters(acc, mem, qi, q, samples, t.target, first, round, &mut seen)
                    }
                    QueryKind::Gauge | QueryKind::Latest => {
                        fold_gauge(acc, mem, qi, q, samples, t.target, &mut seen)
                    }
                }
            }
            mem.scraped_before = true;
            mem.counters
                .retain(|_, c| round - c.seen_round < PRUNE_AFTER_ROUNDS);
        }

        self.waiting = out
            .iter()
            .enumerate()
            .filter(|(_, acc)| acc.waits())
            .map(|(qi, _)| qi)
            .collect();
        queries
            .iter()
            .zip(out)
            .map(|(q, acc)| finish(q, acc, ok_targets, &errors))
            .collect()
    }

    /// Whether a gauge had no new sample this round (scraped less often than read).
    pub fn gauges_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Marks every target's unused sample of gauge query `qi` as used (see [`frame`]).
    fn used(&mut self, qi: usize) {
        for mem in self.targets.values_mut() {
            if let Some(g) = mem.gauges.get_mut(&qi) {
                g.unused = None;
            }
        }
    }
}

/// One target's counter or histogram-bucket samples for query `qi`: the increase since the
/// last interval per series (a drop is a reset; a series new on a known target counts from
/// zero; everything on a target's first scrape only sets the baseline).
#[allow(clippy::too_many_arguments)]
fn fold_counters<S: SeriesRef>(
    acc: &mut Acc,
    mem: &mut TargetMemory,
    qi: usize,
    q: &SeriesQuery,
    samples: &[S],
    target: &str,
    first: bool,
    round: u64,
    seen: &mut HashSet<u64>,
) {
    let sel = q.sample_selector();
    seen.clear();
    for s in samples.iter().filter(|s| selected(&sel, *s)) {
        let key = series_key(qi, s);
        if !seen.insert(key) {
            acc.duplicate
                .get_or_insert_with(|| duplicate_message(target, s));
            continue;
        }
        let v = s.value();
        if !v.is_finite() {
            acc.non_finite = true;
            continue;
        }
        acc.matched = true;
        let delta = match mem.counters.get(&key) {
            Some(prev) if v >= prev.value => Some(v - prev.value),
            Some(_) => Some(v), // reset
            None if first => None,
            None => Some(v), // new series on a known instance
        };
        mem.counters.insert(
            key,
            CounterMemory {
                value: v,
                seen_round: round,
            },
        );
        let Some(d) = delta else { continue };
        acc.had_delta = true;
        if q.kind == QueryKind::Counter {
            acc.total += d;
        } else if let Some(le) = s.label("le").and_then(parse_le) {
            *acc.buckets.entry(le.to_bits()).or_insert(0.0) += d;
        }
    }
}

/// One target's gauge value for query `qi` (summed over the selector, divided by `divide_by`
/// when given); duplicates are reported, never summed twice.
fn fold_gauge<S: SeriesRef>(
    acc: &mut Acc,
    mem: &mut TargetMemory,
    qi: usize,
    q: &SeriesQuery,
    samples: &[S],
    target: &str,
    seen: &mut HashSet<u64>,
) {
    // The newest time among the samples read (`None` when none has one).
    let mut newest: Option<i64> = None;
    for sel in std::iter::once(&q.selector).chain(q.divide_by.as_ref()) {
        seen.clear();
        for s in samples.iter().filter(|s| selected(sel, *s)) {
            newest = newest.max(s.timestamp_ms());
            if !seen.insert(series_key(qi, s)) {
                acc.duplicate
                    .get_or_insert_with(|| duplicate_message(target, s));
            }
        }
    }
    let num = sum_matching(&q.selector, samples);
    if num.is_none() && samples.iter().any(|s| selected(&q.selector, s)) {
        acc.non_finite = true;
    }
    let value = match (&q.divide_by, num) {
        (_, None) => None,
        (None, Some(n)) => Some(n),
        (Some(den), Some(n)) => match sum_matching(den, samples) {
            Some(d) if d != 0.0 => Some(n / d),
            _ => None,
        },
    };
    let Some(v) = value.filter(|v| v.is_finite()) else {
        if let Some(g) = mem.gauges.get_mut(&qi) {
            g.unused = None;
        }
        return;
    };
    acc.matched = true;
    acc.had_delta = true;
    if q.kind == QueryKind::Latest {
        acc.gauges.push(v);
        return;
    }
    let memory = mem.gauges.entry(qi).or_default();
    if newest.is_none() || newest > memory.newest_ms {
        *memory = GaugeMemory {
            newest_ms: newest,
            unused: Some(v),
        };
    }
    match memory.unused {
        Some(u) => acc.gauges.push(u),
        None => acc.stale = true,
    }
}

/// One interval's frame from both arms' answers (`b`, `c`, one per query) and their
/// collectors: a gauge is judged only when both arms have a sample no interval used before,
/// and those samples are then used. Until then the arm with one waits for the other (both
/// have no data for that check), keeping its sample.
pub fn frame(
    cols: &mut crate::query::Arms<ArmCollector>,
    queries: &[MetricQuery],
    mut b: Vec<Fetch>,
    mut c: Vec<Fetch>,
) -> crate::query::Frame {
    let gauges = queries
        .iter()
        .enumerate()
        .filter(|(_, q)| matches!(q, MetricQuery::Series(q) if q.kind == QueryKind::Gauge));
    for (qi, _) in gauges {
        let (Some(fb), Some(fc)) = (b.get_mut(qi), c.get_mut(qi)) else {
            continue;
        };
        match (&*fb, &*fc) {
            (Fetch::Value(_), Fetch::Value(_)) => {
                cols.baseline.used(qi);
                cols.canary.used(qi);
            }
            (Fetch::Value(_), Fetch::NoData(_)) if cols.canary.waiting.contains(&qi) => {
                *fb = Fetch::NoData(WAITS.into());
            }
            (Fetch::NoData(_), Fetch::Value(_)) if cols.baseline.waiting.contains(&qi) => {
                *fc = Fetch::NoData(WAITS.into());
            }
            _ => {}
        }
    }
    crate::query::Frame::from_arms(b, c)
}

/// Why an arm with a new gauge sample has no data this interval.
const WAITS: &str =
    "a new sample waits for one from the other arm (scraped less often than the rule's interval)";

/// A query's answer for the interval, from what every target contributed.
fn finish(q: &MetricQuery, acc: Acc, ok_targets: usize, errors: &[String]) -> Fetch {
    let MetricQuery::Series(q) = q else {
        return Fetch::Error(
            "a written `query:` needs the Prometheus source; these samples were scraped or recorded".into(),
        );
    };
    if ok_targets == 0 {
        let msg = if errors.is_empty() {
            "no targets".to_string()
        } else {
            summarize(errors)
        };
        return if errors.is_empty() {
            Fetch::NoData(msg)
        } else {
            Fetch::Error(msg)
        };
    }
    if let Some(dup) = acc.duplicate {
        return Fetch::Error(dup);
    }
    if !acc.matched {
        if acc.non_finite {
            return Fetch::NoData(format!(
                "{} matched only NaN or infinite values",
                q.sample_selector()
            ));
        }
        return Fetch::NoData(format!("no series matched {}", q.sample_selector()));
    }
    if !acc.had_delta {
        return Fetch::NoData("first scrape: establishing counter baselines".into());
    }
    if acc.waits() {
        return Fetch::NoData(
            "no sample newer than the one already judged: the series is scraped less often than the rule's interval".into(),
        );
    }
    Fetch::Value(acc.finish())
}

/// At most three target errors in full, then a count: a thousand dead targets must not make
/// a thousand-line chat message.
fn summarize(errors: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut msg = errors
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > SHOWN {
        msg.push_str(&format!(
            "; and {} more target(s) failing",
            errors.len() - SHOWN
        ));
    }
    msg
}

fn sum_matching<S: SeriesRef>(sel: &Selector, samples: &[S]) -> Option<f64> {
    let mut any = false;
    let mut sum = 0.0;
    for s in samples.iter().filter(|s| selected(sel, *s)) {
        let v = s.value();
        if v.is_finite() {
            any = true;
            sum += v;
        }
    }
    any.then_some(sum)
}

/// Parses an `le` label value (`0.5`, `+Inf`, `1e-3`).
pub fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => s.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

struct Acc {
    kind: QueryKind,
    matched: bool,
    had_delta: bool,
    /// Some selected series had a NaN or infinite value (told apart from "nothing matched").
    non_finite: bool,
    /// The first series seen twice in one target's answer.
    duplicate: Option<String>,
    /// Some target's gauge sample was used already and nothing newer came.
    stale: bool,
    total: f64,
    gauges: Vec<f64>,
    buckets: HashMap<u64, f64>,
}

impl Acc {
    fn new(kind: QueryKind) -> Self {
        Acc {
            kind,
            matched: false,
            had_delta: false,
            non_finite: false,
            duplicate: None,
            stale: false,
            total: 0.0,
            gauges: Vec::new(),
            buckets: HashMap::new(),
        }
    }

    /// A gauge whose every sample was used already: it waits for a newer one.
    fn waits(&self) -> bool {
        self.stale && self.gauges.is_empty()
    }

    fn finish(self) -> Observed {
        match self.kind {
            QueryKind::Counter => Observed::Counter(self.total),
            QueryKind::Gauge | QueryKind::Latest => Observed::Gauge(self.gauges),
            QueryKind::Histogram => {
                let mut b: Vec<(f64, f64)> = self
                    .buckets
                    .into_iter()
                    .map(|(k, v)| (f64::from_bits(k), v))
                    .collect();
                b.sort_by(|a, b| a.0.total_cmp(&b.0));
                // Per-series resets can leave a bucket below its predecessor; cumulative
                // counts must not decrease.
                let mut run = 0.0f64;
                for x in &mut b {
                    run = run.max(x.1);
                    x.1 = run;
                }
                Observed::Buckets(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Arms, SeriesQuery};

    fn s(name: &str, labels: &[(&str, &str)], value: f64) -> OwnedSample {
        OwnedSample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn q(kind: QueryKind, sel: &str) -> MetricQuery {
        MetricQuery::series(kind, Selector::parse(sel).unwrap())
    }

    fn run(c: &mut ArmCollector, qs: &[MetricQuery], t: &[(&str, Vec<OwnedSample>)]) -> Vec<Fetch> {
        let ts: Vec<TargetSamples<OwnedSample>> = t
            .iter()
            .map(|(n, v)| TargetSamples {
                target: n,
                samples: Ok(v.as_slice()),
            })
            .collect();
        c.collect(qs, &ts)
    }

    #[test]
    fn counter_increase_with_reset_and_new_series() {
        let qs = [q(QueryKind::Counter, r#"req{code=~"5.."}"#)];
        let mut c = ArmCollector::new();
        // One round: target `a` answers `req{code}` with these values.
        let mut round = |codes: &[(&str, f64)]| {
            let samples = codes
                .iter()
                .map(|(code, v)| s("req", &[("code", code)], *v))
                .collect();
            run(&mut c, &qs, &[("a", samples)]).remove(0)
        };
        assert!(matches!(round(&[("500", 10.0)]), Fetch::NoData(_)));
        let r = round(&[("500", 15.0), ("503", 2.0)]);
        assert_eq!(r, Fetch::Value(Observed::Counter(7.0)));
        // Reset: 15 -> 3 counts 3; the 503 series is unchanged.
        let r = round(&[("500", 3.0), ("503", 2.0)]);
        assert_eq!(r, Fetch::Value(Observed::Counter(3.0)));
        let r = round(&[("200", 3.0)]);
        assert!(matches!(&r, Fetch::NoData(m) if m.contains("no series matched")));
    }

    #[test]
    fn failed_targets_and_all_failed() {
        let qs = [q(QueryKind::Counter, "req")];
        let mut c = ArmCollector::new();
        // `a` answers `req` with this value, `b` times out.
        let mut round = |value: f64| {
            let good = [s("req", &[], value)];
            let ts = [
                TargetSamples {
                    target: "a",
                    samples: Ok(&good[..]),
                },
                TargetSamples {
                    target: "b",
                    samples: Err("timeout".to_string()),
                },
            ];
            c.collect(&qs, &ts).remove(0)
        };
        round(1.0);
        assert_eq!(round(4.0), Fetch::Value(Observed::Counter(3.0)));
        let ts: [TargetSamples<OwnedSample>; 1] = [TargetSamples {
            target: "a",
            samples: Err("refused".into()),
        }];
        assert!(matches!(&c.collect(&qs, &ts)[0], Fetch::Error(m) if m.contains("a: refused")));
    }

    #[test]
    fn histogram_buckets_summed_by_le() {
        let qs = [q(QueryKind::Histogram, r#"lat{job="x"}"#)];
        let mut c = ArmCollector::new();
        let mk = |a: f64, b: f64, inf: f64| {
            vec![
                s("lat_bucket", &[("job", "x"), ("le", "0.1")], a),
                s("lat_bucket", &[("job", "x"), ("le", "0.5")], b),
                s("lat_bucket", &[("job", "x"), ("le", "+Inf")], inf),
                s("lat_count", &[("job", "x")], inf),
            ]
        };
        run(
            &mut c,
            &qs,
            &[("a", mk(1.0, 2.0, 3.0)), ("b", mk(0.0, 0.0, 0.0))],
        );
        let r = run(
            &mut c,
            &qs,
            &[("a", mk(5.0, 8.0, 10.0)), ("b", mk(1.0, 1.0, 2.0))],
        );
        assert_eq!(
            r[0],
            Fetch::Value(Observed::Buckets(vec![
                (0.1, 5.0),
                (0.5, 7.0),
                (f64::INFINITY, 9.0)
            ]))
        );
    }

    #[test]
    fn duplicate_series_is_an_error_that_says_so() {
        let qs = [q(QueryKind::Counter, "req"), q(QueryKind::Gauge, "mem")];
        let mut c = ArmCollector::new();
        let twice = vec![
            s("req", &[("code", "500")], 1.0),
            s("req", &[("code", "500")], 2.0),
            s("mem", &[], 1.0),
            s("mem", &[], 1.0),
        ];
        let r = run(&mut c, &qs, &[("a", twice)]);
        for f in &r {
            assert!(
                matches!(f, Fetch::Error(m) if m.contains("appears more than once") && m.starts_with("a: series ")),
                "{f:?}"
            );
        }
        // Label order does not make two series.
        let r = run(
            &mut c,
            &qs[..1],
            &[(
                "b",
                vec![
                    s("req", &[("x", "1"), ("y", "2")], 1.0),
                    s("req", &[("y", "2"), ("x", "1")], 1.0),
                ],
            )],
        );
        assert!(
            matches!(&r[0], Fetch::Error(m) if m.contains(r#"req{x="1",y="2"}"#)),
            "{r:?}"
        );
    }

    #[test]
    fn nan_only_is_no_data_with_the_reason() {
        let qs = [q(QueryKind::Counter, "req"), q(QueryKind::Gauge, "mem")];
        let mut c = ArmCollector::new();
        let r = run(
            &mut c,
            &qs,
            &[(
                "a",
                vec![s("req", &[], f64::NAN), s("mem", &[], f64::INFINITY)],
            )],
        );
        for f in &r {
            assert!(
                matches!(f, Fetch::NoData(m) if m.contains("only NaN or infinite")),
                "{f:?}"
            );
        }
    }

    #[test]
    fn a_gauge_is_judged_when_both_arms_have_a_sample_not_used_before() {
        // Scraped every 30 s and read every 10 s, each arm's target at its own offset.
        let qs = [q(QueryKind::Gauge, "inuse")];
        let mut cols: Arms<ArmCollector> = Arms::default();
        let at = |ms: i64, v: f64| OwnedSample {
            timestamp_ms: Some(ms),
            ..s("inuse", &[], v)
        };
        let mut round = |b: OwnedSample, c: OwnedSample| {
            let fb = run(&mut cols.baseline, &qs, &[("b0", vec![b])]);
            let fc = run(&mut cols.canary, &qs, &[("c0", vec![c])]);
            frame(&mut cols, &qs, fb, fc).values.remove(0)
        };
        let value = |v: f64| Fetch::Value(Observed::Gauge(vec![v]));
        let both = |b: f64, c: f64| Arms {
            baseline: value(b),
            canary: value(c),
        };
        let no_data = |f: &Fetch, why: &str| matches!(f, Fetch::NoData(m) if m.contains(why));
        assert_eq!(round(at(1_000, 3.0), at(2_000, 5.0)), both(3.0, 5.0));
        // Only the baseline has a new sample: it waits for the canary's.
        let r = round(at(11_000, 4.0), at(2_000, 5.0));
        assert!(
            no_data(&r.baseline, "waits for one from the other arm"),
            "{r:?}"
        );
        assert!(no_data(&r.canary, "scraped less often"), "{r:?}");
        let r = round(at(11_000, 4.0), at(2_000, 5.0));
        assert!(
            no_data(&r.baseline, "waits") && no_data(&r.canary, "scraped"),
            "{r:?}"
        );
        // The canary's arrives: judged with the baseline's kept sample, each used once.
        assert_eq!(round(at(11_000, 4.0), at(22_000, 6.0)), both(4.0, 6.0));
        let r = round(at(11_000, 4.0), at(22_000, 6.0));
        assert!(
            no_data(&r.baseline, "scraped") && no_data(&r.canary, "scraped"),
            "{r:?}"
        );
        // The growth check's kind reads every instance's latest sample every interval.
        let latest = [q(QueryKind::Latest, "inuse")];
        let mut cols: Arms<ArmCollector> = Arms::default();
        for _ in 0..2 {
            let fb = run(&mut cols.baseline, &latest, &[("b0", vec![at(1_000, 3.0)])]);
            let fc = run(&mut cols.canary, &latest, &[("c0", vec![at(2_000, 5.0)])]);
            assert_eq!(frame(&mut cols, &latest, fb, fc).values[0], both(3.0, 5.0));
        }
        // Without timestamps (an exporter that writes none) every read is new.
        let mut cols: Arms<ArmCollector> = Arms::default();
        for _ in 0..2 {
            let fb = run(
                &mut cols.baseline,
                &qs,
                &[("b0", vec![s("inuse", &[], 3.0)])],
            );
            let fc = run(&mut cols.canary, &qs, &[("c0", vec![s("inuse", &[], 5.0)])]);
            assert_eq!(frame(&mut cols, &qs, fb, fc).values[0], both(3.0, 5.0));
        }
    }

    #[test]
    fn gauges_per_instance_with_ratio() {
        let g: MetricQuery = SeriesQuery {
            kind: QueryKind::Gauge,
            selector: Selector::parse("inuse").unwrap(),
            divide_by: Some(Selector::parse("max").unwrap()),
        }
        .into();
        let mut c = ArmCollector::new();
        let r = run(
            &mut c,
            &[g],
            &[
                (
                    "a",
                    vec![
                        s("inuse", &[("pool", "p1")], 3.0),
                        s("inuse", &[("pool", "p2")], 1.0),
                        s("max", &[], 8.0),
                    ],
                ),
                ("b", vec![s("inuse", &[], f64::NAN), s("max", &[], 8.0)]),
                ("c", vec![s("inuse", &[], 2.0), s("max", &[], 0.0)]),
            ],
        );
        assert_eq!(r[0], Fetch::Value(Observed::Gauge(vec![0.5])));
    }
}

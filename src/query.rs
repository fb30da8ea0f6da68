//! What a check needs from the metric sources, and what comes back.
//!
//! A compiled analysis turns its checks into a list of [`MetricQuery`]s. Every source
//! (direct scrape, Prometheus, recorded files) answers each query for each arm with a
//! [`Fetch`], and the judge reads a [`Frame`] of those answers per interval. Keeping this
//! contract small is what lets the daemon, `backtest` and `demo` drive the same judge.

use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// A sample is usable for this long after its timestamp (Prometheus' default lookback): the
/// same staleness for every source (a scrape's cached exporter, a recorded file's gap).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// How the samples matched by a selector are turned into one interval's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// Sum over matched series of the counter increase since the previous interval
    /// (resets handled like PromQL's `increase`).
    Counter,
    /// Instant value per instance (sum of the instance's matched series, or the ratio of two
    /// such sums with `divide_by`), each sample judged once (see
    /// [`crate::series::ArmCollector`]): for levels, counts and samples.
    Gauge,
    /// The same value, every instance's latest sample at every interval whether it is new or
    /// not: for the growth check's floors (a minimum over a window, which a repeated sample
    /// does not change) and start times, which need every instance every interval.
    Latest,
    /// Increase of the classic histogram buckets `<name>_bucket{le=..}` per `le`.
    Histogram,
}

/// One thing to fetch for both arms every interval.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricQuery {
    /// Raw series named by a selector; every source can answer it, and
    /// [`crate::series::ArmCollector`] turns the samples into a value.
    Series(SeriesQuery),
    /// A PromQL expression written in the rule (`query:`); only the Prometheus source can
    /// evaluate it, and its answer is one value per series, like a gauge per instance.
    Promql(PromqlQuery),
}

impl MetricQuery {
    /// The series `selector` names, read as `kind`, with nothing to divide by.
    pub fn series(kind: QueryKind, selector: Selector) -> MetricQuery {
        MetricQuery::Series(SeriesQuery {
            kind,
            selector,
            divide_by: None,
        })
    }

    /// A short name for messages and unit guesses (the metric name, or the PromQL text).
    pub fn describe(&self) -> String {
        match self {
            MetricQuery::Series(q) => q.selector.name.clone(),
            MetricQuery::Promql(q) => q.text.clone(),
        }
    }
}

/// Raw series to fetch for both arms.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesQuery {
    pub kind: QueryKind,
    pub selector: Selector,
    /// For gauges: divide the instance's sum by this selector's sum (e.g. in-use / max).
    pub divide_by: Option<Selector>,
}

impl SeriesQuery {
    /// The sample name the source must look for (`_bucket` for histograms).
    pub fn sample_selector(&self) -> Selector {
        match self.kind {
            QueryKind::Histogram => self
                .selector
                .with_name(&format!("{}_bucket", self.selector.name)),
            _ => self.selector.clone(),
        }
    }
}

impl From<SeriesQuery> for MetricQuery {
    fn from(q: SeriesQuery) -> Self {
        MetricQuery::Series(q)
    }
}

/// A rule-written PromQL expression with the deployment's parameters filled in; the arm
/// placeholders (`{{arm}}`, `{{role}}`) are left for the source, which fills them per arm
/// (see [`crate::written`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PromqlQuery {
    pub text: String,
}

/// One arm's value for one query over one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// Total increase over the interval.
    Counter(f64),
    /// One value per instance (NaN values already dropped).
    Gauge(Vec<f64>),
    /// Cumulative bucket increases `(le, count)`, sorted by `le`, ending with `+Inf`.
    Buckets(Vec<(f64, f64)>),
}

/// The answer to one query for one arm: a value, no matching data, or a source failure.
/// The difference matters: missing data and a broken metrics backend must never be read as
/// "the canary is fine" or "the canary is bad".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fetch {
    Value(Observed),
    NoData(String),
    Error(String),
}

/// A pair of values, one per arm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Arms<T> {
    pub baseline: T,
    pub canary: T,
}

impl<T> Arms<T> {
    pub fn new(baseline: T, canary: T) -> Self {
        Arms { baseline, canary }
    }

    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Arms<U> {
        Arms {
            baseline: f(&self.baseline),
            canary: f(&self.canary),
        }
    }
}

/// Everything the sources fetched for one interval: `values[i]` answers `queries[i]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub values: Vec<Arms<Fetch>>,
}

impl Frame {
    /// Pairs the two arms' answers, query by query.
    pub fn from_arms(baseline: Vec<Fetch>, canary: Vec<Fetch>) -> Frame {
        Frame {
            values: baseline
                .into_iter()
                .zip(canary)
                .map(|(baseline, canary)| Arms { baseline, canary })
                .collect(),
        }
    }
}

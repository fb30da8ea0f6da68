//! Turning a histogram family's flat samples into one bucket list per series, which is the
//! shape the judge's latency checks work on.

use std::collections::HashMap;

use super::{Exposition, Family, Label, MetricType, ParseError, lex};

/// One series of a histogram: the buckets of one label set (without `le`), with its `_sum` and
/// `_count` when the exposition had them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries<'a> {
    /// The series' labels without `le`, in the order of its first sample.
    pub labels: Vec<Label<'a>>,
    /// `(le, cumulative count)` sorted by `le` (`+Inf` last). Kept as exposed: duplicates are
    /// not merged and monotonicity is not checked here, because deciding what a broken
    /// histogram means is the judge's job, not the parser's.
    pub buckets: Vec<(f64, f64)>,
    /// Value of `x_sum` (`x_gsum` for gauge histograms), if present; the last one wins if the
    /// series is duplicated.
    pub sum: Option<f64>,
    /// Value of `x_count` (`x_gcount`), if present; the last one wins if duplicated.
    pub count: Option<f64>,
}

enum Role {
    Bucket(f64),
    Sum,
    Count,
}

impl<'a> Exposition<'a> {
    /// Groups the samples of a histogram (or gauge histogram) family by label set, ignoring
    /// `le`, into bucket lists sorted by `le`; series come out in order of first appearance, so
    /// results are deterministic (unlike prometheus-parse's `HashMap` order).
    ///
    /// Errors (with the sample's line) on a bucket without `le` or with an `le` that is not a
    /// number, since a bucket list with a guessed edge would silently skew quantiles. `_created`
    /// samples are ignored. Linear in the family's size.
    pub fn histogram_series(
        &self,
        family: &Family<'a>,
    ) -> Result<Vec<HistogramSeries<'a>>, ParseError> {
        let (sum_suffix, count_suffix) = match family.kind {
            MetricType::Histogram => ("_sum", "_count"),
            MetricType::GaugeHistogram => ("_gsum", "_gcount"),
            other => {
                return Err(ParseError {
                    line: 0,
                    column: 0,
                    message: format!(
                        "family {} is a {other}, not a histogram",
                        lex::shown(family.name)
                    ),
                });
            }
        };
        let mut out: Vec<HistogramSeries<'a>> = Vec::new();
        let mut index: HashMap<Vec<(&str, &str)>, usize> = HashMap::new();
        let mut key: Vec<(&str, &str)> = Vec::new();
        for s in self.family_samples(family) {
            let suffix = s.name.strip_prefix(family.name).unwrap_or(s.name);
            let role = if suffix == "_bucket" {
                let bad = |message: String| ParseError {
                    line: s.line,
                    column: 0,
                    message,
                };
                let le = s
                    .label("le")
                    .ok_or_else(|| bad("histogram bucket without an 'le' label".into()))?;
                match lex::parse_value(le) {
                    Some(v) if !v.is_nan() => Role::Bucket(v),
                    _ => {
                        return Err(bad(format!(
                            "histogram bucket with invalid 'le' value {}",
                            lex::shown(le)
                        )));
                    }
                }
            } else if suffix == sum_suffix {
                Role::Sum
            } else if suffix == count_suffix {
                Role::Count
            } else {
                continue;
            };

            key.clear();
            key.extend(
                s.labels
                    .iter()
                    .filter(|l| l.name != "le")
                    .map(|l| (l.name, l.value.as_ref())),
            );
            key.sort_unstable();
            let at = match index.get(&key) {
                Some(&at) => at,
                None => {
                    let at = out.len();
                    out.push(HistogramSeries {
                        labels: s
                            .labels
                            .iter()
                            .filter(|l| l.name != "le")
                            .cloned()
                            .collect(),
                        buckets: Vec::new(),
                        sum: None,
                        count: None,
                    });
                    index.insert(key.clone(), at);
                    at
                }
            };
            let Some(series) = out.get_mut(at) else {
                continue;
            };
            match role {
                Role::Bucket(le) => series.buckets.push((le, s.value)),
                Role::Sum => series.sum = Some(s.value),
                Role::Count => series.count = Some(s.value),
            }
        }
        for series in &mut out {
            // Stable, so duplicated buckets keep their input order.
            series.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(out)
    }
}

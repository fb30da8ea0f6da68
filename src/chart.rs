//! Chart history: what each check looked like over an analysis, built from the judge's own
//! reports (no second scrape), for the status page and `backtest --format html`.
//!
//! Every judged interval adds one point per check: both arms' values as the judge reported
//! them (error ratio, slow-request share, level, slope, …), the evidence and the threshold it
//! is measured against. The history is bounded: it keeps at most [`MAX_POINTS`] points per
//! check. When a series would grow past that, neighbouring points are merged pairwise and
//! each point covers twice as many intervals from then on, so a six-hour analysis costs the
//! same memory and store space as a twenty-minute one and stays evenly spaced.
//!
//! Merging keeps what a reader must not miss: the largest evidence of the merged intervals
//! (a crossing is never averaged away), a failing outcome if any, and the latest arm values
//! (the judge's values are running estimates, so the latest is the one that counts).

use serde::{Deserialize, Serialize};

use crate::judge::{CheckReport, Outcome, Step};
use crate::rules::CheckKind;

/// Points kept per check at most (a power of two times this many intervals are merged).
pub const MAX_POINTS: usize = 240;

/// Significant digits a stored chart value keeps: plenty for a chart, and about half the
/// JSON of full precision (the chart is written with every analysis step).
pub const STORED_DIGITS: i32 = 5;

/// `v` rounded to `digits` significant digits (non-finite values unchanged).
pub fn round_sig(v: f64, digits: i32) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let k = digits - 1 - v.abs().log10().floor() as i32;
    // One exact power of ten and one correctly rounded operation: the result is the double
    // nearest the rounded decimal, which prints as that decimal.
    if (0..=22).contains(&k) {
        let p = 10f64.powi(k);
        (v * p).round() / p
    } else if (-22..0).contains(&k) {
        let p = 10f64.powi(-k);
        (v / p).round() * p
    } else {
        v
    }
}

/// Chart values in JSON: rounded to [`STORED_DIGITS`], `null` for a missing value (NaN),
/// the largest double for an infinite one.
mod rounded_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else if v.is_infinite() {
            s.serialize_f64(v.signum() * f64::MAX)
        } else {
            s.serialize_f64(super::round_sig(*v, super::STORED_DIGITS))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The chart history of one analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Judged intervals one point covers (1, then 2, 4, … as the analysis grows).
    #[serde(default = "one")]
    pub stride: u32,
    pub checks: Vec<Series>,
    /// The judge's terminal verdict, when it gave one (a person's abort is not here: the
    /// record says when that happened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

fn one() -> u32 {
    1
}

/// One check's points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    /// `None` for the traffic-split check, which is no rule check.
    pub kind: Option<CheckKind>,
    /// What the arm values are (the effect's measure when the judge names one).
    #[serde(default)]
    pub measure: String,
    pub points: Vec<Point>,
}

/// One interval (or a merged run of intervals) of one check. Short field names: a long
/// analysis stores thousands of these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Analysis time at the end of the last merged interval, in milliseconds.
    pub t: u64,
    /// Intervals merged into this point.
    pub n: u32,
    /// Baseline value (NaN when the judge reported none).
    #[serde(rename = "b", with = "rounded_f64")]
    pub baseline: f64,
    /// Canary value.
    #[serde(rename = "c", with = "rounded_f64")]
    pub canary: f64,
    /// Largest evidence of the merged intervals.
    #[serde(rename = "e", with = "rounded_f64")]
    pub evidence: f64,
    /// Evidence needed to fail.
    #[serde(rename = "th", with = "rounded_f64")]
    pub threshold: f64,
    /// Worst outcome of the merged intervals.
    #[serde(rename = "o")]
    pub outcome: Outcome,
}

/// The judge's terminal verdict and when it came.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Analysis time in milliseconds.
    pub t: u64,
    /// `rollback`, `promote` or `inconclusive`.
    pub verdict: String,
    /// The check that decided a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    pub reason: String,
}

/// How bad an outcome is, for merging (a failure is never merged away).
fn severity(o: Outcome) -> u8 {
    match o {
        Outcome::Pass => 0,
        Outcome::Pending => 1,
        Outcome::NoData => 2,
        Outcome::SourceError => 3,
        Outcome::Fail => 4,
    }
}

/// The latest of two values that is a number.
fn latest(old: f64, new: f64) -> f64 {
    if new.is_nan() { old } else { new }
}

/// The larger of two values, ignoring NaN.
fn larger(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

impl Point {
    fn of(t_ms: u64, r: &CheckReport) -> Point {
        let arm = |a: &Option<crate::judge::ArmValue>| a.as_ref().map_or(f64::NAN, |a| a.value);
        Point {
            t: t_ms,
            n: 1,
            baseline: arm(&r.baseline),
            canary: arm(&r.canary),
            evidence: r.evidence,
            threshold: r.threshold,
            outcome: r.outcome,
        }
    }

    /// Folds a later point into this one.
    fn absorb(&mut self, later: &Point) {
        self.t = later.t;
        self.n += later.n;
        self.baseline = latest(self.baseline, later.baseline);
        self.canary = latest(self.canary, later.canary);
        self.evidence = larger(self.evidence, later.evidence);
        self.threshold = latest(self.threshold, later.threshold);
        if severity(later.outcome) >= severity(self.outcome) {
            self.outcome = later.outcome;
        }
    }
}

impl Series {
    /// Largest finite arm value and evidence (for scaling a chart).
    pub fn value_range(&self) -> Option<(f64, f64)> {
        let vals = self
            .points
            .iter()
            .flat_map(|p| [p.baseline, p.canary])
            .filter(|v| v.is_finite());
        vals.fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
    }
}

impl History {
    /// Adds one judged interval (every check and the traffic split), merging points when the
    /// history is full.
    pub fn record(&mut self, step: &Step) {
        self.stride = self.stride.max(1);
        let t_ms = u64::try_from(step.t.as_millis()).unwrap_or(u64::MAX);
        let reports = step
            .checks
            .iter()
            .map(|r| (r, Some(r.kind)))
            .chain(step.traffic.iter().map(|r| (r, None)));
        let mut full = false;
        for (r, kind) in reports {
            let i = match self.checks.iter().position(|s| s.name == r.name) {
                Some(i) => i,
                None => {
                    self.checks.push(Series {
                        name: r.name.clone(),
                        kind,
                        measure: String::new(),
                        points: Vec::new(),
                    });
                    self.checks.len() - 1
                }
            };
            let s = &mut self.checks[i];
            if let Some(e) = &r.effect {
                s.measure.clone_from(&e.measure);
            }
            let p = Point::of(t_ms, r);
            match s.points.last_mut() {
                Some(last) if last.n < self.stride => last.absorb(&p),
                _ => s.points.push(p),
            }
            full |= s.points.len() > MAX_POINTS;
        }
        if full {
            self.compact();
        }
        if self.decision.is_none() && step.verdict.is_terminal() {
            self.decision = Some(Decision {
                t: t_ms,
                verdict: step.verdict.name().to_string(),
                check: match &step.verdict {
                    crate::judge::Verdict::Rollback { check, .. } => Some(check.clone()),
                    _ => None,
                },
                reason: step.verdict.reason().to_string(),
            });
        }
    }

    /// Merges neighbouring points pairwise and doubles the stride.
    fn compact(&mut self) {
        self.stride = self.stride.saturating_mul(2);
        for s in &mut self.checks {
            let mut merged: Vec<Point> = Vec::with_capacity(s.points.len() / 2 + 1);
            for p in s.points.drain(..) {
                match merged.last_mut() {
                    Some(last) if last.n + p.n <= self.stride => last.absorb(&p),
                    _ => merged.push(p),
                }
            }
            s.points = merged;
        }
    }

    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.checks.iter().all(|s| s.points.is_empty())
    }

    /// Total points held (for tests and the bench).
    pub fn len(&self) -> usize {
        self.checks.iter().map(|s| s.points.len()).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::judge::{ArmValue, Verdict};
    use crate::rules::Enforcement;

    /// A ratio check's report with both arms' values (shared with the status page's tests).
    pub(crate) fn report(name: &str, b: f64, c: f64, ev: f64, outcome: Outcome) -> CheckReport {
        CheckReport {
            name: name.into(),
            kind: CheckKind::Ratio,
            outcome,
            enforce: Enforcement::Rollback,
            critical: true,
            evidence: ev,
            threshold: 40.0,
            effect: None,
            baseline: Some(ArmValue { value: b, n: 100.0 }),
            canary: Some(ArmValue { value: c, n: 10.0 }),
            explanation: String::new(),
        }
    }

    fn step(i: u64, ev: f64, outcome: Outcome) -> Step {
        Step {
            t: Duration::from_secs(10 * i),
            verdict: Verdict::Continue,
            checks: vec![report("errors", 0.01, 0.01 * i as f64, ev, outcome)],
            traffic: None,
            newly_failed: vec![],
        }
    }

    #[test]
    fn one_point_per_interval_until_full() {
        let mut h = History::default();
        for i in 1..=10 {
            h.record(&step(i, 1.0, Outcome::Pending));
        }
        assert_eq!(h.checks[0].points.len(), 10);
        assert_eq!(h.checks[0].points[9].t, 100_000);
        assert_eq!(h.stride, 1);
    }

    #[test]
    fn long_analyses_stay_bounded_and_evenly_spaced() {
        let mut h = History::default();
        let n = 10 * MAX_POINTS as u64 + 7;
        for i in 1..=n {
            h.record(&step(i, 1.0, Outcome::Pending));
        }
        let pts = &h.checks[0].points;
        assert!(pts.len() <= MAX_POINTS, "{} points", pts.len());
        assert!(pts.len() > MAX_POINTS / 2);
        assert_eq!(pts.iter().map(|p| u64::from(p.n)).sum::<u64>(), n);
        // Every point but the last (still filling) covers `stride` intervals.
        assert!(pts[..pts.len() - 1].iter().all(|p| p.n == h.stride));
        assert_eq!(pts.last().map(|p| p.t), Some(n * 10_000));
        // The latest running estimate is kept.
        assert_eq!(pts.last().map(|p| p.canary), Some(0.01 * n as f64));
    }

    #[test]
    fn merging_keeps_the_peak_evidence_and_a_failure() {
        let mut h = History::default();
        for i in 1..=(2 * MAX_POINTS as u64) {
            let (ev, o) = if i == 5 {
                (1e6, Outcome::Fail)
            } else {
                (2.0, Outcome::Pending)
            };
            h.record(&step(i, ev, o));
        }
        let pts = &h.checks[0].points;
        assert!(pts.len() <= MAX_POINTS);
        assert!(
            pts.iter()
                .any(|p| p.evidence == 1e6 && p.outcome == Outcome::Fail)
        );
    }

    #[test]
    fn the_terminal_verdict_is_marked_once() {
        let mut h = History::default();
        let mut s = step(3, 50.0, Outcome::Fail);
        s.verdict = Verdict::Rollback {
            check: "errors".into(),
            reason: "errors: canary worse".into(),
        };
        h.record(&s);
        let mut later = step(4, 60.0, Outcome::Fail);
        later.verdict = Verdict::Promote {
            basis: crate::judge::PassBasis::Proven,
            reason: "x".into(),
        };
        h.record(&later);
        let d = h.decision.as_ref().map(|d| (d.t, d.verdict.as_str()));
        assert_eq!(d, Some((30_000, "rollback")));
    }

    #[test]
    fn round_trips_with_missing_values() {
        let mut h = History::default();
        let mut s = step(1, f64::NAN, Outcome::NoData);
        s.checks[0].baseline = None;
        h.record(&s);
        let json = serde_json::to_string(&h).expect("json");
        let back: History = serde_json::from_str(&json).expect("parse");
        assert!(back.checks[0].points[0].baseline.is_nan());
        assert_eq!(back.checks[0].points[0].outcome, Outcome::NoData);
    }

    /// Stored values keep five significant digits and print as short decimals.
    #[test]
    fn stored_values_are_rounded_short() {
        for (v, want) in [
            (0.013000000000000001, "0.013"),
            (0.0185, "0.0185"),
            (1234.56789, "1234.6"),
            (7.3e-7, "7.3e-7"),
            (123456789.0, "123460000.0"),
            (-0.1 - 0.2, "-0.3"),
            (1.03f64.powi(240), "1204.9"),
        ] {
            let got = serde_json::to_string(&round_sig(v, STORED_DIGITS)).expect("json");
            assert_eq!(got, want, "{v}");
        }
        assert!(round_sig(f64::NAN, 5).is_nan());
        assert_eq!(round_sig(0.0, 5), 0.0);
    }
}

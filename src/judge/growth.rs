//! `growth` checks: memory leaks and other slow climbs (RSS, pool connections in use, queue
//! depth), judged as a trend of the difference canary − baseline, never as a level.
//!
//! Every interval after warm-up the judge records D(t) = mean(canary) − mean(baseline) (the
//! difference cancels load and GC effects the arms share). Once enough time is covered it
//! fits a Theil–Sen slope to D with Sen's confidence interval, widened by the Hamed–Rao
//! autocorrelation factor of a Mann–Kendall test (GC sawtooth makes neighbouring points
//! dependent), at the check's share of the error budget (statistics.md §5, §7.3). The check
//! fails when the lower bound of the extra slope is above `max_extra_slope` and the trend is
//! significant, or when an optional `limit` would be reached within `min_time_to_limit`.
//! Theil–Sen is robust to a restart's drop and to NaN (points are skipped).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fmt::{evidence, level};
use super::{ArmValue, Ctx, Effect, Outcome, Partial, mean};
use crate::stats::special::{normal_cdf, normal_quantile};
use crate::stats::trend::{mann_kendall_hamed_rao, theil_sen};

/// Points kept; older ones are merged pairwise beyond this (bounded memory and O(n²) cost).
const MAX_POINTS: usize = 240;
/// The trend is judged only once the points cover this much time.
const MIN_SPAN: Duration = Duration::from_secs(240);
const MIN_POINTS: usize = 8;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GrowthState {
    /// (minutes since start, D, canary level)
    points: Vec<(f64, f64, f64)>,
    baseline_level: f64,
}

impl GrowthState {
    fn push(&mut self, t_min: f64, d: f64, c: f64) {
        self.points.push((t_min, d, c));
        if self.points.len() > MAX_POINTS {
            let merged: Vec<(f64, f64, f64)> = self
                .points
                .chunks(2)
                .map(|w| {
                    let n = w.len() as f64;
                    (w.iter().map(|p| p.0).sum::<f64>() / n, w.iter().map(|p| p.1).sum::<f64>() / n, w.iter().map(|p| p.2).sum::<f64>() / n)
                })
                .collect();
            self.points = merged;
        }
    }

    pub(crate) fn step(&mut self, ctx: &Ctx, metric: usize, max_extra_slope: f64, limit: Option<f64>, min_time_to_limit: Duration) -> Partial {
        let g = match ctx.gauges(metric) {
            Ok(g) => g,
            Err(m) => return Partial::missing(m),
        };
        let (b, c) = (mean(g.baseline), mean(g.canary));
        if !(b.is_finite() && c.is_finite()) {
            return Partial::missing(super::Missing::NoData("no finite values this interval".into()));
        }
        let bytes = ctx.spec.queries.get(metric).is_some_and(|q| q.selector.name.contains("bytes"));
        let fmt_v = |v: f64| if bytes { crate::units::format_bytes(v) } else { format!("{v:.3}") };
        if ctx.in_warmup {
            return Partial::pending(format!("warm-up until {} (canary {} vs baseline {})", crate::units::format_duration(ctx.spec.timing.warmup), fmt_v(c), fmt_v(b)));
        }
        self.push(ctx.t.as_secs_f64() / 60.0, c - b, c);
        self.baseline_level = b;
        let per_min = max_extra_slope * 60.0;
        let span = self.points.last().map_or(0.0, |l| l.0) - self.points.first().map_or(0.0, |f| f.0);
        let levels = format!("canary {} vs baseline {}", fmt_v(c), fmt_v(b));
        if self.points.len() < MIN_POINTS || span * 60.0 < MIN_SPAN.as_secs_f64() {
            return Partial {
                outcome: Outcome::Pending,
                evidence: f64::NAN,
                effect: None,
                baseline: Some(ArmValue { value: b, n: self.points.len() as f64 }),
                canary: Some(ArmValue { value: c, n: self.points.len() as f64 }),
                explanation: format!("{levels}; collecting a trend ({:.1} of {:.0} minutes)", span, MIN_SPAN.as_secs_f64() / 60.0),
            };
        }
        let t: Vec<f64> = self.points.iter().map(|p| p.0).collect();
        let d: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        // One-sided level for this check's share of the error budget.
        let a = (1.0 / ctx.threshold).clamp(1e-12, 0.25);
        let mk = mann_kendall_hamed_rao(&t, &d, 2.0 * a);
        let factor = mk.map_or(1.0, |m| m.variance_factor.max(1.0));
        let z = normal_quantile(1.0 - a) * factor.sqrt();
        let conf = (2.0 * normal_cdf(z) - 1.0).clamp(0.5, 1.0 - 1e-12);
        let Some(ts) = theil_sen(&t, &d, conf) else {
            return Partial::pending(format!("{levels}; not enough distinct points for a trend"));
        };
        // One-sided p of an increasing trend, and the evidence shown for it (1/p).
        let p_up = mk.map_or(1.0, |m| if m.z > 0.0 { m.p_value / 2.0 } else { 1.0 - m.p_value / 2.0 });
        let ev = if p_up > 0.0 { 1.0 / p_up } else { f64::INFINITY };
        let projection = limit.and_then(|lim| {
            let tc: Vec<f64> = self.points.iter().map(|p| p.2).collect();
            let own = theil_sen(&t, &tc, 0.95)?;
            (own.slope > 0.0).then(|| ((lim - c).max(0.0) / own.slope, lim))
        });
        let numbers = format!(
            "{levels}; canary grows {}/min faster than the baseline ({} bounds {}–{} per min, Mann-Kendall p={:.1e}) over {:.0} min",
            fmt_v(ts.slope),
            level(2.0 * a),
            fmt_v(ts.lower),
            fmt_v(ts.upper),
            p_up,
            span
        );
        let significant = ev >= ctx.threshold;
        let (outcome, tail) = if ts.lower > per_min && significant {
            (Outcome::Fail, format!("over the {}/min limit (evidence {} ≥ {})", fmt_v(per_min), evidence(ev), evidence(ctx.threshold)))
        } else if let Some((minutes, lim)) = projection.filter(|(m, _)| *m < min_time_to_limit.as_secs_f64() / 60.0 && ts.lower > 0.0 && significant) {
            (Outcome::Fail, format!("would reach {} in {:.0} min (limit {})", fmt_v(lim), minutes, crate::units::format_duration(min_time_to_limit)))
        } else if ts.upper < per_min {
            (Outcome::Pass, format!("below the {}/min limit", fmt_v(per_min)))
        } else {
            (Outcome::Pending, format!("not enough evidence yet (limit {}/min)", fmt_v(per_min)))
        };
        Partial {
            outcome,
            evidence: ev,
            effect: Some(Effect {
                measure: "extra growth per minute (canary − baseline)".into(),
                estimate: ts.slope,
                lower: ts.lower,
                upper: ts.upper,
                confidence: 1.0 - 2.0 * a,
                unit: if bytes { "bytes/min".into() } else { "units/min".into() },
            }),
            baseline: Some(ArmValue { value: b, n: self.points.len() as f64 }),
            canary: Some(ArmValue { value: c, n: self.points.len() as f64 }),
            explanation: format!("{numbers} — {tail}"),
        }
    }
}

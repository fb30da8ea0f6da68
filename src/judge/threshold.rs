//! `threshold` checks: absolute guards on the canary alone ("5xx ratio above 5 % fails
//! whatever the baseline does").
//!
//! For a ratio (errors/requests) the guard is statistical: a binomial e-process for
//! "the canary's ratio is above `max`", mixed over the odds above the limit, so a handful of
//! unlucky requests at low traffic cannot trip it. For a gauge the guard is a plain level
//! held for `for` (like a Prometheus alert's `for:`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fmt::{count, level, pct};
use super::ratio::{GRID_HALF_WIDTH, GRID_POINTS};
use super::{ArmValue, Ctx, Missing, Outcome, Partial, mean};
use crate::rules::{CheckConfig, ThresholdSource};
use crate::stats::grid::LogGrid;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdState {
    /// Ratio form: grid over the odds of an event, null at the limit's odds.
    grid: Option<LogGrid>,
    events: f64,
    exposure: f64,
    /// Gauge form: since when the canary has been beyond the limit.
    beyond_since: Option<Duration>,
}

fn odds(p: f64) -> f64 {
    p / (1.0 - p)
}

fn prob(o: f64) -> f64 {
    o / (1.0 + o)
}

impl ThresholdState {
    pub fn new(cfg: &CheckConfig) -> Self {
        let grid = match cfg {
            CheckConfig::Threshold {
                source: ThresholdSource::Ratio { .. },
                max,
                min,
                ..
            } => {
                // A `min` on a ratio guards the complement (a success ratio below min).
                let limit = max
                    .or(min.map(|m| 1.0 - m))
                    .unwrap_or(0.5)
                    .clamp(1e-9, 1.0 - 1e-9);
                Some(LogGrid::new(odds(limit), GRID_HALF_WIDTH, GRID_POINTS))
            }
            _ => None,
        };
        ThresholdState {
            grid,
            events: 0.0,
            exposure: 0.0,
            beyond_since: None,
        }
    }

    pub(crate) fn step(
        &mut self,
        ctx: &Ctx,
        source: &ThresholdSource,
        max: Option<f64>,
        min: Option<f64>,
        for_: Duration,
    ) -> Partial {
        match source {
            ThresholdSource::Ratio { errors, requests } => self.ratio(ctx, *errors, *requests, max),
            ThresholdSource::Gauge { metric } => self.gauge(ctx, *metric, max, min, for_),
        }
    }

    fn ratio(&mut self, ctx: &Ctx, errors: usize, requests: usize, max: Option<f64>) -> Partial {
        let (e, n) = match (ctx.counter(errors), ctx.counter(requests)) {
            (Ok(e), Ok(n)) => (e, n),
            (Err(m), _) | (_, Err(m)) => return Partial::missing(m),
        };
        if n.canary <= 0.0 {
            return Partial::missing(Missing::NoData("no canary requests this interval".into()));
        }
        if ctx.in_warmup {
            return Partial::pending(format!(
                "warm-up until {}",
                crate::units::format_duration(ctx.spec.timing.warmup)
            ));
        }
        let Some(grid) = self.grid.as_mut() else {
            return Partial::missing(Missing::Error("internal: threshold grid missing".into()));
        };
        let mut x = e.canary.clamp(0.0, n.canary);
        if max.is_none() {
            x = n.canary - x;
        }
        let nn = n.canary;
        grid.add(|o| {
            let p = prob(o);
            x * p.ln() + (nn - x) * (1.0 - p).ln()
        });
        self.events += x;
        self.exposure += nn;
        let ln_e = grid.ln_e_value_greater();
        let ev = ln_e.exp();
        let (lo, hi) = grid.confidence_interval(ctx.alpha);
        let (lo, hi) = (prob(lo), prob(hi));
        let observed = self.events / self.exposure;
        let limit = prob(grid.null);
        let (shown, bound_desc) = if max.is_some() {
            (observed, format!("limit {}", pct(limit)))
        } else {
            (1.0 - observed, format!("floor {}", pct(1.0 - limit)))
        };
        let numbers = format!(
            "canary {} over {} requests ({} bounds {}–{}), {bound_desc}",
            pct(shown),
            count(self.exposure),
            level(ctx.alpha),
            pct(if max.is_some() { lo } else { 1.0 - hi }),
            pct(if max.is_some() { hi } else { 1.0 - lo }),
        );
        let passed = (hi < limit).then(|| "within the limit".into());
        let (outcome, tail) = ctx.decide(ln_e, ev, "beyond the absolute limit", passed);
        Partial {
            outcome,
            evidence: ev,
            effect: ctx.effect("canary ratio", "ratio", shown, lo, hi),
            baseline: None,
            canary: ArmValue::of(shown, self.exposure),
            explanation: format!("{numbers} — {tail}"),
        }
    }

    fn gauge(
        &mut self,
        ctx: &Ctx,
        metric: usize,
        max: Option<f64>,
        min: Option<f64>,
        for_: Duration,
    ) -> Partial {
        let g = match ctx.gauges(metric) {
            Ok(g) => g,
            Err(m) => return Partial::missing(m),
        };
        let v = mean(g.canary);
        let beyond = max.is_some_and(|m| v > m) || min.is_some_and(|m| v < m);
        if ctx.in_warmup {
            return Partial::pending(format!(
                "warm-up until {}",
                crate::units::format_duration(ctx.spec.timing.warmup)
            ));
        }
        if beyond {
            self.beyond_since.get_or_insert(ctx.t);
        } else {
            self.beyond_since = None;
        }
        let held = self
            .beyond_since
            .map(|s| ctx.t.saturating_sub(s))
            .unwrap_or_default();
        let limit = match (max, min) {
            (Some(m), _) => format!("above {m}"),
            (None, Some(m)) => format!("below {m}"),
            _ => String::new(),
        };
        let secs = held.as_secs_f64();
        let (outcome, tail) = if beyond && held >= for_ {
            (
                Outcome::Fail,
                format!("{limit} for {}", crate::units::format_duration(held)),
            )
        } else if beyond {
            (
                Outcome::Pending,
                format!(
                    "{limit} for {} of {}",
                    crate::units::format_duration(held),
                    crate::units::format_duration(for_)
                ),
            )
        } else {
            (Outcome::Pass, format!("not {limit}"))
        };
        Partial {
            outcome,
            evidence: if outcome == Outcome::Fail {
                f64::INFINITY
            } else {
                secs
            },
            effect: None,
            baseline: ArmValue::of(mean(g.baseline), g.baseline.len() as f64),
            canary: ArmValue::of(v, g.canary.len() as f64),
            explanation: format!("canary {v:.4} (baseline {:.4}) — {tail}", mean(g.baseline)),
        }
    }
}

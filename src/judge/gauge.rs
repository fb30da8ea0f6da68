//! `gauge` checks: levels such as connection-pool saturation.
//!
//! With `above: X` the check counts, each interval, the instances whose value is above X in
//! each arm and runs the conditional count e-process of the `ratio` check on those counts
//! ("saturated instance-intervals", statistics.md §0 table). Without it, the check compares
//! levels: one-minute block means of canary − baseline − tolerance feed a one-sided normal
//! mixture e-process (Howard et al., statistics.md §4) whose variance is estimated from
//! earlier blocks only, so the estimate never peeks at the block it judges.

use serde::{Deserialize, Serialize};

use super::change::ChangeGrid;
use super::fmt::{count, level};
use super::ratio::{GRID_HALF_WIDTH, GRID_POINTS, PASS_MARGIN};
use super::{ArmValue, Bounded, Ctx, Partial, mean};
use crate::rules::Direction;
use crate::stats::grid::{LogGrid, thinning_loglik};
use crate::stats::mixture::{best_rho, one_sided_ln_m, two_sided_boundary};

/// Intervals per block for the level comparison.
pub(crate) const BLOCK: usize = 6;
/// Blocks needed before testing (the first ones estimate the variance).
pub(crate) const MIN_BLOCKS: usize = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GaugeState {
    tolerance: f64,
    above: Option<f64>,
    grid: Option<ChangeGrid>,
    counts: [f64; 4],
    /// Level mode: the open block, finished block means, and the test sums.
    open: Vec<f64>,
    blocks: Vec<f64>,
    s: f64,
    v: f64,
    rho: Option<f64>,
    levels: [f64; 2],
}

impl GaugeState {
    pub fn new(tolerance: f64, above: Option<f64>, per_minute: u32) -> Self {
        GaugeState {
            tolerance,
            above,
            grid: above.map(|_| {
                ChangeGrid::new(
                    LogGrid::new(tolerance.max(1.0), GRID_HALF_WIDTH, GRID_POINTS),
                    per_minute,
                )
            }),
            counts: [0.0; 4],
            open: Vec::new(),
            blocks: Vec::new(),
            s: 0.0,
            v: 0.0,
            rho: None,
            levels: [f64::NAN; 2],
        }
    }

    pub(crate) fn step(&mut self, ctx: &Ctx, metric: usize, worse_when: Direction) -> Partial {
        let g = match ctx.gauges(metric) {
            Ok(g) => g,
            Err(m) => return Partial::missing(m),
        };
        let (b, c) = (mean(g.baseline), mean(g.canary));
        self.levels = [b, c];
        if ctx.in_warmup {
            return Partial::pending(format!(
                "warm-up until {}",
                crate::units::format_duration(ctx.spec.timing.warmup)
            ));
        }
        match self.above {
            Some(x) => self.saturation(ctx, g.baseline, g.canary, x, worse_when),
            None => self.level(ctx, b, c, worse_when),
        }
    }

    fn saturation(
        &mut self,
        ctx: &Ctx,
        base: &[f64],
        can: &[f64],
        x: f64,
        worse_when: Direction,
    ) -> Partial {
        let beyond = |v: &&f64| {
            if worse_when == Direction::Higher {
                **v > x
            } else {
                **v < x
            }
        };
        let (ea, eb) = (
            base.iter().filter(beyond).count() as f64,
            can.iter().filter(beyond).count() as f64,
        );
        let (na, nb) = (base.len() as f64, can.len() as f64);
        let Some(grid) = self.grid.as_mut() else {
            return Partial::pending("internal: no grid");
        };
        grid.add(|r| thinning_loglik(r, ea, eb, na, nb));
        self.counts[0] += ea;
        self.counts[1] += na;
        self.counts[2] += eb;
        self.counts[3] += nb;
        let ln_e = grid.ln_e_value_greater();
        let ev = ln_e.exp();
        let (sa, sb) = (
            self.counts[0] / self.counts[1],
            self.counts[2] / self.counts[3],
        );
        let b = Bounded::from_grid(
            &grid.base,
            ctx.alpha,
            if sa > 0.0 { sb / sa } else { f64::NAN },
        );
        let hi = b.upper;
        let cmp = if worse_when == Direction::Higher {
            "above"
        } else {
            "below"
        };
        let numbers = format!(
            "instance-intervals {cmp} {x}: canary {} of {}, baseline {} of {} (ratio {})",
            count(self.counts[2]),
            count(self.counts[3]),
            count(self.counts[0]),
            count(self.counts[1]),
            b.text(ctx.alpha),
        );
        let tol = self.tolerance.max(1.0);
        let passed = (hi <= tol * PASS_MARGIN || (sb == 0.0 && self.counts[3] >= 30.0))
            .then(|| "not saturated more often than the baseline".into());
        let failing = "saturated more often than the baseline";
        let (outcome, tail) = ctx.decide(ln_e, ev, failing, passed);
        Partial {
            outcome,
            evidence: ev,
            effect: ctx.bounded_effect(format!("ratio of shares {cmp} {x}"), &b),
            baseline: ArmValue::of(sa, self.counts[1]),
            canary: ArmValue::of(sb, self.counts[3]),
            explanation: format!("{numbers} — {tail}"),
        }
    }

    fn level(&mut self, ctx: &Ctx, b: f64, c: f64, worse_when: Direction) -> Partial {
        let diff = if worse_when == Direction::Higher {
            c - b
        } else {
            b - c
        };
        self.open.push(diff - self.tolerance);
        if self.open.len() >= BLOCK {
            let m = mean(&self.open);
            self.open.clear();
            if self.blocks.len() >= MIN_BLOCKS {
                // Variance from earlier blocks only (predictable plug-in).
                let mu = mean(&self.blocks);
                let var = self.blocks.iter().map(|x| (x - mu).powi(2)).sum::<f64>()
                    / (self.blocks.len() - 1) as f64;
                let var = var.max(1e-12 + mu.abs() * 1e-6);
                self.rho
                    .get_or_insert_with(|| best_rho(10.0 * var, 1.0 / ctx.threshold));
                self.s += m;
                self.v += var;
            }
            self.blocks.push(m);
        }
        let levels = format!("canary {c:.4} vs baseline {b:.4}");
        let Some(rho) = self.rho.filter(|_| self.v > 0.0) else {
            return Partial::pending(format!(
                "{levels}; estimating variability ({} of {} one-minute blocks)",
                self.blocks.len(),
                MIN_BLOCKS + 1
            ));
        };
        let ln_m = one_sided_ln_m(self.s, self.v, rho);
        let ev = ln_m.exp();
        let half = two_sided_boundary(self.v, rho, ctx.alpha);
        let n = (self.blocks.len() - MIN_BLOCKS) as f64;
        let est = self.s / n;
        let (lo, hi) = ((self.s - half) / n, (self.s + half) / n);
        let numbers = format!(
            "{levels}; worse by {:.4} beyond the tolerance {} ({} bounds {:.4}–{:.4}) over {} one-minute blocks",
            est,
            self.tolerance,
            level(ctx.alpha),
            lo,
            hi,
            n
        );
        let passed = (hi < 0.0).then(|| "level within the tolerance".into());
        let (outcome, tail) = ctx.decide(ln_m, ev, "level worse than tolerated", passed);
        Partial {
            outcome,
            evidence: ev,
            effect: ctx.effect("level difference beyond tolerance", "level", est, lo, hi),
            baseline: ArmValue::of(self.levels[0], n),
            canary: ArmValue::of(self.levels[1], n),
            explanation: format!("{numbers} — {tail}"),
        }
    }
}

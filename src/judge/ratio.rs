//! `ratio` checks: errors / requests from counters (5xx, 429s, exceptions).
//!
//! Conditional count e-process (statistics.md §1.3, §7.1): given how many events happened in
//! an interval in both arms together, the canary's share of them is binomial with
//! θ(r) = ρr / (1 − ρ + ρr), where ρ is the canary's share of that interval's requests and r
//! the ratio of error rates. The shared, arbitrary load curve cancels, so unequal traffic,
//! load that changes over the day, and an outage hitting both arms alike are not evidence.
//! The e-process mixes the likelihood ratio over r above the tolerance (a half-normal prior
//! in ln r), and a two-sided mixture gives anytime-valid bounds on r.

use serde::{Deserialize, Serialize};

use super::change::ChangeGrid;
use super::fmt::{count, pct, times};
use super::{ArmValue, Bounded, Ctx, Missing, Partial};
use crate::rules::{CheckSpec, Direction};
use crate::stats::grid::{LogGrid, thinning_loglik};
use crate::stats::special::binomial_upper_bound;

/// The upper confidence bound must be within this factor of the tolerance to pass.
pub const PASS_MARGIN: f64 = 1.25;
/// Or the canary's error ratio is provably at most this much above the baseline's (absolute,
/// 0.02 percentage points, one request in 5 000): negligible whatever the ratio.
pub const NEGLIGIBLE_EXCESS: f64 = 0.0002;

/// Grid: ln r from −ln 64 to +ln 64 around the tolerance, 48 points per side.
pub const GRID_HALF_WIDTH: f64 = 4.158_883_083_359_672; // ln 64
pub const GRID_POINTS: usize = 48;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatioState {
    grid: ChangeGrid,
    /// Cumulative (errors, requests) per arm since the end of warm-up.
    events: [f64; 2],
    exposure: [f64; 2],
    intervals: u64,
}

impl RatioState {
    pub fn new(tolerance: f64, per_minute: u32) -> Self {
        RatioState {
            grid: ChangeGrid::new(
                LogGrid::new(tolerance, GRID_HALF_WIDTH, GRID_POINTS),
                per_minute,
            ),
            events: [0.0; 2],
            exposure: [0.0; 2],
            intervals: 0,
        }
    }

    pub(crate) fn step(
        &mut self,
        ctx: &Ctx,
        check: &CheckSpec,
        errors: usize,
        requests: usize,
        tolerance: f64,
        worse_when: Direction,
    ) -> Partial {
        let (e, n) = match (ctx.counter(errors), ctx.counter(requests)) {
            (Ok(e), Ok(n)) => (e, n),
            (Err(m), _) | (_, Err(m)) => return Partial::missing(m),
        };
        if n.baseline <= 0.0 || n.canary <= 0.0 {
            let which = if n.canary <= 0.0 {
                "canary"
            } else {
                "baseline"
            };
            return Partial::missing(Missing::NoData(format!(
                "no requests in the {which} this interval"
            )));
        }
        // With `worse_when: lower` (a success ratio) the complement is what must not rise.
        let pick = |ev: f64, ex: f64| {
            let ev = ev.clamp(0.0, ex);
            if worse_when == Direction::Lower {
                ex - ev
            } else {
                ev
            }
        };
        let (ea, eb) = (pick(e.baseline, n.baseline), pick(e.canary, n.canary));
        if ctx.in_warmup {
            return Partial::pending(format!(
                "warm-up until {}",
                crate::units::format_duration(ctx.spec.timing.warmup)
            ));
        }
        self.grid
            .add(|r| thinning_loglik(r, ea, eb, n.baseline, n.canary));
        self.events[0] += ea;
        self.events[1] += eb;
        self.exposure[0] += n.baseline;
        self.exposure[1] += n.canary;
        self.intervals += 1;
        self.report(ctx, check, tolerance, worse_when)
    }

    fn report(
        &self,
        ctx: &Ctx,
        check: &CheckSpec,
        tolerance: f64,
        worse_when: Direction,
    ) -> Partial {
        let ln_e = self.grid.ln_e_value_greater();
        let ev = ln_e.exp();
        let pa = self.events[0] / self.exposure[0];
        let pb = self.events[1] / self.exposure[1];
        let empirical = if self.events[0] > 0.0 && self.exposure[1] > 0.0 {
            pb / pa
        } else {
            f64::NAN
        };
        let b = Bounded::from_grid(&self.grid.base, ctx.alpha, empirical);
        let hi = b.upper;
        let what = if worse_when == Direction::Lower {
            format!("{} shortfall", check.name)
        } else {
            check.name.clone()
        };
        let numbers = format!(
            "canary {what} {} vs baseline {} ({}) over {} / {} requests",
            pct(pb),
            pct(pa),
            b.text(ctx.alpha),
            count(self.exposure[1]),
            count(self.exposure[0]),
        );
        let passed = if hi <= tolerance * PASS_MARGIN {
            Some(format!(
                "no worse than tolerated (upper bound {})",
                times(hi)
            ))
        } else {
            // Only for a ratio not proven within tolerance: the bound is a root search.
            let canary_upper = binomial_upper_bound(self.events[1], self.exposure[1], ctx.alpha);
            (canary_upper - pa <= NEGLIGIBLE_EXCESS && self.exposure[1] > 0.0).then(|| {
                format!(
                    "any excess is negligible (canary at most {})",
                    pct(canary_upper)
                )
            })
        };
        let failing = format!("worse than the x{tolerance} tolerance");
        let (outcome, tail) = ctx.decide(ln_e, ev, &failing, passed);
        Partial {
            outcome,
            evidence: ev,
            effect: ctx.bounded_effect("rate ratio", &b),
            baseline: ArmValue::of(pa, self.exposure[0]),
            canary: ArmValue::of(pb, self.exposure[1]),
            explanation: format!("{numbers} — {tail}"),
        }
    }
}

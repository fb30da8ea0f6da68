//! `histogram` checks: latency (or pool acquire time) from classic histogram buckets.
//!
//! Quantiles are never averaged. Instead, at the end of warm-up the judge picks the bucket
//! edges nearest the baseline's configured quantiles (e.g. p50, p99) and, every interval,
//! counts the requests slower than each edge in both arms. Given the interval's totals, the
//! canary's number of slow requests follows Fisher's noncentral hypergeometric distribution
//! with the odds ratio ψ of being slow (statistics.md §7.1 item 2, §7.2); its e-process mixes
//! ψ above the tolerance. One e-process per edge; the check's evidence is their mean (an
//! average of e-values is an e-value). Quantiles for display use PromQL's
//! `histogram_quantile` interpolation.

use serde::{Deserialize, Serialize};

use super::change::ChangeGrid;
use super::fmt::{count, pct, seconds};
use super::ratio::{GRID_HALF_WIDTH, GRID_POINTS, PASS_MARGIN};
use super::{ArmValue, Bounded, Ctx, Missing, Partial};
use crate::stats::fnch::fnch_loglik;
use crate::stats::grid::LogGrid;
use crate::stats::quantile::histogram_quantile;
use crate::stats::special::binomial_upper_bound;

/// Or the canary's share of requests slower than the edge is provably at most this much above
/// the baseline's (absolute): half a percentage point of requests.
const NEGLIGIBLE_SLOW_EXCESS: f64 = 0.005;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Edge {
    le: f64,
    grid: ChangeGrid,
    /// Cumulative slow requests per arm (baseline, canary).
    slow: [f64; 2],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistogramState {
    tolerance: f64,
    per_minute: u32,
    /// Baseline buckets seen before the edges were chosen (warm-up).
    calibration: Vec<(f64, f64)>,
    /// The canary's bucket edges when the edges were chosen: only edges both arms have are
    /// tested, so a new version that changes its buckets is still judged where they agree.
    #[serde(default)]
    canary_les: Vec<f64>,
    edges: Vec<Edge>,
    /// Cumulative buckets per arm since the end of warm-up, for display quantiles.
    cum: [Vec<(f64, f64)>; 2],
    total: [f64; 2],
}

fn add_into(acc: &mut Vec<(f64, f64)>, b: &[(f64, f64)]) {
    for &(le, c) in b {
        match acc.iter_mut().find(|(l, _)| *l == le) {
            Some(x) => x.1 += c,
            None => acc.push((le, c)),
        }
    }
    acc.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// `b`'s buckets at the edges `other` has too.
fn shared_buckets(b: &[(f64, f64)], other: &[(f64, f64)]) -> Vec<(f64, f64)> {
    b.iter()
        .filter(|(le, _)| count_at(other, *le).is_some())
        .copied()
        .collect()
}

fn count_at(b: &[(f64, f64)], le: f64) -> Option<f64> {
    b.iter().find(|(l, _)| *l == le).map(|x| x.1)
}

fn total(b: &[(f64, f64)]) -> Option<f64> {
    b.iter().find(|(l, _)| l.is_infinite()).map(|x| x.1)
}

impl HistogramState {
    pub fn new(tolerance: f64, per_minute: u32) -> Self {
        HistogramState {
            tolerance,
            per_minute,
            calibration: Vec::new(),
            canary_les: Vec::new(),
            edges: Vec::new(),
            cum: [Vec::new(), Vec::new()],
            total: [0.0; 2],
        }
    }

    /// For each quantile, the finite edge both arms have whose cumulative share in the
    /// baseline's calibration is nearest to it (with at least some requests above it).
    fn choose_edges(&mut self, quantiles: &[f64]) {
        let Some(tot) = total(&self.calibration).filter(|t| *t > 0.0) else {
            return;
        };
        let mut les: Vec<f64> = Vec::new();
        for &q in quantiles {
            let best = self
                .calibration
                .iter()
                .filter(|(le, c)| le.is_finite() && *c < tot && self.canary_les.contains(le))
                .min_by(|a, b| ((a.1 / tot) - q).abs().total_cmp(&((b.1 / tot) - q).abs()));
            if let Some(&(le, _)) = best
                && !les.contains(&le)
            {
                les.push(le);
            }
        }
        les.sort_by(f64::total_cmp);
        self.edges = les
            .into_iter()
            .map(|le| Edge {
                le,
                grid: ChangeGrid::new(
                    LogGrid::new(self.tolerance, GRID_HALF_WIDTH, GRID_POINTS),
                    self.per_minute,
                ),
                slow: [0.0; 2],
            })
            .collect();
    }

    pub(crate) fn step(
        &mut self,
        ctx: &Ctx,
        metric: usize,
        quantiles: &[f64],
        tolerance: f64,
    ) -> Partial {
        let b = match ctx.buckets(metric) {
            Ok(b) => b,
            Err(m) => return Partial::missing(m),
        };
        let (Some(ta), Some(tb)) = (total(b.baseline), total(b.canary)) else {
            return Partial::missing(Missing::NoData("histogram has no +Inf bucket".into()));
        };
        if ta <= 0.0 || tb <= 0.0 {
            let which = if tb <= 0.0 { "canary" } else { "baseline" };
            return Partial::missing(Missing::NoData(format!(
                "no observations in the {which} this interval"
            )));
        }
        if ctx.in_warmup || self.edges.is_empty() {
            add_into(&mut self.calibration, b.baseline);
            self.canary_les = b.canary.iter().map(|x| x.0).collect();
            if ctx.in_warmup {
                return Partial::pending(format!(
                    "warm-up until {}",
                    crate::units::format_duration(ctx.spec.timing.warmup)
                ));
            }
            self.choose_edges(quantiles);
            if self.edges.is_empty() {
                let shared = self
                    .calibration
                    .iter()
                    .any(|(le, _)| le.is_finite() && self.canary_les.contains(le));
                return Partial::missing(Missing::NoData(if shared {
                    "the baseline histogram has no finite bucket with requests above it yet".into()
                } else {
                    "the arms' histograms share no finite bucket edge (did the new version change its buckets?)".into()
                }));
            }
            // The interval used to choose the edges is not tested (edges must not depend on
            // the data they are tested on).
            return Partial::pending(format!(
                "testing requests slower than {}",
                self.edges
                    .iter()
                    .map(|e| seconds(e.le))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for e in &mut self.edges {
            let (Some(ca), Some(cb)) = (count_at(b.baseline, e.le), count_at(b.canary, e.le))
            else {
                return Partial::missing(Missing::NoData(format!(
                    "bucket le=\"{}\" missing in one arm (did the new version change its buckets?)",
                    e.le
                )));
            };
            let slow_a = (ta - ca).max(0.0).round() as u64;
            let slow_b = (tb - cb).max(0.0).round() as u64;
            let (na, nb) = (ta.round() as u64, tb.round() as u64);
            e.grid
                .add(|psi| fnch_loglik(psi, slow_b, nb, na, slow_a + slow_b));
            e.slow[0] += slow_a as f64;
            e.slow[1] += slow_b as f64;
        }
        add_into(&mut self.cum[0], b.baseline);
        add_into(&mut self.cum[1], b.canary);
        self.total[0] += ta;
        self.total[1] += tb;
        self.report(ctx, quantiles, tolerance)
    }

    fn report(&self, ctx: &Ctx, quantiles: &[f64], tolerance: f64) -> Partial {
        let lns: Vec<f64> = self
            .edges
            .iter()
            .map(|e| e.grid.ln_e_value_greater())
            .collect();
        let ln_e = crate::stats::special::log_mean_exp(&lns);
        let ev = ln_e.exp();
        // Report the edge with the strongest evidence.
        let (wi, _) = lns
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |acc, (i, &l)| if l > acc.1 { (i, l) } else { acc },
            );
        let w = &self.edges[wi];
        let sa = w.slow[0] / self.total[0];
        let sb = w.slow[1] / self.total[1];
        let odds = |p: f64| p / (1.0 - p);
        let empirical = if sa > 0.0 && sa < 1.0 && sb < 1.0 {
            odds(sb) / odds(sa)
        } else {
            f64::NAN
        };
        let b = Bounded::from_grid(&w.grid.base, ctx.alpha, empirical);
        // Shown quantiles interpolate over the edges both arms have: an arm with coarser
        // buckets would otherwise read slower (or faster) than it is.
        let [base, can] = [0, 1].map(|i| shared_buckets(&self.cum[i], &self.cum[1 - i]));
        let qs: Vec<String> = quantiles
            .iter()
            .map(|&q| {
                format!(
                    "p{} {} vs {}",
                    (q * 100.0).to_string().trim_end_matches(".0"),
                    seconds(histogram_quantile(q, &can)),
                    seconds(histogram_quantile(q, &base))
                )
            })
            .collect();
        let numbers = format!(
            "canary vs baseline {}; slower than {}: {} vs {} (odds {}) over {} / {} requests",
            qs.join(", "),
            seconds(w.le),
            pct(sb),
            pct(sa),
            b.text(ctx.alpha),
            count(self.total[1]),
            count(self.total[0]),
        );
        let all_bounded = self.edges.iter().all(|e| {
            let (_, h) = e.grid.base.confidence_interval(ctx.alpha);
            let (a, b) = (e.slow[0] / self.total[0], e.slow[1] / self.total[1]);
            h <= tolerance * PASS_MARGIN
                || (b >= 0.0
                    && binomial_upper_bound(e.slow[1], self.total[1], ctx.alpha) - a
                        <= NEGLIGIBLE_SLOW_EXCESS)
        });
        let passed = all_bounded.then(|| "no slower than tolerated at any tested edge".into());
        let failing = format!("slower than the x{tolerance} tolerance");
        let (outcome, tail) = ctx.decide(ln_e, ev, &failing, passed);
        Partial {
            outcome,
            evidence: ev,
            effect: ctx.bounded_effect(
                format!("odds ratio of requests slower than {}", seconds(w.le)),
                &b,
            ),
            baseline: ArmValue::of(sa, self.total[0]),
            canary: ArmValue::of(sb, self.total[1]),
            explanation: format!("{numbers} — {tail}"),
        }
    }
}

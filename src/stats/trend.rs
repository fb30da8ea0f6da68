//! Trend statistics for growth checks (memory RSS, pool in-use, queue depth): Mann–Kendall
//! (original and Hamed–Rao autocorrelation-corrected) and the Theil–Sen slope with Sen's
//! confidence interval (statistics.md §5, §7.3; vectors H1–H3).
//!
//! All functions take explicit, possibly non-uniform x (e.g. timestamps in seconds) and ignore
//! points where x or y is NaN or infinite. Points are put in x order; pairs with equal x
//! contribute 0 to S and are skipped by Theil–Sen (as in scipy).

use serde::{Deserialize, Serialize};

use super::mann_whitney::midranks;
use super::special::{normal_quantile, normal_sf, tie_sum};

/// Direction reported by a Mann–Kendall test at its α.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trend {
    /// |z| > z_{1−α/2} and z > 0.
    Increasing,
    /// |z| > z_{1−α/2} and z < 0.
    Decreasing,
    /// Otherwise.
    NoTrend,
}

/// Result of a Mann–Kendall test (pymannkendall field names).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MannKendall {
    /// Number of points used.
    pub n: usize,
    /// S = Σ_{i<j} sgn(x_j − x_i)·sgn(y_j − y_i).
    pub s: f64,
    /// Var S (tie-corrected; for Hamed–Rao multiplied by the correction factor).
    pub var_s: f64,
    /// z with continuity correction: (S ∓ 1)/√Var S, 0 when S = 0.
    pub z: f64,
    /// Two-sided p-value 2(1 − Φ(|z|)).
    pub p_value: f64,
    /// Kendall's tau-a = S/(n(n−1)/2).
    pub tau: f64,
    /// Trend at the test's α.
    pub trend: Trend,
    /// Variance inflation factor n/n* (1 for the original test).
    pub variance_factor: f64,
}

impl MannKendall {
    /// The one-sided p-value for an upward trend, from the two-sided one and the sign of z.
    pub fn p_upward(&self) -> f64 {
        if self.z > 0.0 {
            self.p_value / 2.0
        } else {
            1.0 - self.p_value / 2.0
        }
    }
}

/// Most usable points accepted by [`mann_kendall`] (O(n²) time, O(1) extra memory).
pub const MAX_MANN_KENDALL_POINTS: usize = 20_000;

/// Most usable points accepted by [`theil_sen`] and [`mann_kendall_hamed_rao`] (O(n²) memory for
/// the pairwise slopes: 5 000 points are 12.5 M slopes, 100 MB). Aggregate long series first
/// (e.g. 1-minute steps, §7.3).
pub const MAX_THEIL_SEN_POINTS: usize = 5_000;

fn clean(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (*a, *b))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn sgn(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn mk_core(pts: &[(f64, f64)]) -> (f64, f64) {
    let n = pts.len();
    let mut s = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            s += sgn(pts[j].0 - pts[i].0) * sgn(pts[j].1 - pts[i].1);
        }
    }
    let nf = n as f64;
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let ties = tie_sum(&ys, |t| t * (t - 1.0) * (2.0 * t + 5.0));
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    (s, var)
}

fn finish(n: usize, s: f64, var_s: f64, alpha: f64, factor: f64) -> MannKendall {
    let z = if s == 0.0 || !(var_s > 0.0) {
        0.0
    } else if s > 0.0 {
        (s - 1.0) / var_s.sqrt()
    } else {
        (s + 1.0) / var_s.sqrt()
    };
    let p = (2.0 * normal_sf(z.abs())).min(1.0);
    let crit = normal_quantile(1.0 - alpha / 2.0);
    let trend = if z.abs() > crit {
        if z > 0.0 {
            Trend::Increasing
        } else {
            Trend::Decreasing
        }
    } else {
        Trend::NoTrend
    };
    let nf = n as f64;
    MannKendall {
        n,
        s,
        var_s,
        z,
        p_value: p,
        tau: s / (0.5 * nf * (nf - 1.0)),
        trend,
        variance_factor: factor,
    }
}

/// Original Mann–Kendall test (statistics.md §5; pymannkendall `original_test`; vectors H1–H3):
/// S, Var S = [n(n−1)(2n+5) − Σ t(t−1)(2t+5)]/18 over ties in y, continuity-corrected z, two-sided
/// p, tau. `None` with fewer than 3 or more than [`MAX_MANN_KENDALL_POINTS`] usable points, or
/// α ∉ (0, 1).
pub fn mann_kendall(x: &[f64], y: &[f64], alpha: f64) -> Option<MannKendall> {
    let pts = clean(x, y);
    let ok = (3..=MAX_MANN_KENDALL_POINTS).contains(&pts.len()) && alpha > 0.0 && alpha < 1.0;
    if !ok {
        return None;
    }
    let (s, var) = mk_core(&pts);
    Some(finish(pts.len(), s, var, alpha, 1.0))
}

/// Hamed–Rao (1998) autocorrelation-corrected Mann–Kendall test (statistics.md §5, pymannkendall
/// `hamed_rao_modification_test` with all lags).
///
/// The series is detrended with its Theil–Sen slope (y − slope·x), the detrended values are
/// ranked, and their sample autocorrelations ρ_k at lags 1..n−1 that are significant at α
/// (|ρ_k| > z_{1−α/2}/√n) inflate the variance: Var* S = Var S · n/n*, with
/// n/n* = 1 + 2/(n(n−1)(n−2)) Σ_k (n−k)(n−k−1)(n−k−2) ρ_k. Lags count positions in x order, so
/// the correction assumes roughly even spacing. The factor is floored at 1e-6 so a strongly
/// negative autocorrelation cannot make the variance non-positive (pymannkendall does not floor
/// it; it then returns NaN). When the number of pairwise slopes is odd, the median pair is tied
/// exactly after detrending and its rank order depends on rounding, so the factor can differ
/// slightly from pymannkendall's (which detrends with 1-based positions).
///
/// `None` with fewer than 3 or more than [`MAX_THEIL_SEN_POINTS`] usable points, or α ∉ (0, 1).
pub fn mann_kendall_hamed_rao(x: &[f64], y: &[f64], alpha: f64) -> Option<MannKendall> {
    let pts = clean(x, y);
    let ok = (3..=MAX_THEIL_SEN_POINTS).contains(&pts.len()) && alpha > 0.0 && alpha < 1.0;
    if !ok {
        return None;
    }
    let n = pts.len();
    let (s, var) = mk_core(&pts);
    let xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let slope = theil_sen(&xs, &ys, 0.95).map_or(0.0, |t| t.slope);
    let detrended: Vec<f64> = pts.iter().map(|(a, b)| b - slope * a).collect();
    let ranks = midranks(&detrended);
    let nf = n as f64;
    let mean = ranks.iter().sum::<f64>() / nf;
    let dev: Vec<f64> = ranks.iter().map(|r| r - mean).collect();
    let c0: f64 = dev.iter().map(|d| d * d).sum();
    let bound = normal_quantile(1.0 - alpha / 2.0) / nf.sqrt();
    let mut sni = 0.0;
    if c0 > 0.0 {
        for k in 1..n {
            let ck: f64 = (0..n - k).map(|i| dev[i] * dev[i + k]).sum();
            let rho = ck / c0;
            if rho.abs() > bound {
                let kf = k as f64;
                sni += (nf - kf) * (nf - kf - 1.0) * (nf - kf - 2.0) * rho;
            }
        }
    }
    let factor = (1.0 + 2.0 / (nf * (nf - 1.0) * (nf - 2.0)) * sni).max(1e-6);
    Some(finish(n, s, var * factor, alpha, factor))
}

/// Theil–Sen line with Sen's confidence interval for the slope.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TheilSen {
    /// Median of pairwise slopes.
    pub slope: f64,
    /// median(y) − slope·median(x) (scipy's default "separate" intercept).
    pub intercept: f64,
    /// Lower confidence bound of the slope.
    pub lower: f64,
    /// Upper confidence bound of the slope.
    pub upper: f64,
}

fn median_sorted(v: &[f64]) -> f64 {
    let k = v.len();
    if k == 0 {
        f64::NAN
    } else if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    }
}

/// Theil–Sen slope, intercept and Sen (1968) confidence interval at level `confidence`
/// (statistics.md §5; scipy `theilslopes(y, x, alpha=confidence)` semantics; vectors H1–H3).
///
/// Slopes are taken over all pairs with x_j > x_i; the interval is the pair of sorted slopes at
/// ranks round((N ∓ z·σ)/2) (upper, lower − 1), σ² = [n(n−1)(2n+5) − Σ_x t(t−1)(2t+5) −
/// Σ_y t(t−1)(2t+5)]/18, rounding half to even like numpy. `None` when fewer than 2 or more
/// than [`MAX_THEIL_SEN_POINTS`] usable points, all x equal, or `confidence` ∉ (0, 1). O(n²)
/// time and memory.
pub fn theil_sen(x: &[f64], y: &[f64], confidence: f64) -> Option<TheilSen> {
    let pts = clean(x, y);
    let ok =
        (2..=MAX_THEIL_SEN_POINTS).contains(&pts.len()) && confidence > 0.0 && confidence < 1.0;
    if !ok {
        return None;
    }
    let n = pts.len();
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = pts[j].0 - pts[i].0;
            if dx > 0.0 {
                slopes.push((pts[j].1 - pts[i].1) / dx);
            }
        }
    }
    slopes.retain(|s| !s.is_nan());
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let slope = median_sorted(&slopes);
    let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let intercept = median_sorted(&ys) - slope * median_sorted(&xs);
    let alpha = 1.0 - confidence;
    let z = normal_quantile(alpha / 2.0);
    let nf = n as f64;
    let g = |t: f64| t * (t - 1.0) * (2.0 * t + 5.0);
    let sigsq = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - tie_sum(&xs, g) - tie_sum(&ys, g)) / 18.0;
    let nt = slopes.len() as f64;
    let last = slopes.len() - 1;
    let (lower, upper) = if sigsq >= 0.0 {
        let sigma = sigsq.sqrt();
        let ru = ((nt - z * sigma) / 2.0).round_ties_even();
        let rl = ((nt + z * sigma) / 2.0).round_ties_even() - 1.0;
        let ru = if ru.is_finite() {
            (ru.max(0.0) as usize).min(last)
        } else {
            last
        };
        let rl = if rl.is_finite() {
            (rl.max(0.0) as usize).min(last)
        } else {
            0
        };
        (slopes[rl], slopes[ru])
    } else {
        (f64::NAN, f64::NAN)
    };
    Some(TheilSen {
        slope,
        intercept,
        lower,
        upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64).collect()
    }

    const H1: [f64; 12] = [
        100.0, 101.0, 103.0, 102.0, 105.0, 107.0, 106.0, 109.0, 111.0, 110.0, 113.0, 115.0,
    ];
    const H2: [f64; 12] = [
        100.0, 102.0, 99.0, 101.0, 100.0, 98.0, 101.0, 100.0, 102.0, 99.0, 100.0, 101.0,
    ];
    const H3: [f64; 12] = [
        100.0, 100.0, 101.0, 101.0, 101.0, 102.0, 102.0, 103.0, 103.0, 103.0, 104.0, 104.0,
    ];

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    /// Mann-Kendall of `y` at 5 %, checked against the reference S, Var(S), Z and p.
    fn mann_kendall_is(y: &[f64], s: f64, var_s: f64, z: f64, p: f64) -> MannKendall {
        let m = mann_kendall(&idx(12), y, 0.05).unwrap();
        assert_eq!(m.s, s);
        assert!(close(m.var_s, var_s, 1e-6));
        assert!(close(m.z, z, 1e-10));
        assert!((m.p_value - p).abs() < 1e-9 * p, "{} vs {p}", m.p_value);
        m
    }

    #[test]
    fn vector_h1() {
        let m = mann_kendall_is(&H1, 60.0, 212.6667, 4.04578033981, 5.21491158243e-05);
        assert!(close(m.tau, 0.909091, 1e-6));
        assert_eq!(m.trend, Trend::Increasing);
        let t = theil_sen(&idx(12), &H1, 0.95).unwrap();
        assert!(close(t.slope, 1.333333, 1e-6));
        assert!(close(t.intercept, 99.166667, 1e-6));
        assert!(close(t.lower, 1.125, 1e-12) && close(t.upper, 1.5, 1e-12));
    }

    #[test]
    fn vector_h2() {
        let m = mann_kendall(&idx(12), &H2, 0.05).unwrap();
        assert_eq!((m.s, m.z, m.p_value), (1.0, 0.0, 1.0));
        assert_eq!(m.trend, Trend::NoTrend);
        let t = theil_sen(&idx(12), &H2, 0.95).unwrap();
        assert_eq!(t.slope, 0.0);
        assert!(
            close(t.lower, -1.0 / 3.0, 1e-4) && close(t.upper, 0.25, 1e-12),
            "{t:?}"
        );
    }

    #[test]
    fn vector_h3_ties() {
        mann_kendall_is(&H3, 57.0, 202.3333, 3.93689932266, 8.2541215451e-05);
        let t = theil_sen(&idx(12), &H3, 0.95).unwrap();
        assert!(close(t.slope, 0.3875, 1e-12));
        assert!(
            close(t.lower, 1.0 / 3.0, 1e-4) && close(t.upper, 0.5, 1e-12),
            "{t:?}"
        );
    }

    #[test]
    fn timestamps_and_nan_are_handled() {
        // the same series at 60 s steps, shuffled, with NaN points: slope per second
        let mut x: Vec<f64> = (0..12).map(|i| 1_700_000_000.0 + 60.0 * i as f64).collect();
        let mut y = H1.to_vec();
        x.swap(0, 7);
        y.swap(0, 7);
        x.push(f64::NAN);
        y.push(5.0);
        x.push(1.0);
        y.push(f64::NAN);
        let t = theil_sen(&x, &y, 0.95).unwrap();
        assert!(close(t.slope * 60.0, 1.333333, 1e-6));
        let m = mann_kendall(&x, &y, 0.05).unwrap();
        assert_eq!((m.n, m.s), (12, 60.0));
        assert!(theil_sen(&[1.0, 1.0], &[1.0, 2.0], 0.95).is_none());
        assert!(mann_kendall(&[1.0, 2.0], &[1.0, 2.0], 0.05).is_none());
        assert!(theil_sen(&[1.0, 2.0], &[1.0, 2.0], 1.0).is_none());
        let big: Vec<f64> = (0..MAX_THEIL_SEN_POINTS + 1).map(|i| i as f64).collect();
        assert!(theil_sen(&big, &big, 0.95).is_none());
    }

    /// References computed with pymannkendall 1.4.3 `hamed_rao_modification_test`.
    #[test]
    fn hamed_rao_matches_pymannkendall() {
        let y: Vec<f64> = (0..40)
            .map(|i| (0.3 * i as f64).sin() * 5.0 + 0.1 * i as f64)
            .collect();
        let h = mann_kendall_hamed_rao(&idx(40), &y, 0.05).unwrap();
        assert_eq!(h.s, -32.0);
        assert!(close(h.var_s, 15624.421422928806, 1e-10), "{}", h.var_s);
        assert!(close(h.z, -0.24800459171515712, 1e-10));
        assert!(close(h.p_value, 0.8041308540959413, 1e-10));
        let o = mann_kendall(&idx(40), &y, 0.05).unwrap();
        assert!(close(o.var_s, 7366.666666666667, 1e-12));
        // n = 48 gives an even number of pairwise slopes, so the detrended series has no exact
        // ties whose order would depend on rounding (with an odd count the median pair ties).
        let y2: Vec<f64> = (0..48)
            .map(|i| {
                let i = i as f64;
                (0.5 * i).sin() + 0.05 * i + (1.7 * i).cos() * 0.5
            })
            .collect();
        let h = mann_kendall_hamed_rao(&idx(48), &y2, 0.05).unwrap();
        assert_eq!(h.s, 424.0);
        // negative autocorrelation: the variance is deflated (factor < 1)
        assert!(close(h.var_s, 561.133489242138, 1e-10), "{}", h.var_s);
        assert!(h.variance_factor < 1.0);
    }

    #[test]
    fn hamed_rao_close_to_original_on_iid_and_inflated_on_ar1() {
        let mut rng = crate::stats::rng::Rng::new(11);
        let mut factors = Vec::new();
        for _ in 0..20 {
            let y: Vec<f64> = (0..60).map(|i| rng.normal() + 0.01 * i as f64).collect();
            let o = mann_kendall(&idx(60), &y, 0.05).unwrap();
            let h = mann_kendall_hamed_rao(&idx(60), &y, 0.05).unwrap();
            assert_eq!(o.s, h.s);
            factors.push(h.var_s / o.var_s);
        }
        factors.sort_by(f64::total_cmp);
        let median = factors[10];
        assert!((median - 1.0).abs() < 0.15, "{factors:?}");
        // strongly autocorrelated: AR(1) with φ = 0.9
        let mut v = 0.0;
        let ar: Vec<f64> = (0..120)
            .map(|_| {
                v = 0.9 * v + rng.normal();
                v
            })
            .collect();
        let o = mann_kendall(&idx(120), &ar, 0.05).unwrap();
        let h = mann_kendall_hamed_rao(&idx(120), &ar, 0.05).unwrap();
        assert!(h.var_s > 2.0 * o.var_s, "{} vs {}", h.var_s, o.var_s);
        assert!(h.p_value >= o.p_value);
    }
}

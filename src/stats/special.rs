//! Shared numeric helpers: log-sum-exp, log-space regularised incomplete beta tails, the standard
//! normal distribution, and Brent's root finder.
//!
//! These exist because the anytime-valid machinery of statistics.md (§0, §6 "Write by hand") needs
//! log-space arithmetic everywhere, and because statrs' `beta_reg` forms `1 − (…)` internally on
//! one side of its continued fraction, which cancels exactly where the truncated-Beta e-value needs
//! a small upper tail (see [`ln_beta_reg_upper`]).

use statrs::function::erf::{erfc, erfc_inv};
use statrs::function::gamma::ln_gamma;

/// Whether two arms' event counts and a share make a valid two-arm count test: both counts
/// finite and ≥ 0 (they may be non-integer), the share strictly inside (0, 1), the prior
/// concentration `k` finite and > 0. The truncated-Beta e-value and the log-odds confidence
/// sequence refuse exactly these inputs, so they ask this one question.
pub fn two_arm_counts_valid(n_a: f64, n_b: f64, share: f64, k: f64) -> bool {
    n_a.is_finite()
        && n_b.is_finite()
        && n_a >= 0.0
        && n_b >= 0.0
        && share > 0.0
        && share < 1.0
        && k.is_finite()
        && k > 0.0
}

/// ln Σ exp(x_i), computed stably by factoring out the maximum (log-sum-exp).
///
/// NaN entries are ignored; an empty slice or all `-inf` gives `-inf`; any `+inf` gives `+inf`.
/// Used by every mixture e-value (§7.1 "E_t = Σ_j w_j Π LR", done in log space).
pub fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    if m.is_infinite() {
        return m;
    }
    let s: f64 = xs
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (x - m).exp())
        .sum();
    m + s.ln()
}

/// ln of the mean of exp(x_i) (uniform mixture weights), i.e. `log_sum_exp(xs) − ln n`.
///
/// This is the mixture e-value of §8L when `xs` are per-component ln LRs; NaN entries are
/// ignored (and not counted). An empty input gives `-inf`.
pub fn log_mean_exp(xs: &[f64]) -> f64 {
    let n = xs.iter().filter(|x| !x.is_nan()).count();
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    log_sum_exp(xs) - (n as f64).ln()
}

/// Mixture e-value with uniform weights from per-component ln likelihood ratios:
/// E = (1/J) Σ_j exp(lnlr_j) (statistics.md §7.1 item 1 and vector L: 4.52679133409).
///
/// Returns +inf only when the mean genuinely overflows; prefer [`log_mean_exp`] for ln E.
pub fn mixture_e_value(lnlrs: &[f64]) -> f64 {
    log_mean_exp(lnlrs).exp()
}

const CF_MAX_ITER: usize = 20_000;
const CF_EPS: f64 = 1e-16;
const CF_TINY: f64 = 1e-300;

/// Continued fraction of the incomplete beta function (modified Lentz), as in Numerical Recipes
/// `betacf`. Converges fast for x < (a+1)/(a+b+2). Bounded iteration count.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = away_from_zero(1.0 - qab * x / qap);
    d = 1.0 / d;
    let mut h = d;
    // One Lentz step with partial numerator `aa`: the factor it multiplies `h` by.
    let mut step = |aa: f64| {
        d = 1.0 / away_from_zero(1.0 + aa * d);
        c = away_from_zero(1.0 + aa / c);
        d * c
    };
    for m in 1..=CF_MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= del;
        if (del - 1.0).abs() <= CF_EPS {
            break;
        }
    }
    h
}

/// `v`, or [`CF_TINY`] when it is closer to zero than that (Lentz's guard against division by
/// zero).
fn away_from_zero(v: f64) -> f64 {
    if v.abs() < CF_TINY { CF_TINY } else { v }
}

/// ln of x^a (1−x)^b / (a·B(a,b)), the prefactor of the continued fraction.
fn ln_beta_prefactor(a: f64, b: f64, x: f64) -> f64 {
    ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p() - a.ln()
}

/// ln I_x(a, b), the log of the regularised incomplete beta function (lower tail), accurate in
/// relative terms even when I_x(a,b) is far below the smallest f64.
///
/// On the side where the continued fraction converges (x < (a+1)/(a+b+2)) it is evaluated
/// directly in log space; otherwise ln(1 − I_{1−x}(b,a)) via `ln_1p`, which is accurate because
/// that complementary term is then below about one half. Returns NaN for a ≤ 0, b ≤ 0, NaN or
/// x outside [0, 1]. Used by [`crate::stats::beta_mix`] (§7.1 closed form).
pub fn ln_beta_reg(a: f64, b: f64, x: f64) -> f64 {
    if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite() && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == 1.0 {
        return 0.0;
    }
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_beta_prefactor(a, b, x) + beta_cf(a, b, x).ln()
    } else {
        let y = 1.0 - x;
        let comp = (ln_beta_prefactor(b, a, y) + beta_cf(b, a, y).ln()).exp();
        (-comp.min(1.0)).ln_1p()
    }
}

/// ln(1 − I_x(a, b)) = ln I_{1−x}(b, a): the log upper tail of the regularised incomplete beta,
/// through the symmetry quoted in statistics.md §6/§7.1, without forming 1 − I.
pub fn ln_beta_reg_upper(a: f64, b: f64, x: f64) -> f64 {
    if !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    ln_beta_reg(b, a, 1.0 - x)
}

/// Standard normal cdf Φ(x) = ½ erfc(−x/√2). NaN in, NaN out.
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal survival function 1 − Φ(x) = ½ erfc(x/√2), accurate in the upper tail.
pub fn normal_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// ln Φ(x), accurate for very negative x (asymptotic Mills-ratio series below −30), used by the
/// one-sided normal mixture of §4.
pub fn normal_ln_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x > -30.0 {
        return normal_cdf(x).ln();
    }
    // Φ(x) = φ(x)/|x| · (1 − 1/x² + 3/x⁴ − 15/x⁶ + …)
    let x2 = x * x;
    let series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2);
    -0.5 * x2 - (-x).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() + series.ln()
}

/// Standard normal quantile Φ⁻¹(p) = −√2 · erfc⁻¹(2p). Returns −inf at 0, +inf at 1 and NaN
/// outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    -std::f64::consts::SQRT_2 * erfc_inv(2.0 * p)
}

/// Result of [`zeroin`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Root {
    /// The approximate root.
    pub x: f64,
    /// Whether the tolerance was reached within the iteration budget.
    pub converged: bool,
}

/// Brent's root finder (Brent 1973 `zeroin`, the algorithm behind R's `uniroot`, which
/// `wilcox.test` uses with `tol = 1e-4`; statistics.md §2.1 and §6 "needs a root finder").
///
/// Finds x in [ax, bx] with f(x) ≈ 0 given f(ax) = `fa` and f(bx) = `fb` of opposite signs (or one
/// of them zero). Returns `None` when the bracket is invalid (same signs, NaN). Stops after
/// `max_iter` evaluations at most; the step sequence follows R's `R_zeroin2` so results on step
/// functions (Mann–Whitney) match R/Kayenta.
pub fn zeroin(
    f: impl Fn(f64) -> f64,
    ax: f64,
    bx: f64,
    fa: f64,
    fb: f64,
    tol: f64,
    max_iter: usize,
) -> Option<Root> {
    if ax.is_nan() || bx.is_nan() || fa.is_nan() || fb.is_nan() {
        return None;
    }
    if fa == 0.0 {
        return Some(Root {
            x: ax,
            converged: true,
        });
    }
    if fb == 0.0 {
        return Some(Root {
            x: bx,
            converged: true,
        });
    }
    if (fa > 0.0) == (fb > 0.0) {
        return None;
    }
    let (mut a, mut b) = (ax, bx);
    let (mut fa, mut fb) = (fa, fb);
    let mut c = a;
    let mut fc = fa;
    for _ in 0..=max_iter {
        let prev_step = b - a;
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol_act = 2.0 * f64::EPSILON * b.abs() + tol / 2.0;
        let mut new_step = (c - b) / 2.0;
        if new_step.abs() <= tol_act || fb == 0.0 {
            return Some(Root {
                x: b,
                converged: true,
            });
        }
        if prev_step.abs() >= tol_act && fa.abs() > fb.abs() {
            let cb = c - b;
            let (mut p, mut q);
            if a == c {
                let t1 = fb / fa;
                p = cb * t1;
                q = 1.0 - t1;
            } else {
                let qq = fa / fc;
                let t1 = fb / fc;
                let t2 = fb / fa;
                p = t2 * (cb * qq * (qq - t1) - (b - a) * (t1 - 1.0));
                q = (qq - 1.0) * (t1 - 1.0) * (t2 - 1.0);
            }
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if p < 0.75 * cb * q - (tol_act * q).abs() / 2.0 && p < (prev_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }
        if new_step.abs() < tol_act {
            new_step = if new_step > 0.0 { tol_act } else { -tol_act };
        }
        a = b;
        fa = fb;
        b += new_step;
        fb = f(b);
        if fb.is_nan() {
            return Some(Root {
                x: b,
                converged: false,
            });
        }
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            c = a;
            fc = fa;
        }
    }
    Some(Root {
        x: b,
        converged: false,
    })
}

/// Σ over the tie groups of `values` (runs of equal values once sorted) of g(t), t the group's
/// size; groups of one count nothing.
pub fn tie_sum(values: &[f64], g: impl Fn(f64) -> f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mut s = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            s += g(t);
        }
        i = j + 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        let v = [1000.0, 1000.0];
        assert!((log_sum_exp(&v) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NAN, 0.0]), 0.0);
    }

    #[test]
    fn beta_reg_matches_statrs_and_tails() {
        // beta_reg(3,5,0.5) = 0.7734375 (statistics.md §6 spot values)
        assert!((ln_beta_reg(3.0, 5.0, 0.5).exp() - 0.7734375).abs() < 1e-14);
        assert!((ln_beta_reg_upper(3.0, 5.0, 0.5).exp() - 0.2265625).abs() < 1e-14);
        // a far tail that underflows f64: I_{0.5}(1000, 10) ~ tiny, still finite in log space
        let l = ln_beta_reg(1000.0, 10.0, 0.5);
        assert!(l.is_finite() && l < -600.0);
        assert!(ln_beta_reg(-1.0, 1.0, 0.5).is_nan());
        assert!(ln_beta_reg(1.0, 1.0, 1.5).is_nan());
    }

    #[test]
    fn normal_helpers() {
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-12);
        assert!((normal_cdf(1.0) + normal_sf(1.0) - 1.0).abs() < 1e-15);
        let a = normal_ln_cdf(-29.999);
        let b = normal_ln_cdf(-30.001);
        assert!((a - b).abs() < 0.07 && a > b);
        assert!(normal_quantile(2.0).is_nan());
    }

    #[test]
    fn zeroin_finds_sqrt2() {
        let f = |x: f64| x * x - 2.0;
        let r = zeroin(f, 0.0, 2.0, f(0.0), f(2.0), 1e-12, 100).unwrap();
        assert!((r.x - 2f64.sqrt()).abs() < 1e-11 && r.converged);
        assert!(zeroin(f, 2.0, 3.0, f(2.0), f(3.0), 1e-12, 100).is_none());
    }
}

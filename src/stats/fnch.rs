//! Fisher's noncentral hypergeometric log-likelihood (statistics.md §7.1 item 2, vector R): the
//! exact per-interval kernel for outcomes that are not rare (latency exceedances at p50/p90).
//!
//! Given an interval's margins (canary exposure n_B, baseline exposure n_A, total events e), the
//! canary's event count x has P(x | ψ) = C(n_B, x) C(n_A, e − x) ψ^x / Z(ψ), with ψ the odds
//! ratio. For rare events it coincides with the Poisson-thinning kernel
//! [`crate::stats::grid::thinning_loglik`].
//!
//! **Normaliser and error bound.** The terms t_y of Z are log-concave in y, so Z is summed outward
//! from the mode (found by bisection on the term ratio t_{y+1}/t_y, which decreases in y) using the
//! ratio recurrence in plain multiplications relative to the mode term, and each direction stops
//! once a term falls below ε = 1e-17 of the running sum. By log-concavity the terms beyond the
//! stop decrease at least geometrically with ratio q ≤ exp(−39/d), where d is the distance from
//! the mode, so the neglected mass is below ε·q/(1−q) ≤ ε·(d/39 + 1) of Z: under 3e-13 relative for
//! d ≤ 10⁶. The work is O(window), about 20 standard deviations of the distribution, independent
//! of the support size (supports of tens of thousands cost a few thousand multiplications).

use statrs::function::factorial::ln_binomial;

const STOP_REL: f64 = 1e-17;

/// ln C(n_b, y) + ln C(n_a, e − y) + y ln ψ, the unnormalised log term.
fn ln_term(y: u64, n_b: u64, n_a: u64, e: u64, ln_odds: f64) -> f64 {
    let yo = if y == 0 { 0.0 } else { y as f64 * ln_odds };
    ln_binomial(n_b, y) + ln_binomial(n_a, e - y) + yo
}

/// t_{y+1}/t_y = (n_b − y)(e − y) ψ / ((y + 1)(n_a − e + y + 1)).
fn ratio(y: u64, n_b: u64, n_a: u64, e: u64, odds: f64) -> f64 {
    let num = (n_b - y) as f64 * (e - y) as f64 * odds;
    let den = (y + 1) as f64 * ((n_a + y + 1) - e) as f64;
    num / den
}

/// ln P(x_canary | odds), the full Fisher noncentral hypergeometric log-pmf including its
/// normaliser, so that differences across odds are log likelihood ratios (statistics.md §7.1
/// item 2; vector R: scipy `nchypergeom_fisher(M=n_A+n_B, n=n_B, N=e, odds)`).
///
/// - Returns 0 ("no information", constant across odds) when the margins are inconsistent
///   (total_events > n_canary + n_baseline, or x outside the support), when the support is a
///   single point, or when n_canary + n_baseline exceeds 2^53.
/// - Returns NaN for a NaN or negative `odds`; ψ = 0 and ψ = +inf are the degenerate limits
///   (all mass at the lowest / highest support point: 0 there, −inf elsewhere).
///
/// See the module docs for the summation window and its error bound.
pub fn fnch_loglik(
    odds: f64,
    x_canary: u64,
    n_canary: u64,
    n_baseline: u64,
    total_events: u64,
) -> f64 {
    let (x, n_b, n_a, e) = (x_canary, n_canary, n_baseline, total_events);
    if odds.is_nan() || odds < 0.0 {
        return f64::NAN;
    }
    // Counts beyond 2^53 are not exactly representable in the f64 recurrence.
    const MAX_COUNT: u64 = 1 << 53;
    let total = n_b.saturating_add(n_a);
    if total > MAX_COUNT || e > total {
        return 0.0;
    }
    let y_min = e.saturating_sub(n_a);
    let y_max = e.min(n_b);
    if x < y_min || x > y_max || y_min == y_max {
        return 0.0;
    }
    if odds == 0.0 {
        return if x == y_min { 0.0 } else { f64::NEG_INFINITY };
    }
    if odds == f64::INFINITY {
        return if x == y_max { 0.0 } else { f64::NEG_INFINITY };
    }
    let ln_odds = odds.ln();
    // Mode: the smallest y with t_{y+1}/t_y < 1 (the ratio decreases in y).
    let (mut lo, mut hi) = (y_min, y_max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if ratio(mid, n_b, n_a, e, odds) < 1.0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mode = lo;
    let mut sum = 1.0;
    let mut rel = 1.0;
    let mut y = mode;
    while y < y_max {
        rel *= ratio(y, n_b, n_a, e, odds);
        sum += rel;
        y += 1;
        if rel < STOP_REL * sum {
            break;
        }
    }
    rel = 1.0;
    y = mode;
    while y > y_min {
        rel /= ratio(y - 1, n_b, n_a, e, odds);
        sum += rel;
        y -= 1;
        if rel < STOP_REL * sum || !rel.is_finite() {
            break;
        }
    }
    let ln_z = ln_term(mode, n_b, n_a, e, ln_odds) + sum.ln();
    ln_term(x, n_b, n_a, e, ln_odds) - ln_z
}

/// Per-interval log likelihood ratio ln P(x | ψ) − ln P(x | ψ₀) (statistics.md §7.1 item 2).
pub fn fnch_ln_lr(
    odds: f64,
    null_odds: f64,
    x_canary: u64,
    n_canary: u64,
    n_baseline: u64,
    total_events: u64,
) -> f64 {
    fnch_loglik(odds, x_canary, n_canary, n_baseline, total_events)
        - fnch_loglik(null_odds, x_canary, n_canary, n_baseline, total_events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    #[test]
    fn vector_r() {
        let l = fnch_ln_lr(1.5, 1.0, 32, 1000, 1000, 50);
        assert!(close(l, 1.8422416988, 1e-9), "{l}");
        let l = fnch_ln_lr(2.0, 1.0, 32, 1000, 1000, 50);
        assert!(close(l, 1.97572619048, 1e-9), "{l}");
        let l = fnch_ln_lr(1.2, 1.0, 330, 1500, 500, 400);
        assert!(close(l, 4.4906135783, 1e-9), "{l}");
    }

    #[test]
    fn pmf_sums_to_one_and_matches_hypergeometric() {
        let (nb, na, e) = (30u64, 50u64, 25u64);
        for odds in [0.3, 1.0, 2.5] {
            let s: f64 = (0..=25)
                .map(|x| fnch_loglik(odds, x, nb, na, e).exp())
                .sum();
            assert!((s - 1.0).abs() < 1e-12, "{odds}: {s}");
        }
        // odds 1: central hypergeometric
        let p = fnch_loglik(1.0, 10, nb, na, e);
        let q = ln_binomial(30, 10) + ln_binomial(50, 15) - ln_binomial(80, 25);
        assert!((p - q).abs() < 1e-11);
    }

    #[test]
    fn large_supports_are_fast_and_normalised() {
        let (nb, na, e) = (60_000u64, 40_000u64, 30_000u64);
        // scipy: nchypergeom_fisher(M=100000, n=60000, N=30000, odds=1.3): mean 19305.6,
        // sd 70.0, P(17000 <= X <= 19499) = 0.9972086194004219
        let mut s = 0.0;
        for x in 17_000..19_500 {
            s += fnch_loglik(1.3, x, nb, na, e).exp();
        }
        assert!((s - 0.9972086194004219).abs() < 1e-9, "{s}");
        let total: f64 = (18_500..20_100)
            .map(|x| fnch_loglik(1.3, x, nb, na, e).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-10, "{total}");
    }

    /// References: exact sums over the whole support with mpmath at 40 digits (scipy's
    /// `nchypergeom_fisher.logpmf` underflows to -inf at the extreme odds).
    #[test]
    fn far_tails_across_the_grid_range() {
        let rows = [
            (0.015625, -5825.35926024622),
            (0.5, -292.301573218116),
            (1.0, -9.87657615385399),
            (1.3, -14.5519982179572),
            (8.0, -1530.70936581158),
            (64.0, -4993.58264357428),
        ];
        for (odds, want) in rows {
            let got = fnch_loglik(odds, 2100, 20_000, 20_000, 4_000);
            assert!(close(got, want, 1e-11), "{odds}: {got} vs {want}");
        }
        let got = fnch_loglik(3.0, 5, 100, 9_900, 50);
        assert!(close(got, -4.48319072919155, 1e-12), "{got}");
    }

    #[test]
    fn degenerate_inputs() {
        assert!(fnch_loglik(f64::NAN, 1, 2, 2, 2).is_nan());
        assert!(fnch_loglik(-1.0, 1, 2, 2, 2).is_nan());
        assert_eq!(fnch_loglik(2.0, 5, 2, 2, 2), 0.0);
        assert_eq!(fnch_loglik(2.0, 0, 0, 0, 0), 0.0);
        assert_eq!(fnch_loglik(2.0, 1, 2, 2, 9), 0.0);
        assert_eq!(fnch_loglik(0.0, 0, 2, 2, 2), 0.0);
        assert_eq!(fnch_loglik(0.0, 1, 2, 2, 2), f64::NEG_INFINITY);
        assert_eq!(fnch_loglik(f64::INFINITY, 2, 2, 2, 2), 0.0);
        assert_eq!(fnch_loglik(2.0, 1, u64::MAX, 5, 3), 0.0);
        let big = fnch_loglik(1e300, 2, 3, 3, 3);
        assert!(big.is_finite());
    }

    #[test]
    fn monotone_likelihood_ratio() {
        let mut last = f64::NEG_INFINITY;
        for x in 0..=20u64 {
            let l = fnch_ln_lr(2.0, 1.0, x, 100, 100, 20);
            assert!(l > last);
            last = l;
        }
    }
}

//! One-sided truncated-Beta count e-value (statistics.md §7.1 "closed form", vectors K and S).
//!
//! Each event is the canary's with probability θ (θ₀ = the canary's share of exposure under
//! H₀, or θ(r₀) with a tolerance r₀, §7.1). Mixing the binomial likelihood ratio over a Beta(a, b)
//! prior truncated to θ > θ₀ gives a test supermartingale for H₀: θ ≤ θ₀:
//!
//! E_t = B(a+n_B, b+n_A)·(1 − I_{θ₀}(a+n_B, b+n_A)) / [B(a,b)·(1 − I_{θ₀}(a,b))] / [θ₀^{n_B}(1−θ₀)^{n_A}],
//! with a = kθ₀, b = k(1−θ₀).
//!
//! The upper tails 1 − I are evaluated as I_{1−θ₀}(b, a) in log space by
//! [`crate::stats::special::ln_beta_reg_upper`]: statrs' `beta_reg` itself forms `1 − (…)` on one
//! side of its continued fraction, which would cancel to 0 exactly when the tail is small (strong
//! evidence *for* H₀ with large counts), so it is not used here.
//!
//! The same function is the sign e-process of §7.3/§8S (θ₀ = ½, "canary" = positive increments).

use statrs::function::beta::ln_beta;

use super::special::{ln_beta_reg_upper, two_arm_counts_valid};

/// ln E of the one-sided truncated-Beta count e-value (statistics.md §7.1, vectors K, S).
///
/// `n_baseline`, `n_canary`: cumulative event counts (f64, may be non-integer); `theta0` in
/// (0, 1): the canary's event share under H₀; `k` > 0: prior concentration (100 in the Netflix
///-derived code). Returns NaN for invalid arguments (negative or non-finite counts, θ₀ ∉ (0,1),
/// k ≤ 0). Reject H₀ when ln E ≥ ln(1/α). The value is finite for all valid inputs (no underflow
/// of the truncated mass, which is computed in log space).
pub fn truncated_beta_ln_e(n_baseline: f64, n_canary: f64, theta0: f64, k: f64) -> f64 {
    let (na, nb) = (n_baseline, n_canary);
    if !two_arm_counts_valid(na, nb, theta0, k) {
        return f64::NAN;
    }
    let a = k * theta0;
    let b = k * (1.0 - theta0);
    // products and sums can underflow to 0 or overflow to inf for extreme k or counts
    let args = [a, b, a + nb, b + na];
    if !args.iter().all(|v| v.is_finite() && *v > 0.0) {
        return f64::NAN;
    }
    let post = ln_beta(a + nb, b + na) + ln_beta_reg_upper(a + nb, b + na, theta0);
    let prior = ln_beta(a, b) + ln_beta_reg_upper(a, b, theta0);
    let mut null = 0.0;
    if nb > 0.0 {
        null += nb * theta0.ln();
    }
    if na > 0.0 {
        null += na * (-theta0).ln_1p();
    }
    post - prior - null
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;
    use crate::stats::mixture::always_valid_p;

    #[test]
    fn vector_k() {
        let rows = [
            (20.0, 35.0, 0.5, 1.08452413462, 0.338062619922),
            (100.0, 140.0, 0.5, 2.42993150131, 0.0880428631969),
            (50.0, 100.0, 0.5, 5.28710593592, 0.00505637257126),
            (500.0, 600.0, 0.5, 3.62145959391, 0.0267436131763),
            (100.0, 140.0, 1.1 / 2.1, 1.23097342811, 0.292008190309),
            (900.0, 140.0, 0.1, 5.2270898847, 0.00536912736943),
        ];
        for (na, nb, t0, lne, p) in rows {
            let l = truncated_beta_ln_e(na, nb, t0, 100.0);
            assert!(close(l, lne, 1e-9), "({na},{nb}): {l} vs {lne}");
            assert!(close(always_valid_p(l), p, 1e-9));
        }
    }

    #[test]
    fn vector_s_sign_e_process() {
        let rows = [
            (20.0, 10.0, 2.0948, false),
            (40.0, 20.0, 5.2621, false),
            (60.0, 25.0, 41.6247, true),
            (30.0, 0.0, 59.0166, true),
        ];
        for (pos, neg, e, reject) in rows {
            let got = truncated_beta_ln_e(neg, pos, 0.5, 100.0).exp();
            assert!(close(got, e, 1e-4), "{pos} vs {neg}: {got}");
            assert_eq!(got >= 20.0, reject);
        }
    }

    #[test]
    fn large_counts_stay_finite() {
        // Strong evidence for H0 with large counts: the posterior's mass above θ0 is ~exp(-2000),
        // which underflows f64 (and cancels to 0 inside statrs' beta_reg). References computed
        // with mpmath quadrature at 40 digits.
        let l = truncated_beta_ln_e(60_000.0, 40_000.0, 0.5, 100.0);
        assert!(close(l, -7.82944386415418, 1e-9), "{l}");
        let l = truncated_beta_ln_e(40_000.0, 60_000.0, 0.5, 100.0);
        assert!(close(l, 2008.768978400487, 1e-9), "{l}");
        let l = truncated_beta_ln_e(50_300.0, 49_700.0, 0.5, 100.0);
        assert!(close(l, -4.507631819242201, 1e-9), "{l}");
        assert_eq!(truncated_beta_ln_e(0.0, 0.0, 0.3, 100.0), 0.0);
    }

    #[test]
    fn invalid_inputs_give_nan() {
        assert!(truncated_beta_ln_e(-1.0, 1.0, 0.5, 100.0).is_nan());
        assert!(truncated_beta_ln_e(1.0, f64::NAN, 0.5, 100.0).is_nan());
        assert!(truncated_beta_ln_e(1.0, 1.0, 1.0, 100.0).is_nan());
        assert!(truncated_beta_ln_e(1.0, 1.0, 0.5, 0.0).is_nan());
        assert!(always_valid_p(f64::NAN).is_nan());
    }

    /// Found by proptest: k·θ₀ underflows to 0, which statrs' `ln_beta` panics on.
    #[test]
    fn regression_prior_parameter_underflow_does_not_panic() {
        let l = truncated_beta_ln_e(
            f64::MAX,
            0.0,
            2.2250738585072014e-308,
            1.6188984526297656e-122,
        );
        assert!(l.is_nan());
    }

    #[test]
    fn monotone_in_canary_count() {
        let mut last = f64::NEG_INFINITY;
        for nb in 0..100 {
            let l = truncated_beta_ln_e(50.0, nb as f64, 0.5, 100.0);
            assert!(l > last);
            last = l;
        }
    }
}

//! Property tests: no public numeric function of `rollguard::stats` panics or loops forever on
//! any f64 input (NaN, ±inf, zero, negative, huge), and the documented invariants hold.

use proptest::prelude::*;

use crate::support::prop::awkward_f64;
use rollguard::stats::{
    beta_mix, cusum, dirichlet, fnch, grid, mann_whitney, mixture, quantile, special, trend,
};

/// The awkward values, the extremes of the representable range, and ordinary ones, each of
/// the fourteen kinds equally often.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => awkward_f64(),
        1 => Just(-0.0),
        1 => Just(1.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(1e-300),
        1 => -1e6..1e6f64,
        1 => 0.0..1.0f64,
        1 => any::<f64>(),
    ]
}

fn small_vec() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(any_f64(), 0..12)
}

proptest! {
    // No failure-persistence file: regressions found here become named unit tests instead.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn scalar_functions_never_panic(a in any_f64(), b in any_f64(), c in any_f64(), d in any_f64(), e in any_f64()) {
        let _ = grid::thinning_loglik(a, b, c, d, e);
        let _ = beta_mix::truncated_beta_ln_e(a, b, c, d);
        let _ = dirichlet::dirichlet_ln_bf(&[a, b], &[c, d], e);
        let _ = dirichlet::share_confidence_sequence(a, b, c, d);
        let _ = dirichlet::rate_ratio_confidence_sequence(a, b, c, d, e);
        let _ = mixture::two_sided_ln_m(a, b, c);
        let _ = mixture::one_sided_ln_m(a, b, c);
        let _ = mixture::always_valid_p(a);
        let _ = mixture::best_rho(a, b);
        let _ = mixture::two_sided_boundary(a, b, c);
        let _ = mixture::one_sided_boundary(a, b, c);
        let _ = mixture::msprt_ln_lambda(a, b, c, d);
        let _ = mixture::msprt_two_proportion_ln_lambda(a, b, c, d);
        let _ = quantile::howard_ramdas_band(a, b);
        let _ = quantile::dkw_band(a, b);
        let _ = special::ln_beta_reg(a, b, c);
        let _ = special::ln_beta_reg_upper(a, b, c);
        let _ = special::normal_ln_cdf(a);
        let _ = special::normal_quantile(a);
        let _ = cusum::brook_evans_arl(a, b, c, 20);
        let mut cs = cusum::Cusum::new(a, b);
        cs.step(c);
        cs.step(d);
    }

    #[test]
    fn grid_never_panics(null in any_f64(), hw in any_f64(), pps in 0usize..40, ea in any_f64(), eb in any_f64(), na in any_f64(), nb in any_f64(), alpha in any_f64()) {
        let mut g = grid::LogGrid::new(null, hw, pps);
        g.add(|r| grid::thinning_loglik(r, ea, eb, na, nb));
        let e = g.ln_e_value_greater();
        prop_assert!(!e.is_nan());
        let _ = g.confidence_interval(alpha);
        let m = g.mle();
        prop_assert!(m > 0.0);
    }

    #[test]
    fn fnch_never_panics(odds in any_f64(), x in 0u64..200, nb in 0u64..200, na in 0u64..200, e in 0u64..400) {
        let l = fnch::fnch_loglik(odds, x, nb, na, e);
        prop_assert!(l.is_nan() || l <= 1e-9, "log-probability above 0: {}", l);
        let _ = fnch::fnch_loglik(odds, x, u64::MAX, u64::MAX, e);
    }

    #[test]
    fn fnch_is_a_distribution(odds in 0.01..100.0f64, nb in 1u64..60, na in 1u64..60, e in 1u64..60) {
        let e = e.min(na + nb);
        let s: f64 = (0..=e).map(|x| fnch::fnch_loglik(odds, x, nb, na, e).exp()).sum();
        // inconsistent x give 0 ("no information") by contract, so compare over the support only
        let lo = e.saturating_sub(na);
        let hi = e.min(nb);
        if lo < hi {
            let s2: f64 = (lo..=hi).map(|x| fnch::fnch_loglik(odds, x, nb, na, e).exp()).sum();
            prop_assert!((s2 - 1.0).abs() < 1e-10, "{}", s2);
        }
        prop_assert!(s.is_finite());
    }

    #[test]
    fn sample_functions_never_panic(x in small_vec(), y in small_vec(), p in any_f64()) {
        use mann_whitney::{Alternative, Method};
        for alt in [Alternative::TwoSided, Alternative::Greater, Alternative::Less] {
            for m in [Method::Auto, Method::Exact, Method::Asymptotic { continuity: false }] {
                if let Some(r) = mann_whitney::mann_whitney_u(&x, &y, alt, m) {
                    prop_assert!((0.0..=1.0).contains(&r.p_value) || r.p_value.is_nan());
                }
            }
        }
        let _ = mann_whitney::hodges_lehmann(&x, &y);
        let _ = mann_whitney::wilcox_shift_interval(&x, &y, 0.95);
        let _ = mann_whitney::kayenta_classify(&x, &y, &mann_whitney::KayentaConfig::default());
        let _ = trend::mann_kendall(&x, &y, 0.05);
        let _ = trend::mann_kendall_hamed_rao(&x, &y, 0.05);
        let _ = trend::theil_sen(&x, &y, 0.95);
        let _ = quantile::quantile_r7(&x, p);
        let buckets: Vec<(f64, f64)> = x.iter().copied().zip(y.iter().copied()).collect();
        let _ = quantile::histogram_quantile(p, &buckets);
        let _ = cusum::cusum_path(&x, p);
        let _ = special::log_sum_exp(&x);
        let _ = dirichlet::dirichlet_ln_bf(&x, &y, p);
    }

    #[test]
    fn truncated_beta_is_monotone_in_the_canary_count(na in 0.0..5000.0f64, nb in 0.0..5000.0f64, t0 in 0.05..0.95f64) {
        let a = beta_mix::truncated_beta_ln_e(na, nb, t0, 100.0);
        let b = beta_mix::truncated_beta_ln_e(na, nb + 1.0, t0, 100.0);
        prop_assert!(a.is_finite() && b.is_finite());
        prop_assert!(b > a);
    }

    #[test]
    fn share_cs_contains_the_mle(na in 0.0..1e5f64, nb in 0.0..1e5f64) {
        let (lo, hi) = dirichlet::share_confidence_sequence(na, nb, 100.0, 0.05);
        prop_assert!(lo <= hi);
        if na + nb > 0.0 {
            let m = nb / (na + nb);
            prop_assert!(lo <= m + 1e-12 && m <= hi + 1e-12, "{} {} {}", lo, m, hi);
        }
    }
}

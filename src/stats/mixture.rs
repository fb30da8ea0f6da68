//! Howard et al. normal mixture boundaries and the Johari mSPRT (statistics.md §4; vectors D1–D6).
//!
//! Howard parametrisation (confseq `TwoSidedNormalMixture`): S_t = Σ(x_i − θ₀), V_t = Σ σ_i²
//! ("intrinsic time"), mixing precision ρ = σ⁴/τ².
//!
//! - two-sided: ln M = ½ ln(ρ/(V+ρ)) + S²/(2(V+ρ)); boundary |S| ≥ sqrt((V+ρ)(ln(1+V/ρ) + 2 ln(1/α)));
//! - one-sided: ln M = ½ ln(4ρ/(V+ρ)) + S²/(2(V+ρ)) + ln Φ(S/√(V+ρ));
//! - `best_rho`: ρ* = V_opt/(2 ln(1/α) + ln(1 + 2 ln(1/α))) (one-sided: pass 2α).
//!
//! All return NaN for invalid arguments (V < 0, ρ ≤ 0, α ∉ (0,1), non-finite input).

use super::special::{normal_ln_cdf, zeroin};

fn valid_vr(v: f64, rho: f64) -> bool {
    v.is_finite() && v >= 0.0 && rho.is_finite() && rho > 0.0
}

/// ln M_t of the two-sided normal mixture martingale (statistics.md §4; vector D3: s=30, v=100,
/// ρ = best_rho(100, 0.05) → 2.9013750104; vector D1 with ρ=1 → 2.14788528613).
pub fn two_sided_ln_m(s: f64, v: f64, rho: f64) -> f64 {
    if !valid_vr(v, rho) || !s.is_finite() {
        return f64::NAN;
    }
    0.5 * (rho / (v + rho)).ln() + s * s / (2.0 * (v + rho))
}

/// ln M_t of the one-sided normal mixture (mixing over positive drifts only) (statistics.md §4;
/// vector D3: s=30, v=100, ρ = best_rho(100, 0.1) → 3.5805696036).
pub fn one_sided_ln_m(s: f64, v: f64, rho: f64) -> f64 {
    if !valid_vr(v, rho) || !s.is_finite() {
        return f64::NAN;
    }
    let vr = v + rho;
    0.5 * (4.0 * rho / vr).ln() + s * s / (2.0 * vr) + normal_ln_cdf(s / vr.sqrt())
}

/// The mixing precision that minimises the boundary at intrinsic time `v_opt`
/// (confseq `best_rho`, statistics.md §4; vector D2: (100, 0.05) → 12.6005609793,
/// (100, 0.1) → 15.8006349069). For a one-sided test pass 2α.
pub fn best_rho(v_opt: f64, alpha: f64) -> f64 {
    if !(v_opt.is_finite() && v_opt > 0.0 && alpha > 0.0 && alpha < 1.0) {
        return f64::NAN;
    }
    let l = 2.0 * (1.0 / alpha).ln();
    v_opt / (l + (1.0 + l).ln())
}

/// Two-sided boundary on |S_t| at level α (statistics.md §4; vector D4).
pub fn two_sided_boundary(v: f64, rho: f64, alpha: f64) -> f64 {
    if !(valid_vr(v, rho) && alpha > 0.0 && alpha < 1.0) {
        return f64::NAN;
    }
    ((v + rho) * ((1.0 + v / rho).ln() + 2.0 * (1.0 / alpha).ln())).sqrt()
}

/// One-sided boundary: the S > 0 at which [`one_sided_ln_m`] reaches ln(1/α), by Brent's method
/// (statistics.md §4; vector D4 one-sided, as confseq).
pub fn one_sided_boundary(v: f64, rho: f64, alpha: f64) -> f64 {
    if !(valid_vr(v, rho) && alpha > 0.0 && alpha < 1.0) {
        return f64::NAN;
    }
    let target = (1.0 / alpha).ln();
    let f = |s: f64| one_sided_ln_m(s, v, rho) - target;
    let lo = 0.0;
    let flo = f(lo);
    if flo >= 0.0 {
        return 0.0;
    }
    let mut hi = two_sided_boundary(v, rho, alpha).max(1.0);
    let mut fhi = f(hi);
    let mut guard = 0;
    while fhi < 0.0 && guard < 200 {
        hi *= 2.0;
        fhi = f(hi);
        guard += 1;
    }
    zeroin(f, lo, hi, flo, fhi, 1e-12 * hi.max(1.0), 500).map_or(f64::NAN, |r| r.x)
}

/// ln Λ_n of Johari et al.'s normal mSPRT for H₀: θ = θ₀ with mixing N(θ₀, τ²)
/// (statistics.md §4; vector D1: σ²=1, τ²=1, n=100, x̄−θ₀=0.3 → ln Λ = 2.14788528613):
/// Λ_n = sqrt(σ²/(σ²+nτ²)) · exp(n²τ²(x̄−θ₀)²/(2σ²(σ²+nτ²))).
pub fn msprt_ln_lambda(mean_diff: f64, sigma2: f64, tau2: f64, n: f64) -> f64 {
    let ok = mean_diff.is_finite()
        && sigma2.is_finite()
        && sigma2 > 0.0
        && tau2.is_finite()
        && tau2 > 0.0
        && n.is_finite()
        && n >= 0.0;
    if !ok {
        return f64::NAN;
    }
    let d = sigma2 + n * tau2;
    0.5 * (sigma2 / d).ln() + n * n * tau2 * mean_diff * mean_diff / (2.0 * sigma2 * d)
}

/// ln Λ of the Optimizely-style two-proportion mSPRT with `n_per_arm` observations per arm:
/// θ̂ = p̂_B − p̂_A, σ² := V = p̂_A(1−p̂_A) + p̂_B(1−p̂_B) (statistics.md §4; vector D6:
/// 200 vs 260 of 10 000, τ² = 1e-4 → Λ = 9.594039513). NaN when V = 0 or inputs are invalid.
pub fn msprt_two_proportion_ln_lambda(
    successes_baseline: f64,
    successes_canary: f64,
    n_per_arm: f64,
    tau2: f64,
) -> f64 {
    let ok = n_per_arm.is_finite()
        && n_per_arm > 0.0
        && (0.0..=n_per_arm).contains(&successes_baseline)
        && (0.0..=n_per_arm).contains(&successes_canary);
    if !ok {
        return f64::NAN;
    }
    let pa = successes_baseline / n_per_arm;
    let pb = successes_canary / n_per_arm;
    let v = pa * (1.0 - pa) + pb * (1.0 - pb);
    msprt_ln_lambda(pb - pa, v, tau2, n_per_arm)
}

/// Always-valid p-value from ln Λ, ln M or any e-value's ln E: min(1, 1/Λ), NaN staying NaN;
/// fold with a running minimum over time (statistics.md §4, "p_n = min(p_{n−1}, 1/Λ_n)").
pub fn always_valid_p(ln_lambda: f64) -> f64 {
    if ln_lambda.is_nan() {
        return f64::NAN;
    }
    (-ln_lambda).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    #[test]
    fn vector_d1() {
        let l = msprt_ln_lambda(0.3, 1.0, 1.0, 100.0);
        assert!(close(l, 2.14788528613, 1e-10));
        assert!(close(l.exp(), 8.56672306037, 1e-10));
        assert!(close(always_valid_p(l), 0.11673074908, 1e-9));
        // Howard form s=30, v=100, rho=1 gives the same ln M
        assert!(close(
            two_sided_ln_m(30.0, 100.0, 1.0),
            2.14788528613,
            1e-10
        ));
    }

    #[test]
    fn vectors_d2_d3() {
        let r2 = best_rho(100.0, 0.05);
        let r1 = best_rho(100.0, 0.1);
        assert!(close(r2, 12.6005609793, 1e-10));
        assert!(close(r1, 15.8006349069, 1e-10));
        assert!(close(two_sided_ln_m(30.0, 100.0, r2), 2.9013750104, 1e-10));
        assert!(close(one_sided_ln_m(30.0, 100.0, r1), 3.5805696036, 1e-10));
    }

    #[test]
    fn vector_d4_boundaries() {
        let r2 = best_rho(100.0, 0.05);
        let r1 = best_rho(100.0, 0.1);
        for (v, b2, b1) in [
            (10.0, 12.1907531463, 11.4926817963),
            (100.0, 30.3520899038, 27.6607088307),
            (1000.0, 102.5122868317, 94.3939161694),
            (10000.0, 356.1641040919, 332.7971567839),
        ] {
            let got2 = two_sided_boundary(v, r2, 0.05);
            assert!(close(got2, b2, 1e-10), "{v}: {got2}");
            let got1 = one_sided_boundary(v, r1, 0.05);
            assert!(close(got1, b1, 1e-9), "{v}: {got1}");
        }
    }

    #[test]
    fn vector_d6_two_proportion() {
        let l = msprt_two_proportion_ln_lambda(200.0, 260.0, 10000.0, 1e-4);
        assert!(close(l.exp(), 9.594039513, 1e-9));
        assert!(close(always_valid_p(l), 0.1042313823, 1e-9));
        let l = msprt_two_proportion_ln_lambda(200.0, 260.0, 10000.0, 1e-3);
        assert!(close(l.exp(), 3.610774227, 1e-9));
        let l = msprt_two_proportion_ln_lambda(20.0, 30.0, 1000.0, 1e-4);
        assert!(close(l.exp(), 1.14147428, 1e-8));
    }

    #[test]
    fn invalid() {
        assert!(two_sided_ln_m(1.0, -1.0, 1.0).is_nan());
        assert!(one_sided_ln_m(f64::NAN, 1.0, 1.0).is_nan());
        assert!(best_rho(0.0, 0.05).is_nan());
        assert!(one_sided_boundary(10.0, 1.0, 2.0).is_nan());
        assert!(msprt_two_proportion_ln_lambda(0.0, 0.0, 10.0, 1e-4).is_nan());
        assert!(one_sided_ln_m(-1e6, 10.0, 1.0).is_finite());
    }
}

//! Lindon–Malek Dirichlet-multinomial Bayes factor, sequential p-value and confidence sequence
//! (statistics.md §1.3; vectors E, Q, P).
//!
//! Each event's arm label is iid Categorical(θ) given the event times, whatever the shared load
//! curve λ(t) is; H₀: θ = ρ (the allocation). With the prior Dirichlet(α₀ = kρ),
//!
//! BF_t = [B(α₀ + n)/B(α₀)] / Π_i ρ_i^{n_i},  B(a) = Π Γ(a_i)/Γ(Σ a_i),
//!
//! is a test martingale under H₀; p_t = min(1, 1/BF_t), kept as a running minimum.
//!
//! Inverting the same mixture gives the confidence sequence
//! CS_t = {θ : Σ_i n_i ln θ_i ≥ ln[B(α₀+n)/B(α₀)] − ln(1/α)} (savvi `calculate_conf_int`), mapped
//! for two arms to the canary share θ_B and to the rate ratio (θ_B/ρ_B)/(θ_A/ρ_A) (§8P).

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use super::special::{two_arm_counts_valid, zeroin};

/// ln B(a) = Σ ln Γ(a_i) − ln Γ(Σ a_i) (multivariate beta).
fn ln_multi_beta(a: &[f64]) -> f64 {
    a.iter().map(|&x| ln_gamma(x)).sum::<f64>() - ln_gamma(a.iter().sum())
}

/// Normalised allocation, or `None` if any entry is not finite and > 0.
fn normalise(rho: &[f64]) -> Option<Vec<f64>> {
    if rho.is_empty() || rho.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        return None;
    }
    let s: f64 = rho.iter().sum();
    Some(rho.iter().map(|r| r / s).collect())
}

/// ln BF_t of the Dirichlet-multinomial test of θ = ρ (statistics.md §1.3; vector E).
///
/// `counts[i]`: cumulative events of arm i (f64; non-integers allowed); `rho[i]`: allocation
/// (normalised here if it does not sum to 1); `k` > 0: prior concentration (α₀ = kρ; 100 in the
/// Netflix-derived code). Returns NaN when the lengths differ, a count is negative or not finite,
/// a ρ_i is not > 0, or k is not finite and > 0.
pub fn dirichlet_ln_bf(counts: &[f64], rho: &[f64], k: f64) -> f64 {
    let Some(rho) = normalise(rho) else {
        return f64::NAN;
    };
    if counts.len() != rho.len()
        || counts.iter().any(|c| !(c.is_finite() && *c >= 0.0))
        || !(k.is_finite() && k > 0.0)
    {
        return f64::NAN;
    }
    let a0: Vec<f64> = rho.iter().map(|r| k * r).collect();
    let post: Vec<f64> = a0.iter().zip(counts).map(|(a, n)| a + n).collect();
    let null: f64 = counts
        .iter()
        .zip(&rho)
        .filter(|(n, _)| **n > 0.0)
        .map(|(n, r)| n * r.ln())
        .sum();
    ln_multi_beta(&post) - ln_multi_beta(&a0) - null
}

/// Sequential Dirichlet-multinomial test state: cumulative counts, ln BF and the running-minimum
/// p-value (statistics.md §1.3). Persistable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirichletSequential {
    /// Allocation ρ (normalised).
    pub rho: Vec<f64>,
    /// Prior concentration k.
    pub k: f64,
    /// Cumulative counts per arm.
    pub counts: Vec<f64>,
    /// Current ln BF_t.
    pub ln_bf: f64,
    /// Running minimum of min(1, 1/BF_t): the anytime-valid p-value.
    pub p_value: f64,
}

impl DirichletSequential {
    /// A fresh test; `None` when ρ or k are invalid (see [`dirichlet_ln_bf`]).
    pub fn new(rho: &[f64], k: f64) -> Option<Self> {
        let rho = normalise(rho)?;
        if !(k.is_finite() && k > 0.0) {
            return None;
        }
        let n = rho.len();
        Some(DirichletSequential {
            rho,
            k,
            counts: vec![0.0; n],
            ln_bf: 0.0,
            p_value: 1.0,
        })
    }

    /// Adds a batch of new events per arm (e.g. one scrape interval) and recomputes ln BF from
    /// the cumulative counts with [`dirichlet_ln_bf`]. Ignores (returns `false`) a batch of the
    /// wrong length or with a negative / non-finite entry.
    pub fn update(&mut self, new_counts: &[f64]) -> bool {
        if new_counts.len() != self.counts.len()
            || new_counts.iter().any(|c| !(c.is_finite() && *c >= 0.0))
        {
            return false;
        }
        for (c, n) in self.counts.iter_mut().zip(new_counts) {
            *c += n;
        }
        self.ln_bf = dirichlet_ln_bf(&self.counts, &self.rho, self.k);
        self.fold_p();
        true
    }

    /// Adds one event in `arm` with the per-event update of savvi `update_odds`:
    /// BF ← BF · [(α₀,i + n_i − 1)/(Σα₀ + N − 1)] / ρ_i with n_i, N including the event (§1.3,
    /// vector Q). Returns `false` (no change) for an out-of-range arm (also when a corrupted
    /// persisted state has `rho` shorter than `counts`).
    pub fn update_event(&mut self, arm: usize) -> bool {
        if arm >= self.counts.len() || arm >= self.rho.len() {
            return false;
        }
        self.counts[arm] += 1.0;
        let n_i = self.counts[arm];
        let big_n: f64 = self.counts.iter().sum();
        let a_i = self.k * self.rho[arm];
        let num = a_i + n_i - 1.0;
        let den = self.k + big_n - 1.0;
        self.ln_bf += num.ln() - den.ln() - self.rho[arm].ln();
        self.fold_p();
        true
    }

    fn fold_p(&mut self) {
        let p = (-self.ln_bf).exp().min(1.0);
        if p < self.p_value {
            self.p_value = p;
        }
    }
}

/// ln σ(z) = −ln(1 + e^{−z}), stable for all z.
fn ln_sigmoid(z: f64) -> f64 {
    if z > 0.0 {
        -(-z).exp().ln_1p()
    } else {
        z - z.exp().ln_1p()
    }
}

/// The confidence set in log-odds z = ln(θ_B/θ_A): (z_lo, z_hi), ±inf when unbounded.
fn log_odds_confidence_sequence(
    n_baseline: f64,
    n_canary: f64,
    prior_share: f64,
    k: f64,
    alpha: f64,
) -> Option<(f64, f64)> {
    let (na, nb) = (n_baseline, n_canary);
    if !(two_arm_counts_valid(na, nb, prior_share, k) && alpha > 0.0 && alpha < 1.0) {
        return None;
    }
    let a0 = [k * (1.0 - prior_share), k * prior_share];
    let c = ln_multi_beta(&[a0[0] + na, a0[1] + nb]) - ln_multi_beta(&a0) - (1.0 / alpha).ln();
    // g(z) = n_B ln θ_B + n_A ln θ_A − c, concave in z with maximum at the MLE.
    let g = |z: f64| {
        let mut v = -c;
        if nb > 0.0 {
            v += nb * ln_sigmoid(z);
        }
        if na > 0.0 {
            v += na * ln_sigmoid(-z);
        }
        v
    };
    let z_hat = if na == 0.0 && nb == 0.0 {
        0.0
    } else if na == 0.0 {
        f64::INFINITY
    } else if nb == 0.0 {
        f64::NEG_INFINITY
    } else {
        nb.ln() - na.ln()
    };
    // Search from a finite start inside the set.
    let start = z_hat.clamp(-700.0, 700.0);
    if g(start) <= 0.0 {
        // cannot happen mathematically (BF at the MLE is ≤ 1); report the point estimate
        return Some((z_hat, z_hat));
    }
    let solve = |dir: f64| -> f64 {
        let mut step = 1.0;
        let mut inner = start;
        loop {
            let outer = start + dir * step;
            if outer.abs() > 745.0 {
                return dir * f64::INFINITY;
            }
            let go = g(outer);
            if go < 0.0 {
                let (a, b) = if dir < 0.0 {
                    (outer, inner)
                } else {
                    (inner, outer)
                };
                let (fa, fb) = (g(a), g(b));
                return zeroin(g, a, b, fa, fb, 1e-13, 500).map_or(f64::NAN, |r| r.x);
            }
            inner = outer;
            step *= 2.0;
        }
    };
    Some((solve(-1.0), solve(1.0)))
}

fn sigmoid(z: f64) -> f64 {
    ln_sigmoid(z).exp()
}

/// Anytime-valid confidence sequence for the canary's event share θ_B at level 1 − α, with the
/// Dirichlet prior centred on an equal split (α₀ = (k/2, k/2)) (statistics.md §1.3, vector P:
/// (100, 140), k = 100, α = 0.05 → [0.4856840588, 0.6767785942]).
///
/// The prior centre only affects efficiency, never validity, so this is valid for any traffic
/// split; use [`share_confidence_sequence_with_prior`] to centre it on the actual split ρ.
/// Returns (NaN, NaN) for invalid input (negative / non-finite counts, k ≤ 0, α ∉ (0, 1)).
pub fn share_confidence_sequence(n_baseline: f64, n_canary: f64, k: f64, alpha: f64) -> (f64, f64) {
    share_confidence_sequence_with_prior(n_baseline, n_canary, 0.5, k, alpha)
}

/// [`share_confidence_sequence`] with the prior centred on `prior_share` (α₀ = k·(1−ρ_B, ρ_B)).
pub fn share_confidence_sequence_with_prior(
    n_baseline: f64,
    n_canary: f64,
    prior_share: f64,
    k: f64,
    alpha: f64,
) -> (f64, f64) {
    map_bounds(
        log_odds_confidence_sequence(n_baseline, n_canary, prior_share, k, alpha),
        sigmoid,
    )
}

/// Log-odds bounds carried through `f`; (NaN, NaN) for invalid input (no bounds).
fn map_bounds(bounds: Option<(f64, f64)>, f: impl Fn(f64) -> f64) -> (f64, f64) {
    bounds.map_or((f64::NAN, f64::NAN), |(lo, hi)| (f(lo), f(hi)))
}

/// Anytime-valid confidence sequence for the canary/baseline rate ratio
/// (θ_B/ρ_B)/(θ_A/ρ_A) = exp(δ_B − δ_A), from the θ_B sequence with the prior centred on the
/// canary's exposure share `rho_canary` (statistics.md §1.3, vector P: (100, 140), ρ = ½ →
/// [0.944330, 2.093854]). Bounds may be 0 or +inf when unbounded; (NaN, NaN) for invalid input.
pub fn rate_ratio_confidence_sequence(
    n_baseline: f64,
    n_canary: f64,
    rho_canary: f64,
    k: f64,
    alpha: f64,
) -> (f64, f64) {
    let shift = (1.0 - rho_canary).ln() - rho_canary.ln();
    map_bounds(
        log_odds_confidence_sequence(n_baseline, n_canary, rho_canary, k, alpha),
        |z| (z + shift).exp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    #[test]
    fn vector_e() {
        let rows = [
            (20.0, 35.0, 0.5, 0.511654094789, 0.599503123238),
            (100.0, 140.0, 0.5, 1.75172936046, 0.173473685365),
            (500.0, 600.0, 0.5, 2.93024397074, 0.0533840124194),
            (0.0, 10.0, 0.5, 0.411465929135, 0.662678098626),
            (1000.0, 1000.0, 0.5, -1.52464212959, 1.0),
            (900.0, 140.0, 0.9, 4.46060249536, 0.0115553991154),
            (50.0, 100.0, 0.5, 4.59469961279, 0.0101052558147),
        ];
        for (na, nb, rho_a, lnbf, p) in rows {
            let rho = [rho_a, 1.0 - rho_a];
            let l = dirichlet_ln_bf(&[na, nb], &rho, 100.0);
            assert!(close(l, lnbf, 1e-9), "({na},{nb}) {l} vs {lnbf}");
            let mut s = DirichletSequential::new(&rho, 100.0).unwrap();
            assert!(s.update(&[na, nb]));
            assert!(close(s.p_value, p, 1e-9), "{} vs {p}", s.p_value);
        }
    }

    #[test]
    fn vector_q_event_by_event() {
        // arms B,B,A,B,B,B,A,B,B,B with index 0 = A, 1 = B
        let arms = [1, 1, 0, 1, 1, 1, 0, 1, 1, 1];
        let expected = [
            0.0,
            0.0098522964,
            -0.0099503309,
            -0.0002884199,
            0.018759775,
            0.046930652,
            0.0084643712,
            0.0361159025,
            0.0724835467,
            0.1173341128,
        ];
        let mut s = DirichletSequential::new(&[0.5, 0.5], 100.0).unwrap();
        for (arm, e) in arms.iter().zip(expected) {
            s.update_event(*arm);
            // the vector has 10 decimals
            assert!((s.ln_bf - e).abs() < 1e-10, "{} vs {e}", s.ln_bf);
        }
        let batch = dirichlet_ln_bf(&[2.0, 8.0], &[0.5, 0.5], 100.0);
        assert!((batch - s.ln_bf).abs() < 1e-12);
    }

    #[test]
    fn vector_p_confidence_sequences() {
        let (lo, hi) = share_confidence_sequence(100.0, 140.0, 100.0, 0.05);
        assert!(
            close(lo, 0.4856840588, 1e-9) && close(hi, 0.6767785942, 1e-9),
            "{lo} {hi}"
        );
        let rows = [
            (100.0, 140.0, 0.944330, 2.093854),
            (500.0, 600.0, 0.998696, 1.443362),
            (1000.0, 1000.0, 0.874137, 1.143985),
            (50.0, 100.0, 1.069682, 3.917186),
        ];
        for (na, nb, l, h) in rows {
            let (lo, hi) = rate_ratio_confidence_sequence(na, nb, 0.5, 100.0, 0.05);
            assert!(
                close(lo, l, 1e-6) && close(hi, h, 1e-6),
                "({na},{nb}) {lo} {hi}"
            );
        }
    }

    #[test]
    fn edge_cases() {
        let (lo, hi) = share_confidence_sequence(0.0, 0.0, 100.0, 0.05);
        assert_eq!((lo, hi), (0.0, 1.0));
        let (lo, hi) = share_confidence_sequence(0.0, 30.0, 100.0, 0.05);
        assert!(lo > 0.5 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = rate_ratio_confidence_sequence(30.0, 0.0, 0.1, 100.0, 0.05);
        assert!(lo == 0.0 && hi.is_finite(), "{lo} {hi}");
        let (lo, _) = share_confidence_sequence(-1.0, 3.0, 100.0, 0.05);
        assert!(lo.is_nan());
        assert!(dirichlet_ln_bf(&[1.0], &[0.5, 0.5], 100.0).is_nan());
        assert!(dirichlet_ln_bf(&[1.0, 2.0], &[0.0, 1.0], 100.0).is_nan());
        assert!(DirichletSequential::new(&[0.5, 0.5], f64::NAN).is_none());
        let mut s = DirichletSequential::new(&[1.0, 1.0], 100.0).unwrap();
        assert!(!s.update(&[f64::NAN, 1.0]));
        assert!(!s.update_event(7));
        assert_eq!(s.rho, vec![0.5, 0.5]);
    }
}

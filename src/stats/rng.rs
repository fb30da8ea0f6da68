//! A small deterministic PRNG (xoshiro256**, seeded through splitmix64) with the samplers the
//! simulations need: uniform, normal, exponential, gamma, beta, Poisson, binomial and log-normal.
//!
//! Used by the statistical simulation tests here (FPR/power of the e-processes, statistics.md §9)
//! and later by the product's simulated fleet (`rollguard demo`, backtests). The state is four
//! u64 words, serde-serialisable, so a simulation can be persisted and resumed bit-for-bit. No
//! global state, no OS entropy: the same seed always gives the same stream.
//!
//! Samplers never panic and always terminate: invalid parameters (NaN, negative) give a
//! documented degenerate value, and rejection loops are bounded (falling back to a normal
//! approximation in the practically impossible case the bound is hit).

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

/// xoshiro256** generator state (Blackman & Vigna 2018).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const MAX_REJECTIONS: usize = 10_000;

impl Rng {
    /// A generator seeded from `seed` via splitmix64 (so nearby seeds give unrelated streams).
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix64(&mut sm);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1): never exactly 0 (safe for logarithms).
    pub fn uniform_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; tiny bias below 2⁻⁶⁴·n); 0 when n = 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal by Box–Muller (one value per call; the sine partner is discarded to keep
    /// the state a pure function of the draws).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform_open();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Exponential with the given mean (0 for a non-positive or NaN mean).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        if !(mean > 0.0) {
            return 0.0;
        }
        -mean * self.uniform_open().ln()
    }

    /// Log-normal: exp(mu + sigma·N(0,1)). NaN parameters give NaN.
    pub fn log_normal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }

    /// Gamma(shape, 1) by Marsaglia–Tsang (2000), with the u^{1/shape} boost for shape < 1.
    /// Returns 0 for a non-positive or NaN shape.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if !(shape > 0.0) || !shape.is_finite() {
            return if shape == f64::INFINITY {
                f64::INFINITY
            } else {
                0.0
            };
        }
        if shape < 1.0 {
            let g = self.gamma(shape + 1.0);
            return g * self.uniform_open().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        for _ in 0..MAX_REJECTIONS {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform_open();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
        shape
    }

    /// Beta(a, b) as G_a/(G_a + G_b); NaN when both gammas are 0 (invalid parameters).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }

    /// Poisson(mean). Inversion by sequential search for mean < 10; Hörmann's (1993) PTRS
    /// transformed rejection with squeeze for mean ≥ 10 (exact, as in numpy). A non-positive or NaN
    /// mean gives 0; results saturate at u64::MAX for astronomically large means.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if !(mean > 0.0) {
            return 0;
        }
        if !mean.is_finite() {
            return u64::MAX;
        }
        if mean >= 1e15 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        if mean < 10.0 {
            let mut k = 0u64;
            let mut p = (-mean).exp();
            let mut cdf = p;
            let u = self.uniform();
            while u > cdf && k < 1000 {
                k += 1;
                p *= mean / k as f64;
                cdf += p;
            }
            return k;
        }
        let slam = mean.sqrt();
        let loglam = mean.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        for _ in 0..MAX_REJECTIONS {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                <= -mean + k * loglam - ln_gamma(k + 1.0)
            {
                return k as u64;
            }
        }
        (mean + slam * self.normal()).round().max(0.0) as u64
    }

    /// Binomial(n, p), exact: Knuth's beta-splitting (the i-th order statistic of n uniforms is
    /// Beta(i, n+1−i)) reduces n to ≤ 64 in O(log n) steps, then a sum of Bernoulli draws.
    /// p is clamped to [0, 1]; NaN p gives 0.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if !(p > 0.0) {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let (mut n, mut p) = (n, p);
        let mut k = 0u64;
        while n > 64 {
            let i = 1 + n / 2;
            let x = self.beta(i as f64, (n - i + 1) as f64);
            if !x.is_finite() {
                break;
            }
            if x >= p {
                n = i - 1;
                p /= x;
            } else {
                k += i;
                n -= i;
                p = (p - x) / (1.0 - x);
            }
        }
        for _ in 0..n {
            if self.uniform() < p {
                k += 1;
            }
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn deterministic_and_serde() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let s = serde_json::to_string(&a).unwrap();
        let mut c: Rng = serde_json::from_str(&s).unwrap();
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn moments() {
        let mut r = Rng::new(1);
        let n = 20_000;
        let u: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let (m, v) = mean_var(&u);
        assert!((m - 0.5).abs() < 0.01 && (v - 1.0 / 12.0).abs() < 0.005);
        let z: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let (m, v) = mean_var(&z);
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.04);
        for lam in [0.3, 4.0, 12.0, 250.0, 1e6] {
            let p: Vec<f64> = (0..n).map(|_| r.poisson(lam) as f64).collect();
            let (m, v) = mean_var(&p);
            assert!(
                (m - lam).abs() < 4.0 * (lam / n as f64).sqrt(),
                "{lam}: {m}"
            );
            assert!((v / lam - 1.0).abs() < 0.06, "{lam}: {v}");
        }
        for (nn, pp) in [(10u64, 0.3), (1000, 0.02), (100_000, 0.4)] {
            let b: Vec<f64> = (0..n).map(|_| r.binomial(nn, pp) as f64).collect();
            let (m, v) = mean_var(&b);
            let (em, ev) = (nn as f64 * pp, nn as f64 * pp * (1.0 - pp));
            assert!((m - em).abs() < 4.0 * (ev / n as f64).sqrt(), "{nn}: {m}");
            assert!((v / ev - 1.0).abs() < 0.06, "{nn}: {v}");
        }
        let g: Vec<f64> = (0..n).map(|_| r.gamma(0.5)).collect();
        let (m, v) = mean_var(&g);
        assert!((m - 0.5).abs() < 0.02 && (v - 0.5).abs() < 0.05);
        let l: Vec<f64> = (0..n).map(|_| r.log_normal(0.0, 0.5).ln()).collect();
        let (m, v) = mean_var(&l);
        assert!(m.abs() < 0.02 && (v - 0.25).abs() < 0.02);
    }

    #[test]
    fn degenerate_parameters() {
        let mut r = Rng::new(3);
        assert_eq!(r.poisson(f64::NAN), 0);
        assert_eq!(r.poisson(-1.0), 0);
        assert!(r.poisson(f64::INFINITY) > 0);
        assert_eq!(r.binomial(10, f64::NAN), 0);
        assert_eq!(r.binomial(10, 2.0), 10);
        assert_eq!(r.binomial(0, 0.5), 0);
        assert_eq!(r.exponential(-1.0), 0.0);
        assert_eq!(r.gamma(f64::NAN), 0.0);
        assert_eq!(r.below(0), 0);
        assert!(r.binomial(u64::MAX, 0.5) > 0);
    }
}

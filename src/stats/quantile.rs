//! Quantiles: the R-7 sample quantile (Kayenta parity), PromQL `histogram_quantile` on
//! cumulative buckets, and the Howard–Ramdas time-uniform CDF band (statistics.md §1.2, §2.1,
//! §7.2; vector G).

/// R-7 sample quantile (type 7: h = (n−1)p, linear interpolation; numpy's default and Apache
/// Commons `Percentile` `R_7`, which Kayenta uses, §2.1). NaN values are dropped; returns NaN
/// for an empty sample or p ∉ [0, 1].
pub fn quantile_r7(values: &[f64], p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * p;
    let lo = h.floor();
    let i = lo as usize;
    if i + 1 >= v.len() {
        return v[v.len() - 1];
    }
    let frac = h - lo;
    if frac == 0.0 {
        v[i]
    } else {
        v[i] + frac * (v[i + 1] - v[i])
    }
}

/// PromQL `histogram_quantile(q, …)` on one histogram's cumulative buckets `(le, count)`
/// (Prometheus `bucketQuantile` semantics, statistics.md §7.2):
///
/// - q < 0 → −inf, q > 1 → +inf, NaN q → NaN;
/// - buckets are sorted by `le`; buckets with equal `le` are merged (counts added); NaN `le` or
///   count entries are dropped; cumulative counts are forced monotonic (a lower bucket's count
///   caps nothing, a later smaller count is raised to the running max), as Prometheus does;
/// - a missing +Inf bucket, fewer than 2 buckets, or zero observations → NaN;
/// - the rank q·total falls in bucket b: if b is the +Inf bucket the result is the highest
///   finite `le`; if b is the first bucket and its `le` ≤ 0 the result is that `le`; otherwise
///   linear interpolation within the bucket, whose lower bound is the previous `le` (0 for the
///   first bucket).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(le, c)| !le.is_nan() && !c.is_nan())
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    // coalesce equal upper bounds
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, c) in b {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => merged.push((le, c)),
        }
    }
    let b = merged;
    match b.last() {
        Some((le, _)) if *le == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let mut b = b;
    let mut running = f64::NEG_INFINITY;
    for x in &mut b {
        if x.1 < running {
            x.1 = running;
        }
        running = x.1;
    }
    let n = b.len();
    let observations = b[n - 1].1;
    if !(observations > 0.0) {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // first bucket (among all but +Inf) with count >= rank, else n − 1
    let idx = b[..n - 1].iter().position(|x| x.1 >= rank).unwrap_or(n - 1);
    if idx == n - 1 {
        return b[n - 2].0;
    }
    if idx == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let bucket_end = b[idx].0;
    let mut count = b[idx].1;
    let mut bucket_start = 0.0;
    if idx > 0 {
        bucket_start = b[idx - 1].0;
        count -= b[idx - 1].1;
        rank -= b[idx - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Howard–Ramdas (2022, Thm 2) time-uniform CDF band half-width:
/// f_t = 0.85·sqrt((ln ln(e·t) + 0.8·ln(1612/α))/t), with P(∃t ≥ 1: sup_x |F̂_t − F| > f_t) ≤ α
/// (statistics.md §1.2; vector G: α=0.05, t=100 → 0.2691758223). Returns +inf for t < 1 (no
/// samples: the band is uninformative) and NaN for α ∉ (0, 1) or NaN t.
pub fn howard_ramdas_band(t: f64, alpha: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) || t.is_nan() {
        return f64::NAN;
    }
    if t < 1.0 {
        return f64::INFINITY;
    }
    0.85 * (((std::f64::consts::E * t).ln().ln() + 0.8 * (1612.0 / alpha).ln()) / t).sqrt()
}

/// Fixed-sample DKW band half-width sqrt(ln(2/α)/(2n)), for comparison (§8G: t=100, α=0.05 →
/// 0.1358101516). Not valid under continuous monitoring. +inf for n < 1.
pub fn dkw_band(n: f64, alpha: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) || n.is_nan() {
        return f64::NAN;
    }
    if n < 1.0 {
        return f64::INFINITY;
    }
    ((2.0 / alpha).ln() / (2.0 * n)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::close;

    #[test]
    fn r7() {
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        // numpy.percentile(v, [0, 25, 50, 90, 100]) = 1, 1.75, 3.5, 6.9, 9
        assert_eq!(quantile_r7(&v, 0.0), 1.0);
        assert!(close(quantile_r7(&v, 0.25), 1.75, 1e-15));
        assert!(close(quantile_r7(&v, 0.5), 3.5, 1e-15));
        assert!(close(quantile_r7(&v, 0.9), 6.9, 1e-14));
        assert_eq!(quantile_r7(&v, 1.0), 9.0);
        assert!(quantile_r7(&[], 0.5).is_nan());
        assert!(quantile_r7(&v, 1.5).is_nan());
        assert_eq!(quantile_r7(&[f64::NAN, 2.0], 0.3), 2.0);
    }

    #[test]
    fn histogram_quantile_hand_cases() {
        let inf = f64::INFINITY;
        // 10 obs ≤ 0.1, 30 ≤ 0.5 (20 in (0.1, 0.5]), 40 ≤ 1, total 50 (10 above 1)
        let b = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (inf, 50.0)];
        // q=0.5: rank 25 in (0.1,0.5]: 0.1 + 0.4·(15/20) = 0.4
        assert!(close(histogram_quantile(0.5, &b), 0.4, 1e-12));
        // q=0.1: rank 5 in the first bucket, lower bound 0: 0.1·5/10 = 0.05
        assert!(close(histogram_quantile(0.1, &b), 0.05, 1e-12));
        // q=0.79: rank 39.5 in (0.5, 1]: 0.5 + 0.5·9.5/10 = 0.975
        assert!(close(histogram_quantile(0.79, &b), 0.975, 1e-12));
        // q=0.99: rank 49.5 in +Inf bucket → highest finite le
        assert_eq!(histogram_quantile(0.99, &b), 1.0);
        // order of input does not matter
        let shuffled = [b[2], b[0], b[3], b[1]];
        assert!(close(histogram_quantile(0.5, &shuffled), 0.4, 1e-12));
        // no observations / no +Inf bucket / single bucket
        assert!(histogram_quantile(0.5, &[(0.1, 0.0), (inf, 0.0)]).is_nan());
        assert!(histogram_quantile(0.5, &[(0.1, 1.0), (1.0, 2.0)]).is_nan());
        assert!(histogram_quantile(0.5, &[(inf, 2.0)]).is_nan());
        assert!(histogram_quantile(0.5, &[]).is_nan());
        // out-of-range q
        assert_eq!(histogram_quantile(-0.1, &b), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &b), inf);
        assert!(histogram_quantile(f64::NAN, &b).is_nan());
        // non-positive first bucket returns its bound
        assert_eq!(
            histogram_quantile(0.1, &[(-1.0, 5.0), (1.0, 10.0), (inf, 10.0)]),
            -1.0
        );
        // non-monotonic counts (scrape race) are forced monotonic: 30 → 30, 25 → 30
        let nm = [(0.1, 10.0), (0.5, 30.0), (1.0, 25.0), (inf, 50.0)];
        // q=0.7: rank 35 → bucket +Inf? counts after fix: 10, 30, 30, 50 → first ≥ 35 is +Inf
        assert_eq!(histogram_quantile(0.7, &nm), 1.0);
        // duplicated le are merged
        let dup = [(0.5, 10.0), (0.5, 10.0), (inf, 40.0)];
        assert!(close(histogram_quantile(0.25, &dup), 0.25, 1e-12));
    }

    #[test]
    fn vector_g_bands() {
        for (t, f) in [
            (100.0, 0.2691758223),
            (1000.0, 0.0865691284),
            (1e4, 0.0277107451),
            (1e5, 0.0088463452),
        ] {
            // the vector has 10 decimals
            assert!((howard_ramdas_band(t, 0.05) - f).abs() < 1e-10, "{t}");
        }
        assert!(close(howard_ramdas_band(1e4, 0.025), 0.0284244490, 1e-9));
        assert!(close(dkw_band(100.0, 0.05), 0.1358101516, 1e-9));
        assert_eq!(howard_ramdas_band(0.0, 0.05), f64::INFINITY);
        assert!(howard_ramdas_band(10.0, 0.0).is_nan());
    }

    /// Example M (§8G): t_A = t_B = 10⁴ at α/2 per arm; F̂_A = 0.90.
    #[test]
    fn example_m_two_arm_band_test() {
        let f = howard_ramdas_band(1e4, 0.025);
        let base_lower = 0.90 - f;
        assert!(close(base_lower, 0.8716, 1e-4));
        assert!(0.85 + f >= base_lower); // overlap: no reject
        assert!(0.82 + f < base_lower); // canary upper 0.8484 < 0.8716: reject
        assert!(close(0.82 + f, 0.8484, 1e-4));
    }
}

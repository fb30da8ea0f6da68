//! Cost of the judge's per-interval numeric work (`cargo bench --bench stats`): one grid update
//! with each kernel, the e-value, the confidence sequence, and the exact Mann–Whitney path.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rollguard::stats::fnch::fnch_loglik;
use rollguard::stats::grid::{LogGrid, thinning_loglik};
use rollguard::stats::mann_whitney::{Alternative, Method, mann_whitney_u};

fn grid_benches(c: &mut Criterion) {
    let mut g = LogGrid::new(1.0, 64f64.ln(), 64);
    for _ in 0..50 {
        g.add(|r| thinning_loglik(r, 40.0, 7.0, 9000.0, 1000.0));
    }
    c.bench_function("grid add thinning (129 points)", |b| {
        b.iter(|| {
            let mut h = g.clone();
            h.add(|r| thinning_loglik(r, black_box(40.0), 7.0, 9000.0, 1000.0));
            h
        })
    });
    c.bench_function("grid add fnch (129 points, 20k/20k, 4k events)", |b| {
        b.iter(|| {
            let mut h = g.clone();
            h.add(|r| fnch_loglik(r, black_box(2100), 20_000, 20_000, 4_000));
            h
        })
    });
    c.bench_function("grid ln e-value", |b| {
        b.iter(|| black_box(&g).ln_e_value_greater())
    });
    c.bench_function("grid confidence interval", |b| {
        b.iter(|| black_box(&g).confidence_interval(0.05))
    });
}

fn mwu_benches(c: &mut Criterion) {
    let x: Vec<f64> = (0..8).map(|i| i as f64 * 1.37 + 0.11).collect();
    let y: Vec<f64> = (0..500).map(|i| 0.05 + 0.93 * i as f64).collect();
    c.bench_function("mann-whitney exact 8 vs 500", |b| {
        b.iter(|| mann_whitney_u(black_box(&x), &y, Alternative::TwoSided, Method::Exact))
    });
}

criterion_group!(benches, grid_benches, mwu_benches);
criterion_main!(benches);

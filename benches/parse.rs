//! Exposition parsing throughput: rollguard's `expo::parse` vs prometheus-parse 0.2.5 vs a
//! plain memchr newline scan (the floor for any line-based parser), on the same deterministic
//! ~2 MB realistic body, in one run. Also counts heap allocations per parse.
//!
//! The comparison uses the body variant whose routes are written `:id`, because prometheus-parse
//! drops every sample whose label values contain `}`; on that input all three see the same
//! 11 000+ sample lines. Our parser is also measured on the realistic `{id}` variant.
//!
//! Run: `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 3`. Instruction
//! counts: `PARSE_ONCE=rollguard valgrind --tool=callgrind target/release/deps/parse-<hash>`
//! (also `prometheus_parse`, `memchr`, `lines_and_values`, and `none`, the baseline); see docs/performance.md.

#[path = "../tests/data/expo/realistic.rs"]
mod realistic;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use criterion::{Criterion, Throughput, criterion_group};
use rollguard::expo::{Format, parse};

/// Counts allocation calls so the per-parse allocation figures come from the same binary and
/// body as the timings. Relaxed atomic increments cost a few ns per allocation, which slightly
/// penalises the allocation-heavy parser; the effect is small next to what is measured.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static REALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size.saturating_sub(layout.size()), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ours(body: &str) -> usize {
    let e = parse(body, Format::Prometheus);
    e.samples.len() + e.errors.len()
}

/// prometheus-parse as its README uses it: one owned `String` per line, which its API demands.
fn prometheus_parse(body: &str) -> usize {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).map_or(0, |s| s.samples.len())
}

/// Finds every line (start and length), touching nothing else: what any line parser must do
/// at least, and the "2× of memchr" yardstick.
fn memchr_lines(body: &[u8]) -> usize {
    let mut start = 0;
    let mut sum = 0;
    for nl in memchr::memchr_iter(b'\n', body) {
        sum += nl - start;
        start = nl + 1;
    }
    sum + start
}

/// The floor for any parser that returns numbers: find every line (memchr), skip comments,
/// find the value after the last blank (memrchr) and convert it with `str::parse::<f64>`.
/// No names, no labels, no validation, no allocation: what is left between this and a real
/// parser is the work of reading names and label pairs and building the samples.
fn lines_and_values(body: &str) -> usize {
    let b = body.as_bytes();
    let mut start = 0;
    let mut n = 0;
    let mut acc = 0.0;
    while start < b.len() {
        let end = memchr::memchr(b'\n', &b[start..]).map_or(b.len(), |k| start + k);
        let line = &body[start..end];
        if !line.starts_with('#') && !line.is_empty() {
            let v = memchr::memrchr(b' ', line.as_bytes()).map_or(line, |k| &line[k + 1..]);
            if let Ok(x) = v.parse::<f64>() {
                acc += x;
                n += 1;
            }
        }
        start = end + 1;
    }
    n + usize::from(acc.is_nan())
}

/// `PARSE_ONCE=<name>`: parse the body 20 times with one implementation and exit, for
/// instruction counts under `valgrind --tool=callgrind` (see docs/performance.md).
fn once(which: &str) {
    let body = realistic::realistic_body(false);
    let f: fn(&str) -> usize = match which {
        "rollguard" => ours,
        "prometheus_parse" => prometheus_parse,
        "memchr" => |b| memchr_lines(b.as_bytes()),
        "lines_and_values" => lines_and_values,
        // Generating the body only: the baseline to subtract.
        "none" => |b| b.len(),
        other => panic!("PARSE_ONCE: unknown {other}"),
    };
    let mut n = 0;
    for _ in 0..20 {
        n += f(black_box(&body));
    }
    println!("{which}: {} bytes x 20, {n} items", body.len());
}

struct Allocs {
    allocs: usize,
    reallocs: usize,
    bytes: usize,
}

fn count_allocs(f: impl FnOnce() -> usize) -> (Allocs, usize) {
    let (a, r, b) = (
        ALLOCS.load(Relaxed),
        REALLOCS.load(Relaxed),
        BYTES.load(Relaxed),
    );
    let out = black_box(f());
    let counts = Allocs {
        allocs: ALLOCS.load(Relaxed) - a,
        reallocs: REALLOCS.load(Relaxed) - r,
        bytes: BYTES.load(Relaxed) - b,
    };
    (counts, out)
}

fn report_allocations(body: &str, samples: usize) {
    println!(
        "\nbody: {} bytes ({:.2} MB), {} sample lines",
        body.len(),
        body.len() as f64 / 1e6,
        samples
    );
    println!("allocations for one parse of that body:");
    for (name, f) in [
        ("rollguard::expo::parse", ours as fn(&str) -> usize),
        ("prometheus-parse 0.2.5", prometheus_parse),
    ] {
        let (c, n) = count_allocs(|| f(body));
        println!(
            "  {name:<24} {:>8} allocs + {:>6} reallocs = {:>6.2} per sample line, {:>6.1} MB requested ({n} items returned)",
            c.allocs,
            c.reallocs,
            (c.allocs + c.reallocs) as f64 / samples as f64,
            c.bytes as f64 / 1e6,
        );
    }
    println!();
}

fn bench_parse(c: &mut Criterion) {
    let fair = realistic::realistic_body(false);
    let real = realistic::realistic_body(true);
    report_allocations(&fair, realistic::sample_lines(&fair));

    let mut g = c.benchmark_group("parse_2MB_no_braces");
    g.throughput(Throughput::Bytes(fair.len() as u64));
    g.bench_function("rollguard_expo", |b| b.iter(|| ours(black_box(&fair))));
    g.bench_function("prometheus_parse", |b| {
        b.iter(|| prometheus_parse(black_box(&fair)))
    });
    g.bench_function("memchr_line_scan", |b| {
        b.iter(|| memchr_lines(black_box(fair.as_bytes())))
    });
    g.bench_function("memchr_lines_and_f64_values", |b| {
        b.iter(|| lines_and_values(black_box(&fair)))
    });
    g.finish();

    let mut g = c.benchmark_group("parse_2MB_realistic_braces");
    g.throughput(Throughput::Bytes(real.len() as u64));
    g.bench_function("rollguard_expo", |b| b.iter(|| ours(black_box(&real))));
    g.finish();
}

criterion_group!(benches, bench_parse);

fn main() {
    if let Ok(which) = std::env::var("PARSE_ONCE") {
        once(&which);
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

//! One daemon watching many concurrent deployments (`cargo bench --bench scale`).
//!
//! The real binary (`target/release/rollguard run`, a child process) watches N deployments,
//! each with four scraped targets (two baseline, two canary) of about 200 series, every 10 s,
//! with a three-check analysis (error ratio, latency histogram, memory growth: the shipped
//! `http-service` checks). The targets are a farm served from this bench process on
//! 127.0.0.1 (`tests/support/fleet.rs`), so its CPU is not the daemon's.
//!
//! For each N (default 10, 100, 1000; `SCALE_N=1000` for one):
//! 1. registrations spread over one interval (deployments do not all start at once);
//! 2. warm-up: 40 s (past the rule's 30 s warm-up, every judge state filled), plus
//!    `SCALE_AGE` seconds (default 0) to measure analyses that have been running longer: the
//!    judge state, kept in memory and persisted every interval, grows with analysis time;
//! 3. steady window (`SCALE_WINDOW` seconds, default 60): the daemon's CPU (utime + stime
//!    from /proc/PID/stat) as a share of one core, its RSS (VmRSS, and the peak VmHWM), and
//!    the analysis steps it completed (must be N per 10 s), and what it wrote to storage
//!    (`write_bytes` of /proc/PID/io: the SQLite WAL and checkpoints);
//! 4. fault: the canary of 10 deployments (all of them when N = 10) goes from 1 % to 10 % 5xx;
//!    for each: the lag from the fault to the persisted decision, how late the deciding step
//!    ran against its schedule (start + k × interval), and decision → rollback hook start;
//! 5. a rule edit under this load: save → new version visible in `GET /api/v1/rules`.
//!
//! Prints one markdown table. Two cores are shared with the farm (and, on a shared machine,
//! with whatever else runs): the farm's own CPU is printed too.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::daemon::Daemon;
use support::fleet::{FARM_ERROR_RATIO_CHECK, Farm};
use support::measure::{
    decision, hook_starts, median, proc_cpu_s, proc_rss_mb, quantile, timestamp_hook,
};

/// The http-service checks on the farm, never promoting during the bench.
fn rule() -> String {
    format!(
        r#"analysis: scale
description: the http-service checks, never promoting during the bench
interval: 10s
warmup: 30s
min_duration: 2h
max_duration: 3h
alpha: 0.01
no_data_grace: 2m
checks:
{FARM_ERROR_RATIO_CHECK}  - name: latency
    kind: histogram
    metric: 'http_request_duration_seconds{{job="api"}}'
    quantiles: [0.5, 0.99]
    tolerance: 1.25
  - name: memory-growth
    kind: growth
    metric: 'process_resident_memory_bytes{{job="api"}}'
    max_extra_slope: 1MiB/min
on_fail: [rollback]
"#
    )
}

const FAULTY: usize = 10;

struct Row {
    n: usize,
    cpu_core: f64,
    rss_mb: f64,
    hwm_mb: f64,
    steps_per_s: f64,
    cpu_ms_per_step: f64,
    lag_median: f64,
    lag_max: f64,
    late_median_ms: f64,
    late_max_ms: f64,
    hook_median_ms: f64,
    hook_max_ms: f64,
    reload_ms: f64,
    farm_cpu_core: f64,
    decided: usize,
    write_mb_s: f64,
}

/// Bytes the process caused to be written to storage (`write_bytes` of /proc/PID/io).
fn write_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn env_f(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn run(farm: &Farm, n: usize, window: f64) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = timestamp_hook("rollback", dir.path());
    let d = Daemon::start_with_hooks(&[("scale.yaml", &rule())], &hooks, "");
    let pid = d.pid();
    farm.clear_fault();

    // 1. Registrations spread over one interval.
    let t0 = Instant::now();
    for i in 0..n {
        sleep_until(t0 + Duration::from_secs_f64(10.0 * i as f64 / n as f64));
        let (code, v) = d.post(
            "/api/v1/deployments",
            &json!({
                "id": format!("dep-{i}"), "service": format!("svc-{}", i % 50), "analysis": "scale",
                "baseline": {"targets": farm.targets(i, "baseline"), "version": "v1"},
                "canary": {"targets": farm.targets(i, "canary"), "version": "v2"}
            }),
        );
        assert_eq!(code, 201, "{v}");
    }
    // 2. Warm-up (plus `SCALE_AGE` seconds, to let the judge states grow as in a long canary).
    sleep_until(t0 + Duration::from_secs_f64(10.0 + 40.0 + env_f("SCALE_AGE", 0.0)));
    // 3. Steady window.
    let steps0 = d.counter("rollguard_analysis_steps_total");
    let cpu0 = proc_cpu_s(pid);
    let io0 = write_bytes(pid);
    let farm0 = proc_cpu_s(std::process::id());
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(window));
    let elapsed = w0.elapsed().as_secs_f64();
    let cpu = proc_cpu_s(pid) - cpu0;
    let written = write_bytes(pid) - io0;
    let farm_cpu = proc_cpu_s(std::process::id()) - farm0;
    let steps = d.counter("rollguard_analysis_steps_total") - steps0;
    let (rss, hwm) = proc_rss_mb(pid);

    // 5 (first, so the fault phase is not disturbed): a rule edit under this load.
    let mut reloads: Vec<f64> = (0..3)
        .map(|k| d.reload_ms("scale.yaml", &rule(), k))
        .collect();

    // 4. Fault on some canaries.
    let faulty: Vec<usize> = (0..FAULTY.min(n)).map(|k| k * n / FAULTY.min(n)).collect();
    farm.set_faulty(faulty.iter().copied());
    let fault_at = farm.start_fault();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut lags = Vec::new();
    let mut late = Vec::new();
    let mut pending: Vec<usize> = faulty.clone();
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        pending.retain(|&i| {
            let id = format!("dep-{i}");
            let (_, v) = d.get(&format!("/api/v1/deployments/{id}"));
            if v["state"] != "rolled_back" {
                return true;
            }
            if let Some((started, at, t)) = decision(&d, &id) {
                lags.push(at - fault_at);
                late.push((at - (started + t)) * 1e3);
            }
            false
        });
    }
    // Hook starts, against the decision events.
    let starts = {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let s = hook_starts(dir.path());
            if s.len() >= lags.len() || Instant::now() > until {
                break s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut hook_ms: Vec<f64> = faulty
        .iter()
        .filter_map(|i| {
            let id = format!("dep-{i}");
            let (_, at, _) = decision(&d, &id)?;
            Some((starts.get(&id)? - at) * 1e3)
        })
        .collect();
    let decided = lags.len();
    if decided < faulty.len() {
        eprintln!(
            "N={n}: only {decided}/{} faulty canaries decided; log tail:\n{}",
            faulty.len(),
            d.log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    d.stop();
    farm.clear_fault();
    Row {
        n,
        cpu_core: cpu / elapsed,
        rss_mb: rss,
        hwm_mb: hwm,
        steps_per_s: steps / elapsed,
        cpu_ms_per_step: if steps > 0.0 {
            cpu / steps * 1e3
        } else {
            f64::NAN
        },
        lag_median: median(&mut lags.clone()),
        lag_max: quantile(&mut lags, 1.0),
        late_median_ms: median(&mut late.clone()),
        late_max_ms: quantile(&mut late, 1.0),
        hook_median_ms: median(&mut hook_ms.clone()),
        hook_max_ms: quantile(&mut hook_ms, 1.0),
        reload_ms: median(&mut reloads),
        farm_cpu_core: farm_cpu / elapsed,
        decided,
        write_mb_s: written / elapsed / 1e6,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale` (a few minutes)");
        return;
    }
    let ns: Vec<usize> = std::env::var("SCALE_N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let window = env_f("SCALE_WINDOW", 60.0);
    let age = env_f("SCALE_AGE", 0.0);
    let farm = Farm::start();
    println!(
        "\ntargets: {} series, {} bytes per body; 4 targets per deployment, 10 s interval; analyses {:.0} s old at the steady window ({window:.0} s); {} faulty canaries per run",
        farm.series(),
        farm.body_len(),
        age + 40.0,
        FAULTY
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for n in ns {
        let r = run(&farm, n, window);
        eprintln!(
            "N={n}: {:.3} core, {:.0} MB RSS, lag {:.1} s ({:.0} s elapsed)",
            r.cpu_core,
            r.rss_mb,
            r.lag_median,
            started.elapsed().as_secs_f64()
        );
        rows.push(r);
    }
    println!(
        "\n| deployments | targets scraped/s | daemon CPU (share of one core) | CPU per analysis step | RSS (peak) | fault → decision, median (max) | decision late vs schedule, median (max) | decision → hook start, median (max) | rule save → in force (median of 3) | state writes | farm CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.3} | {:.2} ms | {:.0} MB ({:.0} MB) | {:.1} s ({:.1} s), {}/{} decided | {:.0} ms ({:.0} ms) | {:.1} ms ({:.1} ms) | {:.0} ms | {:.1} MB/s | {:.3} |",
            r.n,
            r.steps_per_s * 4.0,
            r.cpu_core,
            r.cpu_ms_per_step,
            r.rss_mb,
            r.hwm_mb,
            r.lag_median,
            r.lag_max,
            r.decided,
            FAULTY.min(r.n),
            r.late_median_ms,
            r.late_max_ms,
            r.hook_median_ms,
            r.hook_max_ms,
            r.reload_ms,
            r.write_mb_s,
            r.farm_cpu_core
        );
    }
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}

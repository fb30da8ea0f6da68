//! What the benches measure about the daemon: when its hooks started and when it decided,
//! the CPU and memory of a process, and medians and quantiles of the samples.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::daemon::Daemon;

/// Wall-clock seconds since the Unix epoch.
pub fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A hook that records its own start time (bash's `$EPOCHREALTIME`, no extra process) and
/// the deployment, one line per run, in `<dir>/hook-starts`.
pub fn timestamp_hook(name: &str, dir: &Path) -> String {
    format!(
        "  {name}:\n    exec: [\"/bin/bash\", \"-c\", \"echo \\\"$EPOCHREALTIME $ROLLGUARD_DEPLOYMENT\\\" >> \\\"$0/hook-starts\\\"\", \"{}\"]\n    timeout: 10s\n",
        dir.display()
    )
}

/// The hook-start lines: deployment → wall time.
pub fn hook_starts(dir: &Path) -> std::collections::HashMap<String, f64> {
    std::fs::read_to_string(dir.join("hook-starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, d) = l.split_once(' ')?;
            Some((d.to_string(), t.parse::<f64>().ok()?))
        })
        .collect()
}

/// Wall time of a deployment's decision (the `decision` event, written before any hook runs),
/// and the analysis time at which it was taken.
pub fn decision(d: &Daemon, id: &str) -> Option<(f64, f64, f64)> {
    let (_, v) = d.get(&format!("/api/v1/deployments/{id}/events?after=0"));
    let evs = v["events"].as_array()?;
    let started = evs.iter().find(|e| e["kind"] == "started")?["at"].as_f64()?;
    let at = evs.iter().find(|e| e["kind"] == "decision")?["at"].as_f64()?;
    let (_, rec) = d.get(&format!("/api/v1/deployments/{id}"));
    let t = rec["elapsed_s"].as_f64()?;
    Some((started, at, t))
}

/// CPU seconds (user + system) and resident memory of a process, from /proc.
pub fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // f[0] is field 3 (state): utime = field 14 → f[11], stime = field 15 → f[12].
    (ticks(11) + ticks(12)) / clk_tck()
}

/// /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 for user space.
fn clk_tck() -> f64 {
    100.0
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MB.
pub fn proc_rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

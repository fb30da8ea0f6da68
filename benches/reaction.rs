//! How fast rollguard reacts once it knows (`cargo bench --bench reaction`, about a minute).
//!
//! * Decision → rollback hook start. 20 deployments whose canaries fail (5xx from 1 % to 10 %,
//!   1 s interval), against the real binary and the target farm of `tests/support/fleet.rs`.
//!   Two measures: the daemon's own `rollguard_decision_to_hook_seconds` histogram (from the
//!   persisted decision to the runner starting the action: the decision's transaction is
//!   committed, then the hook is owed), and, end to end, the hook's own first instruction
//!   (bash `$EPOCHREALTIME`, written by the hook process) minus the wall time of the persisted
//!   `decision` event.
//! * Rule file saved → new rule in force: 20 edits of a rule file (the file written in place),
//!   each timed until `GET /api/v1/rules` shows the new version (polled every 2 ms). The
//!   directory watch debounces events for 250 ms, which sets the floor.
//!
//! `cargo bench --bench scale` measures the same two under the load of 1 000 deployments.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::daemon::Daemon;
use support::fleet::{FARM_ERROR_RATIO_CHECK, Farm};
use support::measure::{decision, hook_starts, median, quantile, timestamp_hook};

/// The analysis: the farm's error ratio, every second, never deciding but on a failure.
fn rule() -> String {
    format!(
        "analysis: reaction\ninterval: 1s\nwarmup: 2s\nmin_duration: 1h\nmax_duration: 2h\nalpha: 0.01\nno_data_grace: 1m\nchecks:\n{FARM_ERROR_RATIO_CHECK}on_fail: [rollback]\n"
    )
}

const N: usize = 20;

/// A table row: the median, 90th percentile and maximum of `ms` (with `digits` decimals), and
/// how many there are.
fn row(what: &str, ms: &[f64], digits: usize) {
    let n = ms.len();
    let mut v = ms.to_vec();
    println!(
        "| {what} | {:.digits$} ms | {:.digits$} ms | {:.digits$} ms | {n} |",
        median(&mut v),
        quantile(&mut v, 0.9),
        quantile(&mut v, 1.0),
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("reaction: run with `cargo bench --bench reaction`");
        return;
    }
    let farm = Farm::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_hooks(
        &[("reaction.yaml", &rule())],
        &timestamp_hook("rollback", dir.path()),
        "",
    );
    farm.set_faulty(0..N);
    farm.start_fault();
    for i in 0..N {
        let (code, v) = d.post(
            "/api/v1/deployments",
            &json!({
                "id": format!("r-{i}"), "analysis": "reaction",
                "baseline": {"targets": farm.targets(i, "baseline")},
                "canary": {"targets": farm.targets(i, "canary")}
            }),
        );
        assert_eq!(code, 201, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = (0..N)
            .filter(|i| {
                let (_, v) = d.get(&format!("/api/v1/deployments/r-{i}"));
                v["actions"]
                    .as_array()
                    .and_then(|a| a.first())
                    .is_some_and(|a| a["status"] == "succeeded")
            })
            .count();
        if done == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{N} rolled back: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let starts = hook_starts(dir.path());
    let e2e: Vec<f64> = (0..N)
        .filter_map(|i| {
            let id = format!("r-{i}");
            let (_, at, _) = decision(&d, &id)?;
            Some((starts.get(&id)? - at) * 1e3)
        })
        .collect();
    let (sum, count, buckets) = d.histogram("rollguard_decision_to_hook_seconds");
    let reloads: Vec<f64> = (0..20)
        .map(|k| d.reload_ms("reaction.yaml", &rule(), k))
        .collect();
    d.stop();

    println!("\n| measure | median | p90 | max | n |");
    println!("|---|---|---|---|---|");
    row(
        "decision persisted → hook process running (hook's own clock)",
        &e2e,
        1,
    );
    row(
        "rule file saved → new version in `GET /api/v1/rules`",
        &reloads,
        0,
    );
    println!(
        "\nrollguard_decision_to_hook_seconds: {count:.0} observations, mean {:.2} ms; buckets {buckets:?}",
        if count > 0.0 {
            sum / count * 1e3
        } else {
            f64::NAN
        }
    );
}

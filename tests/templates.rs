//! Issue 4: every shipped template, replayed with `rollguard backtest` on simulated recordings:
//! it rolls back the fault it is written for and does not roll back a healthy canary.

use crate::support;

use std::path::Path;
use std::process::Command;

use rollguard::sim::{Fault, Scenario, record};
use support::BIN;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

fn backtest(analysis: &str, s: &Scenario) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let r = record(s);
    let (b, c) = r.write_to(dir.path()).unwrap();
    let out = Command::new(BIN)
        .args([
            "backtest",
            "--rules",
            RULES,
            "--analysis",
            analysis,
            "--format",
            "json",
            "--baseline",
        ])
        .args(&b)
        .arg("--canary")
        .args(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scenario(seed: u64, fault: Fault) -> Scenario {
    Scenario {
        seed,
        fault,
        duration_s: 1200.0,
        ..Scenario::default()
    }
}

fn assert_verdict(analysis: &str, s: &Scenario, want: &[&str]) -> serde_json::Value {
    let v = backtest(analysis, s);
    assert!(
        want.contains(&v["verdict"].as_str().unwrap()),
        "{analysis} on {:?}: {v:#}",
        s.fault
    );
    v
}

/// The template rolls back `fault` (seed `seed`) and does not roll back a healthy canary (seed
/// `seed + 1`); the verdict on the fault.
fn rolls_back_the_fault_only(analysis: &str, seed: u64, fault: Fault) -> serde_json::Value {
    let v = assert_verdict(analysis, &scenario(seed, fault), &["rollback"]);
    let healthy = scenario(seed + 1, Fault::None);
    assert_verdict(analysis, &healthy, &["promote", "inconclusive"]);
    v
}

#[test]
fn templates_exist_and_check() {
    for f in [
        "http-service",
        "memory-leak",
        "db-pool",
        "rate-limit",
        "blue-green",
    ] {
        assert!(Path::new(RULES).join(format!("{f}.yaml")).exists(), "{f}");
    }
}

#[test]
fn http_service() {
    let v = assert_verdict(
        "http-service",
        &scenario(101, Fault::ErrorRatio { factor: 5.0 }),
        &["rollback"],
    );
    assert!(
        v["checks"][0]["explanation"]
            .as_str()
            .unwrap()
            .contains("canary error-ratio"),
        "{v:#}"
    );
    rolls_back_the_fault_only("http-service", 102, Fault::LatencyMedian { factor: 1.5 });
}

#[test]
fn memory_leak() {
    let v = rolls_back_the_fault_only("memory-leak", 104, Fault::Leak { mib_per_min: 5.0 });
    assert!(v["decided_at_s"].as_f64().unwrap() < 900.0, "{v:#}");
}

#[test]
fn db_pool() {
    assert_verdict(
        "db-pool",
        &scenario(106, Fault::PoolExhaustion),
        &["rollback"],
    );
    assert_verdict("db-pool", &scenario(107, Fault::None), &["promote"]);
    // A connection leak (1 a minute from 2 minutes in) is rolled back by the climb of
    // connections in use, before any request has waited for a connection.
    let leak = scenario(111, Fault::ConnectionLeak { per_min: 1.0 });
    let v = assert_verdict("db-pool", &leak, &["rollback"]);
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["connections-held"], "{v:#}");
    let first_wait = first_pool_wait_s(&leak).expect("the leak makes requests wait in the end");
    let decided = v["decided_at_s"].as_f64().unwrap();
    assert!(
        decided < first_wait,
        "decided at {decided} s, requests waited from {first_wait} s: {v:#}"
    );
}

/// Seconds into the recording at which a canary first had requests waiting for a connection.
fn first_pool_wait_s(s: &Scenario) -> Option<f64> {
    let r = record(&Scenario {
        duration_s: 3600.0,
        ..s.clone()
    });
    let start = 1_767_225_600.0;
    r.canary
        .iter()
        .flat_map(|text| text.lines())
        .filter(|l| l.starts_with("hikaricp_connections_pending{"))
        .filter_map(|l| {
            let mut f = l.rsplit(' ');
            let ts: f64 = f.next()?.parse().ok()?;
            let v: f64 = f.next()?.parse().ok()?;
            (v > 0.0).then_some(ts - start)
        })
        .reduce(f64::min)
}

#[test]
fn rate_limit() {
    rolls_back_the_fault_only("rate-limit", 108, Fault::RateLimit { share: 0.05 });
}

#[test]
fn blue_green() {
    rolls_back_the_fault_only("blue-green", 110, Fault::ErrorRatio { factor: 3.0 });
}

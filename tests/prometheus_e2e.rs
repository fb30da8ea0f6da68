//! The real binary judging deployments through a real Prometheus that scrapes simulated
//! fleets served by the test: a bad canary is rolled back, a good one promoted, and when
//! Prometheus dies mid-analysis nothing is rolled back, one "metrics backend down" alert goes
//! to the ops notifier, and the analyses resume by themselves when it is back.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::prometheus::{Prometheus, Target};
use support::receivers::Recorder;
use support::{Daemon, FleetServer, RATIO_RULE};

const INSTANCES: [&str; 4] = ["baseline-0", "baseline-1", "canary-0", "canary-1"];

/// Prometheus targets for a fleet: its instances expose `instance` and `job` themselves
/// (`honor_labels`), and Prometheus adds `fleet`.
fn targets(fleet: &FleetServer, name: &str) -> Vec<Target> {
    INSTANCES
        .iter()
        .map(|i| Target {
            address: fleet.addr.to_string(),
            path: format!("/{i}/metrics"),
            labels: vec![("fleet".into(), name.into())],
        })
        .collect()
}

fn deployment(id: &str, fleet: &str, timing: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id,
        "service": "checkout",
        "analysis": "errors",
        "baseline": { "selector": format!(r#"fleet="{fleet}",instance=~"baseline-.*""#), "version": "v1" },
        "canary": { "selector": format!(r#"fleet="{fleet}",instance=~"canary-.*""#), "version": "v2" },
        "timing": timing
    })
}

/// `rollguard backtest` replaying `[from_s, now]` from a Prometheus server (`source`: the
/// `--prometheus URL` or `--config FILE` arguments) for one fleet's deployment; its JSON.
fn backtest_from_prometheus(
    rules: &std::path::Path,
    analysis: &str,
    fleet: &str,
    source: &[&str],
    from_s: u64,
) -> serde_json::Value {
    let out = std::process::Command::new(support::BIN)
        .arg("backtest")
        .arg("--rules")
        .arg(rules)
        .args(["--analysis", analysis, "--format", "json", "--from"])
        .arg(from_s.to_string())
        .args(source)
        .arg("--baseline-selector")
        .arg(format!(r#"fleet="{fleet}",instance=~"baseline-.*""#))
        .arg("--canary-selector")
        .arg(format!(r#"fleet="{fleet}",instance=~"canary-.*""#))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn prometheus_config(prom: &Prometheus) -> String {
    format!(
        "prometheus:\n  url: {}\n  timeout: 1s\n  max_backoff: 2s\n",
        prom.url
    )
}

/// A bad and a good fleet scraped by a real Prometheus, and a daemon judging one deployment
/// of `analysis` per fleet (ids `bad` and `good`).
struct TwoFleets {
    bad: FleetServer,
    _good: FleetServer,
    prom: Prometheus,
    d: Daemon,
    /// Unix seconds just before the deployments were registered.
    registered: u64,
}

fn two_fleets(seeds: (u64, u64), rule: (&str, &str), analysis: &str) -> TwoFleets {
    let bad = FleetServer::bad(seeds.0);
    let good = FleetServer::good(seeds.1);
    let mut all = targets(&bad, "bad");
    all.extend(targets(&good, "good"));
    let prom = Prometheus::start(&all);
    prom.wait_series("http_requests_total", 8, Duration::from_secs(30));
    let d = Daemon::start(&[rule], &prometheus_config(&prom));
    let registered = unix_now();
    for (id, fleet) in [("bad", "bad"), ("good", "good")] {
        let mut req = deployment(id, fleet, json!({}));
        req["analysis"] = json!(analysis);
        d.register(&req);
    }
    TwoFleets {
        bad,
        _good: good,
        prom,
        d,
        registered,
    }
}

#[test]
fn prometheus_source_rolls_back_a_bad_canary_and_promotes_a_good_one() {
    // Bound whole: every part must live until the end (the fleets and Prometheus serve).
    let f = two_fleets((31, 32), ("errors.yaml", RATIO_RULE), "errors");
    let (prom, d, registered) = (&f.prom, &f.d, f.registered);
    let v = d.wait_done("bad", Duration::from_secs(60));
    support::assert_rolled_back_by_the_ratio_check(&v);
    let v = d.wait_done("good", Duration::from_secs(60));
    assert_eq!(v["state"], "promoted", "{v:#}");
    assert_eq!(
        sorted_markers(d, 2),
        vec![
            "promote good".to_string(),
            format!("rollback bad {}", support::hook_action_id(&d.url, "bad"))
        ]
    );
    // The same analysis replayed from Prometheus (one range query per selector and arm) gives
    // the daemon's verdicts. The replay evaluates at other instants than the daemon did, so
    // it gets the whole analysis (max_duration 30 s): a window cut at the daemon's decision
    // can end just short of a pass the daemon found a moment earlier (seen on a loaded host).
    let whole = registered + 31;
    std::thread::sleep(Duration::from_secs(whole.saturating_sub(unix_now())));
    let rules = d.dir.path().join("rules");
    for (fleet, verdict) in [("bad", "rollback"), ("good", "promote")] {
        let v = backtest_from_prometheus(
            &rules,
            "errors",
            fleet,
            &["--prometheus", &prom.url],
            registered,
        );
        assert_eq!(v["verdict"], verdict, "{fleet}: {v:#}");
    }
    // A growth check reads each instance's start time through Prometheus: the fleet's arms
    // started together, so nothing waits for a canary warming up alone; a start-time metric
    // that does not exist reads as unknown, and growth waits.
    let dir = tempfile::tempdir().expect("tempdir");
    let growth = |start: &str| {
        format!(
            "analysis: growth\ninterval: 1s\nwarmup: 2s\nmin_duration: 5s\nmax_duration: 1h\nchecks:\n  - name: memory\n    kind: growth\n    metric: process_resident_memory_bytes\n    start_time: {start}\n    max_extra_slope: 1MiB/min\n"
        )
    };
    for (start, waits) in [
        ("process_start_time_seconds", false),
        ("no_such_metric", true),
    ] {
        std::fs::write(dir.path().join("growth.yaml"), growth(start)).expect("rule");
        let v = backtest_from_prometheus(
            dir.path(),
            "growth",
            "good",
            &["--prometheus", &prom.url],
            registered,
        );
        let why = v["checks"][0]["explanation"].as_str().unwrap_or_default();
        assert_eq!(
            why.contains("start times are unknown"),
            waits,
            "{start}: {why}"
        );
        assert!(!why.contains("warms up alone"), "{start}: {why}");
    }
}

/// The hook marker lines, sorted, once there are at least `n`.
fn sorted_markers(d: &Daemon, n: usize) -> Vec<String> {
    let mut lines = support::wait_for(Duration::from_secs(20), || {
        Some(d.marker_lines()).filter(|l| l.len() >= n)
    })
    .unwrap();
    lines.sort();
    lines
}

/// The error-ratio rule with its hold and failure notices going to the `ops` webhook too, so
/// the test sees any per-deployment alert that the circuit breaker should have suppressed.
fn outage_rule() -> String {
    support::daemon::ratio_rule_timed("min_duration: 30s\nmax_duration: 150s\nno_data_grace: 2s\n")
        .replace(
            "on_fail: [rollback]",
            "on_fail: [rollback, ops]\non_no_data: [ops]",
        )
}

#[test]
fn prometheus_outage_mid_analysis_holds_alerts_once_and_resumes() {
    let fleet = FleetServer::healthy(33, 20.0);
    let mut prom = Prometheus::start(&targets(&fleet, "shop"));
    prom.wait_series("http_requests_total", 4, Duration::from_secs(30));
    let ops = Recorder::start();
    let extra = format!(
        "source_grace: 3s\n{}notifiers:\n  ops:\n    webhook:\n      url: {}\nops_notifiers: [ops]\n",
        prometheus_config(&prom),
        ops.url
    );
    let d = Daemon::start(&[("errors.yaml", &outage_rule())], &extra);
    let ids = ["shop-1", "shop-2", "shop-3"];
    for id in ids {
        d.register(&deployment(id, "shop", json!({})));
    }
    // Data flows for every deployment before the outage.
    for id in ids {
        support::wait_for(Duration::from_secs(30), || {
            let (_, v) = d.get(&format!("/api/v1/deployments/{id}"));
            matches!(v["checks"][0]["outcome"].as_str(), Some("pending" | "pass")).then_some(())
        })
        .unwrap_or_else(|| panic!("{id} never saw data; log:\n{}", d.log()));
    }

    prom.stop();
    let down = ops
        .wait_kind("backend_down", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no backend_down alert; log:\n{}", d.log()));
    assert!(
        down["title"]
            .as_str()
            .unwrap()
            .contains("Metrics backend down (prometheus)"),
        "{down}"
    );
    assert!(
        down["text"]
            .as_str()
            .unwrap()
            .contains("3 of 3 running deployments cannot reach the Prometheus query API"),
        "{down}"
    );
    for id in ids {
        let v = d.wait_state(
            id,
            &["held", "rolled_back", "promoted", "inconclusive"],
            Duration::from_secs(30),
        );
        support::daemon::assert_held_by_failing_source(&v);
    }
    // Held a few more intervals: still one alert, no per-deployment hold alerts, no action.
    let m = d.metrics();
    assert!(m.contains("rollguard_metrics_backend_down 1"), "{m}");
    assert_eq!(ops.of_kind("backend_down").len(), 1);
    assert_eq!(
        ops.of_kind("held").len(),
        0,
        "the breaker speaks for all held deployments: {:#?}",
        ops.bodies()
    );
    assert!(
        d.marker_lines().is_empty(),
        "nothing may be rolled back or promoted: {:?}",
        d.marker_lines()
    );

    prom.restart();
    ops.wait_kind("backend_recovered", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no backend_recovered alert; log:\n{}", d.log()));
    for id in ids {
        let v = d.wait_done(id, Duration::from_secs(120));
        assert_eq!(v["state"], "promoted", "{v:#}");
    }
    assert_eq!(ops.of_kind("backend_down").len(), 1, "{:#?}", ops.bodies());
    assert_eq!(
        ops.of_kind("backend_recovered").len(),
        1,
        "{:#?}",
        ops.bodies()
    );
    assert_eq!(ops.of_kind("held").len(), 0);
    assert_eq!(ops.of_kind("rollback_started").len(), 0);
    assert_eq!(
        sorted_markers(&d, 3),
        vec!["promote shop-1", "promote shop-2", "promote shop-3"]
    );
}

/// A bake: the whole fleet runs the new version (the canary selector), judged against the same
/// instances' recorded behaviour `offset` ago through Prometheus. A version whose error rate
/// jumped after the rollout is rolled back.
#[test]
fn bake_compares_with_the_recorded_past_and_rolls_back() {
    // The fault starts 15 s (wall) into the fleet's life; the bake starts once Prometheus sees
    // it, reading the baseline 14 s in the past, when the fleet was still healthy.
    let fleet = FleetServer::failing_from(15.0 * 20.0, 41, 20.0);
    let prom = Prometheus::start(&targets(&fleet, "bake"));
    prom.wait_series("http_requests_total", 4, Duration::from_secs(30));
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], &prometheus_config(&prom));
    // Wait until Prometheus sees the new version misbehave.
    support::wait_for(Duration::from_secs(60), || {
        let r = prom.query(r#"sum(increase(http_requests_total{fleet="bake",code=~"5.."}[3s])) / sum(increase(http_requests_total{fleet="bake"}[3s]))"#);
        let v: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
        (v > 0.04).then_some(())
    })
    .expect("the fault shows in Prometheus");
    d.register(&json!({
        "id": "bake", "service": "checkout", "analysis": "errors",
        "strategy": { "type": "bake", "watch": "20s" },
        "baseline": { "selector": r#"fleet="bake""#, "offset": "14s", "version": "v1" },
        "canary": { "selector": r#"fleet="bake""#, "version": "v2" }
    }));
    let v = d.wait_done("bake", Duration::from_secs(60));
    assert_eq!(v["state"], "rolled_back", "{v:#}\n{}", d.log());
    // Without an offset a bake is refused with a reason.
    let (code, v) = d.post(
        "/api/v1/deployments",
        &json!({"id": "bake2", "analysis": "errors", "strategy": {"type": "bake"},
                "baseline": {"selector": r#"fleet="bake""#}, "canary": {"selector": r#"fleet="bake""#}}),
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("baseline.offset"),
        "{v}"
    );
}

/// An analysis whose only check is PromQL written in the rule: the canary's error ratio over
/// a window, against an absolute ceiling, with the window a parameter.
const WRITTEN_RULE: &str = r#"analysis: written
params:
  window: 10s
interval: 1s
warmup: 3s
min_duration: 8s
max_duration: 30s
no_data_grace: 5s
checks:
  - name: error-ceiling
    kind: threshold
    query: |
      sum(rate(http_requests_total{ {{arm}}, code=~"5.." }[{{window}}]))
        / sum(rate(http_requests_total{ {{arm}} }[{{window}}]))
    max: 0.03
    for: 2s
on_fail: [rollback]
on_pass: [promote]
"#;

/// A written `query:` runs a whole analysis through a real Prometheus: the canary whose error
/// ratio (8 %) crosses the ceiling is rolled back by that check, the healthy one (1 %)
/// promoted, and an analysis with a written query is refused for scraped arms.
#[test]
fn a_written_query_rolls_back_a_bad_canary_and_promotes_a_good_one() {
    let f = two_fleets((51, 52), ("written.yaml", WRITTEN_RULE), "written");
    let (bad, d, registered) = (&f.bad, &f.d, f.registered);
    let v = d.wait_done("bad", Duration::from_secs(60));
    assert_eq!(v["state"], "rolled_back", "{v:#}\n{}", d.log());
    let check = &v["checks"][0];
    assert_eq!(check["outcome"], "fail", "{check}");
    let why = check["explanation"].as_str().unwrap();
    assert!(why.contains("above 0.03"), "{why}");
    let v = d.wait_done("good", Duration::from_secs(60));
    assert_eq!(v["state"], "promoted", "{v:#}\n{}", d.log());
    // A written query can be backtested from Prometheus, with the daemon's own config.
    let rules = d.dir.path().join("rules");
    let config = d.dir.path().join("config.yaml");
    let config = ["--config", config.to_str().unwrap()];
    for (fleet, verdict) in [("bad", "rollback"), ("good", "promote")] {
        let v = backtest_from_prometheus(&rules, "written", fleet, &config, registered);
        assert_eq!(v["verdict"], verdict, "{fleet}: {v:#}");
        assert_eq!(v["checks"][0]["name"], "error-ceiling");
    }

    let (code, v) = d.post(
        "/api/v1/deployments",
        &json!({"id": "scraped", "analysis": "written",
                "baseline": {"targets": [bad.target("baseline-0")]},
                "canary": {"targets": [bad.target("canary-0")]}}),
    );
    assert_eq!(code, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("`error-ceiling`") && e.contains("needs the Prometheus source"),
        "{e}"
    );
}

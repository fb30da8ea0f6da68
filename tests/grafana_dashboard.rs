//! Issue 15: the Grafana dashboard (packaging/grafana/rollguard.json) queries only metrics
//! the daemon exports, and covers what the issue asks for: deployments by state, evidence
//! per check against its threshold, decision-to-hook latency, hook and notifier failures,
//! source errors, deployment frequency and change failure rate.

use crate::support;

use std::collections::BTreeSet;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, FleetServer, RATIO_RULE};

const DASHBOARD: &str = include_str!("../packaging/grafana/rollguard.json");

/// Every `rollguard_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rollguard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The families of an OpenMetrics exposition: name → type.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// Whether a series name in a query belongs to an exported family (counters are queried
/// as `_total`, histograms as `_bucket`, `_sum`, `_count`).
fn exported(name: &str, fams: &[(String, String)]) -> bool {
    fams.iter().any(|(f, t)| {
        let suffixes: &[&str] = match t.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        suffixes.iter().any(|s| format!("{f}{s}") == name)
    })
}

#[test]
fn every_query_names_an_exported_metric() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    assert_eq!(dash["uid"], "rollguard");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate id: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel without a query: {}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{}: no rollguard metric in {expr}",
                p["title"]
            );
            used.extend(names);
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["definition"].as_str() {
            used.extend(metric_names(q));
        }
    }

    // What the daemon registers, also families with no series yet (the exposition leaves
    // those out) ...
    let registered: Vec<(String, String)> = rollguard::telemetry::Telemetry::new()
        .families()
        .iter()
        .map(|(n, t)| (n.clone(), t.to_string()))
        .collect();
    let missing: Vec<&String> = used.iter().filter(|n| !exported(n, &registered)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the daemon does not export: {missing:?}\nexported: {registered:?}"
    );
    // ... and what a real daemon serves after a real rollback has the same names and types.
    let fleet = FleetServer::bad(171);
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    d.register(&json!({
        "id": "dash", "analysis": "errors",
        "baseline": { "targets": [fleet.target("baseline-0")] },
        "canary": { "targets": [fleet.target("canary-0")] }
    }));
    d.wait_state("dash", &["rolled_back"], Duration::from_secs(60));
    let text = support::wait_for(Duration::from_secs(20), || {
        let text = d.metrics();
        text.contains("rollguard_hook_runs_total{").then_some(text)
    })
    .expect("the rollback hook's run is counted");
    let served = families(&text);
    for f in &served {
        assert!(
            registered.contains(f),
            "{f:?} served but not listed by families()"
        );
    }
    for series in [
        "rollguard_deployments_finished_total{",
        "rollguard_decision_to_hook_seconds_bucket{",
        "rollguard_active_deployments{",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    for needed in [
        "rollguard_active_deployments",
        "rollguard_deployments_finished_total",
        "rollguard_check_evidence",
        "rollguard_check_threshold",
        "rollguard_decision_to_hook_seconds_bucket",
        "rollguard_hook_runs_total",
        "rollguard_notifications_total",
        "rollguard_source_errors_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

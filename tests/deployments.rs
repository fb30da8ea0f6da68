//! Issue 7: deployments registered through the API, the CLI and drop-in files reach
//! `promoted` and `rolled_back`; `--wait` exit codes; canary steps and blue-green switches call
//! their hooks once each, also across a kill -9; person actions; auth and size limits.

use crate::support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{BIN, Daemon, FleetServer, RATIO_RULE, wait_for};

/// Hooks that append `<purpose> <weight>` to the marker (indented into the `hooks:` map).
fn step_hooks(marker: &std::path::Path) -> String {
    format!(
        "  step:\n    exec: [\"/bin/sh\", \"-c\", \"echo \\\"step $ROLLGUARD_WEIGHT\\\" >> \\\"$0\\\"\", \"{m}\"]\n  switch:\n    exec: [\"/bin/sh\", \"-c\", \"echo switch >> \\\"$0\\\"\", \"{m}\"]\n",
        m = marker.display()
    )
}

/// `rollguard deploy --server <daemon> <args>`: exit code and output.
fn cli(d: &Daemon, args: &[&str]) -> (i32, String) {
    let mut all = vec!["deploy", "--server", &d.url];
    all.extend_from_slice(args);
    support::cli(&d.url, &all)
}

#[test]
fn cli_wait_exit_codes() {
    let bad = FleetServer::bad(31);
    let good = FleetServer::good(32);
    let short = RATIO_RULE
        .replace("analysis: errors", "analysis: errors-short")
        .replace("max_duration: 30s", "max_duration: 8s");
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE), ("short.yaml", &short)], "");
    let start = |id: &str, analysis: &str, f: &FleetServer, canary: &str| {
        cli(
            &d,
            &[
                "start",
                "--id",
                id,
                "--analysis",
                analysis,
                "--service",
                "shop",
                "--baseline",
                &f.target("baseline-0"),
                &f.target("baseline-1"),
                "--canary",
                canary,
                "--wait",
                "--timeout",
                "2m",
            ],
        )
    };
    let (code, out) = start("cli-bad", "errors", &bad, &bad.target("canary-0"));
    assert_eq!(code, 1, "rolled back → exit 1\n{out}");
    assert!(out.contains("rolled_back"), "{out}");
    let (code, out) = start("cli-good", "errors", &good, &good.target("canary-0"));
    assert_eq!(code, 0, "promoted → exit 0\n{out}");
    // A canary nobody can scrape: held, then inconclusive at max_duration → exit 2.
    let (code, out) = start(
        "cli-dead",
        "errors-short",
        &good,
        "http://127.0.0.1:9/metrics",
    );
    assert_eq!(code, 2, "inconclusive → exit 2\n{out}");
    // list and status
    let (code, out) = cli(&d, &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("cli-bad") && out.contains("rolled_back") && out.contains("cli-good"),
        "{out}"
    );
    let (code, out) = cli(&d, &["--json", "status", "cli-good"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["state"], "promoted");
}

#[test]
fn drop_in_files_register_deployments() {
    let bad = FleetServer::bad(33);
    let good = FleetServer::good(34);
    let dir = tempfile::tempdir().unwrap();
    let dropins = dir.path().join("deployments");
    std::fs::create_dir_all(&dropins).unwrap();
    let d = Daemon::start_in(
        dir,
        &[("errors.yaml", RATIO_RULE)],
        "deployments_dir: deployments\n",
    );
    let file = |id: &str, f: &FleetServer| {
        format!(
            "id: {id}\nservice: shop\nanalysis: errors\nbaseline:\n  targets: [\"{}\", \"{}\"]\ncanary:\n  targets: [\"{}\"]\n",
            f.target("baseline-0"),
            f.target("baseline-1"),
            f.target("canary-0")
        )
    };
    std::fs::write(dropins.join("bad.yaml"), file("drop-bad", &bad)).unwrap();
    std::fs::write(dropins.join("good.yaml"), file("drop-good", &good)).unwrap();
    // A broken file is reported and does not stop the others.
    std::fs::write(dropins.join("broken.yaml"), "id: x\nanalyss: errors\n").unwrap();
    let v = wait_for(Duration::from_secs(30), || {
        let (code, v) = d.get("/api/v1/deployments/drop-bad");
        (code == 200).then_some(v)
    })
    .unwrap_or_else(|| panic!("drop-in not registered; log:\n{}", d.log()));
    assert_eq!(v["request"]["service"], "shop");
    assert_eq!(
        d.wait_done("drop-bad", Duration::from_secs(60))["state"],
        "rolled_back"
    );
    wait_for(Duration::from_secs(30), || {
        (d.get("/api/v1/deployments/drop-good").0 == 200).then_some(())
    })
    .unwrap();
    assert_eq!(
        d.wait_done("drop-good", Duration::from_secs(60))["state"],
        "promoted"
    );
    support::assert_logged(&d.log(), "broken.yaml:2:1: unknown field `analyss`");
}

#[test]
fn canary_steps_call_the_step_hook_in_order_across_a_kill_9() {
    let good = FleetServer::good(35);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("steps");
    let rule = RATIO_RULE
        .replace("on_pass: [promote]", "on_pass: [promote]\non_step: [step]")
        .replace("max_duration: 30s", "max_duration: 60s");
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &step_hooks(&marker));
    d.register(&json!({"id": "steps", "analysis": "errors", "strategy": {"type": "canary", "steps": [25, 50, 100], "step_duration": "3s"},
                "baseline": {"targets": [good.target("baseline-0"), good.target("baseline-1")]}, "canary": {"targets": [good.target("canary-0")]}}));
    let lines = || {
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Crash once the second step has been taken, then restart on the same state.
    wait_for(Duration::from_secs(40), || {
        (lines().len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("steps: {:?}\n{}", lines(), d.log()));
    let dir = d.crash();
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &step_hooks(&marker));
    let v = d.wait_done("steps", Duration::from_secs(90));
    assert_eq!(v["state"], "promoted", "{v:#}");
    wait_for(Duration::from_secs(10), || {
        (lines().len() >= 3).then_some(())
    });
    assert_eq!(
        lines(),
        vec!["step 25", "step 50", "step 100"],
        "each step once, in order"
    );
    // The state says promoted once the decision is recorded; the hook runs just after.
    let promotes = || {
        d.marker_lines()
            .iter()
            .filter(|l| l.starts_with("promote"))
            .count()
    };
    wait_for(Duration::from_secs(10), || (promotes() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("no promote hook ran\n{}", d.log()));
    assert_eq!(promotes(), 1);
}

#[test]
fn a_canary_takes_all_traffic_only_once_the_comparison_passed() {
    // The step hook moves the simulated fleet's traffic as a mesh would: at 100 % the
    // baseline serves nothing, so the comparison has to be done before that step.
    let fleet = FleetServer::good(37);
    let dir = tempfile::tempdir().unwrap();
    let rule = RATIO_RULE
        .replace("on_pass: [promote]", "on_pass: [promote]\non_step: [weight]")
        .replace("    tolerance: 1.5\n", "    tolerance: 1.5\n  - name: ceiling\n    kind: threshold\n    errors: 'http_requests_total{code=~\"5..\"}'\n    requests: 'http_requests_total'\n    max: 0.05\n");
    let hooks = format!(
        "  weight:\n    http:\n      url: \"http://{}/admin/weight\"\n      body: {{weight: \"{{{{weight}}}}\"}}\n",
        fleet.addr
    );
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &hooks);
    d.register(&json!({"id": "all-in", "analysis": "errors", "strategy": {"type": "canary", "steps": [50, 100], "step_duration": "2s"},
                "baseline": {"targets": [fleet.target("baseline-0"), fleet.target("baseline-1")]}, "canary": {"targets": fleet.canaries()}}));
    let v = d.wait_done("all-in", Duration::from_secs(90));
    assert_eq!(v["state"], "promoted", "{v:#}\n{}", d.log());
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("proven within tolerance")
            && reason.contains("then held up with all traffic for"),
        "{reason}"
    );
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        !kinds.contains(&"held"),
        "never held for want of baseline traffic: {kinds:?}"
    );
    // The step to 100 % came after the comparison had run its minimum duration.
    let step_100 = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("weight 100"))
        })
        .unwrap_or_else(|| panic!("no step to 100 %: {kinds:?}"));
    let started = v["events"][0]["at"].as_f64().unwrap_or_default();
    assert!(
        step_100["at"].as_f64().unwrap_or_default() - started >= 8.0,
        "{step_100:#}"
    );
    let weights: Vec<String> = fleet
        .fleet
        .log()
        .into_iter()
        .filter(|l| l.contains("canary weight"))
        .collect();
    assert_eq!(weights.len(), 2, "{weights:?}");
    assert!(
        weights[0].contains("weight 50 %") && weights[1].contains("weight 100 %"),
        "{weights:?}"
    );
}

#[test]
fn blue_green_switches_then_watches_and_switches_back() {
    // Green is fine during verification, then serves 8 % errors after the switch.
    let fleet = FleetServer::failing_from(12.0 * 50.0, 36, 50.0);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("switches");
    let rule = RATIO_RULE
        .replace("on_fail: [rollback]", "on_fail: [rollback]\non_pass: [switch]")
        .replace("on_pass: [promote]\n", "")
        .replace("    tolerance: 1.5\n", "    tolerance: 1.5\n  - name: ceiling\n    kind: threshold\n    errors: 'http_requests_total{code=~\"5..\"}'\n    requests: 'http_requests_total'\n    max: 0.05\n");
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &step_hooks(&marker));
    d.register(&json!({"id": "bg", "analysis": "errors", "strategy": {"type": "blue-green", "post_switch": "60s"},
                "baseline": {"targets": [fleet.target("baseline-0"), fleet.target("baseline-1")]}, "canary": {"targets": [fleet.target("canary-0"), fleet.target("canary-1")]}}));
    let v = d.wait_done("bg", Duration::from_secs(90));
    assert_eq!(v["state"], "rolled_back", "{v:#}");
    let events: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    let switch = events.iter().position(|k| k == "switch").expect("switched");
    let decision = events
        .iter()
        .position(|k| k == "decision")
        .expect("decided");
    assert!(switch < decision, "{events:?}");
    assert!(
        v["reason"].as_str().unwrap().starts_with("ceiling"),
        "{v:#}"
    );
    wait_for(Duration::from_secs(10), || {
        (!d.marker_lines().is_empty()).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        vec!["switch"]
    );
    assert_eq!(d.marker_lines().len(), 1, "switched back once");
}

#[test]
fn person_actions_pause_promote_abort() {
    let good = FleetServer::good(37);
    let d = Daemon::start(
        &[(
            "errors.yaml",
            &RATIO_RULE
                .replace("max_duration: 30s", "max_duration: 10m")
                .replace("min_duration: 8s", "min_duration: 10m"),
        )],
        "",
    );
    let body = |id: &str| json!({"id": id, "analysis": "errors", "baseline": {"targets": [good.target("baseline-0")]}, "canary": {"targets": [good.target("canary-0")]}});
    assert_eq!(d.post("/api/v1/deployments", &body("p1")).0, 201);
    assert_eq!(d.post("/api/v1/deployments", &body("p2")).0, 201);
    let (code, v) = d.post(
        "/api/v1/deployments/p1/pause",
        &json!({"who": "alice", "reason": "change freeze"}),
    );
    assert_eq!(code, 202, "{v}");
    let v = d.wait_state("p1", &["held"], Duration::from_secs(10));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("paused by alice: change freeze"),
        "{v}"
    );
    assert_eq!(
        d.post("/api/v1/deployments/p1/resume", &json!({"who": "alice"}))
            .0,
        202
    );
    assert_eq!(
        d.post(
            "/api/v1/deployments/p1/promote",
            &json!({"who": "bob", "reason": "looks fine"})
        )
        .0,
        202
    );
    assert_eq!(
        d.wait_state("p1", &["promoted"], Duration::from_secs(10))["state"],
        "promoted"
    );
    assert_eq!(
        d.post("/api/v1/deployments/p2/abort", &json!({"who": "carol"}))
            .0,
        202
    );
    assert_eq!(
        d.wait_state("p2", &["aborted"], Duration::from_secs(10))["state"],
        "aborted"
    );
    wait_for(Duration::from_secs(10), || {
        (d.marker_lines().len() >= 2).then_some(())
    })
    .unwrap();
    let mut lines = d.marker_lines();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "promote p1".to_string(),
            format!("rollback p2 {}", support::hook_action_id(&d.url, "p2"))
        ]
    );
    // Finished deployments refuse further actions; unknown ones are 404.
    assert_eq!(d.post("/api/v1/deployments/p1/abort", &json!({})).0, 409);
    assert_eq!(d.post("/api/v1/deployments/nope/abort", &json!({})).0, 404);
    assert_eq!(d.post("/api/v1/deployments/p1/explode", &json!({})).0, 404);
}

#[test]
fn bearer_token_and_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cr3t-token-for-tests\n").unwrap();
    let d = Daemon::start_in(
        dir,
        &[("errors.yaml", RATIO_RULE)],
        "api_token_file: token\n",
    );
    let url = format!("{}/api/v1/deployments", d.url);
    let (code, v) = support::http("GET", &url, None, None);
    assert_eq!(code, 401, "{v}");
    let (code, _) = support::http("GET", &url, None, Some("wrong-token-wrong-token"));
    assert_eq!(code, 401);
    let (code, _) = support::http("GET", &url, None, Some("s3cr3t-token-for-tests"));
    assert_eq!(code, 200);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(
        support::http("GET", &format!("{}/healthz", d.url), None, None).0,
        200
    );
    // Oversized bodies are refused before parsing.
    let big = json!({"id": "x".repeat(400_000)});
    let (code, _) = support::http("POST", &url, Some(&big), Some("s3cr3t-token-for-tests"));
    assert_eq!(code, 413);
}

#[test]
fn non_loopback_listener_requires_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/errors.yaml"), RATIO_RULE).unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "listen: 0.0.0.0:0\nrules_dir: rules\nstate_dir: state\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("api_token_file` is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

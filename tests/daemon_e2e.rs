//! Issue 2's black-box tests: the real binary, real HTTP targets, real hook processes.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, FleetServer, RATIO_RULE};

/// A daemon with the ratio rule, `id` registered against all of `fleet`'s canaries, and the
/// deployment as it ended.
fn run_to_the_end(fleet: &FleetServer, id: &str) -> (Daemon, serde_json::Value) {
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    d.register(&fleet.deployment(id, &fleet.canaries()));
    let v = d.wait_done(id, Duration::from_secs(60));
    (d, v)
}

#[test]
fn bad_canary_is_rolled_back_and_the_hook_runs_once() {
    let fleet = FleetServer::bad(11);
    let (d, v) = run_to_the_end(&fleet, "bad");
    support::assert_rolled_back_by_the_ratio_check(&v);
    assert!(v["checks"][0]["evidence"].as_f64().unwrap() >= 100.0);
    // The hook's side effect, exactly once.
    let lines = d.wait_marker();
    assert_eq!(
        lines,
        vec![format!(
            "rollback bad {}",
            support::hook_action_id(&d.url, "bad")
        )]
    );
    // A retried registration is idempotent and does not start a second analysis.
    let (code, _) = d.post(
        "/api/v1/deployments",
        &fleet.deployment("bad", &fleet.canaries()),
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.marker_lines().len(), 1);
}

#[test]
fn good_canary_is_promoted() {
    let (d, v) = run_to_the_end(&FleetServer::good(12), "good");
    assert_eq!(v["state"], "promoted", "{v:#}");
    let lines = d.wait_marker();
    assert_eq!(lines, vec!["promote good".to_string()]);
}

#[test]
fn dead_canary_target_is_held_never_rolled_back() {
    let fleet = FleetServer::healthy(13, 20.0);
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    // Nothing listens on port 9 (discard) on loopback here: connection refused.
    let mut body = fleet.deployment("dead", &["http://127.0.0.1:9/metrics".into()]);
    body["timing"] = json!({ "max_duration": "10s" });
    d.register(&body);
    let v = d.wait_state("dead", &["held"], Duration::from_secs(30));
    support::daemon::assert_held_by_failing_source(&v);
    let v = d.wait_done("dead", Duration::from_secs(30));
    assert_eq!(v["state"], "inconclusive", "{v:#}");
    assert_eq!(v["checks"][0]["outcome"], "source_error");
    assert!(
        d.marker_lines().is_empty(),
        "no hook may run: {:?}",
        d.marker_lines()
    );
}

#[test]
fn healthz_and_unknown_analysis() {
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    let (code, _) = support::http("GET", &format!("{}/healthz", d.url), None, None);
    assert_eq!(code, 200);
    // An unknown analysis, and well-formed JSON that does not fit the schema: 422, saying
    // what is wrong.
    for (body, says) in [
        (
            json!({"id": "x", "analysis": "erors", "baseline": {"targets": ["http://127.0.0.1:1/m"]}, "canary": {"targets": ["http://127.0.0.1:2/m"]}}),
            "did you mean `errors`?",
        ),
        (
            json!({"id": "x", "analysis": "errors", "baseline": {"targetz": []}}),
            "unknown field `targetz`",
        ),
    ] {
        let (code, v) = d.post("/api/v1/deployments", &body);
        assert_eq!(code, 422, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    // Malformed JSON: 400.
    let (code, v) = support::http(
        "POST",
        &format!("{}/api/v1/deployments", d.url),
        Some(&json!("not an object")),
        None,
    );
    assert!(code == 400 || code == 422, "{code} {v}");
}

#[test]
fn a_failing_shadow_check_is_recorded_once_and_never_acted_upon() {
    let fleet = FleetServer::bad(14);
    let rule = RATIO_RULE
        .replace(
            "    tolerance: 1.5\n",
            "    tolerance: 1.5\n    enforce: shadow\n",
        )
        .replace("max_duration: 30s", "max_duration: 12s");
    let d = Daemon::start(&[("errors.yaml", &rule)], "");
    d.register(&fleet.deployment("shadow", &[fleet.target("canary-0")]));
    let v = d.wait_done("shadow", Duration::from_secs(60));
    assert_ne!(v["state"], "rolled_back", "{v:#}");
    assert_eq!(v["checks"][0]["outcome"], "fail");
    let failed: Vec<_> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "check_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    d.assert_no_rollback("no rollback for a shadow check");
}

#[test]
fn history_older_than_the_retention_is_deleted_and_the_rest_kept() {
    use rollguard::deploy::{DeploymentRequest, State};
    use rollguard::store::{SqliteStore, Store, Writes, new_record, now};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let s = SqliteStore::open(&state).unwrap();
        for (id, age_days) in [("last-year", 400.0), ("last-week", 7.0)] {
            let req: DeploymentRequest = serde_json::from_value(json!({
                "id": id, "analysis": "errors",
                "baseline": {"targets": ["http://127.0.0.1:1/metrics"]},
                "canary": {"targets": ["http://127.0.0.1:2/metrics"]}
            }))
            .unwrap();
            let mut rec = new_record(req, "errors.yaml".into(), "v1".into(), RATIO_RULE.into());
            s.register(&rec, "registered").unwrap();
            rec.state = State::RolledBack;
            rec.finished_at = Some(now() - age_days * 86_400.0);
            s.save(&rec, Writes::default()).unwrap();
        }
    }
    let d = Daemon::start_in(dir, &[("errors.yaml", RATIO_RULE)], "retention: 30d\n");
    support::wait_for(Duration::from_secs(20), || {
        d.log()
            .contains("deleted history older than the retention")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no pruning logged:\n{}", d.log()));
    assert_eq!(d.get("/api/v1/deployments/last-year").0, 404);
    let (code, v) = d.get("/api/v1/deployments/last-week");
    assert_eq!(
        (code, v["state"].as_str()),
        (200, Some("rolled_back")),
        "{v}"
    );
}

/// The db-pool template run live by the daemon, scraping a simulated fleet whose canary pods
/// take a tenth of the traffic (a ninth of a baseline pod's load) and leak three connections
/// a minute: the level is compared at the canary's requests per instance, read from the
/// request counter the daemon scrapes next to the pool gauges, and the leak is rolled back by
/// `connections-held`, before the pool runs dry. Simulated time runs at 5× (the template's
/// 10 s interval is 2 s of the clock's); the requests per instance are measured over the
/// clock's minutes, so the level is first judged about a minute in (five simulated
/// minutes, three after the leak began) and the pool of a canary pod runs dry at about
/// 100 s (then the acquire time would fail first).
#[test]
fn the_db_pool_template_rolls_back_a_leak_on_a_lightly_loaded_canary_pod() {
    let fleet = FleetServer::start(
        rollguard::sim::Scenario {
            seed: 31,
            canary_share: 0.1,
            fault: rollguard::sim::Fault::ConnectionLeak { per_min: 3.0 },
            ..rollguard::sim::Scenario::default()
        },
        5.0,
    );
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/db-pool.yaml"))
        .unwrap();
    let rule = text
        .replace("on_fail: [rollback, chat]", "on_fail: [rollback]")
        .replace("on_no_data: [chat]\n", "")
        .replace("on_inconclusive: [chat]\n", "");
    let d = Daemon::start(&[("db-pool.yaml", &rule)], "");
    let mut body = fleet.deployment("pool", &fleet.canaries());
    body["analysis"] = "db-pool".into();
    body["timing"] = serde_json::json!({
        "interval": "2s", "warmup": "12s", "min_duration": "60s", "max_duration": "360s"
    });
    d.register(&body);
    let v = d.wait_done("pool", Duration::from_secs(400));
    assert_eq!(v["state"], "rolled_back", "{v:#}");
    let held = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "connections-held"))
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(held["outcome"], "fail", "{v:#}");
    assert!(
        held["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("at the canary's load (x0.1")),
        "{held}"
    );
}

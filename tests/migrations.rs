//! Issue 14: expand-contract migrations, against a real PostgreSQL with a real migration
//! version table (golang-migrate's `schema_migrations(version bigint, dirty bool)`), read by
//! the real `psql` through an exec probe. Each gate: pre-flight (refuse, and wait until the
//! migration lands), rollback (unsafe → held and rolled forward; probe failing → held, then
//! rolled back once the probe answers), contract (refused while a running canary's baseline
//! needs the old schema), schema changes on the timeline and in `rollguard report`.

use crate::support;
use crate::support::postgres::Postgres;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, FleetServer, RATIO_RULE, wait_for};

/// A database `app` with golang-migrate's version table at `version`.
fn database(version: u32) -> Postgres {
    let pg = Postgres::start();
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES ({version}, false)"
        ),
    );
    pg
}

/// golang-migrate keeps one row: the current version.
fn migrate_to(pg: &Postgres, version: u32) {
    pg.psql(
        "app",
        &format!("UPDATE schema_migrations SET version = {version}, dirty = false"),
    );
}

/// Config appended to the test daemon's: a `forward` hook (writes `forward` to the marker)
/// and `schemas.<service>` probing the database with psql, with `preflight` as given.
fn config(pg: &Postgres, marker: &std::path::Path, preflight: &str) -> String {
    let probe = format!(
        "[\"psql\", \"-XAtq\", \"-h\", \"127.0.0.1\", \"-p\", \"{}\", \"-U\", \"{}\", \"-d\", \"app\", \"-c\", \"select case when dirty then 'dirty' else version::text end from schema_migrations\"]",
        pg.port,
        crate::support::postgres::USER
    );
    format!(
        "  forward:\n    exec: [\"/bin/sh\", \"-c\", \"echo forward >> \\\"$0\\\"\", \"{m}\"]\nschemas:\n  shop:\n    exec: {probe}\n    timeout: 3s\n    every: 1s\n    preflight: {preflight}\n    roll_forward: [forward]\n",
        m = marker.display()
    )
}

/// The test daemon with the schema config and the ratio rule, in `dir` (a new one if none: the
/// marker path is known before the start).
fn daemon_in(dir: Option<tempfile::TempDir>, pg: &Postgres, preflight: &str) -> Daemon {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
    let marker = dir.path().join("marker");
    let extra = config(pg, &marker, preflight);
    Daemon::start_in(dir, &[("errors.yaml", RATIO_RULE)], &extra)
}

/// A database at schema `version` and a daemon whose pre-flight gate refuses.
fn refusing(version: u32) -> (Postgres, Daemon) {
    let pg = database(version);
    let d = daemon(&pg, "refuse");
    (pg, d)
}

fn daemon(pg: &Postgres, preflight: &str) -> Daemon {
    daemon_in(None, pg, preflight)
}

fn cli(d: &Daemon, args: &[&str]) -> (i32, String) {
    support::cli(&d.url, args)
}

/// `rollguard deploy start --id <id>` of analysis `errors` for service `shop` on the fleet's
/// first `baselines` baseline instances and its first canary, then `more`.
fn deploy_start(
    d: &Daemon,
    id: &str,
    f: &FleetServer,
    baselines: usize,
    more: &[&str],
) -> (i32, String) {
    let baselines: Vec<String> = (0..baselines)
        .map(|i| f.target(&format!("baseline-{i}")))
        .collect();
    let canary = f.target("canary-0");
    let mut args = vec![
        "deploy",
        "start",
        "--id",
        id,
        "--analysis",
        "errors",
        "--service",
        "shop",
        "--baseline",
    ];
    args.extend(baselines.iter().map(String::as_str));
    args.extend(["--canary", &canary]);
    args.extend_from_slice(more);
    cli(d, &args)
}

/// `rollguard report --json` on the daemon's config.
fn report(d: &Daemon) -> Value {
    let config = d.path("config.yaml");
    let (code, out) = cli(
        d,
        &["report", "--config", config.to_str().unwrap(), "--json"],
    );
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).expect("report json")
}

fn request(id: &str, f: &FleetServer, baseline: Value, canary: Value) -> Value {
    json!({
        "id": id,
        "service": "shop",
        "analysis": "errors",
        "baseline": {"targets": [f.target("baseline-0"), f.target("baseline-1")], "version": "v1", "schema": baseline},
        "canary": {"targets": [f.target("canary-0")], "version": "v2", "schema": canary},
    })
}

/// Deployment `id` once its reason says `says`, if within `within`.
fn wait_for_reason(d: &Daemon, id: &str, says: &str, within: Duration) -> Option<Value> {
    let path = format!("/api/v1/deployments/{id}");
    wait_for(within, || {
        let v = d.get(&path).1;
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains(says))
            .then_some(v)
    })
}

/// A person aborts deployment `id`; the deployment once aborted.
fn abort(d: &Daemon, id: &str) -> Value {
    let (code, _) = d.post(
        &format!("/api/v1/deployments/{id}/abort"),
        &json!({"who": "sre"}),
    );
    assert_eq!(code, 202);
    d.wait_state(id, &["aborted"], Duration::from_secs(20))
}

/// `rollguard migrate check --service <service> --to <to>`.
fn migrate_check(d: &Daemon, service: &str, to: &str) -> (i32, String) {
    cli(d, &["migrate", "check", "--service", service, "--to", to])
}

fn timeline(v: &Value) -> Vec<(String, String)> {
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn preflight_refuses_a_canary_whose_migration_has_not_run_and_can_wait_for_it() {
    let (pg, d) = refusing(41);
    let good = FleetServer::good(141);
    let (code, out) = deploy_start(
        &d,
        "early",
        &good,
        1,
        &["--canary-version", "v2", "--canary-schema-min", "42"],
    );
    assert_eq!(code, 10, "refused by the pre-flight gate → exit 10\n{out}");
    assert!(
        out.contains(
            "v2 needs schema 42 or newer, but `shop` is at schema 41: run the migration first"
        ),
        "{out}"
    );
    assert_eq!(
        d.get("/api/v1/deployments/early").0,
        404,
        "nothing registered"
    );
    drop(d);

    // `preflight: wait`: accepted, pending with the reason, started once the migration lands.
    let d = daemon(&pg, "wait");
    d.register(&request(
        "patient",
        &good,
        json!({"max": 42}),
        json!({"min": 42}),
    ));
    let pending = wait_for_reason(&d, "patient", "needs schema 42", Duration::from_secs(20))
        .expect("pending with the reason");
    assert_eq!(pending["state"], "pending", "{pending:#}");
    assert_eq!(pending["schema"]["live"], "41", "{pending:#}");
    assert_eq!(pending["schema"]["canary"]["fit"], "needs_migration");
    migrate_to(&pg, 42);
    let done = d.wait_state("patient", &["promoted"], Duration::from_secs(90));
    let kinds: Vec<String> = timeline(&done).into_iter().map(|(k, _)| k).collect();
    let wait_at = kinds
        .iter()
        .position(|k| k == "schema_wait")
        .expect("schema_wait");
    let start_at = kinds.iter().position(|k| k == "started").expect("started");
    assert!(wait_at < start_at, "waited before starting: {kinds:?}");
    assert!(
        timeline(&done)
            .iter()
            .any(|(k, m)| k == "schema" && m.contains("schema 42")),
        "{kinds:?}"
    );
}

#[test]
fn an_unsafe_rollback_runs_no_rollback_hook_holds_and_rolls_forward() {
    // v1 works up to schema 41; schema 42 (a contract) already ran when v2 turns out bad.
    let (pg, d) = refusing(42);
    let bad = FleetServer::bad(142);
    let (code, out) = deploy_start(
        &d,
        "contracted",
        &bad,
        2,
        &[
            "--baseline-version",
            "v1",
            "--canary-version",
            "v2",
            "--baseline-schema-max",
            "41",
            "--canary-schema-min",
            "42",
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    assert_eq!(code, 11, "unsafe rollback → exit 11\n{out}");
    let sentence = "rolling back to v1 is unsafe: schema 42 removed what v1 needs (v1 works up to 41) — roll forward";
    assert!(out.contains(sentence), "{out}");
    let v = d.get("/api/v1/deployments/contracted").1;
    assert_eq!(v["state"], "held", "{v:#}");
    assert_eq!(v["reason"], sentence);
    assert_eq!(v["schema"]["baseline"]["fit"], "contracted_past", "{v:#}");
    let forward = wait_for(Duration::from_secs(20), || {
        let m = d.marker_lines();
        m.iter().any(|l| l == "forward").then_some(m)
    })
    .expect("the roll_forward hook ran");
    assert!(
        !forward.iter().any(|l| l.starts_with("rollback")),
        "no rollback hook: {forward:?}"
    );
    // Held, not re-announced: the blocked rollback is on the timeline once, and the
    // roll-forward hook ran once, however many intervals the judge keeps failing.
    std::thread::sleep(Duration::from_secs(3));
    held_once(&d);
    let (code, out) = cli(&d, &["deploy", "status", "contracted"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("schema: shop live 42"), "{out}");
    assert!(
        out.contains("baseline  works with any .. 41  (contracted_past)"),
        "{out}"
    );
    // A restart resumes the held deployment without paging or rolling forward again.
    let d = daemon_in(Some(d.stop()), &pg, "refuse");
    std::thread::sleep(Duration::from_secs(3));
    held_once(&d);
    let metrics = d.metrics();
    assert!(
        metrics.contains("rollguard_schema_probes_total{service=\"shop\",result=\"ok\"}"),
        "{metrics}"
    );
    // A person's abort still runs no rollback hook on this schema.
    let v = abort(&d, "contracted");
    assert!(v["reason"].as_str().unwrap().contains(sentence), "{v:#}");
    d.assert_no_rollback("an abort on this schema");
    // `rollguard report` counts the blocked rollback.
    let r = report(&d);
    assert_eq!(r["services"][0]["blocked_rollbacks"], 1, "{r:#}");
}

/// `contracted` is held, its blocked rollback on the timeline once and the roll-forward hook
/// run once.
fn held_once(d: &Daemon) {
    let v = d.get("/api/v1/deployments/contracted").1;
    assert_eq!(v["state"], "held", "{v:#}");
    let blocked = timeline(&v)
        .iter()
        .filter(|(k, _)| k == "rollback_blocked")
        .count();
    assert_eq!(blocked, 1, "{:#?}", timeline(&v));
    let forward = d.marker_lines().iter().filter(|l| *l == "forward").count();
    assert_eq!(forward, 1);
}

#[test]
fn a_failing_probe_holds_the_rollback_until_the_schema_can_be_read() {
    let (mut pg, d) = refusing(41);
    let bad = FleetServer::bad(143);
    // The database goes away before the canary turns out bad (the canary declares nothing,
    // so it starts; only the baseline's range matters for the rollback).
    pg.stop();
    d.register(&request("blind", &bad, json!({"max": 41}), Value::Null));
    let held = wait_for(Duration::from_secs(60), || {
        let v = d.get("/api/v1/deployments/blind").1;
        (v["state"] == "held"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot tell whether rolling back to v1 is safe")))
        .then_some(v)
    })
    .unwrap_or_else(|| panic!("held on the failing probe; log:\n{}", d.log()));
    assert!(
        held["reason"].as_str().unwrap().contains("psql"),
        "says why: {held:#}"
    );
    assert!(held["schema"]["error"].is_string(), "{held:#}");
    d.assert_no_rollback("never guesses");
    // The database is back at 41, which v1 works with: the rollback runs.
    pg.restart();
    d.wait_state("blind", &["rolled_back"], Duration::from_secs(60));
    let m = wait_for(Duration::from_secs(20), || {
        let m = d.marker_lines();
        m.iter()
            .any(|l| l.starts_with("rollback blind"))
            .then_some(m)
    });
    assert!(
        m.is_some(),
        "the rollback hook ran once the schema was known"
    );
}

#[test]
fn contract_is_refused_while_a_running_canary_s_baseline_needs_the_old_schema() {
    let (pg, d) = refusing(41);
    let good = FleetServer::good(144);
    let mut req = request("running", &good, json!({"max": 42}), json!({"min": 41}));
    req["timing"] = json!({"min_duration": "5m", "max_duration": "10m"});
    d.register(&req);
    d.wait_state("running", &["analysing"], Duration::from_secs(20));

    let (code, out) = migrate_check(&d, "shop", "43");
    assert_eq!(code, 12, "blocked → exit 12\n{out}");
    assert!(
        out.contains("v1 (baseline of deployment running) is in an active deployment and works only up to schema 42"),
        "{out}"
    );
    let (code, v) = d.get("/api/v1/schemas/shop/contract?to=43");
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["safe"], false);
    let (code, out) = migrate_check(&d, "shop", "42");
    assert_eq!(code, 0, "{out}");

    // An expand migration while the canary runs: on its timeline, counted by the report.
    migrate_to(&pg, 42);
    let v = wait_for(Duration::from_secs(20), || {
        let v = d.get("/api/v1/deployments/running").1;
        timeline(&v)
            .iter()
            .any(|(k, m)| k == "schema" && m == "schema 41 → 42")
            .then_some(v)
    });
    assert!(v.is_some(), "schema change on the timeline");
    let r = report(&d);
    assert_eq!(r["services"][0]["migrations"], 1, "{r:#}");
    let (code, v) = d.get("/api/v1/schemas");
    assert_eq!(code, 200);
    assert_eq!(v["schemas"][0]["live"], "42", "{v}");
    // Aborted: the baseline v1 serves again, and it still works only up to 42.
    abort(&d, "running");
    let (code, out) = migrate_check(&d, "shop", "43");
    assert_eq!(code, 12, "{out}");
    assert!(
        out.contains("is still serving and works only up to schema 42"),
        "{out}"
    );
    // Unknown services and versions the service's ordering cannot read are clear errors.
    let (code, out) = migrate_check(&d, "nope", "43");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no `schemas:` entry"), "{out}");
    let (code, v) = d.get("/api/v1/schemas/shop/contract?to=latest");
    assert_eq!(code, 422, "{v}");
}

#[test]
fn a_prometheus_probe_reads_one_whole_sample_from_a_real_prometheus() {
    use crate::support::prometheus::{Prometheus, Target};
    use crate::support::raw::{Reply, ok, raw_server};
    use rollguard::schema::probe::Prober;
    use rollguard::schema::{Live, ProbeKind, SchemaConfig, SchemaVersion};

    let rt = crate::support::http::runtime();
    let serve = |body: &'static str| {
        rt.block_on(raw_server(move |_| {
            Reply::Bytes(ok("text/plain; version=0.0.4", body))
        }))
        .0
    };
    let targets: Vec<Target> = [
        serve("app_schema_version 42\n"),
        serve("app_schema_version 41\n"),
    ]
    .iter()
    .map(|a| Target {
        address: a.to_string(),
        path: "/metrics".into(),
        labels: Vec::new(),
    })
    .collect();
    let prom = Prometheus::start(&targets);
    prom.wait_series("app_schema_version", 2, Duration::from_secs(30));
    let client = rollguard::source::promql::PromClient::new(
        &rollguard::config::PrometheusConfig::new(&prom.url),
    )
    .unwrap();
    let prober = Prober::new(Some(std::sync::Arc::new(client))).unwrap();
    let cfg = |query: &str| SchemaConfig {
        service: "shop".into(),
        probe: ProbeKind::Prometheus {
            query: query.into(),
        },
        order: None,
        timeout: Duration::from_secs(5),
        every: Duration::from_secs(30),
        preflight: rollguard::schema::Preflight::Refuse,
        roll_forward: Vec::new(),
    };
    let live = |q: &str| rt.block_on(prober.live(&cfg(q)));
    assert_eq!(
        live("max(app_schema_version)"),
        Live::Known(SchemaVersion::parse("42", None).unwrap())
    );
    let two = live("app_schema_version");
    assert!(
        matches!(&two, Live::Unknown(e) if e.contains("2 samples")),
        "{two:?}"
    );
    let none = live("app_schema_version_absent");
    assert!(
        matches!(&none, Live::Unknown(e) if e.contains("no sample")),
        "{none:?}"
    );
    let half = live("max(app_schema_version) / 4");
    assert!(
        matches!(&half, Live::Unknown(e) if e.contains("not a whole number")),
        "{half:?}"
    );
}

#[test]
fn a_drop_in_canary_waits_for_its_migration() {
    let pg = database(41);
    let good = FleetServer::good(145);
    let dir = tempfile::tempdir().expect("tempdir");
    let dropins = dir.path().join("deployments");
    std::fs::create_dir_all(&dropins).unwrap();
    let marker = dir.path().join("marker");
    let extra = format!(
        "{}deployments_dir: deployments\n",
        config(&pg, &marker, "refuse")
    );
    let d = Daemon::start_in(dir, &[("errors.yaml", RATIO_RULE)], &extra);
    std::fs::write(
        dropins.join("v2.yaml"),
        format!(
            "id: drop-v2\nservice: shop\nanalysis: errors\nbaseline:\n  targets: [\"{}\"]\n  version: v1\n  schema: {{max: 42}}\ncanary:\n  targets: [\"{}\"]\n  version: v2\n  schema: {{min: 42}}\n",
            good.target("baseline-0"),
            good.target("canary-0")
        ),
    )
    .unwrap();
    let v = wait_for_reason(&d, "drop-v2", "v2 needs schema 42", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("drop-in waiting; log:\n{}", d.log()));
    assert_eq!(v["state"], "pending", "{v:#}");
    assert_eq!(v["request"]["canary"]["schema"]["min"], "42");
    migrate_to(&pg, 42);
    d.wait_state("drop-v2", &["promoted"], Duration::from_secs(90));
}

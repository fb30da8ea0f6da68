//! Several daemons on one real PostgreSQL (docs/ha.md): the store itself, the leader lease
//! and its fence, and failover with real processes: the leader killed with SIGKILL, cut off
//! from the database by a proxy, the database restarted, two daemons started at once. In
//! every case each rollback hook runs once and each decision is announced once.

use crate::support;

use std::time::{Duration, Instant};

use rollguard::store::config::PgConfig;
use rollguard::store::{PgStore, Store, StoreError, TimelineEvent, Writes};
use serde_json::{Value, json};
use support::postgres::Postgres;
use support::proxy::Proxy;
use support::receivers::Recorder;
use support::{Daemon, FleetServer, RATIO_RULE, lines};

/// Short lease so failover fits in a test; the renewal runs every third of it.
const LEASE: &str = "2s";
/// When the pair's bad canary goes bad, in simulated seconds (20× the clock).
const FAULT_AT_S: f64 = 200.0;

fn pg_config(url: &str, node: &str, lease: Duration) -> PgConfig {
    PgConfig {
        url: url.to_string(),
        password: None,
        tls: None,
        node: node.to_string(),
        lease,
        connections: 2,
    }
}

fn record(id: &str) -> rollguard::deploy::DeploymentRecord {
    let req: rollguard::deploy::DeploymentRequest = serde_json::from_value(json!({
        "id": id,
        "service": "checkout",
        "analysis": "errors",
        "baseline": { "targets": ["http://127.0.0.1:1/metrics"] },
        "canary": { "targets": ["http://127.0.0.1:2/metrics"] }
    }))
    .unwrap();
    rollguard::store::new_record(req, "r.yaml".into(), "v1".into(), "rule".into())
}

#[test]
fn pg_store_keeps_records_and_fences_a_deposed_leader() {
    let pg = Postgres::start();
    pg.create_db("store");
    let url = pg.url("store");
    let a = PgStore::open(&pg_config(&url, "a", Duration::from_secs(2))).unwrap();
    // A second daemon on the same database: migrations already applied, nothing redone.
    let b = PgStore::open(&pg_config(&url, "b", Duration::from_secs(2))).unwrap();

    // Nobody leads yet: writes are refused before they reach the database.
    assert!(matches!(
        a.register(&record("d1"), "registered"),
        Err(StoreError::Standby)
    ));
    let ta = a
        .acquire_or_renew(Duration::from_millis(600), "http://a")
        .unwrap()
        .expect("a takes the free lease");
    assert_eq!(
        b.acquire_or_renew(Duration::from_secs(2), "http://b")
            .unwrap(),
        None,
        "b cannot take a lease a holds"
    );

    // The leader's writes land, and the standby reads them.
    let mut rec = record("d1");
    assert!(matches!(
        a.register(&rec, "registered").unwrap(),
        rollguard::store::Registered::Created
    ));
    rec.state = rollguard::deploy::State::Analysing;
    let action = rollguard::store::Action::pending(
        "d1-rollback-0-rb".into(),
        "d1",
        "rb",
        rollguard::store::Purpose::Rollback,
        json!({"deployment": "d1"}),
    );
    let writes = Writes {
        events: &[],
        actions: std::slice::from_ref(&action),
        outbox: &[rollguard::store::OutboxRow {
            notifier: "chat".into(),
            payload: json!({"notice": {"subject": {"deployment": "d1"}}}),
        }],
    };
    a.save(&rec, writes).unwrap();
    assert_eq!(
        b.get("d1").unwrap().unwrap().state,
        rollguard::deploy::State::Analysing
    );
    assert_eq!(b.open_actions().unwrap().len(), 1);
    assert_eq!(b.outbox_of("d1").unwrap().len(), 1);
    assert_eq!(b.events("d1", 0, 10).unwrap().len(), 1);
    assert!(matches!(
        b.add_event(
            "d1",
            &TimelineEvent {
                kind: rollguard::store::EventKind::Person,
                message: "x".into(),
                data: Value::Null,
            }
        ),
        Err(StoreError::Standby)
    ));

    // a claims the hook: its process id is its own; b sees no process.
    a.action_started(&action.id, 1, Some(4242)).unwrap();
    assert_eq!(a.open_actions().unwrap()[0].pid, Some(4242));
    assert_eq!(b.open_actions().unwrap()[0].pid, None);

    // a stops renewing; once its lease has expired by the database's clock b takes over,
    // and a's token no longer lets it claim an action or take a message to send.
    let tb = support::wait_for(Duration::from_secs(5), || {
        b.acquire_or_renew(Duration::from_secs(5), "http://b")
            .unwrap()
    })
    .expect("b takes the expired lease");
    assert!(tb > ta, "the fencing token grows: {ta} then {tb}");
    assert_eq!(a.token(), Some(ta), "a has not noticed yet");
    assert!(matches!(
        a.action_started(&action.id, 2, None),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        a.next_due("chat", f64::MAX),
        Err(StoreError::Fenced)
    ));
    assert_eq!(a.open_actions().unwrap()[0].attempts, 1, "nothing written");
    // A renewal tells a that it lost the lease.
    assert_eq!(
        a.acquire_or_renew(Duration::from_secs(2), "http://a")
            .unwrap(),
        None
    );
    assert!(b.next_due("chat", f64::MAX).unwrap().is_some());
    let lease = a.lease().unwrap();
    assert_eq!((lease.node.as_str(), lease.token), ("b", tb));

    // A clean stop gives the lease up at once.
    b.release().unwrap();
    assert!(
        a.acquire_or_renew(Duration::from_secs(2), "http://a")
            .unwrap()
            .is_some()
    );
}

#[test]
fn tls_password_and_client_certificate_come_from_files() {
    let mut pg = Postgres::start();
    pg.require_tls_for("app", "s3cret-Pw", "secure");
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pg-password");
    std::fs::write(&password, "s3cret-Pw\n").unwrap();
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let url = format!("postgres://app@127.0.0.1:{}/secure", pg.port);
    let config = |password: &std::path::Path, ca: &str| PgConfig {
        password: Some(rollguard::secret::Secret::File {
            file: password.to_path_buf(),
        }),
        tls: Some(rollguard::config::TlsConfig {
            ca_file: Some(tls.join(ca)),
            cert_file: Some(tls.join("client.pem")),
            key_file: Some(tls.join("client.key")),
            insecure_skip_verify: false,
        }),
        ..pg_config(&url, "tls", Duration::from_secs(2))
    };

    let store =
        PgStore::open(&config(&password, "ca.pem")).unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    assert!(
        store
            .acquire_or_renew(Duration::from_secs(2), "http://tls")
            .unwrap()
            .is_some()
    );
    store.register(&record("over-tls"), "registered").unwrap();
    assert!(store.get("over-tls").unwrap().is_some());
    let ssl = pg.psql(
        "postgres",
        "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'app'",
    );
    assert_eq!(ssl, "t", "every connection of the store is encrypted");

    // A server the configured CA did not sign, a wrong password, no TLS: each refused.
    let err = PgStore::open(&config(&password, "other-ca.pem"))
        .err()
        .expect("unknown CA refused")
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    std::fs::write(&password, "wrong").unwrap();
    let err = PgStore::open(&config(&password, "ca.pem"))
        .err()
        .expect("wrong password refused")
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    let err = PgStore::open(&pg_config(&url, "plain", Duration::from_secs(2)))
        .err()
        .expect("plain connection refused")
        .to_string();
    assert!(err.contains("pg_hba.conf rejects"), "{err}");
}

/// A pair of daemons on one database, sharing a marker file their rollback and promote hooks
/// append to, and a webhook destination.
struct Pair {
    pg: Postgres,
    shared: tempfile::TempDir,
    chat: Recorder,
    fleet: FleetServer,
    good: FleetServer,
}

impl Pair {
    fn new() -> Pair {
        let pg = Postgres::start();
        pg.create_db("ha");
        Pair {
            pg,
            shared: tempfile::tempdir().unwrap(),
            chat: Recorder::start(),
            // The canary goes bad 10 s (of wall time) after the fleet starts: the tests
            // disturb the leader before that, mid-canary, never mid-hook.
            fleet: FleetServer::failing_from(FAULT_AT_S, 41, 20.0),
            good: FleetServer::good(42),
        }
    }

    /// Starts daemon `node`, reaching the database on `port` (the server's, or a proxy's).
    fn daemon(&self, node: &str, port: u16) -> Daemon {
        let hooks = support::daemon::marker_hooks(&self.shared.path().join("marker"));
        let rule = RATIO_RULE
            .replace("on_fail: [rollback]", "on_fail: [rollback, chat]")
            .replace("on_pass: [promote]", "on_pass: [promote, chat]");
        Daemon::start_on_postgres(
            &format!("postgres://{}@127.0.0.1:{port}/ha", support::postgres::USER),
            node,
            LEASE,
            &[("errors.yaml", &rule)],
            &hooks,
            &format!(
                "notifiers:\n  chat:\n    webhook:\n      url: {}\n",
                self.chat.url
            ),
        )
    }

    /// Daemon `a` (on `a_port`) leading, then daemon `b` standing by.
    fn leader_and_standby(&self, a_port: u16) -> (Daemon, Daemon) {
        let a = self.daemon("a", a_port);
        wait_leader(&a, Duration::from_secs(10));
        let b = self.daemon("b", self.pg.port);
        support::wait_for(Duration::from_secs(10), || {
            (b.role() == "standby").then_some(())
        })
        .expect("b stands by");
        (a, b)
    }

    fn marker(&self) -> Vec<String> {
        lines(&self.shared.path().join("marker"))
    }

    /// The deployment that goes bad: it may not promote before its fault shows.
    fn bad(&self, id: &str) -> Value {
        let mut req = self.fleet.deployment(id, &self.fleet.canaries());
        req["timing"] = json!({"min_duration": "40s", "max_duration": "60s"});
        req
    }
}

/// Waits until `d` leads; how long that took.
fn wait_leader(d: &Daemon, timeout: Duration) -> Duration {
    let t = Instant::now();
    support::wait_for(timeout, || (d.role() == "leader").then_some(()))
        .unwrap_or_else(|| panic!("never became leader; log:\n{}", d.log()));
    t.elapsed()
}

/// The deployment was rolled back by one rollback hook run, and its rollback was
/// announced once.
fn assert_rolled_back_once(pair: &Pair, d: &Daemon, id: &str) {
    let v = d.wait_done(id, Duration::from_secs(60));
    support::assert_rolled_back_by_the_ratio_check(&v);
    let rollbacks: Vec<String> = support::wait_for(Duration::from_secs(20), || {
        Some(pair.marker()).filter(|m| m.iter().any(|l| l.starts_with("rollback")))
    })
    .unwrap_or_else(|| panic!("no rollback hook ran; log:\n{}", d.log()))
    .into_iter()
    .filter(|l| l.starts_with("rollback"))
    .collect();
    assert_eq!(rollbacks.len(), 1, "one rollback hook run: {rollbacks:?}");
    pair.chat
        .wait_kind("rollback_succeeded", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("rollback never announced; log:\n{}", d.log()));
    for kind in ["rollback_started", "rollback_succeeded"] {
        assert_eq!(
            pair.chat.of_kind(kind).len(),
            1,
            "{kind} announced once: {:#?}",
            pair.chat.bodies()
        );
    }
}

#[test]
fn kill_9_of_the_leader_mid_canary_hands_over_within_the_lease() {
    let pair = Pair::new();
    let (a, b) = pair.leader_and_standby(pair.pg.port);

    let id = "ha-kill";
    a.register(&pair.bad(id));
    let healthy = "ha-kill-healthy";
    a.register(&pair.good.deployment(healthy, &pair.good.canaries()));
    // Mid-canary: analysing, before the fault (so before any decision).
    a.wait_state(id, &["analysing"], Duration::from_secs(20));
    a.wait_state(healthy, &["analysing"], Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let _ = a.crash();

    let took = wait_leader(&b, Duration::from_secs(15));
    // lease + one renewal period of the standby (+ the time to notice through the API)
    assert!(
        took < Duration::from_secs(4),
        "took over after {took:?}; log:\n{}",
        b.log()
    );
    assert_rolled_back_once(&pair, &b, id);
    let (_, v) = b.get(&format!("/api/v1/deployments/{id}"));
    let started = v["actions"][0]["facts"]["action_id"].clone();
    assert!(
        pair.marker()
            .iter()
            .any(|l| l.starts_with("rollback") && l.ends_with(started.as_str().unwrap_or("?"))),
        "{:?} / {started}",
        pair.marker()
    );
    // The healthy canary is promoted by the new leader: one promote hook, one notice.
    let v = b.wait_done(healthy, Duration::from_secs(60));
    assert_eq!(v["state"], "promoted", "{v:#}");
    support::wait_for(Duration::from_secs(20), || {
        pair.marker()
            .iter()
            .any(|l| l.starts_with("promote"))
            .then_some(())
    })
    .expect("promote hook ran");
    let promotes = pair
        .marker()
        .iter()
        .filter(|l| l.starts_with("promote"))
        .count();
    assert_eq!(promotes, 1, "{:?}", pair.marker());
    pair.chat
        .wait_kind("promoted", Duration::from_secs(20))
        .expect("promotion announced");
    assert_eq!(pair.chat.of_kind("promoted").len(), 1);
}

#[test]
fn a_leader_cut_off_from_the_database_steps_down_before_its_lease_ends() {
    let pair = Pair::new();
    let proxy = Proxy::start(pair.pg.port);
    let (mut a, b) = pair.leader_and_standby(proxy.port);
    let id = "ha-cut";
    a.register(&pair.bad(id));
    a.wait_state(id, &["analysing"], Duration::from_secs(20));

    let cut = Instant::now();
    proxy.cut();
    let status = support::wait_for(Duration::from_secs(10), || {
        a.child.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("a did not step down; log:\n{}", a.log()));
    let stepped_down = cut.elapsed();
    assert_eq!(status.code(), Some(75), "EX_LEASE_LOST; log:\n{}", a.log());
    assert!(
        stepped_down < Duration::from_secs(2),
        "stepped down {stepped_down:?} after the cut, not before its lease ended"
    );
    assert!(a.log().contains("stepping down"), "{}", a.log());
    wait_leader(&b, Duration::from_secs(10));
    assert_rolled_back_once(&pair, &b, id);
}

#[test]
fn a_database_restart_mid_canary_loses_and_doubles_nothing() {
    let mut pair = Pair::new();
    let (a, b) = pair.leader_and_standby(pair.pg.port);
    let id = "ha-restart";
    a.register(&pair.bad(id));
    a.wait_state(id, &["analysing"], Duration::from_secs(20));
    pair.pg.restart();
    // Whoever leads after the restart (a, if it renewed in time; else b) finishes the job.
    let leader = support::wait_for(Duration::from_secs(15), || {
        [&a, &b].into_iter().find(|d| d.role() == "leader")
    })
    .unwrap_or_else(|| panic!("nobody leads; a:\n{}\nb:\n{}", a.log(), b.log()));
    assert_rolled_back_once(&pair, leader, id);
}

#[test]
fn two_daemons_started_at_once_elect_one_and_the_standby_points_at_it() {
    let pair = Pair::new();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| pair.daemon("a", pair.pg.port));
        let b = s.spawn(|| pair.daemon("b", pair.pg.port));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (leader, standby) = support::wait_for(Duration::from_secs(10), || {
        match (a.role().as_str(), b.role().as_str()) {
            ("leader", "standby") => Some((&a, &b)),
            ("standby", "leader") => Some((&b, &a)),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no single leader; a:\n{}\nb:\n{}", a.log(), b.log()));

    // Readiness and metrics say who is who.
    assert_eq!(leader.get("/readyz?role=leader").0, 200);
    let (code, v) = standby.get("/readyz?role=leader");
    assert_eq!(code, 503, "{v}");
    let (code, v) = standby.get("/readyz");
    assert_eq!(code, 200, "a standby is ready as a standby: {v}");
    assert_eq!(v["role"], "standby");
    assert!(v["leader"]["lease_age"].as_f64().is_some(), "{v}");
    assert!(leader.metrics().contains("rollguard_leader 1"));
    assert!(standby.metrics().contains("rollguard_leader 0"));

    // A change sent to the standby is refused with the leader's address; reads work.
    let body = pair.bad("ha-both");
    let (code, v) = standby.post("/api/v1/deployments", &body);
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains(&leader.url),
        "names the leader: {v}"
    );
    leader.register(&body);
    let (code, v) = standby.get("/api/v1/deployments/ha-both");
    assert_eq!(code, 200, "{v}");
    assert_rolled_back_once(&pair, leader, "ha-both");
}

#[test]
fn check_reads_the_database_password_and_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = support::daemon::marker_hooks(&dir.path().join("marker"));
    support::daemon::write_dir(dir.path(), &[("errors.yaml", RATIO_RULE)], "");
    // `rollguard check` on a config whose `store:` section is `store`: exit code, output.
    let check = |store: &str| {
        std::fs::write(
            dir.path().join("config.yaml"),
            support::daemon::config(
                "127.0.0.1:0",
                "state",
                &format!("hooks:\n{hooks}store:\n  postgres:\n{store}"),
            ),
        )
        .unwrap();
        let (code, out, err) = support::daemon::run(
            std::process::Command::new(support::BIN)
                .arg("check")
                .arg(dir.path().join("config.yaml")),
        );
        (code, format!("{out}{err}"))
    };

    let (code, err) = check(
        "    url: postgres://rollguard@db.internal/rollguard\n    password: {file: missing-password}\n    tls: {ca_file: missing-ca.pem}\n",
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("store.postgres.password"), "{err}");
    assert!(err.contains("missing-ca.pem"), "{err}");

    let (code, err) = check("    url: postgres://rollguard:hunter2@db/rollguard\n    lease: 1s\n");
    assert_eq!(code, 78, "{err}");
    // listen, state_dir, rules_dir, hooks:, the hooks, store:, postgres:, then url and lease.
    let url_line = 3 + 1 + hooks.lines().count() + 2 + 1;
    for line in [url_line, url_line + 1] {
        assert!(
            err.contains(&format!("config.yaml:{line}:")),
            "located: {err}"
        );
    }
    assert!(err.contains("must not hold the password"), "{err}");
    assert!(err.contains("lease` must be at least 2s"), "{err}");
}

//! The three ways rollguard used to lose a message, each driven through a real daemon with a
//! real SQLite state file (the notices are read from its outbox; the destination is a closed
//! port, so nothing is delivered and every queued row stays to be counted):
//! - two `notify` checks newly failing in the same interval were one notice;
//! - the result of a hold (or step, switch, inconclusive) hook that ended while the daemon was
//!   down was announced to nobody after the restart;
//! - the notices of a decision were written after the decision, so a failed write between
//!   the two lost `rollback_started` although the rollback hook ran.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::{Daemon, FleetServer, RATIO_RULE};

/// A webhook destination on a port nobody listens on: rows stay queued, retried rarely.
const CHAT: &str = "notifiers:\n  chat:\n    webhook:\n      url: http://127.0.0.1:9/webhook\n    max_attempts: 100\n    retry_backoff: 30s\n";

/// The kinds of the notices queued for `chat`, oldest first.
fn queued(state: &Path) -> Vec<String> {
    let Ok(c) = rusqlite::Connection::open(state.join("rollguard.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = c.prepare("SELECT payload FROM outbox WHERE notifier = 'chat' ORDER BY id")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .filter_map(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                .filter_map(|v| v["notice"]["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

fn register(d: &Daemon, id: &str, baseline: Vec<String>, canary: Vec<String>) {
    d.register(
        &json!({"id": id, "service": "checkout", "analysis": "errors",
                "baseline": {"targets": baseline}, "canary": {"targets": canary}}),
    );
}

#[test]
fn two_checks_failing_in_one_interval_are_two_notices() {
    // The same ratio twice: both fail at the same interval, by construction.
    let check = |name: &str| {
        format!(
            "  - name: {name}\n    kind: ratio\n    errors: 'http_requests_total{{code=~\"5..\"}}'\n    requests: 'http_requests_total'\n    tolerance: 1.5\n    enforce: notify\n"
        )
    };
    let rule = RATIO_RULE
        .split("checks:\n")
        .next()
        .map(|head| {
            format!(
                "{head}checks:\n{}{}on_fail: [chat]\n",
                check("errors-a"),
                check("errors-b")
            )
        })
        .expect("rule head");
    let fleet = FleetServer::bad(11);
    let d = Daemon::start(&[("errors.yaml", &rule)], CHAT);
    register(
        &d,
        "two",
        vec![fleet.target("baseline-0"), fleet.target("baseline-1")],
        vec![fleet.target("canary-0"), fleet.target("canary-1")],
    );
    let state = d.dir.path().join("state");
    let got = support::wait_for(Duration::from_secs(25), || {
        let k = queued(&state);
        (count(&k, "check_failing") >= 2).then_some(k)
    });
    let (_, events) = d.get("/api/v1/deployments/two/events");
    assert!(
        got.is_some(),
        "one notice per failing check expected; queued: {:?}\ntimeline: {events:#}",
        queued(&state)
    );
}

#[test]
fn a_hold_hook_result_is_announced_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = dir.path().join("hold-ran");
    let extra = format!(
        "  hold-hook:\n    exec: [\"/bin/sh\", \"-c\", \"echo started >> \\\"$0\\\"; sleep 3; exit 1\", \"{}\"]\n    timeout: 30s\n    retries: 0\n{CHAT}",
        ran.display()
    );
    let rule = RATIO_RULE.replace("on_pass: [promote]", "on_no_data: [hold-hook, chat]");
    let rules = [("errors.yaml", rule.as_str())];
    let d = Daemon::start_in(dir, &rules, &extra);
    // Nobody answers on either arm: no data, a hold after the 2 s grace.
    let nobody = vec!["http://127.0.0.1:9/metrics".to_string()];
    register(&d, "held", nobody.clone(), nobody);
    support::wait_for(Duration::from_secs(25), || {
        std::fs::read_to_string(&ran)
            .ok()
            .filter(|s| s.contains("started"))
    })
    .unwrap_or_else(|| panic!("the hold hook never started; log:\n{}", d.log()));
    // The daemon dies while the hook runs; the hook fails while nobody watches.
    let dir = d.crash();
    std::thread::sleep(Duration::from_secs(4));
    let d = Daemon::start_in(dir, &rules, &extra);
    let state = d.dir.path().join("state");
    let got = support::wait_for(Duration::from_secs(20), || {
        (count(&queued(&state), "hook_failed") >= 1).then_some(())
    });
    assert!(
        got.is_some(),
        "the hold hook's failure was not announced after the restart; queued: {:?}\nlog:\n{}",
        queued(&state),
        d.log()
    );
}

#[test]
fn the_rollback_notice_is_written_with_the_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // The outbox refuses the rollback notice until the test lifts the fault: a write that
    // fails between the decision and its notices.
    {
        rollguard::store::SqliteStore::open(&state).expect("store");
        let c = rusqlite::Connection::open(state.join("rollguard.db")).expect("db");
        c.execute_batch(
            "CREATE TRIGGER lose_notice BEFORE INSERT ON outbox
             WHEN NEW.payload LIKE '%rollback_started%'
             BEGIN SELECT RAISE(ABORT, 'injected: outbox write failed'); END;",
        )
        .expect("trigger");
    }
    let rule = RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [rollback, chat]");
    let fleet = FleetServer::bad(12);
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], CHAT);
    register(
        &d,
        "bad",
        vec![fleet.target("baseline-0"), fleet.target("baseline-1")],
        vec![fleet.target("canary-0"), fleet.target("canary-1")],
    );
    // Either the decision is refused as a whole (the fix), or it went through without its
    // notice (the bug).
    support::wait_for(Duration::from_secs(30), || {
        let (_, v) = d.get("/api/v1/deployments/bad");
        (d.log().contains("refusing to act without a record") || v["state"] == "rolled_back")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no decision; log:\n{}", d.log()));
    let c = rusqlite::Connection::open(state.join("rollguard.db")).expect("db");
    c.execute_batch("DROP TRIGGER lose_notice").expect("drop");
    let v = d.wait_state("bad", &["rolled_back"], Duration::from_secs(30));
    support::assert_rolled_back_by_the_ratio_check(&v);
    let kinds = queued(&state);
    assert_eq!(
        count(&kinds, "rollback_started"),
        1,
        "the rollback was recorded without its notice; queued: {kinds:?}"
    );
    support::wait_for(Duration::from_secs(10), || {
        (!d.marker_lines().is_empty()).then_some(())
    });
    assert_eq!(
        d.marker_lines().len(),
        1,
        "one rollback hook run: {:?}",
        d.marker_lines()
    );
}

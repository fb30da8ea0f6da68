//! Exactly-once in effect, with the real binary: a rollback hook that is running when the
//! daemon is killed with SIGKILL is neither lost nor run again by the restarted daemon, and
//! its action ends recorded as succeeded.

use crate::support;

use std::time::Duration;

use support::{Daemon, FleetServer, RATIO_RULE, lines};

/// Extra hooks (indented to continue the helper's `hooks:` map): a rollback that marks its
/// start, sleeps, then records its effect. No placeholder is built into the shell line.
fn slow_rollback(dir: &std::path::Path, sleep_s: f64) -> String {
    support::daemon::recording_hook("slow-rollback", &dir.join("effect"), sleep_s, "30s")
}

fn register(d: &Daemon, fleet: &FleetServer, id: &str) {
    d.register(&fleet.deployment(id, &fleet.canaries()));
}

fn wait_action(d: &Daemon, id: &str) -> serde_json::Value {
    support::wait_for(Duration::from_secs(30), || {
        let (_, v) = d.get(&format!("/api/v1/deployments/{id}"));
        let a = v["actions"].as_array()?.first()?.clone();
        matches!(a["status"].as_str(), Some("succeeded" | "failed")).then_some(a)
    })
    .unwrap_or_else(|| panic!("action never finished; log:\n{}", d.log()))
}

fn run(case: &str, sleep_s: f64, restart_after_hook: bool) {
    let fleet = FleetServer::bad(21);
    let dir = tempfile::tempdir().unwrap();
    let effect = dir.path().join("effect");
    let started = dir.path().join("effect.started");
    let extra = slow_rollback(dir.path(), sleep_s);
    let rule = RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [slow-rollback]");
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &extra);
    register(&d, &fleet, case);
    // The decision is persisted and the hook is running: kill -9 the daemon now.
    support::wait_for(Duration::from_secs(60), || {
        (!lines(&started).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("rollback hook never started; log:\n{}", d.log()));
    assert!(
        lines(&effect).is_empty(),
        "the hook should still be sleeping"
    );
    let dir = d.crash();
    if restart_after_hook {
        // The hook finishes while no daemon is running.
        support::wait_for(Duration::from_secs(30), || {
            (!lines(&effect).is_empty()).then_some(())
        })
        .expect("hook outlived the daemon");
    }
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &extra);
    let a = wait_action(&d, case);
    assert_eq!(a["status"], "succeeded", "{a:#}\nlog:\n{}", d.log());
    assert_eq!(a["attempts"], 1, "{a:#}");
    let action_id = a["facts"]["action_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&action_id)
            .map(|u| u.get_version_num())
            .ok(),
        Some(7)
    );
    assert_eq!(
        lines(&started),
        vec![action_id.clone()],
        "the hook was started once"
    );
    assert_eq!(
        lines(&effect),
        vec![action_id],
        "its side effect happened once"
    );
    let (_, v) = d.get(&format!("/api/v1/deployments/{case}"));
    assert_eq!(
        v["state"], "rolled_back",
        "never rolled back twice, never un-rolled-back"
    );
    assert!(
        d.log()
            .contains("found the result of a hook that ran while the daemon was down"),
        "{}",
        d.log()
    );
    // Nothing runs it again later either.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&started).len(), 1);
}

#[test]
fn a_rollback_hook_running_during_kill_9_runs_exactly_once() {
    run("crash-during", 3.0, false);
}

#[test]
fn a_rollback_hook_that_finished_while_the_daemon_was_dead_is_not_run_again() {
    run("crash-before-done", 1.0, true);
}

//! Issue 8: SIGTERM while a rollback hook runs. Either the hook finishes within the grace
//! period and its success is recorded, or it is stopped cleanly (SIGTERM to its process
//! group) at the end of the grace period, its attempt is recorded, and the next start runs
//! it again — never lost, never reported as done when it was not.

use crate::support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::http::{get, post};
use support::service::{NotifySocket, Service, ServiceDir, api_from_ready};
use support::slow_rule;

const T: Duration = Duration::from_secs(20);

/// A rollback hook that logs to `marker`, finishes at once when `release` exists, and
/// otherwise waits: for a line on the `gate` FIFO (`mode = "gate"`) or for ever, noting a
/// SIGTERM (`mode = "term"`). Each line names the action id.
fn config(dir: &std::path::Path, grace: &str, mode: &str) -> String {
    let wait = match mode {
        "gate" => r#"read line < "$0/gate""#,
        _ => {
            r#"trap 'echo "stopped $ROLLGUARD_ACTION_ID" >> "$0/marker"; exit 143' TERM; sleep 600 & wait $!"#
        }
    };
    let script = format!(
        r#"echo "start $ROLLGUARD_ACTION_ID" >> "$0/marker"; if [ ! -e "$0/release" ]; then {wait}; fi; echo "done $ROLLGUARD_ACTION_ID" >> "$0/marker""#
    );
    format!(
        "shutdown_grace: {grace}\nhooks:\n  rollback:\n    exec: [\"/bin/sh\", \"-c\", {script}, {dir}]\n    timeout: 5m\n    retries: 2\n  promote:\n    exec: [\"/bin/true\"]\n",
        script = serde_json::to_string(&script).expect("json"),
        dir = serde_json::to_string(&dir.display().to_string()).expect("json"),
    )
}

fn start(dir: &ServiceDir) -> (Service, NotifySocket, String) {
    let mut sock = NotifySocket::bind(dir.path());
    let mut c = dir.command();
    c.env("NOTIFY_SOCKET", &sock.path).stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.log_file())
            .expect("log"),
    );
    let svc = Service::spawn(c);
    let ready = sock.wait_for(T, "READY=1", |m| m.starts_with("READY=1"));
    (svc, sock, api_from_ready(&ready))
}

fn marker(dir: &ServiceDir) -> Vec<String> {
    std::fs::read_to_string(dir.path().join("marker"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits for a marker line (the hook writes it; nothing else announces it).
fn wait_marker(dir: &ServiceDir, line: &str) {
    let start = Instant::now();
    while !marker(dir).iter().any(|l| l == line) {
        assert!(
            start.elapsed() < T,
            "no `{line}` from the hook; marker {:?}; log:\n{}",
            marker(dir),
            dir.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers a deployment and aborts it, which owes exactly one rollback action.
fn abort_one(url: &str, id: &str) -> String {
    let dead = "http://127.0.0.1:9/metrics";
    let (code, v) = post(
        &format!("{url}/api/v1/deployments"),
        &json!({"id": id, "analysis": "errors", "baseline": {"targets": [dead]}, "canary": {"targets": [dead]}}),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = post(
        &format!("{url}/api/v1/deployments/{id}/abort"),
        &json!({"who": "test", "reason": "stop test"}),
    );
    assert_eq!(code, 202, "{v}");
    support::hook_action_id(url, id)
}

fn action(url: &str, id: &str) -> Value {
    let (code, v) = get(&format!("{url}/api/v1/deployments/{id}"));
    assert_eq!(code, 200, "{v}");
    let actions = v["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions.len(), 1, "{v:#}");
    actions[0].clone()
}

fn wait_action_status(url: &str, id: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let a = action(url, id);
        if a["status"] == status {
            return a;
        }
        assert!(
            start.elapsed() < T,
            "action of {id} still {} (wanted {status}): {a:#}",
            a["status"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_waits_for_a_running_hook_that_finishes_within_the_grace() {
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], "");
    dir.set_config(&config(dir.path(), "30s", "gate"));
    let gate = dir.path().join("gate");
    let st = Command::new("mkfifo").arg(&gate).status().expect("mkfifo");
    assert!(st.success());

    let (mut svc, mut sock, url) = start(&dir);
    let act = abort_one(&url, "d1");
    wait_marker(&dir, &format!("start {act}"));

    svc.signal(Signal::SIGTERM);
    sock.wait_for(T, "STOPPING=1", |m| m.starts_with("STOPPING=1"));
    // Stopping, but waiting for the hook: still alive, and no longer ready.
    let (code, v) = get(&format!("{url}/readyz"));
    assert_eq!(code, 503, "{v}");
    assert!(v["problems"].to_string().contains("shutting down"), "{v}");
    assert!(
        svc.running(),
        "exited before the hook finished; log:\n{}",
        dir.log()
    );

    // Let the hook finish: the daemon records it and exits cleanly.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&gate)
        .and_then(|mut f| f.write_all(b"go\n"))
        .expect("open the gate");
    let status = svc.wait(T).expect("exits once the hook is done");
    assert!(status.success(), "{status:?}; log:\n{}", dir.log());
    assert_eq!(
        marker(&dir),
        [format!("start {act}"), format!("done {act}")]
    );
    support::assert_logged(&dir.log(), "rollguard stopped cleanly");

    // After a restart the store says succeeded, once; nothing runs again.
    let (mut svc, _sock, url) = start(&dir);
    let a = action(&url, "d1");
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["attempts"], 1, "{a:#}");
    assert_eq!(marker(&dir).len(), 2, "{:?}", marker(&dir));
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
}

#[test]
fn a_hook_still_running_at_the_deadline_is_stopped_recorded_and_retried_on_the_next_start() {
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], "");
    dir.set_config(&config(dir.path(), "1s", "term"));

    let (mut svc, mut sock, url) = start(&dir);
    let act = abort_one(&url, "d2");
    wait_marker(&dir, &format!("start {act}"));

    let asked = Instant::now();
    svc.signal(Signal::SIGTERM);
    sock.wait_for(T, "STOPPING=1", |m| m.starts_with("STOPPING=1"));
    let status = svc.wait(T).expect("exits");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}; log:\n{}", dir.log());
    // 1 s of grace, the hook's own SIGTERM handling, and a little bookkeeping.
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    // The hook saw SIGTERM (its group was signalled) rather than a SIGKILL.
    assert_eq!(
        marker(&dir),
        [format!("start {act}"), format!("stopped {act}")],
        "log:\n{}",
        dir.log()
    );
    let log = dir.log();
    assert!(
        log.contains("hook still running at the end of the grace period"),
        "{log}"
    );

    // The store, read directly before any restart: the attempt is recorded and the action
    // is still owed.
    let db = rusqlite::Connection::open(dir.path().join("state/rollguard.db")).expect("open store");
    let (st, attempts, summary): (String, u32, String) = db
        .query_row(
            "SELECT status, attempts, summary FROM actions WHERE json_extract(facts, '$.action_id') = ?1",
            [&act],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("action row");
    drop(db);
    assert_eq!((st.as_str(), attempts), ("pending", 1), "{summary}");

    // Next start: the action resumes (attempt 2, same action id) and this time finishes.
    std::fs::write(dir.path().join("release"), b"").expect("release");
    let (mut svc, _sock, url) = start(&dir);
    let a = wait_action_status(&url, "d2", "succeeded");
    assert_eq!(a["attempts"], 2, "{a:#}");
    assert_eq!(
        marker(&dir),
        [
            format!("start {act}"),
            format!("stopped {act}"),
            format!("start {act}"),
            format!("done {act}")
        ]
    );
    let (_, d) = get(&format!("{url}/api/v1/deployments/d2"));
    assert!(
        d["events"]
            .to_string()
            .contains("stopped by a rollguard shutdown"),
        "{d:#}"
    );
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
}

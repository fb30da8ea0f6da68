//! Fault injection, notifier side, beyond what `notify_delivery.rs` covers (429, 5xx, 4xx,
//! pacing, a clean restart): a destination whose host name does not resolve, a destination
//! that answers after the notifier's timeout, and a daemon killed with SIGKILL while a
//! delivery is in flight. In every case the message stays in the outbox until it is
//! delivered or dead-lettered with the reason, and other destinations are not held up.

use crate::support;
use crate::support::receivers;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use receivers::{Fake, Notifying, Reply, WebhookRestart, ends_in, fast, notice};
use rollguard::config::{NotifierKind, Secret};
use rollguard::events::NoticeKind;
use rollguard::store::{SqliteStore, Store};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_host_is_retried_then_dead_lettered_with_the_reason_and_blocks_no_one() {
    let fake = Fake::start().await;
    let mut dns = fast(NotifierKind::Webhook {
        // `.invalid` never resolves (RFC 6761), on any network.
        url: Secret::Inline("http://rollguard-fault-test.invalid/hook".into()),
        secret: None,
    });
    dns.max_attempts = 3;
    let ok = fast(NotifierKind::Slack {
        url: Secret::Inline(fake.url("/slack/hook")),
    });
    let r = Notifying::start(BTreeMap::from([
        ("lost".to_string(), dns),
        ("chat".to_string(), ok),
    ]));
    r.notifiers.enqueue(
        &["lost".to_string(), "chat".to_string()],
        &notice(NoticeKind::RollbackStarted, "d1"),
    );

    // The working destination gets its message at once, whatever the other one does.
    let got = fake.wait_for("/slack", 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);

    // The unresolvable one: pending with the DNS error while attempts remain...
    let items = r.until(Some("lost"), |i| i[0].attempts >= 1).await;
    assert!(
        items[0].status == "pending" || items[0].status == "dead",
        "{items:?}"
    );
    let err = items[0].last_error.to_lowercase();
    assert!(
        err.contains("dns") || err.contains("resolve") || err.contains("lookup"),
        "the reason should say the name does not resolve: {}",
        items[0].last_error
    );
    // ...then dead-lettered after max_attempts, still saying why; never silently dropped.
    let items = r.until(Some("lost"), |i| i[0].status == "dead").await;
    assert_eq!(items[0].attempts, 3, "{items:?}");
    assert!(!items[0].last_error.is_empty());
    assert_eq!(r.store.outbox(Some("chat")).unwrap()[0].status, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_timeout_counts_as_failed_and_the_message_is_sent_again() {
    let fake = Fake::start().await;
    // First answer takes 2 s; the notifier waits 300 ms.
    fake.script([Reply::status(200).delay(Duration::from_secs(2))]);
    let mut cfg = fast(NotifierKind::Slack {
        url: Secret::Inline(fake.url("/slack/hook")),
    });
    cfg.timeout = Duration::from_millis(300);
    let r = Notifying::start(BTreeMap::from([("chat".to_string(), cfg)]));
    let start = tokio::time::Instant::now();
    r.notifiers.enqueue(
        &["chat".to_string()],
        &notice(NoticeKind::RollbackStarted, "d2"),
    );

    let pending = r
        .until(Some("chat"), |i| {
            i[0].attempts == 1 && i[0].status == "pending"
        })
        .await;
    assert!(
        pending[0].last_error.to_lowercase().contains("time"),
        "{pending:?}"
    );
    let items = r.until(Some("chat"), |i| i[0].status == "sent").await;
    assert_eq!(items[0].attempts, 2, "{items:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the retry did not wait for the slow answer: {:?}",
        start.elapsed()
    );
    // The destination saw the timed-out request and the retry: at-least-once, as documented.
    assert_eq!(fake.received_at("/slack").len(), 2);
}

/// A TCP server that accepts connections, reads the request and never answers.
struct BlackHole {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_read_timeout(Some(Duration::from_millis(200))).ok();
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        a.fetch_add(1, Ordering::SeqCst);
                        held.push(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        BlackHole {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener and every held connection, freeing the port.
    fn close(mut self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.port
    }
}

/// The real binary: SIGKILL while a notification is being sent (the destination has the
/// request and has not answered). The restarted daemon sends it again, and it is delivered.
#[test]
fn a_kill_9_during_a_delivery_loses_nothing() {
    let hole = BlackHole::start();
    let (w, d) = WebhookRestart::start(
        hole.port,
        "    timeout: 30s\n    max_attempts: 100\n    retry_backoff: 100ms\n",
        "inflight",
    );
    support::wait_for(Duration::from_secs(10), || {
        (hole.accepted.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .expect("the delivery reached the destination");
    let dir = d.crash();
    let db = dir.path().join("state");
    let items = SqliteStore::open(&db)
        .unwrap()
        .outbox(Some("chat"))
        .unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.status == "pending" && i.payload.to_string().contains("inflight")),
        "the in-flight message must still be owed: {items:#?}"
    );
    hole.close();

    let (d, fake, started) = w.restart(dir);
    assert_eq!(
        started.len(),
        1,
        "delivered after the restart, once; log:\n{}",
        d.log()
    );
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
}

/// Issue 17: Alertmanager (two replicas) and PagerDuty across a SIGKILL at the worst moment
/// for them: after the alert fired and the page went out, before the rollback that resolves
/// them has finished. The rollback hook is still running when the daemon dies; the restarted
/// daemon waits for it, then resolves the alert on every replica with the same labels and
/// the page with the same dedup key, and opens no second alert or incident.
#[test]
fn alerts_and_pages_open_before_a_kill_9_are_resolved_once_after_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(Fake::start());
    let fleet = support::FleetServer::bad(71);
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let extra = format!(
        "  rb:\n    exec: [\"/bin/sh\", \"-c\", \"while [ ! -e \\\"$0\\\" ]; do sleep 0.05; done\", \"{release}\"]\n    timeout: 60s\n\
         notifiers:\n  am:\n    alertmanager:\n      urls: [\"{r0}\", \"{r1}\"]\n      resend_interval: 1h\n\
         \x20 pd:\n    pagerduty:\n      routing_key: R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12\n      url: \"{pd}\"\n      min_severity: warning\n      source: ops-1\n",
        release = release.display(),
        r0 = fake.url("/am/r0"),
        r1 = fake.url("/am/r1"),
        pd = fake.url("/pd"),
    );
    let rule = support::RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [rb, am, pd]");
    let rules = [("errors.yaml", rule.as_str())];
    let d = support::Daemon::start_in(dir, &rules, &extra);
    let (code, v) = d.post(
        "/api/v1/deployments",
        &serde_json::json!({"id": "paged", "service": "checkout", "analysis": "errors",
            "baseline": {"targets": [fleet.target("baseline-0"), fleet.target("baseline-1")], "version": "v1"},
            "canary": {"targets": [fleet.target("canary-0"), fleet.target("canary-1")], "version": "v2"}}),
    );
    assert_eq!(code, 201, "{v}");
    // Fired on both replicas and paged; the rollback hook is running.
    for path in ["/am/r0", "/am/r1", "/pd/v2/enqueue"] {
        rt.block_on(fake.wait_for(path, 1, Duration::from_secs(60)));
    }
    let dir = d.crash();
    std::fs::write(&release, "").unwrap();
    let d = support::Daemon::start_in(dir, &rules, &extra);
    support::wait_for(Duration::from_secs(30), || {
        let (_, v) = d.get("/api/v1/deployments/paged");
        (v["state"] == "rolled_back" && v["actions"][0]["status"] == "succeeded").then_some(())
    })
    .unwrap_or_else(|| panic!("the rollback never finished; log:\n{}", d.log()));
    for path in ["/am/r0", "/am/r1"] {
        support::wait_for(Duration::from_secs(20), || {
            fake.received_at(path)
                .last()
                .is_some_and(|r| ends_in(&r.json()[0]) <= 1.0)
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{path}: never resolved; log:\n{}", d.log()));
        let got: Vec<Value> = fake
            .received_at(path)
            .iter()
            .map(|r| r.json()[0].clone())
            .collect();
        // Fired, then sent again by the restarted daemon (Alertmanager takes a repeat as a
        // refresh of the same alert): its refresher re-sends the open alert on start, and
        // when the kill came between the first send and its record, the queued notice goes
        // out once more. Then resolved once.
        let (last, firing) = got.split_last().unwrap();
        assert!((1..=3).contains(&firing.len()), "{path}: {got:#?}");
        for a in firing {
            assert_eq!(a["labels"]["alertname"], "RollguardRollbackInProgress");
            assert_eq!(a["labels"], got[0]["labels"], "{path}: one alert");
            assert!(ends_in(a) > 60.0, "{path}: firing with a lease");
        }
        assert_eq!(
            last["labels"], got[0]["labels"],
            "{path}: the same alert resolves"
        );
        assert!(ends_in(last) <= 1.0, "{path}: resolved with endsAt now");
    }
    let action = |r: &Value| r["event_action"].as_str().unwrap_or_default().to_owned();
    let pd: Vec<Value> = support::wait_for(Duration::from_secs(20), || {
        let got: Vec<Value> = fake
            .received_at("/pd/v2/enqueue")
            .iter()
            .map(|r| r.json())
            .collect();
        got.last()
            .is_some_and(|r| action(r) == "resolve")
            .then_some(got)
    })
    .unwrap_or_else(|| panic!("the page was never resolved; log:\n{}", d.log()));
    // One trigger, or two when the daemon died between sending it and recording that: the
    // restarted daemon sends it again with the same dedup key, which PagerDuty folds into the
    // open incident. Then one resolve for the same key.
    let (resolve, triggers) = pd.split_last().unwrap();
    assert!((1..=2).contains(&triggers.len()), "paged once: {pd:#?}");
    for t in triggers {
        assert_eq!(action(t), "trigger", "{pd:#?}");
        assert_eq!(t["dedup_key"], pd[0]["dedup_key"], "one incident: {pd:#?}");
    }
    assert_eq!(resolve["dedup_key"], pd[0]["dedup_key"]);
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
    drop(d);
}

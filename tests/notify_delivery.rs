//! Delivery: Retry-After (header and Discord's JSON), retries with backoff and dead letters,
//! pacing, the Alertmanager lease, PagerDuty trigger/resolve, and a message queued before a
//! daemon restart delivered after it (the real binary).

use crate::support;
use crate::support::receivers;

use std::collections::BTreeMap;
use std::time::Duration;

use receivers::{Fake, Notifying, Reply, WebhookRestart, ends_in, fast, notice};
use rollguard::config::{NotifierKind, Secret, Severity};
use rollguard::events::NoticeKind;
use rollguard::store::{SqliteStore, Store};

/// One notice of `kind` through a notifier `to` alone, and the first two requests to `path`.
async fn first_two(
    fake: &Fake,
    to: NotifierKind,
    path: &str,
    kind: NoticeKind,
) -> (Notifying, Vec<receivers::Received>) {
    let r = Notifying::one("n", fast(to));
    r.send("n", &notice(kind, "d1"));
    let got = fake.wait_for(path, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    (r, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_then_200_delivers_exactly_once_after_the_delay() {
    let fake = Fake::start().await;
    fake.script([Reply::status(429)
        .header("Retry-After", "1")
        .body("rate_limited")]);
    let slack = NotifierKind::Slack {
        url: Secret::Inline(fake.url("/slack/hook")),
    };
    let (r, got) = first_two(&fake, slack, "/slack", NoticeKind::RollbackStarted).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After said 1 s"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    assert_eq!(got[0].body, got[1].body, "the same message again");
    let items = r.settled().await;
    assert_eq!((items[0].status.as_str(), items[0].attempts), ("sent", 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.received_at("/slack").len(),
        2,
        "delivered once, never again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_json_retry_after_is_honoured() {
    let fake = Fake::start().await;
    fake.script([Reply::status(429)
        .header("Content-Type", "application/json")
        .body(r#"{"message":"You are being rate limited.","retry_after":0.6,"global":false}"#)]);
    let discord = NotifierKind::Discord {
        url: Secret::Inline(fake.url("/discord/api/webhooks/1/t")),
    };
    let (r, got) = first_two(&fake, discord, "/discord", NoticeKind::Held).await;
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(550),
        "{:?}",
        got[1].at - got[0].at
    );
    assert_eq!(r.settled().await[0].status, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_then_dead_lettered_and_4xx_is_permanent() {
    let fake = Fake::start().await;
    fake.script((0..3).map(|_| Reply::status(503)));
    let mut cfg = fast(NotifierKind::Mattermost {
        url: Secret::Inline(fake.url("/mattermost/hooks/x")),
    });
    cfg.max_attempts = 3;
    let r = Notifying::one("mm", cfg);
    r.send("mm", &notice(NoticeKind::RollbackFailed, "d3"));
    let items = r.settled().await;
    assert_eq!(
        (items[0].status.as_str(), items[0].attempts),
        ("dead", 3),
        "{items:?}"
    );
    assert!(items[0].last_error.contains("503"));
    let got = fake.received_at("/mattermost");
    assert_eq!(got.len(), 3);
    assert!(
        got[2].at - got[1].at > got[1].at - got[0].at,
        "backoff grows"
    );

    // A 400 will never succeed: one attempt, dead.
    fake.script([Reply::status(400).body("invalid_payload")]);
    r.send("mm", &notice(NoticeKind::RollbackFailed, "d4"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let items = r.settled().await;
    assert_eq!(
        (items[1].status.as_str(), items[1].attempts),
        ("dead", 1),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_one_destination_are_paced() {
    let fake = Fake::start().await;
    let mut cfg = fast(NotifierKind::Slack {
        url: Secret::Inline(fake.url("/slack/hook")),
    });
    cfg.pace = Duration::from_millis(300);
    let r = Notifying::one("slack", cfg);
    for i in 0..3 {
        r.send("slack", &notice(NoticeKind::StepPromoted, &format!("p{i}")));
    }
    let got = fake.wait_for("/slack", 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3);
    for w in got.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(280),
            "{:?}",
            w[1].at - w[0].at
        );
    }
    // In order.
    let titles: Vec<String> = got
        .iter()
        .map(|g| {
            g.json()["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        titles[0].ends_with("p0") && titles[2].ends_with("p2"),
        "{titles:?}"
    );
}

/// An Alertmanager destination (no labels of its own, alerts kept for up to an hour).
fn alertmanager(
    urls: Vec<String>,
    basic_auth: Option<rollguard::config::BasicAuth>,
    resend: Duration,
) -> rollguard::config::NotifierConfig {
    fast(NotifierKind::Alertmanager {
        urls,
        bearer_token: None,
        basic_auth,
        tls: Default::default(),
        labels: BTreeMap::new(),
        resend,
        max_active: Duration::from_secs(3600),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_alerts_are_refreshed_while_active_and_resolved_with_ends_at_now() {
    let fake = Fake::start().await;
    let cfg = alertmanager(vec![fake.url("/am")], None, Duration::from_millis(300));
    let r = Notifying::one("am", cfg);
    r.send("am", &notice(NoticeKind::Held, "d5"));
    // The first send plus at least two refreshes, each with a lease of 4 x resend ahead.
    let got = fake.wait_for("/am", 3, Duration::from_secs(10)).await;
    assert!(got.len() >= 3, "{}", got.len());
    let first = &got[0].json()[0];
    assert_eq!(first["labels"]["alertname"], "RollguardDeploymentHeld");
    assert_eq!(first["labels"]["deployment"], "d5");
    let refreshed = &got[2].json()[0];
    assert_eq!(refreshed["labels"], first["labels"], "same identity");
    assert_eq!(
        refreshed["startsAt"], first["startsAt"],
        "startsAt kept across refreshes"
    );
    let lease = ends_in(refreshed);
    assert!(lease > 0.5 && lease <= 1.3, "lease {lease} s (4 x 300 ms)");

    // Promotion resolves it: same labels, endsAt now; then no more refreshes.
    r.send("am", &notice(NoticeKind::Promoted, "d5"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let resolved = loop {
        let all = fake.received_at("/am");
        if let Some(a) = all
            .iter()
            .map(|x| x.json()[0].clone())
            .find(|a| ends_in(a) <= 0.1)
        {
            break a;
        }
        assert!(tokio::time::Instant::now() < deadline, "never resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resolved["labels"], first["labels"]);
    let n = fake.received_at("/am").len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fake.received_at("/am").len(),
        n,
        "a resolved alert is not refreshed"
    );
    assert!(r.store.incidents("am", None).unwrap().is_empty());

    // A newer problem replaces the older one for the same deployment.
    r.send("am", &notice(NoticeKind::CheckFailing, "d6"));
    r.send("am", &notice(NoticeKind::RollbackFailed, "d6"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = r.store.incidents("am", None).unwrap();
        if open.len() == 1 && open[0].alertname == "RollguardRollbackFailed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{open:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prometheus' advice for an Alertmanager cluster: every alert and every resolve to every
/// replica, never through a load balancer. A replica that answers 503 gets its copies late
/// (its own lane retries) and delays nothing for the other; both see the alert fire and
/// resolve, each request with the configured basic auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alertmanager_replica_gets_every_alert_and_resolve_with_auth() {
    let a = Fake::start().await;
    let b = Fake::start().await;
    b.script([Reply::status(503), Reply::status(503), Reply::status(503)]);
    let auth = rollguard::config::BasicAuth {
        username: "rollguard".into(),
        password: Secret::Inline("s3cret".into()),
    };
    let urls = vec![a.url("/am"), b.url("/am")];
    let cfg = alertmanager(urls, Some(auth), Duration::from_secs(3600));
    let r = Notifying::one("am", cfg);
    r.send("am", &notice(NoticeKind::Held, "d9"));
    // The healthy replica is told at once, while the other still answers 503.
    a.wait_for("/am", 1, Duration::from_secs(10)).await;
    r.send("am", &notice(NoticeKind::Promoted, "d9"));
    let items = r.settled().await;
    assert!(
        items.iter().all(|i| i.status == "sent"),
        "every copy delivered: {items:#?}"
    );
    let mut lanes: Vec<&str> = items.iter().map(|i| i.notifier.as_str()).collect();
    lanes.sort();
    lanes.dedup();
    assert_eq!(lanes, ["am", "am#2"], "one lane per replica");
    for (name, fake, failures) in [("first", &a, 0), ("second", &b, 3)] {
        let got = fake.received_at("/am");
        // Fired (and refreshed, if the refresher's first tick came after the alert opened),
        // then resolved once.
        let (resolved, firing) = got[failures..]
            .split_last()
            .unwrap_or_else(|| panic!("{name} replica: {got:#?}"));
        let resolved = resolved.json()[0].clone();
        assert!(!firing.is_empty(), "{name} replica: {got:#?}");
        for f in firing {
            let fired = f.json()[0].clone();
            assert_eq!(fired["labels"]["deployment"], "d9", "{name}");
            assert_eq!(
                resolved["labels"], fired["labels"],
                "{name}: the same alert resolves"
            );
            assert!(ends_in(&fired) > 60.0, "{name}: fires with a lease");
        }
        assert!(
            ends_in(&resolved) <= 0.5,
            "{name}: resolved with endsAt now"
        );
        for x in &got {
            assert_eq!(
                x.headers.get("authorization").and_then(|v| v.to_str().ok()),
                Some("Basic cm9sbGd1YXJkOnMzY3JldA=="),
                "{name}: basic auth on every request"
            );
        }
    }
    for lane in ["am", "am#2"] {
        assert!(r.store.incidents(lane, None).unwrap().is_empty(), "{lane}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_pages_on_failure_and_resolves_with_the_same_dedup_key() {
    let fake = Fake::start().await;
    let cfg = fast(NotifierKind::Pagerduty {
        routing_key: Secret::Inline("R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12".into()),
        url: Some(fake.url("/pd")),
        min_severity: Severity::Critical,
        source: Some("ops-1".into()),
    });
    let r = Notifying::one("pd", cfg);
    r.send("pd", &notice(NoticeKind::Held, "d7")); // warning: no page
    r.send("pd", &notice(NoticeKind::RollbackStarted, "d7")); // change event only
    r.send("pd", &notice(NoticeKind::RollbackFailed, "d7")); // page
    r.send("pd", &notice(NoticeKind::RollbackSucceeded, "d7")); // resolve + change event
    r.send("pd", &notice(NoticeKind::Promoted, "other")); // nothing open: no resolve
    let items = r.settled().await;
    assert!(
        items
            .iter()
            .all(|i| i.status == "sent" || i.status == "skipped"),
        "{items:#?}"
    );
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
    let events: Vec<serde_json::Value> = fake
        .received_at("/pd/v2/enqueue")
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert_eq!(events[0]["payload"]["source"], "ops-1");
    assert_eq!(events[1]["event_action"], "resolve");
    assert_eq!(events[0]["dedup_key"], events[1]["dedup_key"]);
    assert_eq!(
        fake.received_at("/pd/v2/change/enqueue").len(),
        3,
        "rollback started, succeeded, promoted"
    );
}

/// The real binary: a notice queued while the destination is down is still queued after a
/// restart, and delivered once it is up.
#[test]
fn a_message_queued_before_a_restart_is_delivered_after_it() {
    // A free port nothing listens on yet.
    let (w, d) = WebhookRestart::start(
        support::free_port(),
        "    max_attempts: 100\n    retry_backoff: 200ms\n",
        "queued",
    );
    let db = d.dir.path().join("state");
    let pending = support::wait_for(Duration::from_secs(10), || {
        let s = SqliteStore::open(&db).ok()?;
        let items = s.outbox(Some("chat")).ok()?;
        items
            .iter()
            .any(|i| i.attempts >= 1 && i.status == "pending")
            .then_some(items)
    })
    .expect("the notice is queued and failing while the destination is down");
    assert!(pending[0].last_error.contains("connection"), "{pending:?}");
    let dir = d.stop();
    let (d, fake, started) = w.restart(dir);
    assert_eq!(
        started.len(),
        1,
        "delivered after the restart, once; log:\n{}",
        d.log()
    );
    assert_eq!(started[0].json()["subject"]["deployment"], "queued");
    // The delivery id was given when the row was queued, not per attempt or per process.
    let queued_id = pending
        .iter()
        .find(|i| i.payload.to_string().contains("deployment_started"))
        .map(|i| i.delivery_id.clone())
        .expect("the started notice was queued");
    assert_eq!(
        started[0]
            .headers
            .get("webhook-id")
            .and_then(|h| h.to_str().ok()),
        Some(queued_id.as_str())
    );
    assert!(fake.errors().is_empty(), "{:?}", fake.errors());
}

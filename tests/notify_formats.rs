//! Every event reaches every notifier type in its documented format: the real notifier code
//! (outbox, workers, renderers) sends over real HTTP to local fakes that check each
//! service's documented payload shape, limits and escaping.

use crate::support::{self, receivers};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use receivers::{Fake, WEBHOOK_SECRET};
use rollguard::action::notify::Notifiers;
use rollguard::config::{NotifierConfig, NotifierKind, Secret, Severity};
use rollguard::events::{Lifecycle, Notice, NoticeKind, Subject};
use rollguard::store::{SqliteStore, Store};
use rollguard::telemetry::Telemetry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A string that would ping or inject in a careless renderer.
const NASTY: &str = "<!channel> @everyone @here <users/all> & *bold* [x](http://evil) ${secret}";

fn checks() -> Vec<rollguard::judge::CheckReport> {
    serde_json::from_value(json!([
        {
            "name": "error-ratio", "kind": "ratio", "outcome": "pass", "enforce": "rollback", "critical": true,
            "evidence": 0.4, "threshold": 100.0,
            "effect": {"measure": "rate ratio", "estimate": 1.02, "lower": 0.9, "upper": 1.1, "confidence": 0.99, "unit": "ratio"},
            "baseline": {"value": 0.0052, "n": 41220.0}, "canary": {"value": 0.0053, "n": 38107.0},
            "explanation": "canary no worse than baseline"
        },
        {
            "name": "latency-p99", "kind": "histogram", "outcome": "fail", "enforce": "rollback", "critical": true,
            "evidence": 412.0, "threshold": 100.0,
            "effect": {"measure": "odds ratio of slow requests", "estimate": 7.9, "lower": 5.2, "upper": 12.0, "confidence": 0.99, "unit": "ratio"},
            "baseline": {"value": 0.0052, "n": 41220.0}, "canary": {"value": 0.041, "n": 38107.0},
            "explanation": format!("canary slow share x7.9 the baseline's; worse than the x1.5 tolerance {NASTY}")
        }
    ]))
    .unwrap()
}

fn notice(kind: NoticeKind, text: String) -> Notice {
    let ops = matches!(
        kind,
        NoticeKind::BackendDown | NoticeKind::BackendRecovered | NoticeKind::RuleReloadFailed
    );
    Notice {
        kind,
        at: rollguard::store::now(),
        subject: (!ops).then(|| Subject {
            deployment: "checkout-42".into(),
            service: format!("checkout {NASTY}"),
            analysis: "http-service".into(),
            version: "v2025.11.3".into(),
            baseline_version: "v2025.11.2".into(),
        }),
        title: format!("{} checkout-42 {NASTY}", kind.as_str()),
        text,
        checks: if ops { vec![] } else { checks() },
        link: None,
        key: if ops {
            "rollguard/backend".into()
        } else {
            "rollguard/checkout-42".into()
        },
    }
}

fn destinations(fake: &Fake) -> BTreeMap<String, NotifierConfig> {
    let mut d = BTreeMap::new();
    let url = |p: &str| Secret::Inline(fake.url(p));
    let mut add = |name: &str, kind: NotifierKind| {
        let mut c = NotifierConfig::new(kind);
        c.public_url = Some("https://rollguard.example".into());
        c.retry_backoff = Duration::from_millis(50);
        d.insert(name.to_string(), c);
    };
    add(
        "slack",
        NotifierKind::Slack {
            url: url("/slack/T1/B1/x"),
        },
    );
    add(
        "mattermost",
        NotifierKind::Mattermost {
            url: url("/mattermost/hooks/abc"),
        },
    );
    add(
        "teams",
        NotifierKind::Teams {
            url: url("/teams/workflows/flow?sig=abc"),
        },
    );
    add(
        "discord",
        NotifierKind::Discord {
            url: url("/discord/api/webhooks/1/tok"),
        },
    );
    add(
        "gchat",
        NotifierKind::GoogleChat {
            url: url("/gchat/v1/spaces/S/messages?key=k&token=t"),
        },
    );
    add(
        "pagerduty",
        NotifierKind::Pagerduty {
            routing_key: Secret::Inline("R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12".into()),
            url: Some(fake.url("/pd")),
            min_severity: Severity::Warning,
            source: None,
        },
    );
    add(
        "alertmanager",
        NotifierKind::Alertmanager {
            urls: vec![fake.url("/am")],
            bearer_token: None,
            basic_auth: None,
            tls: Default::default(),
            labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
            resend: Duration::from_secs(60),
            max_active: Duration::from_secs(3600),
        },
    );
    add(
        "webhook",
        NotifierKind::Webhook {
            url: url("/webhook"),
            secret: Some(Secret::Inline(WEBHOOK_SECRET.into())),
        },
    );
    d
}

/// Waits until nothing is pending in the outbox.
async fn drained(store: &dyn Store) -> Vec<rollguard::store::OutboxItem> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let items = store.outbox(None).unwrap();
        if items.iter().all(|i| i.status != "pending") || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_every_notifier_type_in_its_documented_format() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let dests = destinations(&fake);
    let names: Vec<String> = dests.keys().cloned().collect();
    let n = Arc::new(
        Notifiers::new(store.clone(), dests, Arc::new(Telemetry::new()))
            .unwrap()
            .with_pace(Duration::ZERO),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(n.clone().run(shutdown.clone()));

    // Every kind once, with a normal text; then one with an oversized text (limits).
    for k in NoticeKind::ALL {
        n.enqueue(
            &names,
            &notice(
                k,
                format!(
                    "{} happened. Action: running rollback-hook. {NASTY}",
                    k.as_str()
                ),
            ),
        );
    }
    let huge = format!("{}END", "too much to say. ".repeat(4000));
    n.enqueue(&names, &notice(NoticeKind::RollbackFailed, huge));

    let items = drained(&*store).await;
    shutdown.cancel();
    let _ = run.await;
    assert_eq!(
        fake.errors(),
        Vec::<String>::new(),
        "payloads the services would reject"
    );
    let bad: Vec<_> = items
        .iter()
        .filter(|i| i.status != "sent" && i.status != "skipped")
        .collect();
    assert!(bad.is_empty(), "undelivered: {bad:#?}");

    let all = NoticeKind::ALL.len() + 1;
    // Chat destinations and the webhook get every notice.
    for p in [
        "/slack",
        "/mattermost",
        "/teams",
        "/discord",
        "/gchat",
        "/webhook",
    ] {
        assert_eq!(fake.received_at(p).len(), all, "{p}");
    }
    // Alertmanager: every notice that opens or closes an alert, never the informational ones.
    let am = fake.received_at("/am");
    let am_kinds: Vec<String> = am
        .iter()
        .flat_map(|r| {
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["annotations"]["event"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for k in NoticeKind::ALL {
        let sent = am_kinds.iter().any(|e| e == k.as_str());
        match k.lifecycle() {
            Lifecycle::Open => assert!(sent, "{k:?} must fire an alert"),
            Lifecycle::Info => assert!(!sent, "{k:?} is not an alert"),
            Lifecycle::Close => {}
        }
    }
    // PagerDuty (min_severity warning): a trigger per opening kind, resolves, change events.
    let pd = fake.received_at("/pd/v2/enqueue");
    let actions: Vec<String> = pd
        .iter()
        .map(|r| r.json()["event_action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"trigger".to_string()) && actions.contains(&"resolve".to_string()),
        "{actions:?}"
    );
    let trigger_keys: Vec<String> = pd
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        trigger_keys.iter().all(|k| k.starts_with("rollguard/")),
        "{trigger_keys:?}"
    );
    let changes = fake.received_at("/pd/v2/change/enqueue");
    assert_eq!(
        changes.len(),
        4,
        "rollback started/succeeded, aborted, promoted are change events"
    );

    // Every chat message says what happened, to which deployment and version, which check,
    // both arms' numbers, the effect with its bounds, and links to the details.
    for p in ["/slack", "/mattermost", "/teams", "/discord", "/gchat"] {
        let r = &fake.received_at(p)[3]; // rollback_started
        let t = r.text();
        support::assert_says_all(
            p,
            &t,
            &[
                "rollback_started checkout-42",
                "v2025.11.3",
                "v2025.11.2",
                "latency-p99",
                "canary 4.10 %",
                "baseline 0.52 %",
                "x7.9",
                "x5.2",
                "x12",
                "99 % bounds",
                "running rollback-hook",
                "https://rollguard.example/api/v1/deployments/checkout-42",
            ],
        );
        // The failing check comes first.
        assert!(
            t.find("latency-p99").unwrap() < t.find("error-ratio").unwrap(),
            "{p}: failing check first"
        );
    }
    // Mention-safety per destination.
    let slack = fake.received_at("/slack")[0].text();
    assert!(
        slack.contains("&lt;!channel&gt;") && !slack.contains("<!channel>"),
        "{slack}"
    );
    assert!(
        fake.received_at("/discord")
            .iter()
            .all(|r| r.json()["allowed_mentions"]["parse"] == json!([]))
    );
    let gchat = fake.received_at("/gchat")[0].json();
    assert_eq!(
        gchat["thread"]["threadKey"], "rollguard/checkout-42",
        "one thread per deployment"
    );
    // The oversized message was cut to each limit and still delivered.
    let last_discord = fake.received_at("/discord").last().unwrap().json();
    assert!(
        last_discord["embeds"][0]["description"]
            .as_str()
            .unwrap()
            .ends_with('…')
    );
    let webhook = fake.received_at("/webhook")[0].json();
    assert_eq!(
        webhook["link"],
        "https://rollguard.example/api/v1/deployments/checkout-42"
    );
    // Every documented limit in rollguard's table was checked against real requests.
    let checked = receivers::limits_checked();
    for l in rollguard::action::notify::limits::LIMITS {
        assert!(
            checked.contains(&(l.service, l.field)),
            "no request was checked against {l:?}"
        );
    }
}

#[test]
fn retired_teams_connector_urls_are_rejected_in_every_form() {
    assert!(rollguard::config::is_retired_teams_url(
        "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y"
    ));
    assert!(rollguard::config::is_retired_teams_url(
        "https://webhook.office.com/x"
    ));
    assert!(!rollguard::config::is_retired_teams_url(
        "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x"
    ));
}

/// docs/notifications.md's table of documented limits says what the code's table says.
#[test]
fn the_documented_limits_table_matches_the_code() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/notifications.md"
    ))
    .unwrap();
    let limits = rollguard::action::notify::limits::LIMITS;
    for l in limits {
        let row = format!(
            "| {} | `{}` | {} {} | {} |",
            l.service,
            l.field,
            l.max,
            l.unit.as_str(),
            l.source
        );
        assert!(docs.contains(&row), "docs/notifications.md lacks {row}");
    }
    let rows = docs
        .lines()
        .skip_while(|l| !l.starts_with("### Documented limits"))
        .filter(|l| l.starts_with("| ") && l.contains("` |"))
        .count();
    assert_eq!(
        rows,
        limits.len(),
        "the docs list limits the code does not have"
    );
}

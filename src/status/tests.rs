use std::time::Duration;

use super::*;
use crate::deploy::{ArmSpec, DeploymentRequest};
use crate::judge::{Outcome, Step, Verdict};
use crate::store::{ActionStatus, EventKind, Purpose, new_record};

const HOSTILE: &str = "<script>alert('x')</script>&\"";

fn record(id: &str, state: State) -> DeploymentRecord {
    let req = DeploymentRequest {
        id: id.into(),
        service: Some(format!("svc {HOSTILE}")),
        analysis: "http".into(),
        params: Default::default(),
        baseline: ArmSpec::default(),
        canary: ArmSpec::default(),
        strategy: Strategy::Canary {
            steps: vec![10.0, 50.0, 100.0],
            step_duration: None,
        },
        timing: None,
        labels: [(format!("team {HOSTILE}"), HOSTILE.to_string())].into(),
    };
    let mut r = new_record(req, "r.yaml".into(), "v1".into(), String::new());
    r.state = state;
    r.reason = format!("reason {HOSTILE}");
    r
}

fn report(name: &str, ev: f64, outcome: Outcome) -> crate::judge::CheckReport {
    crate::judge::CheckReport {
        explanation: format!("explained {HOSTILE}"),
        ..crate::chart::tests::report(name, 0.01, 0.05, ev, outcome)
    }
}

fn judged(rec: &mut DeploymentRecord, names: &[&str], intervals: u64) {
    for i in 1..=intervals {
        let last = i == intervals;
        let outcome = if last {
            Outcome::Fail
        } else {
            Outcome::Pending
        };
        let step = Step {
            t: Duration::from_secs(10 * i),
            verdict: if last {
                Verdict::Rollback {
                    check: names[0].into(),
                    reason: format!("{} failed", names[0]),
                }
            } else {
                Verdict::Continue
            },
            checks: names
                .iter()
                .map(|n| report(n, 1.5f64.powi(i as i32), outcome))
                .collect(),
            traffic: None,
            newly_failed: vec![],
        };
        rec.chart.record(&step);
        rec.checks = serde_json::to_value(&step.checks).unwrap_or_default();
        rec.elapsed_ms = 10_000 * i;
    }
}

fn no_raw_hostile(html: &str) {
    assert!(!html.contains("<script>alert"), "unescaped text in {html}");
    assert!(!html.contains("'x')"), "unescaped quote");
}

#[test]
fn list_shows_running_first_and_escapes_everything() {
    let running = [record("canary-<1>", State::Analysing)];
    let recent = [record("old", State::RolledBack)];
    let html = list_page(&running, &recent, running[0].created_at + 300.0);
    no_raw_hostile(&html);
    let r = html.find("canary-&lt;1&gt;").expect("running row");
    let o = html.find(">old<").expect("recent row");
    assert!(r < o);
    assert!(html.contains("/deployments/canary-%3C1%3E"));
    assert!(html.contains("canary step 1/3 (10 %)"));
    assert!(html.contains("5 min"));
    assert!(html.contains("data-refresh="));
}

#[test]
fn deployment_page_has_a_chart_per_check_the_decision_and_the_timeline() {
    let mut rec = record("d1", State::RolledBack);
    judged(&mut rec, &["errors", HOSTILE], 12);
    let events = [crate::store::Event {
        seq: 1,
        deployment: "d1".into(),
        at: rec.created_at,
        kind: EventKind::Decision,
        message: format!("rolled back {HOSTILE}"),
        data: serde_json::Value::Null,
    }];
    let mut action = Action::pending(
        "a1".into(),
        "d1",
        "rollback-hook",
        Purpose::Rollback,
        serde_json::Value::Null,
    );
    action.status = ActionStatus::Succeeded;
    action.output = format!("kubectl said {HOSTILE}");
    let html = deployment_page(&DeploymentView {
        rec: &rec,
        events: &events,
        actions: &[action],
        notifications: &[],
        now: rec.created_at + 60.0,
    });
    no_raw_hostile(&html);
    assert_eq!(html.matches("<article class=\"check\"").count(), 2);
    assert_eq!(html.matches("<svg class=\"chart arms\"").count(), 2);
    assert_eq!(html.matches("<svg class=\"chart evidence\"").count(), 2);
    assert_eq!(html.matches("class=\"decision\"").count(), 4);
    assert!(html.contains("errors failed"));
    assert!(html.contains("kubectl said &lt;script&gt;"));
    assert!(html.contains("<b>team &lt;script&gt;"));
    assert!(html.contains("ev-decision"));
    assert!(
        !html.contains("data-refresh"),
        "a finished deployment is not refreshed"
    );
    assert!(
        !html.contains("style="),
        "inline styles would need unsafe-inline"
    );
}

#[test]
fn an_abort_is_marked_where_the_analysis_stopped() {
    let mut rec = record("d2", State::Analysing);
    judged(&mut rec, &["errors"], 3);
    rec.chart.decision = None;
    rec.state = State::Aborted;
    let html = deployment_page(&DeploymentView {
        rec: &rec,
        events: &[],
        actions: &[],
        notifications: &[],
        now: rec.created_at,
    });
    assert_eq!(html.matches("class=\"decision\"").count(), 2);
}

#[test]
fn the_report_is_one_file_without_script_or_requests() {
    let mut rec = record("r", State::RolledBack);
    judged(&mut rec, &["errors"], 5);
    let latest: Vec<crate::judge::CheckReport> =
        serde_json::from_value(rec.checks.clone()).unwrap_or_default();
    let html = report_page(&ReportView {
        title: "backtest <x>",
        subtitle: HOSTILE,
        verdict: "rollback",
        reason: "errors failed",
        chart: &rec.chart,
        latest: &latest,
        end_ms: rec.elapsed_ms,
    });
    no_raw_hostile(&html);
    assert!(!html.contains("<script"));
    assert!(!html.contains(" src="));
    assert!(!html.contains("stylesheet"));
    assert!(html.contains("<style>"));
    assert!(html.contains("Content-Security-Policy"));
    assert_eq!(html.matches("<article class=\"check\"").count(), 1);
}

#[test]
fn escapes_every_special_character() {
    assert_eq!(
        esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn notifications_show_their_delivery_status_escaped() {
    let rec = record("d3", State::RolledBack);
    let item = |notifier: &str, status: &str, error: &str| OutboxItem {
        id: 1,
        delivery_id: "0190".into(),
        notifier: notifier.into(),
        payload: serde_json::json!({"type": "notice", "notice": {"title": format!("Rolled back {HOSTILE}")}}),
        attempts: 3,
        next_at: 0.0,
        status: status.into(),
        last_error: error.into(),
    };
    let html = deployment_page(&DeploymentView {
        rec: &rec,
        events: &[],
        actions: &[],
        notifications: &[
            item("chat", "sent", ""),
            item("pager", "dead", &format!("HTTP 400: {HOSTILE}")),
        ],
        now: rec.created_at,
    });
    no_raw_hostile(&html);
    assert!(
        html.contains("<tr class=\"n-sent\"><td>chat</td>"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"n-dead\"><td>pager</td>"),
        "{html}"
    );
    assert!(html.contains("HTTP 400: &lt;script&gt;"));
    assert!(html.contains("Rolled back &lt;script&gt;"));
}

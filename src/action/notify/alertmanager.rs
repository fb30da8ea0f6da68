//! Prometheus Alertmanager API v2 (`POST /api/v2/alerts`, a JSON array of alerts). Labels
//! identify an alert (`alertname` per kind, plus deployment, service, analysis, severity and
//! the configured extra labels); annotations carry the words and numbers. rollguard copies
//! Prometheus' lease pattern: an active alert is sent again every `resend_interval` with
//! `endsAt = now + 4 × resend_interval`, so it stays firing while rollguard lives and
//! expires on its own if rollguard dies; it is resolved by sending the same labels with
//! `endsAt = now`. A deployment has at most one active alert: a newer problem replaces the
//! older one, and a closing notice resolves it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::digest::{Digest, digest, truncate_chars};
use super::render::{Change, Ctx, Plan, Rendered};
use crate::config::NotifierKind;
use crate::events::{Lifecycle, Notice};
use crate::store::Incident;

/// Annotation length kept (Alertmanager has no documented limit; chat receivers do).
const ANNOTATION_MAX: usize = 8000;

struct Settings<'a> {
    /// The replica of this delivery lane (see [`crate::config::NotifierConfig::lanes`]).
    url: &'a str,
    /// `Authorization` header value, when bearer or basic auth is configured.
    authorization: Option<String>,
    labels: &'a BTreeMap<String, String>,
    resend: Duration,
    max_active: Duration,
}

fn settings<'a>(ctx: &'a Ctx<'_>) -> Result<Settings<'a>, String> {
    let NotifierKind::Alertmanager {
        urls,
        bearer_token,
        basic_auth,
        labels,
        resend,
        max_active,
        ..
    } = &ctx.config.kind
    else {
        return Err("not an Alertmanager destination".into());
    };
    let url = urls
        .first()
        .ok_or("an Alertmanager destination without a URL")?;
    let authorization = match (bearer_token, basic_auth) {
        (Some(t), _) => Some(format!("Bearer {}", t.resolve()?)),
        (None, Some(b)) => Some(crate::net::basic_authorization(
            &b.username,
            &b.password.resolve()?,
        )),
        (None, None) => None,
    };
    Ok(Settings {
        url,
        authorization,
        labels,
        resend: *resend,
        max_active: *max_active,
    })
}

impl Settings<'_> {
    /// The `POST /api/v2/alerts` request carrying `alerts`.
    fn request(&self, alerts: Vec<Value>) -> Result<Rendered, String> {
        let mut r = Rendered::json(format!("{}/api/v2/alerts", self.url), &Value::Array(alerts))?;
        if let Some(a) = &self.authorization {
            r.headers.push(("Authorization".into(), a.clone()));
        }
        Ok(r)
    }
}

/// Plans the alerts a notice fires or resolves.
pub fn plan(ctx: &Ctx<'_>, notice: &Notice, d: &Digest) -> Result<Plan, String> {
    let s = settings(ctx)?;
    let lease = ctx.now + 4.0 * s.resend.as_secs_f64();
    let mut alerts = Vec::new();
    let mut changes = Vec::new();
    match notice.kind.lifecycle() {
        Lifecycle::Info => {
            return Ok(Plan::Skip {
                reason: "informational notices are not alerts".into(),
                changes,
            });
        }
        Lifecycle::Open => {
            let name = notice.kind.alertname();
            let starts = ctx
                .open
                .iter()
                .find(|i| i.alertname == name)
                .map_or(notice.at, |i| i.opened_at);
            alerts.push(alert(&s, notice, d, name, starts, lease));
            changes.push(Change::Open {
                key: notice.key.clone(),
                alertname: name.into(),
                notice: serde_json::to_value(notice).unwrap_or_default(),
                at: starts,
            });
            for old in ctx.open.iter().filter(|i| i.alertname != name) {
                alerts.extend(resolved(&s, ctx, old));
                changes.push(close(old));
            }
        }
        Lifecycle::Close => {
            for old in ctx.open {
                alerts.extend(resolved(&s, ctx, old));
                changes.push(close(old));
            }
        }
    }
    // An open always has its alert; a close may have none left to resolve.
    send(&s, alerts, changes, "no alert is active for this key")
}

/// Sends `alerts`, or skips saying `reason` when there are none; with `changes` either way.
fn send(
    s: &Settings<'_>,
    alerts: Vec<Value>,
    changes: Vec<Change>,
    reason: &str,
) -> Result<Plan, String> {
    if alerts.is_empty() {
        return Ok(Plan::Skip {
            reason: reason.into(),
            changes,
        });
    }
    Ok(Plan::Send {
        request: s.request(alerts)?,
        changes,
    })
}

/// Forgets an open alert.
fn close(i: &Incident) -> Change {
    Change::Close {
        key: i.key.clone(),
        alertname: i.alertname.clone(),
    }
}

/// Sends every active alert again with a fresh lease; alerts active longer than
/// `max_active` are no longer refreshed and expire in Alertmanager.
pub fn refresh(ctx: &Ctx<'_>) -> Result<Plan, String> {
    let s = settings(ctx)?;
    let lease = ctx.now + 4.0 * s.resend.as_secs_f64();
    let mut alerts = Vec::new();
    let mut changes = Vec::new();
    for i in ctx.open {
        let Ok(n) = serde_json::from_value::<Notice>(i.notice.clone()) else {
            changes.push(close(i));
            continue;
        };
        if ctx.now - i.opened_at > s.max_active.as_secs_f64() {
            tracing::info!(alert = %i.alertname, key = %i.key, "alert active longer than max_active; no longer refreshed, it expires in Alertmanager");
            changes.push(close(i));
            continue;
        }
        alerts.push(alert(
            &s,
            &n,
            &digest(&n, ctx.config.public_url.as_deref()),
            &i.alertname,
            i.opened_at,
            lease,
        ));
    }
    send(&s, alerts, changes, "no active alerts")
}

/// The resolving copy of an open alert (same labels, `endsAt` now).
fn resolved(s: &Settings<'_>, ctx: &Ctx<'_>, i: &Incident) -> Option<Value> {
    let n: Notice = serde_json::from_value(i.notice.clone()).ok()?;
    Some(alert(
        s,
        &n,
        &digest(&n, ctx.config.public_url.as_deref()),
        &i.alertname,
        i.opened_at,
        ctx.now,
    ))
}

fn alert(
    s: &Settings<'_>,
    n: &Notice,
    d: &Digest,
    alertname: &str,
    starts: f64,
    ends: f64,
) -> Value {
    let mut labels: BTreeMap<String, String> = s.labels.clone();
    labels.insert("alertname".into(), alertname.into());
    labels.insert("severity".into(), n.kind.severity().as_str().into());
    labels.insert("source".into(), "rollguard".into());
    if let Some(sub) = &n.subject {
        for (k, v) in [
            ("deployment", &sub.deployment),
            ("service", &sub.service),
            ("analysis", &sub.analysis),
        ] {
            if !v.is_empty() {
                labels.insert(k.into(), v.clone());
            }
        }
    } else {
        labels.insert("rollguard_key".into(), n.key.clone());
    }
    let mut description = d.text.clone();
    for (k, v) in &d.facts {
        description.push_str(&format!("\n{k}: {v}"));
    }
    for c in &d.checks {
        description.push_str(&format!("\n{}: {} — {}", c.name, c.outcome, c.numbers()));
    }
    let mut annotations = json!({
        "summary": truncate_chars(&d.headline, 1000),
        "description": truncate_chars(&description, ANNOTATION_MAX),
        "event": n.kind.as_str(),
    });
    if let Some(c) = d.checks.iter().find(|c| c.failed) {
        annotations["check"] = json!(c.name);
        annotations["numbers"] = json!(c.numbers());
    }
    let mut a = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": crate::units::rfc3339(starts),
        "endsAt": crate::units::rfc3339(ends.max(starts)),
    });
    if let Some(l) = &d.link {
        a["generatorURL"] = json!(l);
        a["annotations"]["link"] = json!(l);
    }
    a
}

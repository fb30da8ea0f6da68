//! PagerDuty Events API v2. Notices that open an incident at or above the configured
//! severity page (`trigger`); a later closing notice for the same deployment resolves it with
//! the same `dedup_key` (the notice key, one per deployment). Rollbacks, aborts and
//! promotions are also sent as Change Events, which show on the service timeline without
//! paging anyone. Limits: summary 1024 characters, dedup_key 255.

use serde_json::{Value, json};

use super::digest::{Digest, truncate_chars};
use super::limits::{PAGERDUTY_DEDUP_KEY as DEDUP_MAX, PAGERDUTY_SUMMARY as SUMMARY_MAX};
use super::render::{Change, Ctx, Part, Plan, Rendered};
use crate::config::{NotifierKind, Severity};
use crate::events::{Lifecycle, Notice, NoticeKind};

const DEFAULT_URL: &str = "https://events.pagerduty.com";
/// The incident name kept in the store for this destination.
const INCIDENT: &str = "pagerduty";

/// Which requests a notice needs.
pub fn parts(min_severity: Severity, notice: &Notice) -> Vec<Part> {
    let mut v = Vec::new();
    match notice.kind.lifecycle() {
        Lifecycle::Open if notice.kind.severity() >= min_severity => v.push(Part::Message),
        Lifecycle::Close => v.push(Part::Message),
        _ => {}
    }
    if is_change(notice.kind) {
        v.push(Part::Change);
    }
    v
}

fn is_change(k: NoticeKind) -> bool {
    matches!(
        k,
        NoticeKind::RollbackStarted
            | NoticeKind::RollbackSucceeded
            | NoticeKind::Aborted
            | NoticeKind::Promoted
    )
}

/// Plans one part of a notice.
pub fn plan(ctx: &Ctx<'_>, notice: &Notice, d: &Digest, part: Part) -> Result<Plan, String> {
    let NotifierKind::Pagerduty {
        routing_key,
        url,
        min_severity,
        source,
    } = &ctx.config.kind
    else {
        return Err("not a PagerDuty destination".into());
    };
    let base = url.as_deref().unwrap_or(DEFAULT_URL);
    let routing_key = routing_key.resolve()?;
    let source = source.clone().unwrap_or_else(hostname);
    let summary = truncate_chars(
        &format!("{}: {}", notice.title, first_line(&notice.text)),
        SUMMARY_MAX,
    );
    let links: Vec<Value> = d
        .link
        .iter()
        .map(|l| json!({ "href": l, "text": "rollguard deployment" }))
        .collect();
    let dedup_key = truncate_chars(&notice.key, DEDUP_MAX);
    if part == Part::Change {
        let body = json!({
            "routing_key": routing_key,
            "payload": {
                "summary": summary,
                "source": source,
                "timestamp": crate::units::rfc3339(notice.at),
                "custom_details": details(d),
            },
            "links": links,
        });
        return Ok(Plan::Send {
            request: Rendered::json(format!("{base}/v2/change/enqueue"), &body)?,
            changes: Vec::new(),
        });
    }
    let url = format!("{base}/v2/enqueue");
    match notice.kind.lifecycle() {
        Lifecycle::Open if notice.kind.severity() >= *min_severity => {
            let subject = notice.subject.as_ref();
            let mut payload = json!({
                "summary": summary,
                "source": source,
                "severity": notice.kind.severity().as_str(),
                "timestamp": crate::units::rfc3339(notice.at),
                "class": notice.kind.as_str(),
                "custom_details": details(d),
            });
            if let Some(s) = subject {
                if !s.service.is_empty() {
                    payload["component"] = json!(s.service);
                }
                payload["group"] = json!(s.deployment);
            }
            let mut body = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": payload,
                "client": "rollguard",
                "links": links,
            });
            if let Some(l) = &d.link {
                body["client_url"] = json!(l);
            }
            let changes = vec![Change::Open {
                key: notice.key.clone(),
                alertname: INCIDENT.into(),
                notice: serde_json::to_value(notice).unwrap_or_default(),
                at: notice.at,
            }];
            Ok(Plan::Send {
                request: Rendered::json(url, &body)?,
                changes,
            })
        }
        Lifecycle::Close if !ctx.open.is_empty() => {
            let body = json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key });
            let changes = ctx
                .open
                .iter()
                .map(|i| Change::Close {
                    key: i.key.clone(),
                    alertname: i.alertname.clone(),
                })
                .collect();
            Ok(Plan::Send {
                request: Rendered::json(url, &body)?,
                changes,
            })
        }
        Lifecycle::Close => Ok(Plan::Skip {
            reason: "no PagerDuty incident is open for this key".into(),
            changes: Vec::new(),
        }),
        _ => Ok(Plan::Skip {
            reason: format!("{} notices do not page", notice.kind.as_str()),
            changes: Vec::new(),
        }),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `custom_details`: the words and numbers behind the event.
fn details(d: &Digest) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("what_happened".into(), json!(d.text));
    for (k, v) in &d.facts {
        m.insert(k.to_lowercase(), json!(v));
    }
    let checks: Vec<Value> =
        d.checks.iter().map(|c| json!({ "check": c.name, "outcome": c.outcome, "numbers": c.numbers(), "explanation": c.explanation })).collect();
    if !checks.is_empty() {
        m.insert("checks".into(), Value::Array(checks));
    }
    Value::Object(m)
}

/// This host's name, for `payload.source`: the kernel's (gethostname(2)), which the unit's
/// `ProcSubset=pid` does not hide, unlike /proc/sys/kernel/hostname; /etc/hostname can be stale
/// or absent, so it is not read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rollguard".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's host name, as `uname -n` prints it (no /proc read).
    #[test]
    fn hostname_is_the_kernels() {
        let uname = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .expect("uname");
        assert_eq!(hostname(), String::from_utf8_lossy(&uname.stdout).trim());
    }
}

//! Turns a queued item into the HTTP request its destination documents: which parts of a
//! notice a destination gets at all, and the dispatch to each destination's renderer.

use serde::{Deserialize, Serialize};

use super::digest::digest;
use super::{alertmanager, discord, google_chat, mattermost, pagerduty, slack, teams, webhook};
use crate::config::{NotifierConfig, NotifierKind};
use crate::events::{Lifecycle, Notice};
use crate::store::Incident;

/// What sits in the outbox for one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Queued {
    /// A notice (or one part of it, for destinations that take two requests).
    Notice {
        notice: Box<Notice>,
        #[serde(default)]
        part: Part,
    },
    /// Send every active alert again with a new lease (Alertmanager).
    Refresh,
}

impl Queued {
    /// Reads an outbox payload (rows written before the envelope existed hold a bare notice).
    pub fn from_payload(v: &serde_json::Value) -> Option<Queued> {
        serde_json::from_value(v.clone()).ok().or_else(|| {
            serde_json::from_value(v.clone())
                .ok()
                .map(|notice| Queued::Notice {
                    notice: Box::new(notice),
                    part: Part::Message,
                })
        })
    }
}

/// Which request of a notice: the destination's usual message, or PagerDuty's change event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    #[default]
    Message,
    Change,
}

/// An HTTP request to send, with the exact body bytes (signatures cover these bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Rendered {
    /// A JSON POST.
    pub fn json(url: String, body: &serde_json::Value) -> Result<Rendered, String> {
        let body =
            serde_json::to_vec(body).map_err(|e| format!("cannot serialise the message: {e}"))?;
        Ok(Rendered {
            url,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body,
        })
    }
}

/// What delivering one item takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Send this; once the destination accepted it, apply the incident changes.
    Send {
        request: Rendered,
        changes: Vec<Change>,
    },
    /// Nothing to send (e.g. a resolve for an incident that was never opened); the changes
    /// still apply (an alert that aged out is forgotten).
    Skip {
        reason: String,
        changes: Vec<Change>,
    },
}

/// How a destination's open incidents change once a request is accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// `at`: when it started (Alertmanager's `startsAt`, kept across refreshes).
    Open {
        key: String,
        alertname: String,
        notice: serde_json::Value,
        at: f64,
    },
    Close {
        key: String,
        alertname: String,
    },
}

/// What a renderer knows besides the item.
pub struct Ctx<'a> {
    pub config: &'a NotifierConfig,
    /// Unix seconds now.
    pub now: f64,
    /// The outbox row id: stable across retries, so receivers can drop repeats.
    pub delivery: i64,
    /// This destination's open incidents: for the notice's key, or all of them for a refresh.
    pub open: &'a [Incident],
}

/// The parts of a notice a destination receives (none: it is not queued there at all).
/// Chat and webhooks get every notice; Alertmanager gets what opens or closes an alert;
/// PagerDuty pages and resolves, and records rollbacks and promotions as change events.
pub fn parts(kind: &NotifierKind, notice: &Notice) -> Vec<Part> {
    match kind {
        NotifierKind::Alertmanager { .. } => match notice.kind.lifecycle() {
            Lifecycle::Info => vec![],
            _ => vec![Part::Message],
        },
        NotifierKind::Pagerduty { min_severity, .. } => pagerduty::parts(*min_severity, notice),
        _ => vec![Part::Message],
    }
}

/// Plans the request for one queued item. An error is permanent (bad secret, bad config).
pub fn plan(ctx: &Ctx<'_>, item: &Queued) -> Result<Plan, String> {
    let kind = &ctx.config.kind;
    let (notice, part) = match item {
        Queued::Refresh => {
            return match kind {
                NotifierKind::Alertmanager { .. } => alertmanager::refresh(ctx),
                _ => Ok(Plan::Skip {
                    reason: "only Alertmanager refreshes alerts".into(),
                    changes: Vec::new(),
                }),
            };
        }
        Queued::Notice { notice, part } => (notice, *part),
    };
    let send = |request: Rendered| {
        Ok(Plan::Send {
            request,
            changes: Vec::new(),
        })
    };
    let d = digest(notice, ctx.config.public_url.as_deref());
    match kind {
        NotifierKind::Slack { url } => send(Rendered::json(url.resolve()?, &slack::render(&d))?),
        NotifierKind::Mattermost { url } => {
            send(Rendered::json(url.resolve()?, &mattermost::render(&d))?)
        }
        NotifierKind::Teams { url } => {
            let url = url.resolve()?;
            if crate::config::is_retired_teams_url(&url) {
                return Err("Office 365 connector URLs (webhook.office.com) are retired; use a Teams Workflows URL".into());
            }
            send(Rendered::json(url, &teams::render(&d))?)
        }
        NotifierKind::Discord { url } => {
            send(Rendered::json(url.resolve()?, &discord::render(&d))?)
        }
        NotifierKind::GoogleChat { url } => send(Rendered::json(
            google_chat::url(&url.resolve()?),
            &google_chat::render(&d, &notice.key),
        )?),
        NotifierKind::Pagerduty { .. } => pagerduty::plan(ctx, notice, &d, part),
        NotifierKind::Alertmanager { .. } => alertmanager::plan(ctx, notice, &d),
        NotifierKind::Webhook { url, hmac_secret } => send(webhook::render(
            url,
            hmac_secret.as_ref(),
            notice,
            &d,
            ctx.delivery,
        )?),
    }
}

/// Discord puts its retry delay in the JSON body (`retry_after`, seconds).
pub fn retry_after_from_body(body: &str) -> Option<std::time::Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let s = v.get("retry_after")?.as_f64()?;
    Some(std::time::Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

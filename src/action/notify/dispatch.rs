//! Turns a queued item into the HTTP request its destination documents: which parts of a
//! notice a destination gets at all, and the dispatch to each destination's renderer.

use super::digest::digest;
use super::render::{Ctx, Part, Plan, Queued, Rendered};
use super::{alertmanager, discord, google_chat, mattermost, pagerduty, slack, teams, webhook};
use crate::config::NotifierKind;
use crate::events::{Lifecycle, Notice};

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
        NotifierKind::Discord { url } => send(Rendered::json(
            discord::url(&url.resolve()?),
            &discord::render(&d),
        )?),
        NotifierKind::GoogleChat { url } => send(Rendered::json(
            google_chat::url(&url.resolve()?),
            &google_chat::render(&d, &notice.key),
        )?),
        NotifierKind::Pagerduty { .. } => pagerduty::plan(ctx, notice, &d, part),
        NotifierKind::Alertmanager { .. } => alertmanager::plan(ctx, notice, &d),
        NotifierKind::Webhook { url, secret } => send(webhook::render(
            url,
            secret.as_ref(),
            notice,
            &d,
            ctx.delivery,
            ctx.now,
        )?),
    }
}

//! Microsoft Teams through a Workflows (Power Automate) webhook: the `message` envelope with
//! one Adaptive Card (version 1.4, full width) in `attachments[0].content`. Workflows accept
//! Adaptive Cards only (not the retired connectors' MessageCard), do not evaluate `${...}`
//! templating, and take about 28 KB per message, so the card is rendered here and shrunk
//! until it fits.

use serde_json::{Value, json};

use super::digest::{Digest, truncate_chars};
use crate::events::Severity;

/// Body budget in bytes: Teams' documented limit less a margin for the envelope.
pub const MAX_BYTES: usize = super::limits::TEAMS_MESSAGE_BYTES - 1024;

/// The webhook body.
pub fn render(d: &Digest) -> Value {
    let mut text_max = 4000;
    let mut checks = d.checks.len();
    loop {
        let v = card(d, text_max, checks);
        let size = serde_json::to_vec(&v)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size <= MAX_BYTES || (checks == 0 && text_max <= 200) {
            return v;
        }
        if checks > 0 {
            checks -= 1;
        } else {
            text_max /= 2;
        }
    }
}

fn card(d: &Digest, text_max: usize, checks: usize) -> Value {
    let colour = match d.kind.severity() {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        _ => "Good",
    };
    let mut body = vec![json!({
        "type": "TextBlock", "text": truncate_chars(&d.headline, 300),
        "weight": "Bolder", "size": "Medium", "color": colour, "wrap": true
    })];
    if !d.text.is_empty() {
        body.push(
            json!({ "type": "TextBlock", "text": truncate_chars(&d.text, text_max), "wrap": true }),
        );
    }
    if !d.facts.is_empty() {
        let facts: Vec<Value> = d
            .facts
            .iter()
            .map(|(k, v)| json!({ "title": k, "value": truncate_chars(v, 500) }))
            .collect();
        body.push(json!({ "type": "FactSet", "facts": facts }));
    }
    for c in d.checks.iter().take(checks) {
        let mut items = vec![
            json!({ "type": "TextBlock", "text": format!("{}: {}", truncate_chars(&c.name, 200), c.outcome), "weight": "Bolder", "wrap": true, "color": if c.failed { "Attention" } else { "Default" } }),
            json!({ "type": "TextBlock", "text": truncate_chars(&c.numbers(), 1000), "wrap": true, "spacing": "None" }),
        ];
        if !c.explanation.is_empty() {
            items.push(json!({ "type": "TextBlock", "text": truncate_chars(&c.explanation, 1000), "wrap": true, "isSubtle": true, "spacing": "None" }));
        }
        body.push(json!({ "type": "Container", "separator": true, "items": items }));
    }
    let hidden = d.more_checks + d.checks.len() - checks.min(d.checks.len());
    if hidden > 0 {
        body.push(json!({ "type": "TextBlock", "text": format!("… and {hidden} more checks"), "isSubtle": true, "wrap": true }));
    }
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": { "width": "Full" },
        "body": body,
    });
    if let Some(l) = &d.link {
        content["actions"] = json!([{ "type": "Action.OpenUrl", "title": "Details", "url": l }]);
    }
    json!({
        "type": "message",
        "summary": truncate_chars(&d.headline, 200),
        "attachments": [{ "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": content }]
    })
}

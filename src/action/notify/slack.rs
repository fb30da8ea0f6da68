//! Slack incoming webhooks: Block Kit with a plain `text` fallback (push notifications,
//! screen readers). Interpolated text is escaped (`&`, `<`, `>`), so a label value such as
//! `<!channel>` cannot ping a channel. Limits: [`super::limits`] (header 150 characters,
//! section text 3000, 10 fields of 2000, 50 blocks).

use serde_json::{Value, json};

use super::digest::{Digest, truncate_chars};
use super::limits::{
    SLACK_HEADER_TEXT as HEADER_MAX, SLACK_SECTION_FIELD_TEXT as FIELD_MAX,
    SLACK_SECTION_TEXT as SECTION_MAX,
};

/// The notification fallback: Slack takes far more, but a push notification shows little.
const FALLBACK_MAX: usize = 3000;

/// Escapes text for Slack's mrkdwn (the only three characters Slack asks to escape).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Plain-text objects parse no markup, but angle brackets are swapped for look-alikes anyway
/// so nothing resembling `<!channel>` reaches Slack at all.
fn plain(s: &str) -> String {
    s.replace('<', "‹").replace('>', "›")
}

/// The webhook body.
pub fn render(d: &Digest) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate_chars(&plain(&d.headline), HEADER_MAX), "emoji": true }
    })];
    if !d.text.is_empty() {
        blocks.push(section(&escape(&d.text)));
    }
    if !d.facts.is_empty() {
        let fields: Vec<Value> = d
            .facts
            .iter()
            .take(10)
            .map(|(k, v)| json!({ "type": "mrkdwn", "text": truncate_chars(&format!("*{k}*\n{}", escape(v)), FIELD_MAX) }))
            .collect();
        blocks.push(json!({ "type": "section", "fields": fields }));
    }
    for c in &d.checks {
        let mut t = format!(
            "*{}*: {}\n{}",
            escape(&c.name),
            c.outcome,
            escape(&c.numbers())
        );
        if !c.explanation.is_empty() {
            t.push_str(&format!("\n_{}_", escape(&c.explanation)));
        }
        blocks.push(section(&t));
    }
    let mut context = vec![format!("rollguard · {}", d.kind.as_str())];
    if d.more_checks > 0 {
        context.push(format!("{} more checks", d.more_checks));
    }
    if let Some(l) = &d.link {
        context.push(format!("<{l}|details>"));
    }
    blocks.push(json!({ "type": "context", "elements": [ { "type": "mrkdwn", "text": context.join(" · ") } ] }));
    blocks.truncate(50);
    let mut fallback = format!("{}: {}", d.headline, d.text);
    if let Some(c) = d.checks.iter().find(|c| c.failed) {
        fallback.push_str(&format!(" ({}: {})", c.name, c.numbers()));
    }
    json!({ "text": truncate_chars(&escape(&fallback), FALLBACK_MAX), "blocks": blocks })
}

fn section(mrkdwn: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate_chars(mrkdwn, SECTION_MAX) } })
}

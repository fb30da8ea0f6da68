//! Mattermost incoming webhooks: Slack-compatible `text` plus one attachment with the
//! numbers. Interpolated text is markdown-escaped and `@` mentions (`@channel`, `@all`,
//! `@here`, `@user`) are defused with a zero-width space, since Mattermost honours them in
//! webhook posts. `text` is limited to 16383 characters.

use serde_json::{Value, json};

use super::digest::{Digest, check_lines, colour, truncate_chars};

use super::limits::MATTERMOST_TEXT as TEXT_MAX;

/// Escapes CommonMark punctuation and defuses mentions.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '#' | '|' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '@' => out.push_str("@\u{200B}"),
            c => out.push(c),
        }
    }
    out
}

/// Defuses mentions in plain-text fields (no markdown there to escape).
pub fn defuse(s: &str) -> String {
    s.replace('@', "@\u{200B}")
}

/// The webhook body.
pub fn render(d: &Digest) -> Value {
    let mut text = format!("#### {}\n{}", escape(&d.headline), escape(&d.text));
    if let Some(l) = &d.link {
        text.push_str(&format!("\n[details]({l})"));
    }
    let mut details = String::new();
    for line in check_lines(d, "**", escape) {
        details.push_str(&line);
        details.push('\n');
    }
    let fields: Vec<Value> = d
        .facts
        .iter()
        .map(|(k, v)| json!({ "short": true, "title": k, "value": escape(v) }))
        .collect();
    let mut attachment = json!({
        "fallback": truncate_chars(&defuse(&format!("{}: {}", d.headline, d.text)), 1000),
        "color": format!("#{:06X}", colour(d.kind)),
        "text": truncate_chars(&details, TEXT_MAX),
        "fields": fields,
        "footer": "rollguard",
    });
    if let Some(l) = &d.link {
        attachment["title"] = json!("Details");
        attachment["title_link"] = json!(l);
    }
    json!({ "text": truncate_chars(&text, TEXT_MAX), "username": "rollguard", "attachments": [attachment] })
}

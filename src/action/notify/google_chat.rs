//! Google Chat incoming webhooks: a `text` message threaded per deployment with
//! `thread.threadKey` and `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`, so the
//! start, the steps and the result of one deployment stay in one thread. `<` and `>` in
//! interpolated text become look-alike angle quotes, because Chat reads `<users/all>` as a
//! mention of everyone. Messages are limited to 32,000 bytes.

use serde_json::{Value, json};

use super::digest::{Digest, check_lines, truncate_bytes};

use super::limits::GOOGLE_CHAT_TEXT_BYTES as MAX_BYTES;

/// Defuses mentions and links in interpolated text.
pub fn escape(s: &str) -> String {
    s.replace('<', "‹").replace('>', "›")
}

/// The webhook URL with the reply option that makes `threadKey` start or join a thread.
pub fn url(base: &str) -> String {
    if base.contains("messageReplyOption=") {
        base.to_string()
    } else if base.contains('?') {
        format!("{base}&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
    } else {
        format!("{base}?messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
    }
}

/// The webhook body; `key` names the thread (one per deployment).
pub fn render(d: &Digest, key: &str) -> Value {
    let mut text = format!("*{}*\n{}", escape(&d.headline), escape(&d.text));
    for (k, v) in &d.facts {
        text.push_str(&format!("\n• {k}: {}", escape(v)));
    }
    for line in check_lines(d, "*", escape) {
        text.push('\n');
        text.push_str(&line);
    }
    let link = d
        .link
        .as_ref()
        .map(|l| format!("\n<{l}|details>"))
        .unwrap_or_default();
    let text = format!(
        "{}{link}",
        truncate_bytes(&text, MAX_BYTES - 1024 - link.len())
    );
    json!({ "text": text, "thread": { "threadKey": key } })
}

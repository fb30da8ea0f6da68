//! Discord webhooks: one embed with the numbers, and `allowed_mentions: {parse: []}` so no
//! interpolated text can ping `@everyone` or a role. Limits: [`super::limits`] (content
//! 2000, embed title 256, description 4096, 25 fields of name 256 / value 1024, and 6000
//! characters across the embed).

use serde_json::{Value, json};

use super::digest::{Digest, colour, truncate_chars};

use super::limits::{
    DISCORD_CONTENT, DISCORD_EMBED_DESCRIPTION as DESCRIPTION_MAX,
    DISCORD_EMBED_FIELDS as FIELDS_MAX, DISCORD_EMBED_TITLE as TITLE_MAX,
    DISCORD_EMBED_TOTAL as EMBED_TOTAL_MAX, DISCORD_FIELD_NAME as FIELD_NAME_MAX,
    DISCORD_FIELD_VALUE as FIELD_VALUE_MAX,
};

/// The webhook URL with `wait=true`: only then does Discord confirm that it saved the message
/// (200 with the message) or say why not; without it a message it drops still gets a 204,
/// and rollguard would record a lost message as sent.
pub fn url(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            let others: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "wait")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(others)
                .append_pair("wait", "true");
            u.to_string()
        }
        // Sending reports the unparseable URL.
        Err(_) => base.to_string(),
    }
}

/// The webhook body.
pub fn render(d: &Digest) -> Value {
    let title = truncate_chars(&d.headline, TITLE_MAX);
    let footer = "rollguard";
    let mut fields: Vec<(String, String, bool)> = d
        .facts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), true))
        .collect();
    for c in &d.checks {
        let mut v = c.numbers();
        if !c.explanation.is_empty() {
            v.push('\n');
            v.push_str(&c.explanation);
        }
        fields.push((format!("{}: {}", c.name, c.outcome), v, false));
    }
    if d.more_checks > 0 {
        fields.push((
            "More".into(),
            format!("{} more checks", d.more_checks),
            false,
        ));
    }
    let mut fields: Vec<(String, String, bool)> = fields
        .into_iter()
        .take(FIELDS_MAX)
        .map(|(n, v, i)| {
            (
                truncate_chars(&n, FIELD_NAME_MAX),
                truncate_chars(&v, FIELD_VALUE_MAX),
                i,
            )
        })
        .collect();
    let used = |fields: &[(String, String, bool)]| -> usize {
        title.chars().count()
            + footer.len()
            + fields
                .iter()
                .map(|(n, v, _)| n.chars().count() + v.chars().count())
                .sum::<usize>()
    };
    // Keep the description; drop trailing fields when the total would exceed the limit.
    while used(&fields) + 200 > EMBED_TOTAL_MAX && !fields.is_empty() {
        fields.pop();
    }
    let room = EMBED_TOTAL_MAX
        .saturating_sub(used(&fields))
        .min(DESCRIPTION_MAX);
    let description = truncate_chars(&d.text, room);
    let mut embed = json!({
        "title": title,
        "description": description,
        "color": colour(d.kind),
        "fields": fields.iter().map(|(n, v, i)| json!({ "name": n, "value": if v.is_empty() { "-".to_string() } else { v.clone() }, "inline": i })).collect::<Vec<_>>(),
        "footer": { "text": footer },
        "timestamp": crate::units::rfc3339(d.at),
    });
    if let Some(l) = &d.link {
        embed["url"] = json!(l);
    }
    json!({
        "username": "rollguard",
        "content": truncate_chars(&d.headline, DISCORD_CONTENT),
        "allowed_mentions": { "parse": [] },
        "embeds": [embed],
    })
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn wait_true_is_added_once_and_other_parameters_kept() {
        let base = "https://discord.com/api/webhooks/1/tok";
        assert_eq!(url(base), format!("{base}?wait=true"));
        assert_eq!(
            url(&format!("{base}?thread_id=9&wait=false")),
            format!("{base}?thread_id=9&wait=true")
        );
        assert_eq!(url(&url(base)), url(base));
    }
}

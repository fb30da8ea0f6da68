//! The documented limits of each destination's payload, in one table. The renderers cut
//! their text to these constants, and the payload tests (the local fakes of Slack, Discord,
//! ... in `tests/`) check every request against the rows of [`LIMITS`], so a limit changed
//! here changes both the code and the test. Each row names the page it comes from.
//!
//! Limits a renderer keeps below for its own reasons (a margin for the JSON around the text,
//! a shorter summary people read) stay in the renderer; this table holds only what the
//! services document. Alertmanager documents none and is not here.

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (what Slack, Discord and PagerDuty count).
    Chars,
    /// UTF-8 bytes of the text or of the whole request body.
    Bytes,
    /// Elements of a list (blocks, embeds, fields).
    Items,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Chars => "characters",
            Unit::Bytes => "bytes",
            Unit::Items => "items",
        }
    }
}

/// One documented limit: `field` of `service`'s payload holds at most `max` `unit`s.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub service: &'static str,
    /// The field as a JSON path of the payload (`embed.title`), or `body` for the request.
    pub field: &'static str,
    pub max: usize,
    pub unit: Unit,
    /// Where the service documents it.
    pub source: &'static str,
}

const SLACK_BLOCKS_DOC: &str = "https://api.slack.com/reference/block-kit/blocks";
pub const SLACK_BLOCKS: usize = 50;
pub const SLACK_HEADER_TEXT: usize = 150;
pub const SLACK_SECTION_TEXT: usize = 3000;
pub const SLACK_SECTION_FIELDS: usize = 10;
pub const SLACK_SECTION_FIELD_TEXT: usize = 2000;
pub const SLACK_CONTEXT_ELEMENTS: usize = 10;

const MATTERMOST_DOC: &str = "https://developers.mattermost.com/integrate/webhooks/incoming/";
pub const MATTERMOST_TEXT: usize = 16383;

const TEAMS_DOC: &str = "https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using";
pub const TEAMS_MESSAGE_BYTES: usize = 28 * 1024;

const DISCORD_DOC: &str =
    "https://discord.com/developers/docs/resources/message#embed-object-embed-limits";
pub const DISCORD_CONTENT: usize = 2000;
pub const DISCORD_EMBEDS: usize = 10;
pub const DISCORD_EMBED_TITLE: usize = 256;
pub const DISCORD_EMBED_DESCRIPTION: usize = 4096;
pub const DISCORD_EMBED_FIELDS: usize = 25;
pub const DISCORD_FIELD_NAME: usize = 256;
pub const DISCORD_FIELD_VALUE: usize = 1024;
pub const DISCORD_EMBED_TOTAL: usize = 6000;

const GOOGLE_CHAT_DOC: &str = "https://developers.google.com/workspace/chat/create-messages";
pub const GOOGLE_CHAT_TEXT_BYTES: usize = 32_000;

const PAGERDUTY_DOC: &str = "https://developer.pagerduty.com/docs/events-api-v2/trigger-events/";
pub const PAGERDUTY_SUMMARY: usize = 1024;
pub const PAGERDUTY_DEDUP_KEY: usize = 255;

const fn row(
    service: &'static str,
    field: &'static str,
    max: usize,
    unit: Unit,
    source: &'static str,
) -> Limit {
    Limit {
        service,
        field,
        max,
        unit,
        source,
    }
}

/// Every documented limit rollguard's payloads are kept within.
pub const LIMITS: &[Limit] = &[
    row(
        "slack",
        "blocks",
        SLACK_BLOCKS,
        Unit::Items,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "slack",
        "header.text",
        SLACK_HEADER_TEXT,
        Unit::Chars,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "slack",
        "section.text",
        SLACK_SECTION_TEXT,
        Unit::Chars,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "slack",
        "section.fields",
        SLACK_SECTION_FIELDS,
        Unit::Items,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "slack",
        "section.fields.text",
        SLACK_SECTION_FIELD_TEXT,
        Unit::Chars,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "slack",
        "context.elements",
        SLACK_CONTEXT_ELEMENTS,
        Unit::Items,
        SLACK_BLOCKS_DOC,
    ),
    row(
        "mattermost",
        "text",
        MATTERMOST_TEXT,
        Unit::Chars,
        MATTERMOST_DOC,
    ),
    row(
        "mattermost",
        "attachments.text",
        MATTERMOST_TEXT,
        Unit::Chars,
        MATTERMOST_DOC,
    ),
    row("teams", "body", TEAMS_MESSAGE_BYTES, Unit::Bytes, TEAMS_DOC),
    row(
        "discord",
        "content",
        DISCORD_CONTENT,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embeds",
        DISCORD_EMBEDS,
        Unit::Items,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed.title",
        DISCORD_EMBED_TITLE,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed.description",
        DISCORD_EMBED_DESCRIPTION,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed.fields",
        DISCORD_EMBED_FIELDS,
        Unit::Items,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed.fields.name",
        DISCORD_FIELD_NAME,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed.fields.value",
        DISCORD_FIELD_VALUE,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "discord",
        "embed (all text)",
        DISCORD_EMBED_TOTAL,
        Unit::Chars,
        DISCORD_DOC,
    ),
    row(
        "google_chat",
        "text",
        GOOGLE_CHAT_TEXT_BYTES,
        Unit::Bytes,
        GOOGLE_CHAT_DOC,
    ),
    row(
        "pagerduty",
        "payload.summary",
        PAGERDUTY_SUMMARY,
        Unit::Chars,
        PAGERDUTY_DOC,
    ),
    row(
        "pagerduty",
        "dedup_key",
        PAGERDUTY_DEDUP_KEY,
        Unit::Chars,
        PAGERDUTY_DOC,
    ),
];

/// The limit of `field` in `service`'s payload, when the table has one.
pub fn limit(service: &str, field: &str) -> Option<&'static Limit> {
    LIMITS
        .iter()
        .find(|l| l.service == service && l.field == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_sourced() {
        for (i, a) in LIMITS.iter().enumerate() {
            assert!(a.source.starts_with("https://"), "{a:?}");
            assert!(a.max > 0, "{a:?}");
            assert!(
                LIMITS[i + 1..]
                    .iter()
                    .all(|b| (b.service, b.field) != (a.service, a.field)),
                "{a:?} twice"
            );
        }
    }
}

//! The generic JSON webhook: the notice itself as JSON (with the link filled in), signed the
//! Standard Webhooks way when a secret is configured (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`; see [`crate::standard_webhooks`]), so receivers verify it with their
//! own library and reject replays. `webhook-id` and `X-Rollguard-Delivery` carry the delivery
//! id, the same on every retry of one message, so receivers can drop repeats.

use super::digest::Digest;
use super::render::Rendered;
use crate::config::Secret;
use crate::events::Notice;
use crate::standard_webhooks;

/// Builds the signed request; `now` (Unix seconds) is this attempt's `webhook-timestamp`.
pub fn render(
    url: &Secret,
    secret: Option<&Secret>,
    notice: &Notice,
    d: &Digest,
    delivery: &str,
    now: f64,
) -> Result<Rendered, String> {
    let mut n = notice.clone();
    n.link = d.link.clone();
    let mut r = Rendered::json(
        url.resolve()?,
        &serde_json::to_value(&n).map_err(|e| e.to_string())?,
    )?;
    r.headers
        .push(("X-Rollguard-Event".into(), notice.kind.as_str().into()));
    r.headers
        .push(("X-Rollguard-Delivery".into(), delivery.to_string()));
    let keys = match secret {
        Some(s) => standard_webhooks::keys(&s.resolve()?).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    r.headers.extend(standard_webhooks::headers(
        &keys,
        delivery,
        now.floor() as i64,
        &r.body,
    ));
    Ok(r)
}

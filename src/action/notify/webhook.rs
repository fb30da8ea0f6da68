//! The generic JSON webhook: the notice itself as JSON (with the link filled in), signed
//! with HMAC-SHA256 over the exact body bytes in `X-Rollguard-Signature: sha256=<hex>` when
//! a secret is configured. `X-Rollguard-Delivery` stays the same across retries of one
//! message, so receivers can drop repeats.

use super::digest::Digest;
use super::render::Rendered;
use crate::config::Secret;
use crate::events::Notice;

/// Builds the signed request.
pub fn render(
    url: &Secret,
    secret: Option<&Secret>,
    notice: &Notice,
    d: &Digest,
    delivery: i64,
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
    if let Some(s) = secret {
        let key = s.resolve()?;
        r.headers
            .push(("X-Rollguard-Signature".into(), sign(&key, &r.body)));
    }
    Ok(r)
}

/// `sha256=<hex>` HMAC of the exact body bytes, so receivers can verify the sender.
pub fn sign(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let out = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        out.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

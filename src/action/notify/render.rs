//! Renders a [`Notice`] into each destination's documented payload.

use crate::config::NotifierKind;
use crate::events::Notice;

/// An HTTP request to send.
pub struct Rendered {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// Builds the request for a destination. Errors are permanent (bad secret, bad config).
pub fn render(kind: &NotifierKind, notice: &Notice) -> Result<Rendered, String> {
    match kind {
        NotifierKind::Webhook { url, hmac_secret } => {
            let body = serde_json::to_value(notice).map_err(|e| e.to_string())?;
            let mut headers = Vec::new();
            if let Some(s) = hmac_secret {
                let key = s.resolve()?;
                headers.push(("X-Rollguard-Signature".to_string(), sign(&key, &body)));
            }
            Ok(Rendered { url: url.resolve()?, headers, body })
        }
        other => Err(format!("notifier kind {other:?} is not supported yet")),
    }
}

/// `sha256=<hex>` HMAC of the exact JSON body, so receivers can verify the sender.
pub fn sign(key: &str, body: &serde_json::Value) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else { return String::new() };
    mac.update(body.to_string().as_bytes());
    let out = mac.finalize().into_bytes();
    format!("sha256={}", out.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Discord puts its retry delay in the JSON body (`retry_after`, seconds).
pub fn retry_after_from_body(body: &str) -> Option<std::time::Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let s = v.get("retry_after")?.as_f64()?;
    Some(std::time::Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

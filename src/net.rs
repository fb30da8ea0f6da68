//! Outgoing HTTP plumbing shared by the scrape source, the Prometheus source, HTTP hooks and
//! notifiers: one way to build a rustls client, read a body with a size cap, honour
//! `Retry-After`, and keep secrets (tokens in URLs) out of error messages.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde::Deserialize;

/// TLS settings for outgoing connections (custom CA, client certificate): HTTP clients
/// here, and the PostgreSQL store's connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// A `tls:` section as written in the config (unknown fields denied).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// A `tls:` section's settings, its paths resolved by `resolve` (relative to the config file).
pub(crate) fn tls(raw: Option<RawTls>, resolve: &dyn Fn(&str) -> PathBuf) -> TlsConfig {
    let r = raw.unwrap_or_default();
    let fix = |p: Option<PathBuf>| p.map(|p| resolve(&p.to_string_lossy()));
    TlsConfig {
        ca_file: fix(r.ca_file),
        cert_file: fix(r.cert_file),
        key_file: fix(r.key_file),
        insecure_skip_verify: r.insecure_skip_verify,
    }
}

/// Installs the ring crypto provider for rustls once per process (reqwest is built without a
/// default provider so that no C crypto library is compiled in).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds an HTTP client with a connect timeout, gzip, and the given TLS settings.
pub fn client(tls: &TlsConfig, timeout: Duration) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("rollguard/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .gzip(true);
    if let Some(ca) = &tls.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("bad CA file {}: {e}", ca.display()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem =
                std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
            pem.extend(
                std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("bad client certificate: {e}"))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err("TLS client authentication needs both cert_file and key_file".into()),
    }
    if tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The `Authorization` value of HTTP basic authentication (RFC 7617): for destinations that
/// build their own headers instead of going through reqwest's `basic_auth`.
pub fn basic_authorization(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `Retry-After` as seconds or an HTTP date, capped at one hour.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// Why reading a body stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("connection failed while reading the body: {0}")]
    Read(String),
    /// The request's deadline passed while the body was still arriving (a slow drip).
    #[error("timed out while reading the body")]
    Timeout,
}

/// Reads a response body, refusing to buffer more than `limit` bytes (a target that sends
/// 50 MB must not take the daemon's memory).
pub async fn read_body_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = resp.content_length()
        && len as usize > limit
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(buf),
            Err(e) if e.is_timeout() => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Read(redact_error(&e))),
        }
    }
}

/// Reads up to `limit` bytes of a body as text, for error messages and hook output.
pub async fn read_text_capped(resp: reqwest::Response, limit: usize) -> String {
    let mut resp = resp;
    let mut buf = Vec::new();
    while let Ok(Some(c)) = resp.chunk().await {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&c[..c.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// An error message without the URL (webhook URLs carry their secret in the path or query).
pub fn redact_error(e: &reqwest::Error) -> String {
    let mut msg = String::new();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    msg.push_str(kind);
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A URL with any userinfo, path beyond the host and query hidden, for logs.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(p) => {
            format!(
                "{}://{}{}",
                p.scheme(),
                p.host_str().unwrap_or("?"),
                p.port().map(|x| format!(":{x}")).unwrap_or_default()
            ) + "/…"
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// A URL without its userinfo (`https://user:secret@host/` → `https://host/`), for labels and
/// logs that must name a target but never carry its password.
pub fn redact_userinfo(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) if !p.username().is_empty() || p.password().is_some() => {
            let _ = p.set_username("");
            let _ = p.set_password(None);
            p.to_string()
        }
        _ => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_userinfo("http://u:pw@10.0.0.1:9100/metrics?x=1"),
            "http://10.0.0.1:9100/metrics?x=1"
        );
        assert_eq!(
            redact_userinfo("http://10.0.0.1:9100/metrics"),
            "http://10.0.0.1:9100/metrics"
        );
    }
}

//! Direct scraping of `/metrics` endpoints: concurrent, bounded, size-capped, strict.
//!
//! Each fetch is limited by a global semaphore (so 1 000 deployments do not open 4 000
//! sockets at once), a per-request timeout and a body size cap checked while streaming. A
//! body that is not UTF-8 or has a malformed line fails the scrape (as Prometheus does): a
//! judgement must never rest on a silently shrunk set of samples.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::ScrapeConfig;
use crate::expo::{self, Format};
use crate::net;

/// `Accept` header: OpenMetrics preferred, text 0.0.4 accepted.
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Why a scrape failed (the message goes into logs, the API and chat).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0}")]
    Body(String),
    #[error("body is not UTF-8 text")]
    NotUtf8,
    #[error("{count} malformed line(s), first: {first}")]
    Parse { count: usize, first: String },
    #[error("no samples in the body")]
    Empty,
}

impl ScrapeError {
    /// A short label for the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Http(_) => "http",
            ScrapeError::Status(_) => "status",
            ScrapeError::Body(_) => "body",
            ScrapeError::NotUtf8 => "encoding",
            ScrapeError::Parse { .. } => "parse",
            ScrapeError::Empty => "empty",
        }
    }
}

/// A fetched body, ready to parse.
pub struct Body {
    pub text: String,
    pub format: Format,
    pub duration: Duration,
}

/// Shared scraping machinery (one per daemon).
pub struct Scraper {
    client: reqwest::Client,
    cfg: ScrapeConfig,
    limit: Arc<Semaphore>,
}

impl Scraper {
    pub fn new(cfg: &ScrapeConfig) -> Result<Self, String> {
        Ok(Scraper {
            client: net::client(&cfg.tls, cfg.timeout)?,
            cfg: cfg.clone(),
            limit: Arc::new(Semaphore::new(cfg.concurrency)),
        })
    }

    /// Fetches one target's body.
    pub async fn fetch(&self, url: &str) -> Result<Body, ScrapeError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| ScrapeError::Http("scraper is shutting down".into()))?;
        let start = tokio::time::Instant::now();
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .timeout(self.cfg.timeout);
        if let Some(t) = &self.cfg.bearer_token {
            let tok = t.resolve().map_err(ScrapeError::Http)?;
            req = req.bearer_auth(tok);
        }
        if let Some(b) = &self.cfg.basic_auth {
            let pw = b.password.resolve().map_err(ScrapeError::Http)?;
            req = req.basic_auth(&b.username, Some(pw));
        }
        let fut = async {
            let resp = req
                .send()
                .await
                .map_err(|e| ScrapeError::Http(net::redact_error(&e)))?;
            if !resp.status().is_success() {
                return Err(ScrapeError::Status(resp.status().as_u16()));
            }
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = net::read_body_capped(resp, self.cfg.max_body_bytes)
                .await
                .map_err(|e| ScrapeError::Body(e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|_| ScrapeError::NotUtf8)?;
            Ok(Body {
                text,
                format: Format::from_content_type(ct.as_deref()),
                duration: Duration::ZERO,
            })
        };
        // The client timeout covers the request; this also bounds a slow-drip body.
        let mut body = tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| {
                ScrapeError::Http(format!(
                    "timed out after {}",
                    crate::units::format_duration(self.cfg.timeout)
                ))
            })??;
        body.duration = start.elapsed();
        Ok(body)
    }

    /// Whether malformed lines fail the scrape.
    pub fn strict(&self) -> bool {
        self.cfg.strict
    }
}

/// Parses a fetched body, applying the strictness rule.
pub fn parse_body(body: &Body, strict: bool) -> Result<expo::Exposition<'_>, ScrapeError> {
    let exp = expo::parse(&body.text, body.format);
    if strict && !exp.errors.is_empty() {
        return Err(ScrapeError::Parse {
            count: exp.errors.len(),
            first: exp.errors[0].to_string(),
        });
    }
    if exp.samples.is_empty() {
        return Err(if exp.errors.is_empty() {
            ScrapeError::Empty
        } else {
            ScrapeError::Parse {
                count: exp.errors.len(),
                first: exp.errors[0].to_string(),
            }
        });
    }
    Ok(exp)
}

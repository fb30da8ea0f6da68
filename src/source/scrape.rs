//! Direct scraping of `/metrics` endpoints: concurrent, bounded, size-capped, strict.
//!
//! Each fetch is limited by a global semaphore (so 1 000 deployments do not open 4 000
//! sockets at once), a per-request timeout that also bounds a slow-drip body, and a body
//! size cap checked while streaming the *decompressed* bytes (a gzip bomb is refused like a
//! plain 50 MB body). A body that is not UTF-8, is cut short, or has a malformed line fails
//! the scrape (as Prometheus does): a judgement must never rest on a silently shrunk set of
//! samples. The format is negotiated like Prometheus does it: OpenMetrics preferred, text
//! 0.0.4 accepted, chosen by the answer's `Content-Type`.
//!
//! Every sample carries a time: the one the target exposed (`honor_timestamps`, as in
//! Prometheus) or the scrape's own. A sample older than the 5-minute lookback is stale and
//! is dropped, exactly as an instant query and `rollguard backtest` would not see it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use crate::config::ScrapeConfig;
use crate::expo::{self, Format};
use crate::net;

/// `Accept` header, the same preference order Prometheus 2.x sends: OpenMetrics 1.0.0, then
/// OpenMetrics 0.0.1, then text 0.0.4, then anything.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A sample is usable this long after its timestamp ([`crate::query::LOOKBACK_MS`]).
pub const LOOKBACK: Duration = Duration::from_millis(crate::query::LOOKBACK_MS as u64);

/// Why a scrape failed (the message goes into logs, the API and chat; it never contains a
/// credential).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    /// Could not connect, TLS failed, the connection broke before an answer.
    #[error("{0}")]
    Http(String),
    /// No complete answer within the scrape timeout.
    #[error("timed out after {0}")]
    Timeout(String),
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body was too large or the connection broke while reading it.
    #[error("{0}")]
    Body(String),
    #[error("body is not UTF-8 text")]
    NotUtf8,
    #[error("{count} malformed line(s), first: {first}")]
    Parse { count: usize, first: String },
    #[error("no samples in the body")]
    Empty,
    /// The same series twice in one body: which value is the truth is unknowable.
    #[error("series {0} appears more than once; exactly one sample per series is expected")]
    Duplicate(String),
    /// A credential could not be read (the message names the file or variable, not the value).
    #[error("{0}")]
    Credentials(String),
    /// Not done by the end of the analysis interval, mostly waiting for a slot of the
    /// daemon-wide concurrency limit behind other slow targets. The interval's data is then
    /// missing rather than late, so one interval never stretches into the next.
    #[error(
        "not scraped within the analysis interval ({0}); the scrape concurrency limit is saturated by slow targets"
    )]
    Overrun(String),
}

impl ScrapeError {
    /// A short label for the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Http(_) => "http",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Status(_) => "status",
            ScrapeError::Body(_) => "body",
            ScrapeError::NotUtf8 => "encoding",
            ScrapeError::Parse { .. } => "parse",
            ScrapeError::Empty => "empty",
            ScrapeError::Duplicate(_) => "duplicate",
            ScrapeError::Credentials(_) => "credentials",
            ScrapeError::Overrun(_) => "overrun",
        }
    }

    /// Whether the failure says "cannot reach the target" rather than "the target answered
    /// badly": only these count towards the circuit breaker's "metrics backend down".
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ScrapeError::Http(_) | ScrapeError::Timeout(_) | ScrapeError::Overrun(_)
        )
    }
}

/// A fetched body, ready to parse.
pub struct Body {
    pub text: String,
    pub format: Format,
    /// Time spent on the network (not waiting for a concurrency permit).
    pub duration: Duration,
    /// Wall-clock time of the scrape, in milliseconds since the Unix epoch: the timestamp of
    /// every sample that exposes none.
    pub scraped_at_ms: i64,
}

/// Shared scraping machinery (one per daemon).
pub struct Scraper {
    client: reqwest::Client,
    cfg: ScrapeConfig,
    limit: Arc<Semaphore>,
}

impl Scraper {
    /// One scraper per daemon, so the concurrency limit is global and connections are pooled
    /// across deployments. Fails only on unreadable TLS files.
    pub fn new(cfg: &ScrapeConfig) -> Result<Self, String> {
        Ok(Scraper {
            client: net::client(&cfg.tls, cfg.timeout)?,
            cfg: cfg.clone(),
            limit: Arc::new(Semaphore::new(cfg.concurrency)),
        })
    }

    /// The configuration this scraper runs with.
    pub fn config(&self) -> &ScrapeConfig {
        &self.cfg
    }

    /// Fetches one target's body. Waits for a permit of the global concurrency limit first;
    /// the timeout starts once the permit is held, so a long queue is not a target's fault.
    pub async fn fetch(&self, url: &str) -> Result<Body, ScrapeError> {
        self.fetch_by(url, None).await
    }

    /// [`Scraper::fetch`], given up at `deadline` (queue wait included) with
    /// [`ScrapeError::Overrun`].
    pub async fn fetch_by(
        &self,
        url: &str,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<Body, ScrapeError> {
        match deadline {
            Some((at, budget)) => tokio::time::timeout_at(at, self.fetch_now(url))
                .await
                .unwrap_or_else(|_| {
                    Err(ScrapeError::Overrun(crate::units::format_duration(budget)))
                }),
            None => self.fetch_now(url).await,
        }
    }

    async fn fetch_now(&self, url: &str) -> Result<Body, ScrapeError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| ScrapeError::Http("scraper is shutting down".into()))?;
        let start = tokio::time::Instant::now();
        let scraped_at_ms = epoch_ms(SystemTime::now());
        let mut req = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{:.3}", self.cfg.timeout.as_secs_f64()),
            )
            .timeout(self.cfg.timeout);
        // Secrets are read per scrape so a rotated token file takes effect without a restart.
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t.resolve().map_err(ScrapeError::Credentials)?);
        }
        if let Some(b) = &self.cfg.basic_auth {
            let pw = b.password.resolve().map_err(ScrapeError::Credentials)?;
            req = req.basic_auth(&b.username, Some(pw));
        }
        let limit = self.cfg.max_body_bytes;
        let fut = async {
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() {
                    ScrapeError::Timeout(crate::units::format_duration(self.cfg.timeout))
                } else {
                    ScrapeError::Http(net::redact_error(&e))
                }
            })?;
            if !resp.status().is_success() {
                return Err(ScrapeError::Status(resp.status().as_u16()));
            }
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = net::read_body_capped(resp, limit)
                .await
                .map_err(|e| match e {
                    net::BodyError::Timeout => {
                        ScrapeError::Timeout(crate::units::format_duration(self.cfg.timeout))
                    }
                    other => ScrapeError::Body(other.to_string()),
                })?;
            let text = String::from_utf8(bytes).map_err(|_| ScrapeError::NotUtf8)?;
            Ok(Body {
                text,
                format: Format::from_content_type(ct.as_deref()),
                duration: Duration::ZERO,
                scraped_at_ms,
            })
        };
        // The client timeout covers the request; this also bounds a slow-drip body.
        let mut body = tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| ScrapeError::Timeout(crate::units::format_duration(self.cfg.timeout)))??;
        body.duration = start.elapsed();
        Ok(body)
    }

    /// Whether malformed lines fail the scrape.
    pub fn strict(&self) -> bool {
        self.cfg.strict
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses a fetched body, applying the strictness rule and dropping stale samples.
///
/// With `honor_timestamps`, a sample's time is the one it exposes (else the scrape's), and
/// a sample older than [`LOOKBACK`] at scrape time is stale (a cached exporter, a dead
/// pushgateway group) and is dropped. If that leaves nothing, the scrape is `Empty`. A gauge
/// sample whose exposed time has not moved since the last scrape is not read again
/// ([`crate::series::ArmCollector`]). Without it, exposed times are dropped.
pub fn parse_body(
    body: &Body,
    strict: bool,
    honor_timestamps: bool,
) -> Result<expo::Exposition<'_>, ScrapeError> {
    let mut exp = expo::parse(&body.text, body.format);
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
    if let Some(dup) = first_duplicate(&exp.samples) {
        return Err(ScrapeError::Duplicate(dup));
    }
    if !honor_timestamps {
        // Each sample is then this scrape's: new every interval for the collector too.
        for s in &mut exp.samples {
            s.timestamp_ms = None;
        }
    } else {
        let oldest = body.scraped_at_ms - LOOKBACK.as_millis() as i64;
        if exp
            .samples
            .iter()
            .any(|s| s.timestamp_ms.is_some_and(|t| t < oldest))
        {
            // Families index into `samples`; the collector reads only the samples, so the
            // family table is cleared rather than left pointing at moved entries.
            exp.samples
                .retain(|s| s.timestamp_ms.is_none_or(|t| t >= oldest));
            exp.families.clear();
            if exp.samples.is_empty() {
                return Err(ScrapeError::Empty);
            }
        }
    }
    Ok(exp)
}

/// The first series that appears twice (name and label set; label order does not matter), as
/// Prometheus refuses duplicate samples in one scrape.
fn first_duplicate(samples: &[expo::Sample<'_>]) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let mut seen = std::collections::HashSet::with_capacity(samples.len());
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for s in samples {
        labels.clear();
        labels.extend(s.labels.iter().map(|l| (l.name, l.value.as_ref())));
        labels.sort_unstable();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.name.hash(&mut h);
        labels.hash(&mut h);
        if !seen.insert(h.finish()) {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            return Some(format!("{}{{{}}}", s.name, inner.join(",")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str, format: Format, at: i64) -> Body {
        Body {
            text: text.into(),
            format,
            duration: Duration::ZERO,
            scraped_at_ms: at,
        }
    }

    #[test]
    fn stale_exposed_timestamps_are_dropped() {
        let now = 1_700_000_000_000;
        let text = format!(
            "fresh 1 {}\nold 2 {}\nnone 3\n",
            now - 1000,
            now - 6 * 60 * 1000
        );
        let b = body(&text, Format::Prometheus, now);
        let names: Vec<&str> = parse_body(&b, true, true)
            .unwrap()
            .samples
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["fresh", "none"]);
        // Not honoured: every sample is this scrape's, with no exposed time left for the
        // collector to find unchanged.
        let kept = parse_body(&b, true, false).unwrap();
        assert_eq!(kept.samples.len(), 3);
        assert!(kept.samples.iter().all(|s| s.timestamp_ms.is_none()));
        let only_old = body(
            &format!("old 2 {}\n", now - 6 * 60 * 1000),
            Format::Prometheus,
            now,
        );
        assert_eq!(
            parse_body(&only_old, true, true).err(),
            Some(ScrapeError::Empty)
        );
    }

    #[test]
    fn duplicate_series_fail_the_scrape() {
        let b = body(
            "a{x=\"1\",y=\"2\"} 1\nb 2\na{y=\"2\",x=\"1\"} 3\n",
            Format::Prometheus,
            0,
        );
        assert_eq!(
            parse_body(&b, true, true).err(),
            Some(ScrapeError::Duplicate("a{x=\"1\",y=\"2\"}".into()))
        );
        let h = body(
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
            Format::Prometheus,
            0,
        );
        assert!(parse_body(&h, true, true).is_ok());
    }

    #[test]
    fn openmetrics_needs_its_eof() {
        let ok = body(
            "# TYPE c counter\nc_total 1\n# EOF\n",
            Format::OpenMetrics,
            0,
        );
        assert_eq!(parse_body(&ok, true, true).unwrap().samples.len(), 1);
        let cut = body("# TYPE c counter\nc_total 1\n", Format::OpenMetrics, 0);
        assert!(matches!(
            parse_body(&cut, true, true),
            Err(ScrapeError::Parse { .. })
        ));
    }
}

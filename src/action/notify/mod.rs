//! Notifications: a durable outbox per destination, delivered by one worker per destination
//! with pacing, retries with backoff honouring `Retry-After`, and a dead-letter status after
//! [`MAX_ATTEMPTS`]. Enqueueing never waits on the network, so a slow or failing chat service
//! never delays a rollback hook.

pub mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::NotifierKind;
use crate::events::Notice;
use crate::store::{Store, now};
use crate::telemetry::Telemetry;

/// Deliveries tried per message before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 8;

/// Queues notices and delivers them.
pub struct Notifiers {
    store: Arc<Store>,
    destinations: BTreeMap<String, NotifierKind>,
    client: reqwest::Client,
    wake: Notify,
    telemetry: Arc<Telemetry>,
    /// Minimum time between two messages to one destination.
    pace: Duration,
}

/// What a destination answered.
pub enum Delivery {
    Sent,
    /// Try again later (429, 5xx, timeout), after at least this long.
    Retry { after: Option<Duration>, error: String },
    /// Will never succeed as is (4xx other than 429, bad config).
    Permanent(String),
}

impl Notifiers {
    pub fn new(store: Arc<Store>, destinations: BTreeMap<String, NotifierKind>, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let client = crate::net::client(&crate::config::TlsConfig::default(), Duration::from_secs(10))?;
        Ok(Notifiers { store, destinations, client, wake: Notify::new(), telemetry, pace: Duration::from_secs(1) })
    }

    /// Overrides the pacing (tests use a short pace).
    pub fn with_pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }

    /// Queues a notice for the named destinations (names that are hooks are ignored). Logs
    /// the event once.
    pub fn enqueue(&self, names: &[String], notice: &Notice) {
        notice.log();
        let payload = match serde_json::to_value(notice) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise notice");
                return;
            }
        };
        let mut any = false;
        for n in names.iter().filter(|n| self.destinations.contains_key(*n)) {
            if let Err(e) = self.store.enqueue(n, &payload) {
                tracing::error!(notifier = %n, error = %e, "cannot queue notification");
            } else {
                any = true;
            }
        }
        if any {
            self.wake.notify_waiters();
        }
    }

    /// Runs one delivery worker per destination until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = Vec::new();
        for name in self.destinations.keys().cloned() {
            let me = self.clone();
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move { me.worker(&name, sd).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn worker(&self, name: &str, shutdown: CancellationToken) {
        let Some(kind) = self.destinations.get(name).cloned() else { return };
        loop {
            let wait = match self.store.next_due(name, now()) {
                Ok(Some(item)) if item.status != "waiting" => {
                    let notice: Option<Notice> = serde_json::from_value(item.payload.clone()).ok();
                    let result = match &notice {
                        Some(n) => self.send(&kind, n).await,
                        None => Delivery::Permanent("unreadable queued notice".into()),
                    };
                    let attempts = item.attempts + 1;
                    let (status, next, err) = match result {
                        Delivery::Sent => ("sent", now(), String::new()),
                        Delivery::Retry { after, error } if attempts < MAX_ATTEMPTS => {
                            let backoff = Duration::from_secs(1u64 << attempts.min(8));
                            let after = after.map_or(backoff, |a| a.max(Duration::from_millis(100)));
                            ("pending", now() + after.as_secs_f64(), error)
                        }
                        Delivery::Retry { error, .. } | Delivery::Permanent(error) => ("dead", now(), error),
                    };
                    Telemetry::inc(&self.telemetry.notifications, &[("notifier", name), ("result", status)]);
                    if status == "dead" {
                        tracing::error!(notifier = name, attempts, error = %err, "notification dead-lettered");
                    } else if !err.is_empty() {
                        tracing::warn!(notifier = name, attempts, error = %err, "notification delivery failed; will retry");
                    }
                    if let Err(e) = self.store.outbox_update(item.id, status, attempts, next, &err) {
                        tracing::error!(notifier = name, error = %e, "cannot record notification delivery");
                    }
                    if status == "sent" { self.pace } else { Duration::ZERO }
                }
                Ok(Some(item)) => Duration::from_secs_f64((item.next_at - now()).clamp(0.01, 3600.0)),
                Ok(None) => Duration::from_secs(3600),
                Err(e) => {
                    tracing::error!(notifier = name, error = %e, "cannot read the notification outbox");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn send(&self, kind: &NotifierKind, notice: &Notice) -> Delivery {
        let req = match render::render(kind, notice) {
            Ok(r) => r,
            Err(e) => return Delivery::Permanent(e),
        };
        let mut b = self.client.post(&req.url).json(&req.body);
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        match b.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let after = crate::net::retry_after(resp.headers());
                let body = crate::net::read_text_capped(resp, 2048).await;
                match status {
                    200..=299 => Delivery::Sent,
                    429 => Delivery::Retry { after: after.or_else(|| render::retry_after_from_body(&body)), error: format!("HTTP 429 {body}") },
                    500..=599 => Delivery::Retry { after, error: format!("HTTP {status} {body}") },
                    _ => Delivery::Permanent(format!("HTTP {status} {body}")),
                }
            }
            Err(e) => Delivery::Retry { after: None, error: crate::net::redact_error(&e) },
        }
    }
}

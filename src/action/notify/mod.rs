//! Notifications: a durable outbox per destination (SQLite), delivered in order by one
//! worker per destination with pacing, retries with backoff honouring `Retry-After`, and a
//! dead-letter status after the destination's `max_attempts`. Enqueueing is one local
//! insert and never waits on the network, so a slow or failing chat service never delays a
//! rollback hook. Messages are rendered when they are sent (from the queued notice), so a
//! message queued before a restart is delivered after it.

pub mod alertmanager;
pub mod deliver;
pub mod digest;
pub mod discord;
pub mod dispatch;
pub mod google_chat;
pub mod limits;
pub mod mattermost;
pub mod pagerduty;
pub mod render;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::deliver::Delivery;
use self::render::{Change, Ctx, Plan, Queued};
use crate::config::{NotifierConfig, NotifierKind};
use crate::events::Notice;
use crate::store::{Incident, OutboxItem, OutboxRow, OutboxStatus, OutboxUpdate, Store, now};
use crate::telemetry::Telemetry;

/// Queues notices and delivers them.
pub struct Notifiers {
    store: Arc<dyn Store>,
    /// Delivery lanes by lane name ([`NotifierConfig::lanes`]): one per destination, one per
    /// replica of an Alertmanager cluster.
    destinations: BTreeMap<String, NotifierConfig>,
    /// The lanes of each configured destination name (what rules and notices address).
    lanes: BTreeMap<String, Vec<String>>,
    client: reqwest::Client,
    /// Lanes with TLS settings of their own (a private CA, a client certificate).
    clients: BTreeMap<String, reqwest::Client>,
    /// One wake-up per destination; `notify_one` keeps a permit, so a notice queued while
    /// the worker is busy is not missed.
    wakes: BTreeMap<String, Notify>,
    telemetry: Arc<Telemetry>,
}

impl Notifiers {
    pub fn new(
        store: Arc<dyn Store>,
        destinations: BTreeMap<String, NotifierConfig>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, String> {
        let client = crate::net::client(
            &crate::config::TlsConfig::default(),
            Duration::from_secs(30),
        )?;
        let mut lanes = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut by_lane = BTreeMap::new();
        for (name, dest) in destinations {
            let mut names = Vec::new();
            for (lane, cfg) in dest.lanes(&name) {
                if let Some(tls) = cfg.kind.tls().filter(|t| **t != Default::default()) {
                    let c = crate::net::client(tls, Duration::from_secs(30))
                        .map_err(|e| format!("notifier `{name}`: {e}"))?;
                    clients.insert(lane.clone(), c);
                }
                names.push(lane.clone());
                by_lane.insert(lane, cfg);
            }
            lanes.insert(name, names);
        }
        let wakes = by_lane.keys().map(|k| (k.clone(), Notify::new())).collect();
        Ok(Notifiers {
            store,
            destinations: by_lane,
            lanes,
            client,
            clients,
            wakes,
            telemetry,
        })
    }

    /// Overrides every destination's pacing (tests and the demo use a short pace).
    pub fn with_pace(mut self, pace: Duration) -> Self {
        for d in self.destinations.values_mut() {
            d.pace = pace;
        }
        self
    }

    /// Queues a notice for the named destinations (names that are hooks are ignored) and
    /// writes its log line once.
    pub fn enqueue(&self, names: &[String], notice: &Notice) {
        notice.log();
        for row in self.rows(names, notice) {
            self.push(&row.notifier, &row.payload);
        }
    }

    /// The outbox rows of a notice for the named destinations (names that are hooks are
    /// ignored): what a deployment's transition writes in its own transaction. Follow the
    /// write with [`Notifiers::written`].
    pub fn rows(&self, names: &[String], notice: &Notice) -> Vec<OutboxRow> {
        let mut out = Vec::new();
        for n in self.lanes_of(names) {
            let Some(dest) = self.destinations.get(n) else {
                continue;
            };
            for part in dispatch::parts(&dest.kind, notice) {
                let item = Queued::Notice {
                    notice: Box::new(notice.clone()),
                    part,
                };
                match serde_json::to_value(&item) {
                    Ok(payload) => out.push(OutboxRow {
                        notifier: n.clone(),
                        payload,
                    }),
                    Err(e) => tracing::error!(notifier = %n, error = %e, "cannot serialise notice"),
                }
            }
        }
        out
    }

    /// After a transaction wrote a notice's rows: its log line, and the destinations'
    /// workers woken.
    pub fn written(&self, names: &[String], notice: &Notice) {
        notice.log();
        for n in self.lanes_of(names) {
            if let Some(w) = self.wakes.get(n) {
                w.notify_one();
            }
        }
    }

    /// The delivery lanes of the named destinations (names that are hooks have none).
    fn lanes_of<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a String> + 'a {
        names.iter().filter_map(|n| self.lanes.get(n)).flatten()
    }

    fn push(&self, name: &str, payload: &serde_json::Value) {
        match self.store.enqueue(name, payload) {
            Ok(()) => {
                if let Some(w) = self.wakes.get(name) {
                    w.notify_one();
                }
            }
            Err(e) => tracing::error!(notifier = %name, error = %e, "cannot queue notification"),
        }
    }

    /// Runs one delivery worker per destination (and the alert refresher of each
    /// Alertmanager destination) until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = Vec::new();
        for (name, dest) in &self.destinations {
            let (me, sd, n) = (self.clone(), shutdown.clone(), name.clone());
            tasks.push(tokio::spawn(async move { me.worker(&n, sd).await }));
            if let NotifierKind::Alertmanager { resend, .. } = dest.kind {
                let (me, sd, n) = (self.clone(), shutdown.clone(), name.clone());
                tasks.push(tokio::spawn(
                    async move { me.refresher(&n, resend, sd).await },
                ));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Queues a refresh of the active alerts every `resend` (one at a time: none is added
    /// while one waits, so an Alertmanager outage does not pile them up).
    async fn refresher(&self, name: &str, resend: Duration, shutdown: CancellationToken) {
        let payload = match serde_json::to_value(Queued::Refresh) {
            Ok(p) => p,
            Err(_) => return,
        };
        let mut tick = tokio::time::interval(resend);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let active = self
                .store
                .incidents(name, None)
                .map(|v| !v.is_empty())
                .unwrap_or(false);
            if active
                && !self
                    .store
                    .outbox_has_pending(name, &payload)
                    .unwrap_or(true)
            {
                self.push(name, &payload);
            }
        }
    }

    /// At shutdown: lets the workers send what is due until `deadline`. Messages waiting for
    /// a retry time stay queued for the next start. Returns how many remain queued. Polls the
    /// outbox, because the workers announce nothing when it empties.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> usize {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            let due = self.destinations.keys().any(|d| {
                matches!(self.store.next_due(d, now()), Ok(Some(item)) if item.status != "waiting")
            });
            if !due || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.store
            .outbox_counts()
            .map(|c| {
                c.iter()
                    .filter(|(_, status, _)| status == "pending")
                    .map(|(_, _, n)| *n as usize)
                    .sum()
            })
            .unwrap_or(0)
    }

    async fn worker(&self, name: &str, shutdown: CancellationToken) {
        let (Some(dest), Some(wake)) = (self.destinations.get(name), self.wakes.get(name)) else {
            return;
        };
        loop {
            let wait = match self.store.next_due(name, now()) {
                Ok(Some(item)) if item.status != "waiting" => {
                    // Pacing holds even when more notices arrive meanwhile.
                    let gap = self.deliver(name, dest, item).await.max(dest.pace);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(gap) => {}
                    }
                    continue;
                }
                Ok(Some(item)) => {
                    Duration::from_secs_f64((item.next_at - now()).clamp(0.01, 3600.0))
                }
                Ok(None) => Duration::from_secs(3600),
                Err(e) => {
                    tracing::error!(notifier = name, error = %e, "cannot read the notification outbox");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Attempts one item and records the result. Returns an extra pause the destination
    /// asked for before its next message.
    async fn deliver(&self, name: &str, dest: &NotifierConfig, item: OutboxItem) -> Duration {
        let queued = Queued::from_payload(&item.payload);
        let open = match &queued {
            Some(Queued::Notice { notice, .. }) if tracks_incidents(&dest.kind) => {
                self.store.incidents(name, Some(&notice.key))
            }
            Some(Queued::Refresh) => self.store.incidents(name, None),
            _ => Ok(Vec::new()),
        };
        let open = match open {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(notifier = name, error = %e, "cannot read open incidents; retrying later");
                let retry = OutboxUpdate {
                    status: OutboxStatus::Pending,
                    attempts: item.attempts,
                    next_at: now() + 5.0,
                    error: &e.to_string(),
                };
                let _ = self.store.outbox_update(item.id, retry);
                return Duration::ZERO;
            }
        };
        let ctx = Ctx {
            config: dest,
            now: now(),
            delivery: &item.delivery_id,
            open: &open,
        };
        let plan = match &queued {
            Some(q) => dispatch::plan(&ctx, q),
            None => Err("unreadable queued notification".into()),
        };
        let attempts = item.attempts + 1;
        let (status, next, error, pause) = match plan {
            Ok(Plan::Skip { reason, changes }) => {
                self.apply(name, &changes);
                (OutboxStatus::Skipped, now(), reason, None)
            }
            Err(e) => (OutboxStatus::Dead, now(), e, None),
            Ok(Plan::Send { request, changes }) => {
                let client = self.clients.get(name).unwrap_or(&self.client);
                match deliver::send(client, &request, dest.timeout).await {
                    Delivery::Sent { pause } => {
                        self.apply(name, &changes);
                        (OutboxStatus::Sent, now(), String::new(), pause)
                    }
                    Delivery::Retry { after, error } if attempts < dest.max_attempts => {
                        let wait = after.map_or_else(
                            || deliver::backoff(dest.retry_backoff, attempts, item.id),
                            |a| a.max(Duration::from_millis(100)),
                        );
                        (
                            OutboxStatus::Pending,
                            now() + wait.as_secs_f64(),
                            error,
                            None,
                        )
                    }
                    Delivery::Retry { error, .. } | Delivery::Permanent(error) => {
                        (OutboxStatus::Dead, now(), error, None)
                    }
                }
            }
        };
        Telemetry::inc(
            &self.telemetry.notifications,
            &[("notifier", name), ("result", status.as_str())],
        );
        match status {
            OutboxStatus::Dead => {
                tracing::error!(notifier = name, kind = dest.kind.name(), attempts, error = %error, "notification dead-lettered")
            }
            OutboxStatus::Pending => {
                tracing::warn!(notifier = name, attempts, error = %error, "notification delivery failed; will retry")
            }
            OutboxStatus::Skipped => {
                tracing::debug!(notifier = name, reason = %error, "nothing to send")
            }
            OutboxStatus::Sent => tracing::debug!(notifier = name, attempts, "notification sent"),
        }
        let update = OutboxUpdate {
            status,
            attempts,
            next_at: next,
            error: &error,
        };
        if let Err(e) = self.store.outbox_update(item.id, update) {
            tracing::error!(notifier = name, error = %e, "cannot record notification delivery");
        }
        pause.unwrap_or(Duration::ZERO)
    }

    /// Records what the destination now knows about open incidents.
    fn apply(&self, name: &str, changes: &[Change]) {
        for c in changes {
            let r = match c {
                Change::Open {
                    key,
                    alertname,
                    notice,
                    at,
                } => self.store.incident_open(&Incident {
                    notifier: name.to_string(),
                    key: key.clone(),
                    alertname: alertname.clone(),
                    notice: notice.clone(),
                    opened_at: *at,
                }),
                Change::Close { key, alertname } => self.store.incident_close(name, key, alertname),
            };
            if let Err(e) = r {
                tracing::error!(notifier = name, error = %e, "cannot record incident state");
            }
        }
    }
}

/// Destinations whose rendering depends on what they were told before.
fn tracks_incidents(kind: &NotifierKind) -> bool {
    matches!(
        kind,
        NotifierKind::Alertmanager { .. } | NotifierKind::Pagerduty { .. }
    )
}

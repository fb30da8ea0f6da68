//! Durable state: deployments with their judge state, the timeline of events, hook actions
//! and the notification outbox, behind the [`Store`] trait; [`sqlite`] is the implementation.
//!
//! The rule is "persist, then act": a decision and the actions it implies are written in one
//! transaction before any hook starts, so a restart resumes a rollback instead of losing or
//! repeating it. If the state directory cannot be written, callers must not act.

pub mod config;
pub mod postgres;
pub mod sqlite;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use postgres::{LeaseView, PgStore};
pub use sqlite::SqliteStore;

use crate::deploy::{DeploymentRecord, DeploymentRequest, State};

/// Failures of the state store. Any of them means "do not act".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record for deployment {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("PostgreSQL store: {}", with_causes(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("PostgreSQL store: {0}")]
    Unavailable(String),
    /// A write on a daemon that does not lead (docs/ha.md).
    #[error(
        "this rollguard is a standby: only the leader makes changes (see /readyz for who leads)"
    )]
    Standby,
    /// A write after another daemon took the lease, or after it expired: do not act.
    #[error("this rollguard's leader lease is gone (expired or taken over); it no longer acts")]
    Fenced,
}

/// An error and its causes on one line: the `postgres` crate's errors keep the useful part
/// ("certificate not valid for name", "password authentication failed") in their source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Wall-clock seconds since the Unix epoch (for records people read; scheduling uses
/// `tokio::time`).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

text_enum! {
    /// What a timeline entry records.
    pub enum EventKind {
        Registered => "registered",
        Started => "started",
        /// A canary step (traffic weight) began.
        Step => "step",
        CheckFailed => "check_failed",
        /// A terminal decision: rollback, promote or inconclusive.
        Decision => "decision",
        /// Blue-green: traffic switched to green.
        Switch => "switch",
        Held => "held",
        Resumed => "resumed",
        /// A person's action (pause, resume, promote, abort).
        Person => "person",
        /// A hook attempt's result.
        Hook => "hook",
        DryRun => "dry_run",
        /// The service's live schema changed (a migration ran), or a waiting canary's
        /// migration landed.
        Schema => "schema",
        /// The canary waits for a migration (or for the schema probe) before it starts.
        SchemaWait => "schema_wait",
        /// The live schema is past what the canary tolerates: it never started.
        SchemaRefused => "schema_refused",
        /// A rollback the live schema made unsafe (or that could not be judged): no
        /// rollback hook ran.
        RollbackBlocked => "rollback_blocked",
    }
}

text_enum! {
    /// Why a hook runs: the decision that owes it.
    pub enum Purpose {
        Rollback => "rollback",
        Promote => "promote",
        /// A canary step: the `on_step` hooks set the new weight.
        Step => "step",
        /// Blue-green: the `on_pass` hooks switch traffic to green.
        Switch => "switch",
        Hold => "hold",
        Inconclusive => "inconclusive",
        /// Instead of an unsafe rollback: the service's `roll_forward` hooks.
        RollForward => "roll_forward",
    }
}

text_enum! {
    /// Where a hook action is.
    pub enum ActionStatus {
        /// Owed, not started (or waiting for a retry).
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Not run: dry run.
        Skipped => "skipped",
    }
}

impl ActionStatus {
    /// Whether the action still has to run or finish.
    pub fn is_open(self) -> bool {
        matches!(self, ActionStatus::Pending | ActionStatus::Running)
    }
}

/// A timeline entry to write with a transition (or alone, with [`Store::add_event`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    pub kind: EventKind,
    pub message: String,
    pub data: serde_json::Value,
}

/// What a transition writes beside its record, in the same transaction ([`Store::save`]):
/// its new timeline entries, the actions it owes and the notifications it sends. One value
/// rather than three slices, so every store writes the same set and callers name what they
/// leave out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Writes<'a> {
    pub events: &'a [TimelineEvent],
    pub actions: &'a [Action],
    pub outbox: &'a [OutboxRow],
}

impl<'a> Writes<'a> {
    /// Timeline entries only (no action owed, nobody told).
    pub fn events(events: &'a [TimelineEvent]) -> Writes<'a> {
        Writes {
            events,
            ..Writes::default()
        }
    }
}

/// How a hook attempt ended ([`Store::action_finished`]): `succeeded`, `failed`, `skipped`,
/// or `pending` for a retry, with what the hook said.
#[derive(Clone, Copy, Debug)]
pub struct ActionEnd<'a> {
    pub status: ActionStatus,
    pub summary: &'a str,
    pub output: &'a str,
}

impl<'a> ActionEnd<'a> {
    /// An end no hook process spoke for (dry run, hook missing from the config).
    pub fn without_output(status: ActionStatus, summary: &'a str) -> ActionEnd<'a> {
        ActionEnd {
            status,
            summary,
            output: "",
        }
    }
}

/// One entry of a deployment's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub deployment: String,
    pub at: f64,
    pub kind: EventKind,
    pub message: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub data: serde_json::Value,
}

/// A hook run owed to a decision.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Action {
    pub id: String,
    pub deployment: String,
    pub hook: String,
    pub purpose: Purpose,
    pub status: ActionStatus,
    pub attempts: u32,
    pub pid: Option<u32>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub summary: String,
    pub output: String,
    /// The facts the hook receives (JSON).
    pub facts: serde_json::Value,
    /// The notifiers told how the action ended, decided with the decision that owed it and
    /// stored with the action, so a restart announces the result the same way.
    #[serde(default)]
    pub notify: Vec<String>,
}

impl Action {
    /// An action owed and not yet started: what a decision records before any hook runs.
    pub fn pending(
        id: String,
        deployment: &str,
        hook: &str,
        purpose: Purpose,
        facts: serde_json::Value,
    ) -> Action {
        Action {
            id,
            deployment: deployment.to_string(),
            hook: hook.to_string(),
            purpose,
            status: ActionStatus::Pending,
            attempts: 0,
            pid: None,
            started_at: None,
            finished_at: None,
            summary: String::new(),
            output: String::new(),
            facts,
            notify: Vec::new(),
        }
    }
}

/// A notification to queue: one destination, one rendered part of a notice.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub notifier: String,
    pub payload: serde_json::Value,
}

text_enum! {
    /// Where a queued notification is, as stored.
    pub enum OutboxStatus {
        /// Not delivered yet: due at its `next_at` (a retry waits there).
        Pending => "pending",
        Sent => "sent",
        /// Not needed after all (the destination already knows).
        Skipped => "skipped",
        /// Given up: a permanent error, or out of attempts (dead-lettered).
        Dead => "dead",
    }
}

/// How a delivery attempt left a notification ([`Store::outbox_update`]).
#[derive(Clone, Copy, Debug)]
pub struct OutboxUpdate<'a> {
    pub status: OutboxStatus,
    pub attempts: u32,
    /// When it is due again (a retry), or when it was settled.
    pub next_at: f64,
    /// The last delivery error, or why it was skipped.
    pub error: &'a str,
}

/// A notification waiting to be delivered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    /// The delivery's own id (UUIDv7): the same on every attempt and after restarts, unique
    /// across daemons and state directories, so receivers can drop repeats safely.
    pub delivery_id: String,
    pub notifier: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub next_at: f64,
    pub status: String,
    pub last_error: String,
}
impl OutboxItem {
    /// The item as `next_due` returns it at `at`: marked `waiting` while it is not yet due.
    /// It still heads its destination's queue, so later messages wait behind it (order holds).
    pub fn due_at(mut self, at: f64) -> OutboxItem {
        if self.next_at > at {
            self.status = "waiting".into();
        }
        self
    }
}

/// An incident a destination was told about and not yet told is over.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub notifier: String,
    /// The notice key (one per deployment, or `rollguard/backend`, `rollguard/rules`).
    pub key: String,
    /// Alertmanager `alertname` (or the destination's own name for the incident).
    pub alertname: String,
    /// The latest notice that opened or updated it.
    pub notice: serde_json::Value,
    pub opened_at: f64,
}

/// Result of registering a deployment: new, or the existing one with the same id
/// (registration is idempotent so a retried pipeline step does no harm).
pub enum Registered {
    Created,
    Existing(Box<DeploymentRecord>),
}
/// Durable state behind one seam: the engine, API, runner, outbox and report see only this
/// trait. [`SqliteStore`] is the implementation (one file, WAL mode); a PostgreSQL store for
/// a pair of daemons implements the same calls. Every call is short and synchronous, and any
/// error means "do not act".
pub trait Store: Send + Sync {
    /// Whether the store accepts writes right now (for `/readyz` and before acting).
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Registers a deployment unless one with the same id exists.
    fn register(&self, rec: &DeploymentRecord, event: &str) -> Result<Registered, StoreError>;

    /// Saves a deployment's progress, its new timeline events, the actions its decision
    /// owes and the notifications it sends, atomically: a crash leaves all or none.
    fn save(&self, rec: &DeploymentRecord, writes: Writes<'_>) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError>;

    /// Deployments, newest first, optionally filtered by state and service.
    fn list(
        &self,
        state: Option<State>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentRecord>, StoreError>;

    /// Deployments that were not finished when the daemon stopped.
    fn unfinished(&self) -> Result<Vec<DeploymentRecord>, StoreError>;

    /// Timeline entries after `after` (sequence number), oldest first.
    fn events(&self, id: &str, after: i64, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Appends one timeline entry outside a decision (person actions, hook results).
    fn add_event(&self, id: &str, event: &TimelineEvent) -> Result<(), StoreError>;

    /// Actions not yet finished (`pending` or `running`), oldest first.
    fn open_actions(&self) -> Result<Vec<Action>, StoreError>;

    /// All actions of a deployment, oldest first.
    fn actions_of(&self, deployment: &str) -> Result<Vec<Action>, StoreError>;

    /// Records that an attempt started (before waiting on it).
    fn action_started(&self, id: &str, attempt: u32, pid: Option<u32>) -> Result<(), StoreError>;

    /// Records how an action ended (`succeeded`, `failed`, `skipped`) or a retry (`pending`).
    fn action_finished(&self, id: &str, end: ActionEnd<'_>) -> Result<(), StoreError>;

    /// Queues a notification for delivery.
    fn enqueue(&self, notifier: &str, payload: &serde_json::Value) -> Result<(), StoreError>;

    /// The oldest pending notification for a destination, if it is due.
    fn next_due(&self, notifier: &str, at: f64) -> Result<Option<OutboxItem>, StoreError>;

    /// Marks a notification delivered (`sent`), not needed after all (`skipped`), retried
    /// later (`pending`), or dead-lettered (`dead`).
    fn outbox_update(&self, id: i64, update: OutboxUpdate<'_>) -> Result<(), StoreError>;

    /// Counts of notifications by status (for metrics and tests).
    fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Every queued notification of a destination (all of them with `None`), oldest first.
    fn outbox(&self, notifier: Option<&str>) -> Result<Vec<OutboxItem>, StoreError>;

    /// How many unfinished deployments are in each state (the `active_deployments`
    /// gauge), counted where they are stored.
    fn count_unfinished(&self) -> Result<Vec<(State, usize)>, StoreError>;

    /// The notifications about one deployment (its notices' subject), oldest first: what
    /// its status page shows with their delivery status.
    fn outbox_of(&self, deployment: &str) -> Result<Vec<OutboxItem>, StoreError>;

    /// Whether an identical payload is already waiting for this destination (so periodic
    /// work does not pile up while a destination is down).
    fn outbox_has_pending(
        &self,
        notifier: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// Open incidents of a destination, optionally for one key, oldest first.
    fn incidents(&self, notifier: &str, key: Option<&str>) -> Result<Vec<Incident>, StoreError>;

    /// Records that a destination now knows an incident is open (keeping the first opening
    /// time when it was open already; `opened_at` is then the time of this update).
    fn incident_open(&self, incident: &Incident) -> Result<(), StoreError>;

    /// Forgets an incident the destination was told is over.
    fn incident_close(&self, notifier: &str, key: &str, alertname: &str) -> Result<(), StoreError>;

    /// Deletes what finished before `before` (Unix seconds): deployments with their timeline
    /// and hook attempts, unless a hook of theirs is still owed, and notifications that were
    /// sent, skipped or dead-lettered. Returns (deployments, notifications) deleted.
    fn prune(&self, before: f64) -> Result<(usize, usize), StoreError>;

    /// Timeline entries of one `kind` since `since` (Unix seconds), with their deployment's
    /// service: (service, data). For `rollguard report`'s migration counts.
    fn events_since(
        &self,
        kind: EventKind,
        since: f64,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    /// Finished deployments since `since` (Unix seconds): (service, state, created, finished).
    fn finished_since(&self, since: f64) -> Result<Vec<(String, State, f64, f64)>, StoreError>;
}

pub(crate) fn encode(rec: &DeploymentRecord) -> String {
    serde_json::to_string(rec).unwrap_or_default()
}

/// The chart column's new value: `None` (keep what is stored) when the record carries no
/// chart, as records read by `list` do not.
pub(crate) fn encode_chart(rec: &DeploymentRecord) -> Option<String> {
    if rec.chart.is_empty() {
        None
    } else {
        serde_json::to_string(&rec.chart).ok()
    }
}

/// A JSON column as either store reads it: `NULL`, or text that does not parse (damaged, or
/// written by another version), reads as `T::default()` (`null`, an empty list or chart).
/// These columns are what rollguard shows and tells (facts, payloads, charts), never a
/// reason to stop judging, so both stores forgive them the same way.
pub(crate) fn json_column<T: serde::de::DeserializeOwned + Default>(text: Option<&str>) -> T {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// A deployment row as selected by `record, rule_source, judge` (both stores).
pub(crate) type RecordRow = (String, String, Option<String>);

pub(crate) fn decode(
    id: &str,
    (record, rule_source, judge): RecordRow,
) -> Result<DeploymentRecord, StoreError> {
    let mut rec: DeploymentRecord =
        serde_json::from_str(&record).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            message: e.to_string(),
        })?;
    rec.rule_source = rule_source;
    rec.judge = judge;
    Ok(rec)
}

/// A fresh record for a new registration.
pub fn new_record(
    request: DeploymentRequest,
    rule_path: String,
    rule_version: String,
    rule_source: String,
) -> DeploymentRecord {
    let t = now();
    DeploymentRecord {
        request,
        state: State::Pending,
        step: 0,
        reason: "registered".into(),
        rule_path,
        rule_version,
        rule_source,
        judge: None,
        checks: serde_json::Value::Array(vec![]),
        chart: Default::default(),
        elapsed_ms: 0,
        step_started_ms: 0,
        paused: false,
        created_at: t,
        updated_at: t,
        finished_at: None,
    }
}

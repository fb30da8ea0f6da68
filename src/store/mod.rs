//! Durable state in SQLite (WAL mode): deployments with their judge state, the timeline of
//! events, hook actions and the notification outbox.
//!
//! The rule is "persist, then act": a decision and the actions it implies are written in one
//! transaction before any hook starts, so a restart resumes a rollback instead of losing or
//! repeating it. If the state directory cannot be written, callers must not act.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

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

/// A timeline entry to write with a transition.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    pub kind: EventKind,
    pub message: String,
    pub data: serde_json::Value,
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

/// A notification waiting to be delivered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub notifier: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub next_at: f64,
    pub status: String,
    pub last_error: String,
}

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        analysis TEXT NOT NULL,
        state TEXT NOT NULL,
        record TEXT NOT NULL,
        rule_source TEXT NOT NULL,
        judge TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX deployments_state ON deployments(state);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX events_deployment ON events(deployment, seq);
    CREATE TABLE actions (
        id TEXT PRIMARY KEY,
        deployment TEXT NOT NULL,
        hook TEXT NOT NULL,
        purpose TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        started_at REAL,
        finished_at REAL,
        summary TEXT NOT NULL DEFAULT '',
        output TEXT NOT NULL DEFAULT '',
        facts TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX actions_status ON actions(status);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        notifier TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        status TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(status, notifier, next_at);",
    // 2: incidents a destination was told about (Alertmanager alerts to refresh and resolve,
    // PagerDuty incidents to resolve)
    "CREATE TABLE incidents (
        notifier TEXT NOT NULL,
        key TEXT NOT NULL,
        alertname TEXT NOT NULL,
        notice TEXT NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (notifier, key, alertname)
    );",
    // 3: who is told how an action ended (JSON array of notifier names), stored with the
    // action instead of recomputed after a restart; NULL on rows written before
    "ALTER TABLE actions ADD COLUMN notify TEXT;",
];

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

/// The SQLite-backed store. Calls are short and synchronous; a `Mutex` serialises them.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Result of registering a deployment: new, or the existing one with the same id
/// (registration is idempotent so a retried pipeline step does no harm).
pub enum Registered {
    Created,
    Existing(Box<DeploymentRecord>),
}

impl Store {
    /// Opens (creating if needed) `state_dir/rollguard.db` and applies migrations.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let path = state_dir.join("rollguard.db");
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {m}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(err)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store accepts writes right now (for `/readyz` and before acting).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute_batch("BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS probe(x); COMMIT;")
            .map_err(|e| self.err(e))
    }

    /// Registers a deployment unless one with the same id exists.
    pub fn register(&self, rec: &DeploymentRecord, event: &str) -> Result<Registered, StoreError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        let existing: Option<(String, String, Option<String>)> = tx
            .query_row(
                "SELECT record, rule_source, judge FROM deployments WHERE id = ?1",
                params![rec.request.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(row) = existing {
            return Ok(Registered::Existing(Box::new(decode(
                &rec.request.id,
                row,
            )?)));
        }
        tx.execute(
            "INSERT INTO deployments (id, service, analysis, state, record, rule_source, judge, created_at, updated_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                rec.request.id,
                rec.request.service.clone().unwrap_or_default(),
                rec.request.analysis,
                rec.state.as_str(),
                encode(rec),
                rec.rule_source,
                rec.judge,
                rec.created_at,
                rec.updated_at,
                rec.finished_at
            ],
        )
        .map_err(|e| self.err(e))?;
        insert_event(
            &tx,
            &rec.request.id,
            EventKind::Registered,
            event,
            &serde_json::Value::Null,
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Registered::Created)
    }

    /// Saves a deployment's progress, its new timeline events, the actions its decision
    /// owes and the notifications it sends, atomically: a crash leaves all or none.
    pub fn save(
        &self,
        rec: &DeploymentRecord,
        events: &[TimelineEvent],
        actions: &[Action],
        outbox: &[OutboxRow],
    ) -> Result<(), StoreError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "UPDATE deployments SET state = ?2, record = ?3, judge = ?4, updated_at = ?5, finished_at = ?6 WHERE id = ?1",
                params![rec.request.id, rec.state.as_str(), encode(rec), rec.judge, rec.updated_at, rec.finished_at],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::Corrupt {
                id: rec.request.id.clone(),
                message: "deployment vanished from the store".into(),
            });
        }
        for e in events {
            insert_event(&tx, &rec.request.id, e.kind, &e.message, &e.data)
                .map_err(|e| self.err(e))?;
        }
        for a in actions {
            let notify = serde_json::to_string(&a.notify).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT OR IGNORE INTO actions (id, deployment, hook, purpose, status, attempts, facts, created_at, notify)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
                params![a.id, a.deployment, a.hook, a.purpose.as_str(), a.status.as_str(), a.facts.to_string(), now(), notify],
            )
            .map_err(|e| self.err(e))?;
        }
        for row in outbox {
            insert_outbox(&tx, &row.notifier, &row.payload).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn get(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let c = self.lock();
        let row: Option<(String, String, Option<String>)> = c
            .query_row(
                "SELECT record, rule_source, judge FROM deployments WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|r| decode(id, r)).transpose()
    }

    /// Deployments, newest first, optionally filtered by state and service.
    pub fn list(
        &self,
        state: Option<State>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, record, rule_source, judge FROM deployments
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR service = ?2)
                 ORDER BY created_at DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![state.map(|s| s.as_str()), service, limit as i64],
                |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))),
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, row) = r.map_err(|e| self.err(e))?;
            out.push(decode(&id, row)?);
        }
        Ok(out)
    }

    /// Deployments that were not finished when the daemon stopped.
    pub fn unfinished(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let mut v = Vec::new();
        for s in [State::Pending, State::Analysing, State::Held] {
            v.extend(self.list(Some(s), None, usize::MAX >> 1)?);
        }
        Ok(v)
    }

    /// Timeline entries after `after` (sequence number), oldest first.
    pub fn events(&self, id: &str, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT seq, deployment, at, kind, message, data FROM events WHERE deployment = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id, after, limit as i64], |r| {
                let data: Option<String> = r.get(5)?;
                Ok(Event {
                    seq: r.get(0)?,
                    deployment: r.get(1)?,
                    at: r.get(2)?,
                    kind: text(r, 3, EventKind::parse)?,
                    message: r.get(4)?,
                    data: data
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Appends one timeline entry outside a decision (person actions, hook results).
    pub fn add_event(
        &self,
        id: &str,
        kind: EventKind,
        message: &str,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        insert_event(&c, id, kind, message, data).map_err(|e| self.err(e))
    }

    /// Actions not yet finished (`pending` or `running`), oldest first.
    pub fn open_actions(&self) -> Result<Vec<Action>, StoreError> {
        self.query_actions(
            "WHERE status IN ('pending', 'running') ORDER BY created_at",
            params![],
        )
    }

    /// All actions of a deployment, oldest first.
    pub fn actions_of(&self, deployment: &str) -> Result<Vec<Action>, StoreError> {
        self.query_actions(
            "WHERE deployment = ?1 ORDER BY created_at",
            params![deployment],
        )
    }

    fn query_actions(
        &self,
        tail: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Action>, StoreError> {
        let c = self.lock();
        let sql = format!(
            "SELECT id, deployment, hook, purpose, status, attempts, pid, started_at, finished_at, summary, output, facts, notify FROM actions {tail}"
        );
        let mut stmt = c.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(p, |r| {
                let facts: String = r.get(11)?;
                let notify: Option<String> = r.get(12)?;
                Ok(Action {
                    id: r.get(0)?,
                    deployment: r.get(1)?,
                    hook: r.get(2)?,
                    purpose: text(r, 3, Purpose::parse)?,
                    status: text(r, 4, ActionStatus::parse)?,
                    attempts: r.get(5)?,
                    pid: r.get(6)?,
                    started_at: r.get(7)?,
                    finished_at: r.get(8)?,
                    summary: r.get(9)?,
                    output: r.get(10)?,
                    facts: serde_json::from_str(&facts).unwrap_or(serde_json::Value::Null),
                    notify: notify
                        .and_then(|n| serde_json::from_str(&n).ok())
                        .unwrap_or_default(),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Records that an attempt started (before waiting on it).
    pub fn action_started(
        &self,
        id: &str,
        attempt: u32,
        pid: Option<u32>,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "UPDATE actions SET status = 'running', attempts = ?2, pid = ?3, started_at = ?4 WHERE id = ?1",
            params![id, attempt, pid, now()],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Records how an action ended (`succeeded`, `failed`, `skipped`) or a retry (`pending`).
    pub fn action_finished(
        &self,
        id: &str,
        status: ActionStatus,
        summary: &str,
        output: &str,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        let finished = (status != ActionStatus::Pending).then(now);
        c.execute(
            "UPDATE actions SET status = ?2, summary = ?3, output = ?4, finished_at = ?5, pid = NULL WHERE id = ?1",
            params![id, status.as_str(), summary, output, finished],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Queues a notification for delivery.
    pub fn enqueue(&self, notifier: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        let c = self.lock();
        insert_outbox(&c, notifier, payload).map_err(|e| self.err(e))
    }

    /// The oldest pending notification for a destination, if it is due.
    pub fn next_due(&self, notifier: &str, at: f64) -> Result<Option<OutboxItem>, StoreError> {
        let c = self.lock();
        c.query_row(
            "SELECT id, notifier, payload, attempts, next_at, status, last_error FROM outbox
             WHERE status = 'pending' AND notifier = ?1 ORDER BY id LIMIT 1",
            params![notifier],
            |r| {
                let payload: String = r.get(2)?;
                Ok(OutboxItem {
                    id: r.get(0)?,
                    notifier: r.get(1)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    attempts: r.get(3)?,
                    next_at: r.get(4)?,
                    status: r.get(5)?,
                    last_error: r.get(6)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
        .map(|o| {
            o.map(|mut i| {
                // Keep order: the head of the queue blocks later messages until it is due.
                if i.next_at > at {
                    i.status = "waiting".into();
                }
                i
            })
        })
    }

    /// Marks a notification delivered (`sent`), not needed after all (`skipped`), retried
    /// later (`pending`), or dead-lettered (`dead`).
    pub fn outbox_update(
        &self,
        id: i64,
        status: &str,
        attempts: u32,
        next_at: f64,
        error: &str,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "UPDATE outbox SET status = ?2, attempts = ?3, next_at = ?4, last_error = ?5 WHERE id = ?1",
            params![id, status, attempts, next_at, error],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Counts of notifications by status (for metrics and tests).
    pub fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT notifier, status, COUNT(*) FROM outbox GROUP BY notifier, status ORDER BY notifier, status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Every queued notification of a destination (all of them with `None`), oldest first.
    pub fn outbox(&self, notifier: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, notifier, payload, attempts, next_at, status, last_error FROM outbox
                 WHERE (?1 IS NULL OR notifier = ?1) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![notifier], |r| {
                let payload: String = r.get(2)?;
                Ok(OutboxItem {
                    id: r.get(0)?,
                    notifier: r.get(1)?,
                    payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                    attempts: r.get(3)?,
                    next_at: r.get(4)?,
                    status: r.get(5)?,
                    last_error: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Whether an identical payload is already waiting for this destination (so periodic
    /// work does not pile up while a destination is down).
    pub fn outbox_has_pending(
        &self,
        notifier: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let c = self.lock();
        c.query_row(
            "SELECT 1 FROM outbox WHERE notifier = ?1 AND status = 'pending' AND payload = ?2 LIMIT 1",
            params![notifier, payload.to_string()],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
        .map_err(|e| self.err(e))
    }

    /// Open incidents of a destination, optionally for one key, oldest first.
    pub fn incidents(
        &self,
        notifier: &str,
        key: Option<&str>,
    ) -> Result<Vec<Incident>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT notifier, key, alertname, notice, opened_at FROM incidents
                 WHERE notifier = ?1 AND (?2 IS NULL OR key = ?2) ORDER BY opened_at, key, alertname",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![notifier, key], |r| {
                let notice: String = r.get(3)?;
                Ok(Incident {
                    notifier: r.get(0)?,
                    key: r.get(1)?,
                    alertname: r.get(2)?,
                    notice: serde_json::from_str(&notice).unwrap_or(serde_json::Value::Null),
                    opened_at: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Records that a destination now knows an incident is open (keeping the first opening
    /// time when it was open already).
    pub fn incident_open(
        &self,
        notifier: &str,
        key: &str,
        alertname: &str,
        notice: &serde_json::Value,
        at: f64,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "INSERT INTO incidents (notifier, key, alertname, notice, opened_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (notifier, key, alertname) DO UPDATE SET notice = excluded.notice, updated_at = excluded.updated_at",
            params![notifier, key, alertname, notice.to_string(), at],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Forgets an incident the destination was told is over.
    pub fn incident_close(
        &self,
        notifier: &str,
        key: &str,
        alertname: &str,
    ) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "DELETE FROM incidents WHERE notifier = ?1 AND key = ?2 AND alertname = ?3",
            params![notifier, key, alertname],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    /// Deletes what finished before `before` (Unix seconds): deployments with their timeline
    /// and hook attempts, unless a hook of theirs is still owed, and notifications that were
    /// sent, skipped or dead-lettered. Returns (deployments, notifications) deleted.
    pub fn prune(&self, before: f64) -> Result<(usize, usize), StoreError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS pruned (id TEXT PRIMARY KEY); DELETE FROM pruned;",
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO pruned SELECT d.id FROM deployments d
             WHERE d.finished_at IS NOT NULL AND d.finished_at < ?1
               AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.deployment = d.id
                               AND a.status IN ('pending', 'running'))",
            params![before],
        )
        .map_err(|e| self.err(e))?;
        let deployments = tx
            .execute_batch(
                "DELETE FROM events WHERE deployment IN (SELECT id FROM pruned);
                 DELETE FROM actions WHERE deployment IN (SELECT id FROM pruned);",
            )
            .and_then(|()| {
                tx.execute(
                    "DELETE FROM deployments WHERE id IN (SELECT id FROM pruned)",
                    [],
                )
            })
            .map_err(|e| self.err(e))?;
        let notifications = tx
            .execute(
                "DELETE FROM outbox WHERE status IN ('sent', 'skipped', 'dead') AND created_at < ?1",
                params![before],
            )
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((deployments, notifications))
    }

    /// Timeline entries of one `kind` since `since` (Unix seconds), with their deployment's
    /// service: (service, data). For `rollguard report`'s migration counts.
    pub fn events_since(
        &self,
        kind: EventKind,
        since: f64,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT d.service, e.data FROM events e JOIN deployments d ON d.id = e.deployment WHERE e.kind = ?1 AND e.at >= ?2 ORDER BY e.seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![kind.as_str(), since], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (svc, data) = r.map_err(|e| self.err(e))?;
            let data = data
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(serde_json::Value::Null);
            out.push((svc, data));
        }
        Ok(out)
    }

    /// Finished deployments since `since` (Unix seconds): (service, state, created, finished).
    pub fn finished_since(&self, since: f64) -> Result<Vec<(String, State, f64, f64)>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT service, state, created_at, finished_at FROM deployments WHERE finished_at IS NOT NULL AND finished_at >= ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![since], |r| {
                let s: String = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    s,
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (svc, s, c0, f) = r.map_err(|e| self.err(e))?;
            if let Some(st) = State::parse(&s) {
                out.push((svc, st, c0, f));
            }
        }
        Ok(out)
    }
}

fn encode(rec: &DeploymentRecord) -> String {
    serde_json::to_string(rec).unwrap_or_default()
}

fn decode(
    id: &str,
    (record, rule_source, judge): (String, String, Option<String>),
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

fn insert_outbox(
    c: &Connection,
    notifier: &str,
    payload: &serde_json::Value,
) -> rusqlite::Result<()> {
    let t = now();
    c.execute(
        "INSERT INTO outbox (notifier, payload, attempts, next_at, status, created_at) VALUES (?1, ?2, 0, ?3, 'pending', ?3)",
        params![notifier, payload.to_string(), t],
    )
    .map(drop)
}

/// Reads a text column as one of its enum's spellings; other text is a conversion error
/// (the store only ever writes the spellings).
fn text<T>(r: &rusqlite::Row, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown value `{s}`").into(),
        )
    })
}

fn insert_event(
    c: &Connection,
    id: &str,
    kind: EventKind,
    message: &str,
    data: &serde_json::Value,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO events (deployment, at, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            now(),
            kind.as_str(),
            message,
            if data.is_null() {
                None
            } else {
                Some(data.to_string())
            }
        ],
    )
    .map(drop)
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
        elapsed_ms: 0,
        step_started_ms: 0,
        paused: false,
        created_at: t,
        updated_at: t,
        finished_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::{ArmSpec, Strategy};

    fn req(id: &str) -> DeploymentRequest {
        DeploymentRequest {
            id: id.into(),
            service: Some("api".into()),
            analysis: "a".into(),
            params: Default::default(),
            baseline: ArmSpec {
                targets: vec!["http://127.0.0.1:1/metrics".into()],
                ..Default::default()
            },
            canary: ArmSpec {
                targets: vec!["http://127.0.0.1:2/metrics".into()],
                ..Default::default()
            },
            strategy: Strategy::Analysis,
            timing: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn register_save_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut rec = new_record(
            req("d1"),
            "r.yaml".into(),
            "v1".into(),
            "analysis: a".into(),
        );
        assert!(matches!(
            s.register(&rec, "hi").unwrap(),
            Registered::Created
        ));
        assert!(matches!(
            s.register(&rec, "hi").unwrap(),
            Registered::Existing(_)
        ));
        rec.state = State::RolledBack;
        rec.judge = Some("{}".into());
        let act = Action::pending(
            "d1-rollback".into(),
            "d1",
            "rb",
            Purpose::Rollback,
            serde_json::json!({"x": 1}),
        );
        s.save(
            &rec,
            &[TimelineEvent {
                kind: EventKind::Decision,
                message: "rolled back".into(),
                data: serde_json::Value::Null,
            }],
            std::slice::from_ref(&act),
            &[],
        )
        .unwrap();
        // Saving the same action twice does not duplicate it.
        s.save(&rec, &[], &[act], &[]).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let got = s.get("d1").unwrap().unwrap();
        assert_eq!(got.state, State::RolledBack);
        assert_eq!(got.rule_source, "analysis: a");
        assert_eq!(s.open_actions().unwrap().len(), 1);
        assert_eq!(s.events("d1", 0, 10).unwrap().len(), 2);
        assert!(s.unfinished().unwrap().is_empty());
        s.action_started("d1-rollback", 1, Some(42)).unwrap();
        s.action_finished("d1-rollback", ActionStatus::Succeeded, "exit 0", "ok")
            .unwrap();
        assert!(s.open_actions().unwrap().is_empty());
    }

    #[test]
    fn prune_deletes_old_finished_history_but_never_an_owed_hook() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let action = |id: &str, dep: &str| {
            Action::pending(
                id.into(),
                dep,
                "rb",
                Purpose::Rollback,
                serde_json::json!({}),
            )
        };
        for (id, finished) in [
            ("old", Some(100.0)),
            ("owed", Some(100.0)),
            ("new", Some(now())),
            ("running", None),
        ] {
            let mut rec = new_record(req(id), "r.yaml".into(), "v1".into(), "analysis: a".into());
            s.register(&rec, "registered").unwrap();
            rec.finished_at = finished;
            if finished.is_some() {
                rec.state = State::RolledBack;
            }
            s.save(
                &rec,
                &[TimelineEvent {
                    kind: EventKind::Decision,
                    message: "x".into(),
                    data: serde_json::Value::Null,
                }],
                &[action(&format!("{id}-rb"), id)],
                &[],
            )
            .unwrap();
        }
        for id in ["old-rb", "new-rb"] {
            s.action_finished(id, ActionStatus::Succeeded, "exit 0", "")
                .unwrap();
        }
        s.enqueue("chat", &serde_json::json!({"n": 1})).unwrap();
        let sent = s.next_due("chat", now()).unwrap().unwrap();
        s.outbox_update(sent.id, "sent", 1, now(), "").unwrap();
        s.enqueue("chat", &serde_json::json!({"n": 2})).unwrap();

        assert_eq!(s.prune(now() - 86_400.0).unwrap(), (1, 0));
        assert!(s.get("old").unwrap().is_none());
        assert!(s.events("old", 0, 10).unwrap().is_empty());
        for kept in ["owed", "new", "running"] {
            assert!(s.get(kept).unwrap().is_some(), "{kept}");
        }
        // Everything sent before `before` goes; a message still to send never does.
        assert_eq!(s.prune(now() + 1.0).unwrap(), (1, 1));
        assert_eq!(s.outbox(None).unwrap().len(), 1);
        assert!(s.get("owed").unwrap().is_some(), "its hook is still owed");
    }

    #[test]
    fn outbox_order_and_due() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.enqueue("chat", &serde_json::json!({"n": 1})).unwrap();
        s.enqueue("chat", &serde_json::json!({"n": 2})).unwrap();
        let i = s.next_due("chat", now()).unwrap().unwrap();
        assert_eq!(i.payload["n"], 1);
        s.outbox_update(i.id, "pending", 1, now() + 100.0, "429")
            .unwrap();
        assert_eq!(
            s.next_due("chat", now()).unwrap().unwrap().status,
            "waiting"
        );
        s.outbox_update(i.id, "sent", 2, now(), "").unwrap();
        assert_eq!(s.next_due("chat", now()).unwrap().unwrap().payload["n"], 2);
    }
}

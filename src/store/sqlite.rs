//! The SQLite implementation of [`Store`](super::Store): one file in the state directory,
//! WAL mode, a `Mutex` around the connection (calls are short), migrations by `user_version`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::*;
use crate::deploy::{DeploymentRecord, State};

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
    // 4: each notification's delivery id (a UUIDv7, `webhook-id` and `X-Rollguard-Delivery`),
    // generated once when the row is queued; rows queued before get theirs at open
    "ALTER TABLE outbox ADD COLUMN delivery_id TEXT;",
    // 5: each deployment's chart history (`chart::History` as JSON, bounded), apart from the
    // record so that listing deployments does not read it
    "ALTER TABLE deployments ADD COLUMN chart TEXT;",
];

/// The SQLite-backed store. Calls are short and synchronous; a `Mutex` serialises them.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `state_dir/rollguard.db` and applies migrations.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
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
        fill_delivery_ids(&conn).map_err(err)?;
        Ok(SqliteStore {
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
                    facts: json(r, 11)?,
                    notify: json(r, 12)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

impl Store for SqliteStore {
    fn check_writable(&self) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute_batch("BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS probe(x); COMMIT;")
            .map_err(|e| self.err(e))
    }

    fn register(&self, rec: &DeploymentRecord, event: &str) -> Result<Registered, StoreError> {
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

    fn save(&self, rec: &DeploymentRecord, writes: Writes<'_>) -> Result<(), StoreError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "UPDATE deployments SET state = ?2, record = ?3, judge = ?4, updated_at = ?5, finished_at = ?6,
                 chart = COALESCE(?7, chart) WHERE id = ?1",
                params![rec.request.id, rec.state.as_str(), encode(rec), rec.judge, rec.updated_at, rec.finished_at, encode_chart(rec)],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::Corrupt {
                id: rec.request.id.clone(),
                message: "deployment vanished from the store".into(),
            });
        }
        for e in writes.events {
            insert_event(&tx, &rec.request.id, e.kind, &e.message, &e.data)
                .map_err(|e| self.err(e))?;
        }
        for a in writes.actions {
            let notify = serde_json::to_string(&a.notify).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT OR IGNORE INTO actions (id, deployment, hook, purpose, status, attempts, facts, created_at, notify)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
                params![a.id, a.deployment, a.hook, a.purpose.as_str(), a.status.as_str(), a.facts.to_string(), now(), notify],
            )
            .map_err(|e| self.err(e))?;
        }
        for row in writes.outbox {
            insert_outbox(&tx, &row.notifier, &row.payload).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn get(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let c = self.lock();
        let row: Option<(RecordRow, Option<String>)> = c
            .query_row(
                "SELECT record, rule_source, judge, chart FROM deployments WHERE id = ?1",
                params![id],
                |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((row, chart)) = row else {
            return Ok(None);
        };
        let mut rec = decode(id, row)?;
        // The chart is for people: a damaged one is dropped, never a reason to stop judging.
        rec.chart = json_column(chart.as_deref());
        Ok(Some(rec))
    }

    fn list(
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

    fn unfinished(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let mut v = Vec::new();
        for s in [State::Pending, State::Analysing, State::Held] {
            v.extend(self.list(Some(s), None, usize::MAX >> 1)?);
        }
        Ok(v)
    }

    fn events_since(
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
            let data = json_column(data.as_deref());
            out.push((svc, data));
        }
        Ok(out)
    }

    fn events(&self, id: &str, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT seq, deployment, at, kind, message, data FROM events WHERE deployment = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id, after, limit as i64], |r| {
                Ok(Event {
                    seq: r.get(0)?,
                    deployment: r.get(1)?,
                    at: r.get(2)?,
                    kind: text(r, 3, EventKind::parse)?,
                    message: r.get(4)?,
                    data: json(r, 5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn add_event(&self, id: &str, event: &TimelineEvent) -> Result<(), StoreError> {
        let c = self.lock();
        insert_event(&c, id, event.kind, &event.message, &event.data).map_err(|e| self.err(e))
    }

    fn open_actions(&self) -> Result<Vec<Action>, StoreError> {
        self.query_actions(
            "WHERE status IN ('pending', 'running') ORDER BY created_at",
            params![],
        )
    }

    fn actions_of(&self, deployment: &str) -> Result<Vec<Action>, StoreError> {
        self.query_actions(
            "WHERE deployment = ?1 ORDER BY created_at",
            params![deployment],
        )
    }

    fn action_started(&self, id: &str, attempt: u32, pid: Option<u32>) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "UPDATE actions SET status = 'running', attempts = ?2, pid = ?3, started_at = ?4 WHERE id = ?1",
            params![id, attempt, pid, now()],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    fn action_finished(&self, id: &str, end: ActionEnd<'_>) -> Result<(), StoreError> {
        let c = self.lock();
        let finished = (end.status != ActionStatus::Pending).then(now);
        c.execute(
            "UPDATE actions SET status = ?2, summary = ?3, output = ?4, finished_at = ?5, pid = NULL WHERE id = ?1",
            params![id, end.status.as_str(), end.summary, end.output, finished],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    fn enqueue(&self, notifier: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        let c = self.lock();
        insert_outbox(&c, notifier, payload).map_err(|e| self.err(e))
    }

    fn next_due(&self, notifier: &str, at: f64) -> Result<Option<OutboxItem>, StoreError> {
        let c = self.lock();
        c.query_row(
            "SELECT id, notifier, payload, attempts, next_at, status, last_error, delivery_id FROM outbox
             WHERE status = 'pending' AND notifier = ?1 ORDER BY id LIMIT 1",
            params![notifier],
            outbox_item,
        )
        .optional()
        .map_err(|e| self.err(e))
        .map(|o| o.map(|i| i.due_at(at)))
    }

    fn outbox_update(&self, id: i64, update: OutboxUpdate<'_>) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "UPDATE outbox SET status = ?2, attempts = ?3, next_at = ?4, last_error = ?5 WHERE id = ?1",
            params![id, update.status.as_str(), update.attempts, update.next_at, update.error],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare("SELECT notifier, status, COUNT(*) FROM outbox GROUP BY notifier, status ORDER BY notifier, status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn outbox(&self, notifier: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, notifier, payload, attempts, next_at, status, last_error, delivery_id FROM outbox
                 WHERE (?1 IS NULL OR notifier = ?1) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![notifier], outbox_item)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn count_unfinished(&self) -> Result<Vec<(State, usize)>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT state, COUNT(*) FROM deployments
                 WHERE state IN ('pending', 'analysing', 'held') GROUP BY state",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (state, n) = r.map_err(|e| self.err(e))?;
            if let Some(s) = State::parse(&state) {
                out.push((s, usize::try_from(n).unwrap_or(0)));
            }
        }
        Ok(out)
    }

    fn outbox_of(&self, deployment: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT id, notifier, payload, attempts, next_at, status, last_error, delivery_id FROM outbox
                 WHERE json_extract(payload, '$.notice.subject.deployment') = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![deployment], outbox_item)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn outbox_has_pending(
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

    fn incidents(&self, notifier: &str, key: Option<&str>) -> Result<Vec<Incident>, StoreError> {
        let c = self.lock();
        let mut stmt = c
            .prepare(
                "SELECT notifier, key, alertname, notice, opened_at FROM incidents
                 WHERE notifier = ?1 AND (?2 IS NULL OR key = ?2) ORDER BY opened_at, key, alertname",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![notifier, key], |r| {
                Ok(Incident {
                    notifier: r.get(0)?,
                    key: r.get(1)?,
                    alertname: r.get(2)?,
                    notice: json(r, 3)?,
                    opened_at: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn incident_open(&self, i: &Incident) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "INSERT INTO incidents (notifier, key, alertname, notice, opened_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (notifier, key, alertname) DO UPDATE SET notice = excluded.notice, updated_at = excluded.updated_at",
            params![i.notifier, i.key, i.alertname, i.notice.to_string(), i.opened_at],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    fn incident_close(&self, notifier: &str, key: &str, alertname: &str) -> Result<(), StoreError> {
        let c = self.lock();
        c.execute(
            "DELETE FROM incidents WHERE notifier = ?1 AND key = ?2 AND alertname = ?3",
            params![notifier, key, alertname],
        )
        .map(drop)
        .map_err(|e| self.err(e))
    }

    fn prune(&self, before: f64) -> Result<(usize, usize), StoreError> {
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

    fn finished_since(&self, since: f64) -> Result<Vec<(String, State, f64, f64)>, StoreError> {
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

/// An outbox row as selected by `id, notifier, payload, attempts, next_at, status,
/// last_error, delivery_id`.
fn outbox_item(r: &rusqlite::Row) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        notifier: r.get(1)?,
        payload: json(r, 2)?,
        attempts: r.get(3)?,
        next_at: r.get(4)?,
        status: r.get(5)?,
        last_error: r.get(6)?,
        delivery_id: r.get(7)?,
    })
}

/// Gives every queued row without a delivery id (queued before migration 4) one of its own.
fn fill_delivery_ids(c: &Connection) -> rusqlite::Result<()> {
    let ids: Vec<i64> = c
        .prepare("SELECT id FROM outbox WHERE delivery_id IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        c.execute(
            "UPDATE outbox SET delivery_id = ?2 WHERE id = ?1",
            params![id, crate::ids::new_id()],
        )?;
    }
    Ok(())
}

fn insert_outbox(
    c: &Connection,
    notifier: &str,
    payload: &serde_json::Value,
) -> rusqlite::Result<()> {
    let t = now();
    c.execute(
        "INSERT INTO outbox (notifier, payload, attempts, next_at, status, created_at, delivery_id) VALUES (?1, ?2, 0, ?3, 'pending', ?3, ?4)",
        params![notifier, payload.to_string(), t, crate::ids::new_id()],
    )
    .map(drop)
}

/// Reads JSON column `i` through [`json_column`], so every row reader forgives `NULL` or
/// damaged JSON the same way and none of them holds the raw text.
fn json<T: serde::de::DeserializeOwned + Default>(
    r: &rusqlite::Row,
    i: usize,
) -> rusqlite::Result<T> {
    let s: Option<String> = r.get(i)?;
    Ok(json_column(s.as_deref()))
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

    /// The chart survives a restart, and a record read by `list` (which carries no chart)
    /// does not wipe it when saved.
    #[test]
    fn chart_is_kept_apart_from_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = new_record(req("d1"), "r.yaml".into(), "v1".into(), "a".into());
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.register(&rec, "hi").unwrap();
            rec.chart.stride = 1;
            rec.chart.checks.push(crate::chart::Series {
                name: "errors".into(),
                kind: None,
                measure: String::new(),
                points: vec![crate::chart::Point {
                    t: 10_000,
                    n: 1,
                    baseline: 0.01,
                    canary: f64::NAN,
                    evidence: 2.0,
                    threshold: 40.0,
                    outcome: crate::judge::Outcome::Pending,
                }],
            });
            s.save(&rec, Writes::default()).unwrap();
            let listed = s.list(None, None, 10).unwrap();
            assert!(listed[0].chart.is_empty());
            s.save(&listed[0], Writes::default()).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        let back = s.get("d1").unwrap().unwrap();
        assert_eq!(back.chart.checks[0].points[0].evidence, 2.0);
        assert!(back.chart.checks[0].points[0].canary.is_nan());
    }

    fn decision(message: &str) -> TimelineEvent {
        TimelineEvent {
            kind: EventKind::Decision,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    fn succeeded(output: &str) -> ActionEnd<'_> {
        ActionEnd {
            status: ActionStatus::Succeeded,
            summary: "exit 0",
            output,
        }
    }

    fn delivered(attempts: u32) -> OutboxUpdate<'static> {
        OutboxUpdate {
            status: OutboxStatus::Sent,
            attempts,
            next_at: now(),
            error: "",
        }
    }

    #[test]
    fn register_save_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
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
        let decision = [decision("rolled back")];
        let writes = Writes {
            events: &decision,
            actions: std::slice::from_ref(&act),
            outbox: &[],
        };
        s.save(&rec, writes).unwrap();
        // Saving the same action twice does not duplicate it.
        s.save(
            &rec,
            Writes {
                events: &[],
                ..writes
            },
        )
        .unwrap();
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        let got = s.get("d1").unwrap().unwrap();
        assert_eq!(got.state, State::RolledBack);
        assert_eq!(got.rule_source, "analysis: a");
        assert_eq!(s.open_actions().unwrap().len(), 1);
        assert_eq!(s.events("d1", 0, 10).unwrap().len(), 2);
        assert!(s.unfinished().unwrap().is_empty());
        s.action_started("d1-rollback", 1, Some(42)).unwrap();
        s.action_finished("d1-rollback", succeeded("ok")).unwrap();
        assert!(s.open_actions().unwrap().is_empty());
    }

    #[test]
    fn prune_deletes_old_finished_history_but_never_an_owed_hook() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
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
            let writes = Writes {
                events: &[decision("x")],
                actions: &[action(&format!("{id}-rb"), id)],
                outbox: &[],
            };
            s.save(&rec, writes).unwrap();
        }
        for id in ["old-rb", "new-rb"] {
            s.action_finished(id, succeeded("")).unwrap();
        }
        s.enqueue("chat", &serde_json::json!({"n": 1})).unwrap();
        let sent = s.next_due("chat", now()).unwrap().unwrap();
        s.outbox_update(sent.id, delivered(1)).unwrap();
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

    /// A deployment's page shows the notifications about it, not the others'.
    #[test]
    fn outbox_of_one_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let about = |d: &str| serde_json::json!({"type": "notice", "notice": {"subject": {"deployment": d}}});
        s.enqueue("chat", &about("a")).unwrap();
        s.enqueue("chat", &about("b")).unwrap();
        s.enqueue("pager", &about("a")).unwrap();
        s.enqueue("chat", &serde_json::json!({"type": "refresh"}))
            .unwrap();
        let of_a = s.outbox_of("a").unwrap();
        assert_eq!(of_a.len(), 2);
        assert_eq!(of_a[1].notifier, "pager");
        assert!(s.outbox_of("a' OR 1=1 --").unwrap().is_empty());
    }

    #[test]
    fn outbox_order_and_due() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        s.enqueue("chat", &serde_json::json!({"n": 1})).unwrap();
        s.enqueue("chat", &serde_json::json!({"n": 2})).unwrap();
        let i = s.next_due("chat", now()).unwrap().unwrap();
        assert_eq!(i.payload["n"], 1);
        let retry = OutboxUpdate {
            status: OutboxStatus::Pending,
            attempts: 1,
            next_at: now() + 100.0,
            error: "429",
        };
        s.outbox_update(i.id, retry).unwrap();
        assert_eq!(
            s.next_due("chat", now()).unwrap().unwrap().status,
            "waiting"
        );
        s.outbox_update(i.id, delivered(2)).unwrap();
        assert_eq!(s.next_due("chat", now()).unwrap().unwrap().payload["n"], 2);
    }
}

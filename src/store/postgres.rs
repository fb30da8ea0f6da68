//! The PostgreSQL implementation of [`Store`](super::Store), for several daemons sharing one
//! database with one leader (docs/ha.md). The tables are SQLite's; on top, one row holds the
//! leader lease and its fencing token.
//!
//! **Fencing.** Every write runs in a transaction that first reads the lease row `FOR SHARE`
//! and goes on only while this daemon holds it, with the token it was given, unexpired by the
//! database's clock. Claiming a hook (`action_started`) and taking a notification to send
//! (`next_due`) are such transactions, so once another daemon has taken the lease a deposed
//! leader can neither start a hook nor send a message, whatever its own clock says. A standby
//! (no token) reads only.
//!
//! **Threads.** The `postgres` client blocks on its own runtime and may not be called from a
//! tokio worker, so each connection lives on a thread of its own, fed store calls through a
//! channel; the lease has its own connection, so renewals never queue behind store calls.
//! A broken connection is dropped and the next call reconnects.

use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::postgres::{Client, GenericClient, Row, Transaction};

use super::config::PgConfig;
use super::*;
use crate::deploy::{DeploymentRecord, State};

/// Each migration runs once, in order, under an advisory lock, so daemons started together
/// never both apply one.
const MIGRATIONS: &[&str] = &[
    // 1: SQLite's tables in their current form, plus the leader lease
    "CREATE TABLE deployments (
        id TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        analysis TEXT NOT NULL,
        state TEXT NOT NULL,
        record TEXT NOT NULL,
        rule_source TEXT NOT NULL,
        judge TEXT,
        chart TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION
    );
    CREATE INDEX deployments_state ON deployments(state);
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        deployment TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
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
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        summary TEXT NOT NULL DEFAULT '',
        output TEXT NOT NULL DEFAULT '',
        facts TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        notify TEXT,
        -- the daemon (lease holder) that claimed the latest attempt: its pid means nothing
        -- to another daemon
        claimed_by TEXT
    );
    CREATE INDEX actions_status ON actions(status);
    CREATE INDEX actions_deployment ON actions(deployment);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        notifier TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        delivery_id TEXT NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(status, notifier, next_at);
    CREATE TABLE incidents (
        notifier TEXT NOT NULL,
        key TEXT NOT NULL,
        alertname TEXT NOT NULL,
        notice TEXT NOT NULL,
        opened_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (notifier, key, alertname)
    );
    CREATE TABLE leader_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        node TEXT NOT NULL,
        url TEXT NOT NULL,
        token BIGINT NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL,
        renewed_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO leader_lease VALUES (1, '', '', '', 0, now(), now(), '-infinity');",
];

/// Any number that names the migration lock (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6775_6172; // "rollguar"

/// How long one statement (and one wait for a row lock) may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for its answer: the statement timeout plus a reconnection.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

type Job = Box<dyn FnOnce(Result<&mut Client, StoreError>) + Send>;

/// Who holds the lease, as the database says.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LeaseView {
    /// The holding daemon's node name (empty when nobody ever held it).
    pub node: String,
    /// Its public URL (`public_url`, else its listen address), where changes go.
    pub url: String,
    pub token: i64,
    /// Seconds since its last renewal.
    pub renewed_ago: f64,
    /// Seconds until it expires (negative: expired, free to take).
    pub expires_in: f64,
}

/// The PostgreSQL-backed store of one daemon.
pub struct PgStore {
    jobs: Sender<Job>,
    lease_jobs: Sender<Job>,
    /// This process' name in the lease: node name plus a random suffix, so a restarted
    /// daemon on the same node is a new holder and never inherits a lease by its name.
    holder: String,
    node: String,
    connections: usize,
    /// The fencing token of the lease this daemon holds, if it leads.
    token: Mutex<Option<i64>>,
}

impl PgStore {
    /// Connects, applies migrations, and starts `connections` connection threads plus the
    /// lease's own. Fails when the database cannot be reached or the credentials are wrong.
    pub fn open(config: &PgConfig) -> Result<PgStore, StoreError> {
        let pg = connection_config(config)?;
        let tls = tls(config)?;
        let connect = move || -> Result<Client, StoreError> {
            match &tls {
                Some(t) => pg.connect(t.clone()),
                None => pg.connect(::postgres::NoTls),
            }
            .map_err(StoreError::from)
        };
        let connect: Arc<dyn Fn() -> Result<Client, StoreError> + Send + Sync> = Arc::new(connect);
        // The `postgres` client may not block on a tokio worker (the daemon opens the
        // store from one), so the first connection and the migrations run on a thread too.
        let c = connect.clone();
        let first = std::thread::scope(|s| {
            s.spawn(move || {
                let mut first = c()?;
                migrate(&mut first)?;
                Ok::<_, StoreError>(first)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the migration thread panicked".into(),
                ))
            })
        })?;
        let mut first = Some(first);
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..config.connections {
            let (rx, connect) = (rx.clone(), connect.clone());
            let conn = if i == 0 { first.take() } else { None };
            spawn_worker(format!("rollguard-pg-{i}"), rx, connect, conn)?;
        }
        let (lease_jobs, lease_rx) = std::sync::mpsc::channel::<Job>();
        spawn_worker(
            "rollguard-pg-lease".into(),
            Arc::new(Mutex::new(lease_rx)),
            connect,
            None,
        )?;
        Ok(PgStore {
            jobs,
            lease_jobs,
            holder: format!("{}/{}", config.node, crate::ids::new_id()),
            node: config.node.clone(),
            connections: config.connections,
            token: Mutex::new(None),
        })
    }

    /// This daemon's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The fencing token while this daemon leads.
    pub fn token(&self) -> Option<i64> {
        *self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the lease locally: from now on every write fails before it reaches the
    /// database (stepping down does not wait for the database to say so).
    pub fn step_down(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Takes the lease if it is free (expired or never held), or renews it if this daemon
    /// holds it. Returns the token held afterwards, `None` when another daemon leads.
    pub fn acquire_or_renew(&self, lease: Duration, url: &str) -> Result<Option<i64>, StoreError> {
        let (holder, node, url) = (self.holder.clone(), self.node.clone(), url.to_string());
        let held = self.token();
        let secs = lease.as_secs_f64();
        let token = run(&self.lease_jobs, move |c| {
            let row = match held {
                Some(t) => c.query_opt(
                    "UPDATE leader_lease SET renewed_at = now(), expires_at = now() + make_interval(secs => $3)
                     WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > now() RETURNING token",
                    &[&holder, &t, &secs],
                )?,
                None => c.query_opt(
                    "UPDATE leader_lease SET holder = $1, node = $2, url = $3, token = token + 1,
                       acquired_at = now(), renewed_at = now(), expires_at = now() + make_interval(secs => $4)
                     WHERE id = 1 AND expires_at <= now() RETURNING token",
                    &[&holder, &node, &url, &secs],
                )?,
            };
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?;
        let mut held_now = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() && held_now.is_none() {
            // Stepped down while the renewal was under way: stay down.
            return Ok(None);
        }
        *held_now = token;
        Ok(token)
    }

    /// Gives the lease up (a clean stop), so a standby takes over at once instead of after
    /// the lease. Only this daemon's own, current lease is touched.
    pub fn release(&self) -> Result<(), StoreError> {
        let Some(t) = self.token() else {
            return Ok(());
        };
        self.step_down();
        let holder = self.holder.clone();
        run(&self.lease_jobs, move |c| {
            c.execute(
                "UPDATE leader_lease SET expires_at = now() WHERE id = 1 AND holder = $1 AND token = $2",
                &[&holder, &t],
            )?;
            Ok(())
        })
    }

    /// Who leads now, as the database says.
    pub fn lease(&self) -> Result<LeaseView, StoreError> {
        run(&self.lease_jobs, |c| {
            let r = c.query_one(
                "SELECT node, url, token, EXTRACT(EPOCH FROM now() - renewed_at)::float8,
                        CASE WHEN expires_at = '-infinity' THEN -1e9
                             ELSE EXTRACT(EPOCH FROM expires_at - now())::float8 END
                 FROM leader_lease WHERE id = 1",
                &[],
            )?;
            Ok(LeaseView {
                node: r.get(0),
                url: r.get(1),
                token: r.get(2),
                renewed_ago: r.get(3),
                expires_in: r.get(4),
            })
        })
    }

    /// A read outside any transaction. Tried again while connections turn out to be closed
    /// (the database restarted since their last use): a read is safe to repeat,
    /// unlike a write whose commit may have landed.
    fn read<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Client) -> Result<R, StoreError> + Send + Sync + 'static,
    ) -> Result<R, StoreError> {
        let f = Arc::new(f);
        // Each connection may be stale once: try at most one more time than there are.
        let mut tries = self.connections + 1;
        loop {
            let g = f.clone();
            match run(&self.jobs, move |c| g(c)) {
                Err(StoreError::Postgres(e)) if connection_lost(&e) && tries > 1 => tries -= 1,
                r => return r,
            }
        }
    }

    /// A write: one transaction that goes on only while this daemon holds the lease it was
    /// given (checked by the database's clock, the row locked against a takeover until the
    /// commit).
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let token = self.token().ok_or(StoreError::Standby)?;
        let holder = self.holder.clone();
        run(&self.jobs, move |c| {
            let mut tx = c.transaction()?;
            fence(&mut tx, &holder, token)?;
            let r = f(&mut tx)?;
            tx.commit()?;
            Ok(r)
        })
    }

    fn query_actions(
        &self,
        tail: &'static str,
        deployment: Option<String>,
    ) -> Result<Vec<Action>, StoreError> {
        let holder = self.holder.clone();
        self.read(move |c| {
            // Another daemon's process id means nothing here: it is read as no process.
            let sql = format!(
                "SELECT id, deployment, hook, purpose, status, attempts,
                        CASE WHEN claimed_by = $1 THEN pid END, started_at, finished_at, summary,
                        output, facts, notify
                 FROM actions WHERE ($2::text IS NULL OR deployment = $2) {tail}"
            );
            c.query(&sql, &[&holder, &deployment])?
                .iter()
                .map(action)
                .collect()
        })
    }
}

/// The `postgres` connection settings: the URL, the password from its secret, timeouts that
/// bound every call (a database that stops answering must fail calls, not hang them).
fn connection_config(config: &PgConfig) -> Result<::postgres::Config, StoreError> {
    let mut pg: ::postgres::Config = config
        .url
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("store.postgres.url: {e}")))?;
    if let Some(p) = &config.password {
        pg.password(
            p.resolve()
                .map_err(|e| StoreError::Unavailable(format!("store.postgres.password: {e}")))?,
        );
    }
    let ms = STATEMENT_TIMEOUT.as_millis();
    let mut options = pg.get_options().unwrap_or_default().to_string();
    options.push_str(&format!(
        " -c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms * 2
    ));
    pg.options(options.trim())
        .application_name(&format!("rollguard {}", config.node))
        .connect_timeout(Duration::from_secs(5))
        .tcp_user_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10));
    if config.tls.is_some() {
        pg.ssl_mode(::postgres::config::SslMode::Require);
    }
    Ok(pg)
}

/// The rustls connector when `tls:` is set: the server is verified against `ca_file`, by
/// name. `rollguard check` builds it too, so unreadable files fail the check.
pub(crate) fn tls(
    config: &PgConfig,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(t) = &config.tls else {
        return Ok(None);
    };
    crate::net::install_crypto_provider();
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("store.postgres.tls: {what}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &t.ca_file {
        for c in
            CertificateDer::pem_file_iter(ca).map_err(|e| bad(&ca.display().to_string(), &e))?
        {
            let c = c.map_err(|e| bad(&ca.display().to_string(), &e))?;
            roots
                .add(c)
                .map_err(|e| bad(&ca.display().to_string(), &e))?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let client = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(&cert.display().to_string(), &e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(&key.display().to_string(), &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("client certificate", &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(client)))
}

fn spawn_worker(
    name: String,
    rx: Arc<Mutex<Receiver<Job>>>,
    connect: Arc<dyn Fn() -> Result<Client, StoreError> + Send + Sync>,
    mut conn: Option<Client>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            loop {
                let job = {
                    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                    match rx.recv() {
                        Ok(j) => j,
                        Err(_) => return, // the store was dropped
                    }
                };
                if conn.as_ref().is_none_or(Client::is_closed) {
                    conn = None;
                    match connect() {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            job(Err(e));
                            continue;
                        }
                    }
                }
                if let Some(c) = conn.as_mut() {
                    job(Ok(c));
                }
            }
        })
        .map(drop)
        .map_err(|e| StoreError::Unavailable(format!("cannot start a store thread: {e}")))
}

/// Runs `f` on one of the connection threads and waits for its answer.
fn run<R: Send + 'static>(
    jobs: &Sender<Job>,
    f: impl FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    let (tx, rx): (SyncSender<Result<R, StoreError>>, _) = sync_channel(1);
    jobs.send(Box::new(move |c| {
        let _ = tx.send(c.and_then(f));
    }))
    .map_err(|_| StoreError::Unavailable("the store's connection threads stopped".into()))?;
    rx.recv_timeout(CALL_TIMEOUT).map_err(|_| {
        StoreError::Unavailable(format!(
            "no answer from PostgreSQL within {}s",
            CALL_TIMEOUT.as_secs()
        ))
    })?
}

fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS rollguard_schema (version INTEGER NOT NULL)")?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM rollguard_schema",
            &[],
        )?
        .get(0);
    if version > MIGRATIONS.len() as i64 {
        return Err(StoreError::Unavailable(format!(
            "the database's schema is version {version}, newer than this rollguard knows ({}): upgrade this daemon",
            MIGRATIONS.len()
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(m)?;
        tx.execute(
            "INSERT INTO rollguard_schema (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Whether an error means the connection went away (closed, I/O, the server shutting
/// down or restarting: SQLSTATE classes 08 and 57), rather than a problem with the query.
fn connection_lost(e: &::postgres::Error) -> bool {
    e.is_closed()
        || e.code()
            .is_none_or(|c| matches!(c.code().get(..2), Some("08" | "57")))
}

/// Fails the transaction unless this daemon holds the lease with `token`, unexpired.
fn fence(tx: &mut Transaction<'_>, holder: &str, token: i64) -> Result<(), StoreError> {
    let held = tx.query_opt(
        "SELECT 1 FROM leader_lease WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > now() FOR SHARE",
        &[&holder, &token],
    )?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced),
    }
}

fn action(r: &Row) -> Result<Action, StoreError> {
    let id: String = r.get(0);
    let parse_err = |what: &str, v: &str| StoreError::Corrupt {
        id: id.clone(),
        message: format!("unknown {what} `{v}`"),
    };
    let purpose: String = r.get(3);
    let status: String = r.get(4);
    let facts: String = r.get(11);
    let notify: Option<String> = r.get(12);
    Ok(Action {
        purpose: Purpose::parse(&purpose).ok_or_else(|| parse_err("purpose", &purpose))?,
        status: ActionStatus::parse(&status).ok_or_else(|| parse_err("status", &status))?,
        deployment: r.get(1),
        hook: r.get(2),
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        pid: r
            .get::<_, Option<i32>>(6)
            .and_then(|p| u32::try_from(p).ok()),
        started_at: r.get(7),
        finished_at: r.get(8),
        summary: r.get(9),
        output: r.get(10),
        facts: json_column(Some(&facts)),
        notify: json_column(notify.as_deref()),
        id,
    })
}

const OUTBOX_COLUMNS: &str =
    "id, notifier, payload, attempts, next_at, status, last_error, delivery_id";

fn outbox_item(r: &Row) -> OutboxItem {
    let payload: String = r.get(2);
    OutboxItem {
        id: r.get(0),
        notifier: r.get(1),
        payload: json_column(Some(&payload)),
        attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        next_at: r.get(4),
        status: r.get(5),
        last_error: r.get(6),
        delivery_id: r.get(7),
    }
}

fn insert_outbox(
    c: &mut impl GenericClient,
    notifier: &str,
    payload: &serde_json::Value,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO outbox (notifier, payload, attempts, next_at, status, created_at, delivery_id)
         VALUES ($1, $2, 0, $3, 'pending', $3, $4)",
        &[
            &notifier,
            &payload.to_string(),
            &now(),
            &crate::ids::new_id(),
        ],
    )?;
    Ok(())
}

fn insert_event(
    c: &mut impl GenericClient,
    id: &str,
    kind: EventKind,
    message: &str,
    data: &serde_json::Value,
) -> Result<(), StoreError> {
    let data = (!data.is_null()).then(|| data.to_string());
    c.execute(
        "INSERT INTO events (deployment, at, kind, message, data) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &now(), &kind.as_str(), &message, &data],
    )?;
    Ok(())
}

fn records(rows: Vec<Row>) -> Result<Vec<DeploymentRecord>, StoreError> {
    rows.iter()
        .map(|r| decode(&r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

impl Store for PgStore {
    /// The database answers (a standby cannot write by design; it is ready as a standby).
    fn check_writable(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.simple_query("SELECT 1")?;
            Ok(())
        })
    }

    fn register(&self, rec: &DeploymentRecord, event: &str) -> Result<Registered, StoreError> {
        let (rec, event) = (rec.clone(), event.to_string());
        self.write(move |tx| {
            let id = &rec.request.id;
            if let Some(r) = tx.query_opt(
                "SELECT id, record, rule_source, judge FROM deployments WHERE id = $1",
                &[id],
            )? {
                let existing = decode(id, (r.get(1), r.get(2), r.get(3)))?;
                return Ok(Registered::Existing(Box::new(existing)));
            }
            tx.execute(
                "INSERT INTO deployments (id, service, analysis, state, record, rule_source, judge, created_at, updated_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    id,
                    &rec.request.service.clone().unwrap_or_default(),
                    &rec.request.analysis,
                    &rec.state.as_str(),
                    &encode(&rec),
                    &rec.rule_source,
                    &rec.judge,
                    &rec.created_at,
                    &rec.updated_at,
                    &rec.finished_at,
                ],
            )?;
            insert_event(tx, id, EventKind::Registered, &event, &serde_json::Value::Null)?;
            Ok(Registered::Created)
        })
    }

    fn save(&self, rec: &DeploymentRecord, writes: Writes<'_>) -> Result<(), StoreError> {
        let (rec, events, actions, outbox) = (
            rec.clone(),
            writes.events.to_vec(),
            writes.actions.to_vec(),
            writes.outbox.to_vec(),
        );
        self.write(move |tx| {
            let id = &rec.request.id;
            let n = tx.execute(
                "UPDATE deployments SET state = $2, record = $3, judge = $4, updated_at = $5, finished_at = $6,
                 chart = COALESCE($7, chart) WHERE id = $1",
                &[id, &rec.state.as_str(), &encode(&rec), &rec.judge, &rec.updated_at, &rec.finished_at, &encode_chart(&rec)],
            )?;
            if n == 0 {
                return Err(StoreError::Corrupt {
                    id: id.clone(),
                    message: "deployment vanished from the store".into(),
                });
            }
            for e in &events {
                insert_event(tx, id, e.kind, &e.message, &e.data)?;
            }
            for a in &actions {
                let notify = serde_json::to_string(&a.notify).unwrap_or_else(|_| "[]".into());
                tx.execute(
                    "INSERT INTO actions (id, deployment, hook, purpose, status, attempts, facts, created_at, notify)
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                    &[&a.id, &a.deployment, &a.hook, &a.purpose.as_str(), &a.status.as_str(), &a.facts.to_string(), &now(), &notify],
                )?;
            }
            for row in &outbox {
                insert_outbox(tx, &row.notifier, &row.payload)?;
            }
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let Some(r) = c.query_opt(
                "SELECT id, record, rule_source, judge, chart FROM deployments WHERE id = $1",
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let mut rec = decode(&id, (r.get(1), r.get(2), r.get(3)))?;
            // The chart is for people: a damaged one is dropped, never a reason to stop judging.
            rec.chart = json_column(r.get::<_, Option<String>>(4).as_deref());
            Ok(Some(rec))
        })
    }

    fn list(
        &self,
        state: Option<State>,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        let state = state.map(|s| s.as_str().to_string());
        let service = service.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            records(c.query(
                "SELECT id, record, rule_source, judge FROM deployments
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR service = $2)
                 ORDER BY created_at DESC LIMIT $3",
                &[&state, &service, &limit],
            )?)
        })
    }

    fn unfinished(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.read(|c| {
            records(c.query(
                "SELECT id, record, rule_source, judge FROM deployments
                 WHERE state IN ('pending', 'analysing', 'held') ORDER BY created_at DESC",
                &[],
            )?)
        })
    }

    fn events(&self, id: &str, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let id = id.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            c.query(
                "SELECT seq, deployment, at, kind, message, data FROM events
                 WHERE deployment = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&id, &after, &limit],
            )?
            .iter()
            .map(|r| {
                let kind: String = r.get(3);
                Ok(Event {
                    seq: r.get(0),
                    deployment: r.get(1),
                    at: r.get(2),
                    kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                        id: id.clone(),
                        message: format!("unknown event kind `{kind}`"),
                    })?,
                    message: r.get(4),
                    data: json_column(r.get::<_, Option<String>>(5).as_deref()),
                })
            })
            .collect()
        })
    }

    fn add_event(&self, id: &str, event: &TimelineEvent) -> Result<(), StoreError> {
        let (id, e) = (id.to_string(), event.clone());
        self.write(move |tx| insert_event(tx, &id, e.kind, &e.message, &e.data))
    }

    fn open_actions(&self) -> Result<Vec<Action>, StoreError> {
        self.query_actions(
            "AND status IN ('pending', 'running') ORDER BY created_at, id",
            None,
        )
    }

    fn actions_of(&self, deployment: &str) -> Result<Vec<Action>, StoreError> {
        self.query_actions("ORDER BY created_at, id", Some(deployment.to_string()))
    }

    /// The claim: fenced, so a deposed leader cannot start a hook.
    fn action_started(&self, id: &str, attempt: u32, pid: Option<u32>) -> Result<(), StoreError> {
        let (id, holder) = (id.to_string(), self.holder.clone());
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let pid = pid.and_then(|p| i32::try_from(p).ok());
        self.write(move |tx| {
            tx.execute(
                "UPDATE actions SET status = 'running', attempts = $2, pid = $3, started_at = $4, claimed_by = $5 WHERE id = $1",
                &[&id, &attempt, &pid, &now(), &holder],
            )?;
            Ok(())
        })
    }

    fn action_finished(&self, id: &str, end: ActionEnd<'_>) -> Result<(), StoreError> {
        let (id, status) = (id.to_string(), end.status);
        let (summary, output) = (end.summary.to_string(), end.output.to_string());
        let finished = (status != ActionStatus::Pending).then(now);
        self.write(move |tx| {
            tx.execute(
                "UPDATE actions SET status = $2, summary = $3, output = $4, finished_at = $5, pid = NULL WHERE id = $1",
                &[&id, &status.as_str(), &summary, &output, &finished],
            )?;
            Ok(())
        })
    }

    fn enqueue(&self, notifier: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        let (notifier, payload) = (notifier.to_string(), payload.clone());
        self.write(move |tx| insert_outbox(tx, &notifier, &payload))
    }

    /// Taking a message to send is fenced like a write: a deposed leader sends nothing.
    fn next_due(&self, notifier: &str, at: f64) -> Result<Option<OutboxItem>, StoreError> {
        let notifier = notifier.to_string();
        self.write(move |tx| {
            let row = tx.query_opt(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND notifier = $1 ORDER BY id LIMIT 1"
                ),
                &[&notifier],
            )?;
            Ok(row.map(|r| outbox_item(&r).due_at(at)))
        })
    }

    fn outbox_update(&self, id: i64, update: OutboxUpdate<'_>) -> Result<(), StoreError> {
        let (status, next_at, error) = (
            update.status.as_str(),
            update.next_at,
            update.error.to_string(),
        );
        let attempts = i32::try_from(update.attempts).unwrap_or(i32::MAX);
        self.write(move |tx| {
            tx.execute(
                "UPDATE outbox SET status = $2, attempts = $3, next_at = $4, last_error = $5 WHERE id = $1",
                &[&id, &status, &attempts, &next_at, &error],
            )?;
            Ok(())
        })
    }

    fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(|c| {
            Ok(c.query(
                "SELECT notifier, status, COUNT(*) FROM outbox GROUP BY notifier, status ORDER BY notifier, status",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
        })
    }

    fn outbox(&self, notifier: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let notifier = notifier.map(str::to_string);
        self.read(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE ($1::text IS NULL OR notifier = $1) ORDER BY id"
                ),
                &[&notifier],
            )?
            .iter()
            .map(outbox_item)
            .collect())
        })
    }

    fn count_unfinished(&self) -> Result<Vec<(State, usize)>, StoreError> {
        self.read(|c| {
            Ok(c.query(
                "SELECT state, COUNT(*) FROM deployments WHERE state IN ('pending', 'analysing', 'held') GROUP BY state",
                &[],
            )?
            .iter()
            .filter_map(|r| {
                let s: String = r.get(0);
                Some((State::parse(&s)?, usize::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            })
            .collect())
        })
    }

    fn outbox_of(&self, deployment: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let deployment = deployment.to_string();
        self.read(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox
                     WHERE payload::jsonb #>> '{{notice,subject,deployment}}' = $1 ORDER BY id"
                ),
                &[&deployment],
            )?
            .iter()
            .map(outbox_item)
            .collect())
        })
    }

    fn outbox_has_pending(
        &self,
        notifier: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let (notifier, payload) = (notifier.to_string(), payload.to_string());
        self.read(move |c| {
            Ok(c.query_opt(
                "SELECT 1 FROM outbox WHERE notifier = $1 AND status = 'pending' AND payload = $2 LIMIT 1",
                &[&notifier, &payload],
            )?
            .is_some())
        })
    }

    fn incidents(&self, notifier: &str, key: Option<&str>) -> Result<Vec<Incident>, StoreError> {
        let (notifier, key) = (notifier.to_string(), key.map(str::to_string));
        self.read(move |c| {
            Ok(c.query(
                "SELECT notifier, key, alertname, notice, opened_at FROM incidents
                 WHERE notifier = $1 AND ($2::text IS NULL OR key = $2) ORDER BY opened_at, key, alertname",
                &[&notifier, &key],
            )?
            .iter()
            .map(|r| {
                let notice: String = r.get(3);
                Incident {
                    notifier: r.get(0),
                    key: r.get(1),
                    alertname: r.get(2),
                    notice: json_column(Some(&notice)),
                    opened_at: r.get(4),
                }
            })
            .collect())
        })
    }

    fn incident_open(&self, i: &Incident) -> Result<(), StoreError> {
        let (i, notice) = (i.clone(), i.notice.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO incidents (notifier, key, alertname, notice, opened_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (notifier, key, alertname) DO UPDATE SET notice = excluded.notice, updated_at = excluded.updated_at",
                &[&i.notifier, &i.key, &i.alertname, &notice, &i.opened_at],
            )?;
            Ok(())
        })
    }

    fn incident_close(&self, notifier: &str, key: &str, alertname: &str) -> Result<(), StoreError> {
        let (n, k, a) = (notifier.to_string(), key.to_string(), alertname.to_string());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM incidents WHERE notifier = $1 AND key = $2 AND alertname = $3",
                &[&n, &k, &a],
            )?;
            Ok(())
        })
    }

    fn prune(&self, before: f64) -> Result<(usize, usize), StoreError> {
        self.write(move |tx| {
            tx.batch_execute("CREATE TEMP TABLE IF NOT EXISTS pruned (id TEXT PRIMARY KEY) ON COMMIT DELETE ROWS")?;
            tx.execute(
                "INSERT INTO pruned SELECT d.id FROM deployments d
                 WHERE d.finished_at IS NOT NULL AND d.finished_at < $1
                   AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.deployment = d.id
                                   AND a.status IN ('pending', 'running'))",
                &[&before],
            )?;
            tx.batch_execute(
                "DELETE FROM events WHERE deployment IN (SELECT id FROM pruned);
                 DELETE FROM actions WHERE deployment IN (SELECT id FROM pruned);",
            )?;
            let deployments = tx.execute("DELETE FROM deployments WHERE id IN (SELECT id FROM pruned)", &[])?;
            let notifications = tx.execute(
                "DELETE FROM outbox WHERE status IN ('sent', 'skipped', 'dead') AND created_at < $1",
                &[&before],
            )?;
            Ok((
                usize::try_from(deployments).unwrap_or(usize::MAX),
                usize::try_from(notifications).unwrap_or(usize::MAX),
            ))
        })
    }

    fn events_since(
        &self,
        kind: EventKind,
        since: f64,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.read(move |c| {
            Ok(c.query(
                "SELECT d.service, e.data FROM events e JOIN deployments d ON d.id = e.deployment
                 WHERE e.kind = $1 AND e.at >= $2 ORDER BY e.seq",
                &[&kind.as_str(), &since],
            )?
            .iter()
            .map(|r| {
                let data = json_column(r.get::<_, Option<String>>(1).as_deref());
                (r.get(0), data)
            })
            .collect())
        })
    }

    fn finished_since(&self, since: f64) -> Result<Vec<(String, State, f64, f64)>, StoreError> {
        self.read(move |c| {
            Ok(c.query(
                "SELECT service, state, created_at, finished_at FROM deployments
                 WHERE finished_at IS NOT NULL AND finished_at >= $1",
                &[&since],
            )?
            .iter()
            .filter_map(|r| {
                let s: String = r.get(1);
                Some((r.get(0), State::parse(&s)?, r.get(2), r.get(3)))
            })
            .collect())
        })
    }
}

//! The `store:` section of the daemon config. Absent, the daemon keeps its state in SQLite in
//! `state_dir` (one host). `store: {postgres: …}` puts it in PostgreSQL, where several
//! daemons share it and one of them leads by a lease (docs/ha.md). Raw YAML (unknown fields
//! denied) → [`PgConfig`], with located errors like the rest of the config.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::net::{RawTls, TlsConfig, tls};
use crate::secret::Secret;
use crate::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    postgres: Option<Spanned<RawPostgres>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    /// `postgres://user@host:port/dbname?…` or libpq `key=value` pairs, without a password.
    url: Spanned<String>,
    password: Option<Secret>,
    tls: Option<RawTls>,
    node: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    connections: Option<Spanned<usize>>,
}

/// The shortest lease accepted: renewals come every third of it, and each must fit in one
/// round trip plus a statement timeout.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
/// Default lease: a standby takes over at most this long (plus one renewal period) after the
/// leader stopped renewing.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// A validated PostgreSQL store.
#[derive(Clone, Debug, PartialEq)]
pub struct PgConfig {
    /// The connection string as written (no password; that is `password`).
    pub url: String,
    pub password: Option<Secret>,
    /// Server verification (and client certificate): when set, the connection requires TLS.
    pub tls: Option<TlsConfig>,
    /// This daemon's name in the lease and in `/readyz` (default: the host name).
    pub node: String,
    pub lease: Duration,
    /// Connections this daemon opens (each serves one store call at a time).
    pub connections: usize,
}

/// Validates the section; `resolve` makes relative paths relative to the config file.
pub fn validate(
    raw: &RawStore,
    resolve: &dyn Fn(&str) -> PathBuf,
    err: &mut dyn FnMut((u64, u64), String),
) -> Option<PgConfig> {
    let p = raw.postgres.as_ref()?;
    let at = (p.referenced.line(), p.referenced.column());
    let r = &p.value;
    let loc = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());
    match r.url.value.parse::<::postgres::Config>() {
        Ok(c) if c.get_password().is_some() => err(
            loc(&r.url),
            "`store.postgres.url` must not hold the password: give it as `password:` (a secret: inline, `file:` or `env:`)".into(),
        ),
        Ok(c) if c.get_dbname().is_none() => err(
            loc(&r.url),
            "`store.postgres.url` names no database (`postgres://user@host/rollguard`)".into(),
        ),
        Ok(_) => {}
        Err(e) => err(loc(&r.url), format!("`store.postgres.url`: {e}")),
    }
    let lease = match &r.lease {
        None => DEFAULT_LEASE,
        Some(l) => match units::parse_duration(&l.value) {
            Ok(d) if d >= MIN_LEASE => d,
            Ok(_) => {
                err(
                    loc(l),
                    format!(
                        "`store.postgres.lease` must be at least {}",
                        units::format_duration(MIN_LEASE)
                    ),
                );
                DEFAULT_LEASE
            }
            Err(e) => {
                err(loc(l), format!("`store.postgres.lease`: {e}"));
                DEFAULT_LEASE
            }
        },
    };
    let connections = match &r.connections {
        None => 4,
        Some(n) if (1..=64).contains(&n.value) => n.value,
        Some(n) => {
            err(
                (n.referenced.line(), n.referenced.column()),
                "`store.postgres.connections` must be between 1 and 64".into(),
            );
            4
        }
    };
    let node = match &r.node {
        Some(n) if n.value.trim().is_empty() || n.value.len() > 200 => {
            err(
                loc(n),
                "`store.postgres.node` must be 1 to 200 characters".into(),
            );
            String::new()
        }
        Some(n) => n.value.trim().to_string(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "rollguard".into()),
    };
    let tls = r.tls.clone().map(|t| tls(Some(t), resolve));
    if tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
        err(
            at,
            "`store.postgres.tls`: `insecure_skip_verify` is not supported; rollguard always verifies the database".into(),
        );
    }
    if let Some(t) = &tls
        && t.ca_file.is_none()
    {
        err(
            at,
            "`store.postgres.tls` needs `ca_file`: the CA that signed the server's certificate (rollguard always verifies it, like libpq's `sslmode=verify-full`)".into(),
        );
    }
    if let Some(t) = &tls
        && t.cert_file.is_some() != t.key_file.is_some()
    {
        err(
            at,
            "`store.postgres.tls`: a client certificate needs both `cert_file` and `key_file`"
                .into(),
        );
    }
    Some(PgConfig {
        url: r.url.value.clone(),
        password: r.password.clone(),
        tls,
        node,
        lease,
        connections,
    })
}

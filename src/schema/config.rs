//! The `schemas:` section of the daemon config: per service, how to read its live schema
//! version and what the gates do. Raw YAML (unknown fields denied) → [`SchemaConfig`],
//! validated in one place with located errors, like the rest of the config.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::secret::Secret;
use crate::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    exec: Option<Vec<String>>,
    http: Option<RawHttpProbe>,
    prometheus: Option<String>,
    /// Exec probes: read the version from JSON output at this pointer (`pgroll status`).
    pointer: Option<String>,
    order: Option<Vec<String>>,
    timeout: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    preflight: Option<Spanned<String>>,
    #[serde(default)]
    roll_forward: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpProbe {
    url: String,
    pointer: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
}

/// How the live version is read.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeKind {
    /// A program (argv, no shell) whose trimmed stdout is the version, or a JSON document
    /// holding it at `pointer`. A non-zero exit is a probe failure.
    Exec {
        argv: Vec<String>,
        pointer: Option<String>,
    },
    /// An HTTP GET answering JSON with the version at `pointer` (or a plain-text body).
    Http {
        url: String,
        pointer: Option<String>,
        headers: BTreeMap<String, Secret>,
    },
    /// A PromQL expression on the configured Prometheus with exactly one sample whose value
    /// (an integer) is the version.
    Prometheus { query: String },
}

/// What the pre-flight gate does when a canary needs a migration that has not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Registration is refused (HTTP 412, `deploy start` exits 10).
    Refuse,
    /// Registration is accepted and the canary waits (pending) until the migration lands.
    Wait,
}

/// One service's schema settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaConfig {
    pub service: String,
    pub probe: ProbeKind,
    /// Versions that are not numbers, oldest first (Alembic revisions, pgroll names).
    pub order: Option<Vec<String>>,
    /// A probe taking longer than this is a failure (`source_error`).
    pub timeout: Duration,
    /// How often the live schema is read for the timeline and for a waiting canary.
    pub every: Duration,
    pub preflight: Preflight,
    /// Hooks run instead of the rollback hooks when a rollback would be unsafe.
    pub roll_forward: Vec<String>,
}

/// Validates the section; every problem goes to `err` with its location.
pub fn validate(
    raw: &BTreeMap<String, Spanned<RawSchema>>,
    hooks: &BTreeSet<String>,
    has_prometheus: bool,
    err: &mut dyn FnMut((u64, u64), String),
) -> BTreeMap<String, SchemaConfig> {
    let mut out = BTreeMap::new();
    for (service, s) in raw {
        let at = (s.referenced.line(), s.referenced.column());
        let r = &s.value;
        let loc = |x: &Spanned<String>| (x.referenced.line(), x.referenced.column());
        let Some(probe) = probe(service, r, at, has_prometheus, err) else {
            continue;
        };
        for p in [&r.pointer, &http_pointer(&probe)].into_iter().flatten() {
            if !p.is_empty() && !p.starts_with('/') {
                err(
                    at,
                    format!(
                        "schemas.{service}: `{p}` is not a JSON pointer (they start with `/`, e.g. /version)"
                    ),
                );
            }
        }
        if let Some(order) = &r.order {
            let distinct: BTreeSet<&String> = order.iter().collect();
            if order.is_empty() || distinct.len() != order.len() {
                err(
                    at,
                    format!("schemas.{service}: `order` lists every version once, oldest first"),
                );
            }
        }
        let mut duration = |v: &Option<Spanned<String>>, default: Duration, field: &str| match v {
            None => default,
            Some(x) => match units::parse_duration(&x.value) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => d,
                Ok(_) => {
                    err(
                        loc(x),
                        format!("schemas.{service}.{field} must be between 1ms and 1h"),
                    );
                    default
                }
                Err(e) => {
                    err(loc(x), format!("schemas.{service}.{field}: {e}"));
                    default
                }
            },
        };
        let timeout = duration(&r.timeout, Duration::from_secs(10), "timeout");
        let every = duration(&r.every, Duration::from_secs(30), "every");
        let preflight = match &r.preflight {
            None => Preflight::Refuse,
            Some(p) => match p.value.as_str() {
                "refuse" => Preflight::Refuse,
                "wait" => Preflight::Wait,
                other => {
                    err(
                        loc(p),
                        format!(
                            "schemas.{service}.preflight must be `refuse` or `wait`, got `{other}`"
                        ),
                    );
                    Preflight::Refuse
                }
            },
        };
        for h in &r.roll_forward {
            if !hooks.contains(&h.value) {
                let hint = crate::diag::suggest(&h.value, hooks.iter().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                err(
                    loc(h),
                    format!(
                        "schemas.{service}.roll_forward: no hook named `{}`{hint}",
                        h.value
                    ),
                );
            }
        }
        out.insert(
            service.clone(),
            SchemaConfig {
                service: service.clone(),
                probe,
                order: r.order.clone(),
                timeout,
                every,
                preflight,
                roll_forward: r.roll_forward.iter().map(|h| h.value.clone()).collect(),
            },
        );
    }
    out
}

/// The one probe a service names, checked for the fields that belong to it.
fn probe(
    service: &str,
    r: &RawSchema,
    at: (u64, u64),
    has_prometheus: bool,
    err: &mut dyn FnMut((u64, u64), String),
) -> Option<ProbeKind> {
    let probe = match (&r.exec, &r.http, &r.prometheus) {
        (Some(argv), None, None) => {
            if argv.is_empty() || argv[0].trim().is_empty() {
                err(
                    at,
                    format!(
                        "schemas.{service}: `exec` needs a program, e.g. [\"psql\", \"-XAtc\", \"select max(version) from schema_migrations\"]"
                    ),
                );
            }
            ProbeKind::Exec {
                argv: argv.clone(),
                pointer: r.pointer.clone(),
            }
        }
        (None, Some(h), None) => {
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                err(
                    at,
                    format!("schemas.{service}: `http.url` must start with http:// or https://"),
                );
            }
            if r.pointer.is_some() {
                err(
                    at,
                    format!("schemas.{service}: put the JSON pointer under `http.pointer`"),
                );
            }
            ProbeKind::Http {
                url: h.url.clone(),
                pointer: h.pointer.clone(),
                headers: h.headers.clone(),
            }
        }
        (None, None, Some(q)) => {
            if !has_prometheus {
                err(
                    at,
                    format!(
                        "schemas.{service}: a `prometheus` probe needs the `prometheus:` source configured"
                    ),
                );
            }
            if r.pointer.is_some() {
                err(
                    at,
                    format!("schemas.{service}: `pointer` applies only to exec probes"),
                );
            }
            ProbeKind::Prometheus { query: q.clone() }
        }
        _ => {
            err(
                at,
                format!(
                    "schemas.{service} needs exactly one probe: `exec` (argv), `http` (url and pointer) or `prometheus` (a PromQL expression)"
                ),
            );
            return None;
        }
    };
    Some(probe)
}

fn http_pointer(p: &ProbeKind) -> Option<String> {
    match p {
        ProbeKind::Http { pointer, .. } => pointer.clone(),
        _ => None,
    }
}

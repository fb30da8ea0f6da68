//! What `run` needs beyond a valid config file, checked without binding a port or writing a
//! file: the API token, every secret, every TLS file and HTTP client. `rollguard check` and the
//! daemon's start call the same [`prepare`], so `check` never says ok to a config that `run`
//! rejects; both end with EX_CONFIG because the error is an [`Unusable`].

use std::sync::Arc;

use crate::config::{Config, Secret};
use crate::diag::Diagnostic;

/// The configuration (or the rules it names) cannot be used as it is: a person must edit a
/// file. The daemon exits with EX_CONFIG for this error type, and for no other.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
pub struct Unusable(pub Vec<Diagnostic>);

/// What start-up reads once from outside the config file.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The API token, when `api_token_file` is set.
    pub token: Option<Arc<str>>,
    /// Things that could not be checked here, e.g. secrets that systemd hands over only to
    /// the running service (`$CREDENTIALS_DIRECTORY`).
    pub notes: Vec<String>,
}

/// The shortest API token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Reads the token, resolves every secret and builds every TLS client the daemon would.
pub fn prepare(config: &Config) -> Result<Prepared, Unusable> {
    let at = config.path.as_path();
    let mut diags = Vec::new();
    let mut prepared = Prepared::default();
    if let Some(p) = &config.api_token_file {
        match std::fs::read_to_string(p) {
            Ok(t) if t.trim().len() >= MIN_TOKEN_LEN => {
                prepared.token = Some(Arc::from(t.trim()));
            }
            Ok(_) => diags.push(Diagnostic::file(
                at,
                format!(
                    "the API token in {} is shorter than {MIN_TOKEN_LEN} characters",
                    p.display()
                ),
            )),
            Err(e) => diags.push(Diagnostic::file(
                at,
                format!("cannot read api_token_file {}: {e}", p.display()),
            )),
        }
    }
    for (place, secret) in secrets(config) {
        if let Secret::File { file } = secret
            && file.starts_with("$CREDENTIALS_DIRECTORY")
            && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
        {
            prepared.notes.push(format!(
                "{place}: {} is handed over by systemd to the running service; not checked here",
                file.display()
            ));
            continue;
        }
        if let Err(e) = secret.resolve() {
            diags.push(Diagnostic::file(at, format!("{place}: {e}")));
        }
    }
    let mut tls = vec![("scrape.tls".to_string(), &config.scrape.tls)];
    if let Some(p) = &config.prometheus {
        tls.push(("prometheus.tls".into(), &p.tls));
    }
    for (name, n) in &config.notifiers {
        if let Some(t) = n.kind.tls() {
            tls.push((format!("notifier `{name}`: tls"), t));
        }
    }
    for (place, t) in tls {
        if let Err(e) = crate::net::client(t, config.scrape.timeout) {
            diags.push(Diagnostic::file(at, format!("{place}: {e}")));
        }
    }
    if let Some(pg) = &config.postgres
        && let Err(e) = crate::store::postgres::tls(pg)
    {
        diags.push(Diagnostic::file(at, e.to_string()));
    }
    if diags.is_empty() {
        Ok(prepared)
    } else {
        Err(Unusable(diags))
    }
}

/// Every secret the config refers to, with where it is named (for the message).
fn secrets(config: &Config) -> Vec<(String, &Secret)> {
    use crate::config::{HookKind, NotifierKind};
    let mut out: Vec<(String, &Secret)> = Vec::new();
    if let Some(p) = config.postgres.as_ref().and_then(|p| p.password.as_ref()) {
        out.push(("store.postgres.password".into(), p));
    }
    if let Some(t) = &config.scrape.bearer_token {
        out.push(("scrape.bearer_token".into(), t));
    }
    if let Some(b) = &config.scrape.basic_auth {
        out.push(("scrape.basic_auth.password".into(), &b.password));
    }
    if let Some(p) = &config.prometheus {
        if let Some(t) = &p.bearer_token {
            out.push(("prometheus.bearer_token".into(), t));
        }
        if let Some(b) = &p.basic_auth {
            out.push(("prometheus.basic_auth.password".into(), &b.password));
        }
        for (h, v) in &p.headers {
            out.push((format!("prometheus.headers.{h}"), v));
        }
    }
    for (name, h) in &config.hooks {
        if let HookKind::Http { url, headers, .. } = &h.kind {
            out.push((format!("hook `{name}`: url"), url));
            for (k, v) in headers {
                out.push((format!("hook `{name}`: header {k}"), v));
            }
        }
    }
    for (name, n) in &config.notifiers {
        let place = |what: &str| format!("notifier `{name}`: {what}");
        match &n.kind {
            NotifierKind::Slack { url }
            | NotifierKind::Mattermost { url }
            | NotifierKind::Teams { url }
            | NotifierKind::Discord { url }
            | NotifierKind::GoogleChat { url } => out.push((place("url"), url)),
            NotifierKind::Pagerduty { routing_key, .. } => {
                out.push((place("routing_key"), routing_key));
            }
            NotifierKind::Alertmanager {
                bearer_token,
                basic_auth,
                ..
            } => {
                if let Some(t) = bearer_token {
                    out.push((place("bearer_token"), t));
                }
                if let Some(b) = basic_auth {
                    out.push((place("basic_auth.password"), &b.password));
                }
            }
            NotifierKind::Webhook { url, secret } => {
                out.push((place("url"), url));
                if let Some(s) = secret {
                    out.push((place("secret"), s));
                }
            }
        }
    }
    for (service, s) in &config.schemas {
        if let crate::schema::config::ProbeKind::Http { headers, .. } = &s.probe {
            for (k, v) in headers {
                out.push((format!("schemas.{service}: header {k}"), v));
            }
        }
    }
    out
}

//! The daemon's own configuration file (listen address, directories, sources, hooks and
//! notifiers), loaded in the same two stages as the rules: raw YAML that denies unknown
//! fields, then one `validate` into [`Config`], with every problem reported as a located
//! [`Diagnostic`]. Validation happens before any port is bound or file is written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostic;
use crate::rules::{read_limited, yaml_options};
use crate::units;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    rules_dir: Option<Spanned<String>>,
    #[serde(default)]
    deployments_dir: Option<Spanned<String>>,
    #[serde(default)]
    api_token_file: Option<Spanned<String>>,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    shutdown_grace: Option<Spanned<String>>,
    #[serde(default)]
    source_grace: Option<Spanned<String>>,
    #[serde(default)]
    scrape: Option<RawScrape>,
    #[serde(default)]
    prometheus: Option<Spanned<RawPrometheus>>,
    #[serde(default)]
    hooks: BTreeMap<String, Spanned<RawHook>>,
    #[serde(default)]
    notifiers: BTreeMap<String, Spanned<RawNotifier>>,
    #[serde(default)]
    ops_notifiers: Vec<Spanned<String>>,
}

/// A secret given inline, from a file (e.g. under `$CREDENTIALS_DIRECTORY`), or from an
/// environment variable. Only the reference is kept in logs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl Secret {
    /// Reads the secret's value now (files are re-read so rotated secrets take effect).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File { file } => {
                let p = expand_credentials(file);
                std::fs::read_to_string(&p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))
            }
            Secret::Env { env } => std::env::var(env).map_err(|_| format!("environment variable {env} is not set")),
        }
    }

    /// How the secret is referenced, for logs (never the value).
    pub fn describe(&self) -> String {
        match self {
            Secret::Inline(_) => "<inline secret>".into(),
            Secret::File { file } => format!("file {}", file.display()),
            Secret::Env { env } => format!("env {env}"),
        }
    }
}

/// `$CREDENTIALS_DIRECTORY/name` lets systemd's `LoadCredential=` supply secrets.
fn expand_credentials(p: &Path) -> PathBuf {
    match p.strip_prefix("$CREDENTIALS_DIRECTORY") {
        Ok(rest) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => PathBuf::from(dir).join(rest),
            None => p.to_path_buf(),
        },
        Err(_) => p.to_path_buf(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrape {
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_body: Option<Spanned<String>>,
    #[serde(default)]
    concurrency: Option<Spanned<usize>>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    bearer_token: Option<Secret>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// HTTP basic authentication; the password is a [`Secret`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    #[serde(default)]
    bearer_token: Option<Secret>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    instance_label: Option<String>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    #[serde(default)]
    exec: Option<Vec<String>>,
    #[serde(default)]
    http: Option<RawHttpHook>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    workdir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpHook {
    url: Secret,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    success_codes: Vec<u16>,
}

/// Notifier destinations (see docs/notifications.md for each payload).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NotifierKind {
    Slack { url: Secret },
    Mattermost { url: Secret },
    Teams { url: Secret },
    Discord { url: Secret },
    GoogleChat { url: Secret },
    Pagerduty {
        routing_key: Secret,
        #[serde(default)]
        url: Option<String>,
    },
    Alertmanager {
        url: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    Webhook {
        url: Secret,
        #[serde(default)]
        hmac_secret: Option<Secret>,
    },
}

#[derive(Debug, Deserialize)]
struct RawNotifier {
    #[serde(flatten)]
    kind: NotifierKind,
}

/// TLS settings for outgoing connections (custom CA, client certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// How targets are scraped.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub concurrency: usize,
    /// Any malformed line fails the whole scrape, as in Prometheus.
    pub strict: bool,
    pub tls: TlsConfig,
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<BasicAuth>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            timeout: Duration::from_secs(5),
            max_body_bytes: 16 * 1024 * 1024,
            concurrency: 64,
            strict: true,
            tls: TlsConfig::default(),
            bearer_token: None,
            basic_auth: None,
        }
    }
}

/// A Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusConfig {
    /// Base URL including any path prefix, e.g. `http://mimir/prometheus`.
    pub url: String,
    pub headers: BTreeMap<String, Secret>,
    pub bearer_token: Option<Secret>,
    pub basic_auth: Option<BasicAuth>,
    pub timeout: Duration,
    pub instance_label: String,
    pub tls: TlsConfig,
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq)]
pub enum HookKind {
    /// argv, each element a template over deployment facts (no shell).
    Exec { argv: Vec<String>, env: Vec<String>, workdir: Option<PathBuf> },
    Http { url: Secret, method: String, headers: BTreeMap<String, Secret>, body: Option<serde_json::Value>, success_codes: Vec<u16> },
}

/// A named hook with its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct HookConfig {
    pub name: String,
    pub kind: HookKind,
    pub timeout: Duration,
    pub retries: u32,
}

/// The validated daemon configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub deployments_dir: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub dry_run: bool,
    pub shutdown_grace: Duration,
    /// How long a metrics source may fail before a deployment is held and people are told.
    pub source_grace: Duration,
    pub scrape: ScrapeConfig,
    pub prometheus: Option<PrometheusConfig>,
    pub hooks: BTreeMap<String, HookConfig>,
    pub notifiers: BTreeMap<String, NotifierKind>,
    pub ops_notifiers: Vec<String>,
}

impl Config {
    /// Names rule files may use in `on_fail`, `on_pass`, ...
    pub fn action_names(&self) -> BTreeSet<String> {
        self.hooks.keys().chain(self.notifiers.keys()).cloned().collect()
    }

    /// A configuration for tests and the demo, rooted in `dir`.
    pub fn for_dir(dir: &Path, rules_dir: &Path) -> Config {
        Config {
            path: dir.join("config.yaml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.join("state"),
            rules_dir: rules_dir.to_path_buf(),
            deployments_dir: None,
            api_token_file: None,
            public_url: None,
            dry_run: false,
            shutdown_grace: Duration::from_secs(10),
            source_grace: Duration::from_secs(60),
            scrape: ScrapeConfig::default(),
            prometheus: None,
            hooks: BTreeMap::new(),
            notifiers: BTreeMap::new(),
            ops_notifiers: Vec::new(),
        }
    }
}

/// Loads and validates the daemon config. Relative paths are resolved against the config
/// file's directory, so a config and its rules can move together.
pub fn load_config(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let text = read_limited(path).map_err(|d| vec![d])?;
    parse_config(path, &text)
}

/// Parses and validates config text (the file name is used for locations and for resolving
/// relative paths).
pub fn parse_config(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let raw: RawConfig = if text.trim().is_empty() {
        return Err(vec![Diagnostic::file(path, "config file is empty (expected at least `rules_dir:`)")]);
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| vec![Diagnostic::from_yaml(path, &e)])?
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut diags = Vec::new();
    let mut err = |at: (u64, u64), msg: String| diags.push(Diagnostic::new(path, at.0, at.1, msg));
    let loc = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());
    let resolve = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let duration = |v: &Option<Spanned<String>>, default: Duration, field: &str, err: &mut dyn FnMut((u64, u64), String)| match v {
        None => default,
        Some(s) => match units::parse_duration(&s.value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                err(loc(s), format!("`{field}` must be longer than zero"));
                default
            }
            Err(e) => {
                err(loc(s), format!("`{field}`: {e}"));
                default
            }
        },
    };

    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 9797)),
        Some(l) => match l.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                err(loc(l), format!("`listen` must be IP:PORT such as 127.0.0.1:9797, got `{}`", l.value));
                SocketAddr::from(([127, 0, 0, 1], 9797))
            }
        },
    };
    let api_token_file = raw.api_token_file.as_ref().map(|p| resolve(&p.value));
    if !listen.ip().is_loopback() && api_token_file.is_none() {
        let at = raw.listen.as_ref().map_or((1, 1), loc);
        err(at, "`listen` is not a loopback address, so `api_token_file` is required (the API can start and abort rollbacks)".into());
    }
    let rules_dir = match &raw.rules_dir {
        Some(r) => resolve(&r.value),
        None => {
            err((1, 1), "`rules_dir` is required".into());
            PathBuf::new()
        }
    };
    let state_dir = raw.state_dir.as_ref().map_or_else(|| PathBuf::from("/var/lib/rollguard"), |s| resolve(&s.value));

    let mut scrape = ScrapeConfig::default();
    if let Some(s) = &raw.scrape {
        scrape.timeout = duration(&s.timeout, scrape.timeout, "scrape.timeout", &mut err);
        if let Some(m) = &s.max_body {
            match units::parse_bytes(&m.value) {
                Ok(v) if v >= 1024.0 && v <= 1e9 => scrape.max_body_bytes = v as usize,
                Ok(_) => err(loc(m), "`scrape.max_body` must be between 1KiB and 1GB".into()),
                Err(e) => err(loc(m), format!("`scrape.max_body`: {e}")),
            }
        }
        if let Some(c) = &s.concurrency {
            if c.value == 0 || c.value > 10_000 {
                err((c.referenced.line(), c.referenced.column()), "`scrape.concurrency` must be between 1 and 10000".into());
            } else {
                scrape.concurrency = c.value;
            }
        }
        scrape.strict = s.strict.unwrap_or(true);
        scrape.tls = tls(s.tls.clone(), &resolve);
        scrape.bearer_token = s.bearer_token.clone();
        scrape.basic_auth = s.basic_auth.clone();
    }

    let prometheus = raw.prometheus.as_ref().map(|p| {
        let url = p.value.url.value.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            err(loc(&p.value.url), format!("`prometheus.url` must start with http:// or https://, got `{url}`"));
        }
        PrometheusConfig {
            url,
            headers: p.value.headers.clone(),
            bearer_token: p.value.bearer_token.clone(),
            basic_auth: p.value.basic_auth.clone(),
            timeout: duration(&p.value.timeout, Duration::from_secs(10), "prometheus.timeout", &mut err),
            instance_label: p.value.instance_label.clone().unwrap_or_else(|| "instance".into()),
            tls: tls(p.value.tls.clone(), &resolve),
        }
    });

    let mut hooks = BTreeMap::new();
    for (name, h) in &raw.hooks {
        let at = (h.referenced.line(), h.referenced.column());
        let r = &h.value;
        let kind = match (&r.exec, &r.http) {
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].trim().is_empty() {
                    err(at, format!("hook `{name}`: `exec` needs a program, e.g. [\"/usr/local/bin/rollback\", \"{{{{id}}}}\"]"));
                }
                if argv.len() == 3 && matches!(argv[0].as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash") && argv[1] == "-c" && argv[2].contains("{{") {
                    err(at, format!("hook `{name}`: do not build a shell command line from deployment data; pass facts as separate argv elements or read ROLLGUARD_* environment variables"));
                }
                HookKind::Exec { argv: argv.clone(), env: r.env.clone(), workdir: r.workdir.clone() }
            }
            (None, Some(http)) => {
                let method = http.method.clone().unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
                if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                    err(at, format!("hook `{name}`: unsupported method `{method}`"));
                }
                HookKind::Http {
                    url: http.url.clone(),
                    method,
                    headers: http.headers.clone(),
                    body: http.body.clone(),
                    success_codes: if http.success_codes.is_empty() { vec![200, 201, 202, 204] } else { http.success_codes.clone() },
                }
            }
            _ => {
                err(at, format!("hook `{name}` needs exactly one of `exec` or `http`"));
                continue;
            }
        };
        if !r.env.is_empty() && matches!(kind, HookKind::Http { .. }) {
            err(at, format!("hook `{name}`: `env` applies only to exec hooks"));
        }
        let timeout = duration(&r.timeout, Duration::from_secs(60), &format!("hooks.{name}.timeout"), &mut err);
        hooks.insert(name.clone(), HookConfig { name: name.clone(), kind, timeout, retries: r.retries.unwrap_or(2).min(20) });
    }
    let mut notifiers = BTreeMap::new();
    for (name, n) in &raw.notifiers {
        let at = (n.referenced.line(), n.referenced.column());
        if hooks.contains_key(name) {
            err(at, format!("`{name}` is both a hook and a notifier; rule files name them in the same lists, so names must be unique"));
        }
        if let NotifierKind::Teams { url: Secret::Inline(u) } = &n.value.kind {
            if u.contains("webhook.office.com") {
                err(at, format!("notifier `{name}`: Office 365 connector URLs (webhook.office.com) are retired; create a Teams Workflows webhook and use its URL"));
            }
        }
        notifiers.insert(name.clone(), n.value.kind.clone());
    }
    let mut ops_notifiers = Vec::new();
    for o in &raw.ops_notifiers {
        if !notifiers.contains_key(&o.value) {
            err(loc(o), format!("`ops_notifiers` names `{}`, which is not under `notifiers:`", o.value));
        }
        ops_notifiers.push(o.value.clone());
    }
    let shutdown_grace = duration(&raw.shutdown_grace, Duration::from_secs(30), "shutdown_grace", &mut err);
    let source_grace = duration(&raw.source_grace, Duration::from_secs(60), "source_grace", &mut err);
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Config {
        path: path.to_path_buf(),
        listen,
        state_dir,
        rules_dir,
        deployments_dir: raw.deployments_dir.as_ref().map(|d| resolve(&d.value)),
        api_token_file,
        public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
        dry_run: raw.dry_run,
        shutdown_grace,
        source_grace,
        scrape,
        prometheus,
        hooks,
        notifiers,
        ops_notifiers,
    })
}

fn tls(raw: Option<RawTls>, resolve: &dyn Fn(&str) -> PathBuf) -> TlsConfig {
    let r = raw.unwrap_or_default();
    let fix = |p: Option<PathBuf>| p.map(|p| resolve(&p.to_string_lossy()));
    TlsConfig {
        ca_file: fix(r.ca_file),
        cert_file: fix(r.cert_file),
        key_file: fix(r.key_file),
        insecure_skip_verify: r.insecure_skip_verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let text = r#"
listen: 127.0.0.1:0
state_dir: state
rules_dir: rules
scrape:
  timeout: 2s
  max_body: 8MiB
prometheus:
  url: http://127.0.0.1:9090/
  headers:
    X-Scope-OrgID: tenant-a
hooks:
  rollback:
    exec: ["/bin/echo", "{{id}}"]
    timeout: 30s
  promote:
    http:
      url: {env: PROMOTE_URL}
      body: {deployment: "{{id}}"}
notifiers:
  chat:
    slack:
      url: {file: /etc/rollguard/slack}
  ops:
    webhook:
      url: http://127.0.0.1:1/hook
ops_notifiers: [ops]
"#;
        let c = parse_config(Path::new("/etc/rollguard/config.yaml"), text).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/rollguard/state"));
        assert_eq!(c.scrape.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(c.prometheus.as_ref().unwrap().url, "http://127.0.0.1:9090");
        assert_eq!(c.hooks["rollback"].timeout, Duration::from_secs(30));
        assert!(matches!(c.notifiers["chat"], NotifierKind::Slack { url: Secret::File { .. } }));
        assert_eq!(c.action_names().len(), 4);
    }

    #[test]
    fn errors_are_located_and_collected() {
        let text = "listen: 0.0.0.0:9797\nrules_dir: r\nhooks:\n  rb:\n    timeout: 5s\nops_notifiers: [nope]\nshutdown_grace: soon\n";
        let e: Vec<String> = parse_config(Path::new("c.yaml"), text).unwrap_err().iter().map(|d| d.to_string()).collect();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("c.yaml:1:9: `listen` is not a loopback address"), "{e:#?}");
        assert!(e.iter().any(|m| m.contains("hook `rb` needs exactly one of")), "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("c.yaml:6:17: `ops_notifiers` names `nope`")), "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("c.yaml:7:17: `shutdown_grace`")), "{e:#?}");
    }

    #[test]
    fn retired_teams_connector_rejected() {
        let text = "rules_dir: r\nnotifiers:\n  t:\n    teams:\n      url: https://x.webhook.office.com/webhookb2/abc\n";
        let e = parse_config(Path::new("c.yaml"), text).unwrap_err();
        assert!(e[0].message.contains("retired"));
    }
}

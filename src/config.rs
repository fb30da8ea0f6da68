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
use crate::net::{RawTls, tls};
use crate::units;
use crate::yamlfile::{read_limited, yaml_options};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    rules_dir: Option<Spanned<String>>,
    deployments_dir: Option<Spanned<String>>,
    file_sd_dir: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    public_url: Option<String>,
    #[serde(default)]
    dry_run: bool,
    shutdown_grace: Option<Spanned<String>>,
    source_grace: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    scrape: Option<RawScrape>,
    prometheus: Option<Spanned<RawPrometheus>>,
    #[serde(default)]
    hooks: BTreeMap<String, Spanned<RawHook>>,
    #[serde(default)]
    notifiers: BTreeMap<String, Spanned<RawNotifier>>,
    #[serde(default)]
    ops_notifiers: Vec<Spanned<String>>,
    /// Per service: how to read its live schema version (see docs/migrations.md).
    #[serde(default)]
    schemas: BTreeMap<String, Spanned<crate::schema::config::RawSchema>>,
    /// Where state lives: SQLite in `state_dir` unless `store: {postgres: …}` (docs/ha.md).
    store: Option<crate::store::config::RawStore>,
}

pub use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrape {
    timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<String>>,
    concurrency: Option<Spanned<usize>>,
    strict: Option<bool>,
    honor_timestamps: Option<bool>,
    tls: Option<RawTls>,
    bearer_token: Option<Secret>,
    basic_auth: Option<BasicAuth>,
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
    bearer_token: Option<Secret>,
    basic_auth: Option<BasicAuth>,
    timeout: Option<Spanned<String>>,
    instance_label: Option<String>,
    tls: Option<RawTls>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    concurrency: Option<Spanned<usize>>,
    eval_delay: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    #[serde(default)]
    accept_partial: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    exec: Option<Vec<String>>,
    http: Option<RawHttpHook>,
    timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    #[serde(default)]
    env: Vec<String>,
    workdir: Option<PathBuf>,
    kill_grace: Option<Spanned<String>>,
    retry_backoff: Option<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpHook {
    url: Secret,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    body: Option<serde_json::Value>,
    #[serde(default)]
    success_codes: Vec<u16>,
}

/// Notifier destinations (see docs/notifications.md for each payload).
#[derive(Clone, Debug, PartialEq)]
pub enum NotifierKind {
    Slack {
        url: Secret,
    },
    Mattermost {
        url: Secret,
    },
    Teams {
        url: Secret,
    },
    Discord {
        url: Secret,
    },
    GoogleChat {
        url: Secret,
    },
    Pagerduty {
        routing_key: Secret,
        /// Base URL of the Events API (`https://events.pagerduty.com`); `/v2/enqueue` and
        /// `/v2/change/enqueue` are appended.
        url: Option<String>,
        /// Page (trigger) only for notices at least this severe; others are not sent.
        min_severity: Severity,
        /// `payload.source`: the host rollguard runs on, unless configured.
        source: Option<String>,
    },
    Alertmanager {
        /// Base URL of every Alertmanager replica (`http://am-0:9093`); `/api/v2/alerts` is
        /// appended. Prometheus' advice: send every alert to every replica, never through a
        /// load balancer (a resolve would reach one replica and the others keep firing). Each
        /// replica gets its own delivery lane ([`NotifierConfig::lanes`]), so one that is down
        /// delays nothing for the others.
        urls: Vec<String>,
        /// `Authorization: Bearer …` on every request.
        bearer_token: Option<Secret>,
        /// HTTP basic authentication (instead of URL userinfo, which ends up in logs).
        basic_auth: Option<BasicAuth>,
        /// CA and client certificate for HTTPS replicas.
        tls: TlsConfig,
        /// Extra labels on every alert (e.g. `team: payments`).
        labels: BTreeMap<String, String>,
        /// How often active alerts are sent again (Prometheus' resend delay is 1m).
        resend: Duration,
        /// Active alerts stop being refreshed after this long (a failed rollback nobody
        /// resolves must not fire forever); they then expire in Alertmanager.
        max_active: Duration,
    },
    Webhook {
        url: Secret,
        /// Standard Webhooks key(s): `whsec_<base64>`, several separated by spaces while
        /// rotating.
        secret: Option<Secret>,
    },
}

impl NotifierKind {
    /// The destination type as written in the config (`slack`, `google_chat`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            NotifierKind::Slack { .. } => "slack",
            NotifierKind::Mattermost { .. } => "mattermost",
            NotifierKind::Teams { .. } => "teams",
            NotifierKind::Discord { .. } => "discord",
            NotifierKind::GoogleChat { .. } => "google_chat",
            NotifierKind::Pagerduty { .. } => "pagerduty",
            NotifierKind::Alertmanager { .. } => "alertmanager",
            NotifierKind::Webhook { .. } => "webhook",
        }
    }

    /// TLS settings of its own (only Alertmanager has any; chat services use public CAs).
    pub fn tls(&self) -> Option<&TlsConfig> {
        match self {
            NotifierKind::Alertmanager { tls, .. } => Some(tls),
            _ => None,
        }
    }

    /// Default minimum time between two messages, from each service's documented limits:
    /// Slack about 1/s per webhook, Google Chat 60/min per space, Teams flows about 1/s,
    /// Discord about 5 per 2 s per webhook, PagerDuty about 120/min per key.
    pub fn default_pace(&self) -> Duration {
        match self {
            NotifierKind::Slack { .. }
            | NotifierKind::GoogleChat { .. }
            | NotifierKind::Teams { .. } => Duration::from_secs(1),
            NotifierKind::Discord { .. } | NotifierKind::Pagerduty { .. } => {
                Duration::from_millis(500)
            }
            NotifierKind::Mattermost { .. } => Duration::from_millis(200),
            NotifierKind::Alertmanager { .. } | NotifierKind::Webhook { .. } => Duration::ZERO,
        }
    }
}

pub use crate::events::Severity;

/// One configured destination: where and how to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifierConfig {
    pub kind: NotifierKind,
    /// Minimum time between two messages to this destination.
    pub pace: Duration,
    /// Deliveries tried per message before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the first retry when the destination names none; doubles per attempt.
    pub retry_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Base of the links in messages (the daemon's `public_url`).
    pub public_url: Option<String>,
}

impl NotifierConfig {
    /// The delivery lanes of destination `name`: each has its own outbox queue, worker,
    /// retries and incident state. An Alertmanager cluster has one lane per replica, so
    /// every alert and every resolve reaches each replica even while another is down; the
    /// first replica's lane keeps the destination's own name (rows queued before a second
    /// replica was added are still delivered), the others are `name#2`, `name#3`, ...
    /// Every other destination is one lane under its own name.
    pub fn lanes(&self, name: &str) -> Vec<(String, NotifierConfig)> {
        let NotifierKind::Alertmanager { urls, .. } = &self.kind else {
            return vec![(name.to_string(), self.clone())];
        };
        urls.iter()
            .enumerate()
            .map(|(i, u)| {
                let mut lane = self.clone();
                if let NotifierKind::Alertmanager { urls, .. } = &mut lane.kind {
                    *urls = vec![u.clone()];
                }
                let lane_name = if i == 0 {
                    name.to_string()
                } else {
                    format!("{name}#{}", i + 1)
                };
                (lane_name, lane)
            })
            .collect()
    }

    /// A destination with the defaults for its kind.
    pub fn new(kind: NotifierKind) -> NotifierConfig {
        NotifierConfig {
            pace: kind.default_pace(),
            kind,
            max_attempts: 8,
            retry_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            public_url: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrlNotifier {
    url: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerduty {
    routing_key: Secret,
    url: Option<String>,
    min_severity: Option<Severity>,
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: Option<String>,
    /// Every replica of an Alertmanager cluster.
    #[serde(default)]
    urls: Vec<String>,
    bearer_token: Option<Secret>,
    basic_auth: Option<BasicAuth>,
    tls: Option<RawTls>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    resend_interval: Option<Spanned<String>>,
    max_active: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Secret,
    secret: Option<Secret>,
    /// The body-only HMAC of wave 1, replaced by `secret`: named here only to say so.
    hmac_secret: Option<Secret>,
}

/// One destination as written: exactly one kind key plus delivery options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifier {
    slack: Option<RawUrlNotifier>,
    mattermost: Option<RawUrlNotifier>,
    teams: Option<RawUrlNotifier>,
    discord: Option<RawUrlNotifier>,
    google_chat: Option<RawUrlNotifier>,
    pagerduty: Option<RawPagerduty>,
    alertmanager: Option<RawAlertmanager>,
    webhook: Option<RawWebhook>,
    pace: Option<Spanned<String>>,
    max_attempts: Option<u32>,
    retry_backoff: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

pub use crate::net::TlsConfig;

/// How targets are scraped.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub concurrency: usize,
    /// Any malformed line fails the whole scrape, as in Prometheus.
    pub strict: bool,
    /// Use the timestamps targets expose (Prometheus' `honor_timestamps`): a sample whose
    /// timestamp is older than the 5-minute lookback is stale and does not count. Off: every
    /// sample is taken as of the scrape.
    pub honor_timestamps: bool,
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
            honor_timestamps: true,
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
    /// Extra form parameters sent with every query (`dedup`, `partial_response`, VictoriaMetrics'
    /// `extra_label`, ...); Prometheus ignores ones it does not know.
    pub params: BTreeMap<String, String>,
    /// Queries in flight at once, across all deployments (protects the backend).
    pub concurrency: usize,
    /// How far behind the wall clock queries are evaluated, so samples still being ingested
    /// (remote write to Mimir/Thanos/VictoriaMetrics lags by seconds) are not missed now and
    /// seen later by a backtest of the same data.
    pub eval_delay: Duration,
    /// Longest wait between attempts after 429/5xx/timeouts (a `Retry-After` may ask for more).
    pub max_backoff: Duration,
    /// Accept answers flagged partial (warnings, `isPartial`); by default they are a
    /// `source_error`, since a missing shard can hold one arm's data.
    pub accept_partial: bool,
}

impl PrometheusConfig {
    /// A config for `url` with every other setting at its default.
    pub fn new(url: &str) -> PrometheusConfig {
        PrometheusConfig {
            url: url.trim_end_matches('/').to_string(),
            headers: BTreeMap::new(),
            bearer_token: None,
            basic_auth: None,
            timeout: Duration::from_secs(10),
            instance_label: "instance".into(),
            tls: TlsConfig::default(),
            params: BTreeMap::new(),
            concurrency: 16,
            eval_delay: Duration::ZERO,
            max_backoff: Duration::from_secs(30),
            accept_partial: false,
        }
    }
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq)]
pub enum HookKind {
    /// argv, each element a template over deployment facts (no shell).
    Exec {
        argv: Vec<String>,
        env: Vec<String>,
        workdir: Option<PathBuf>,
    },
    Http {
        url: Secret,
        method: String,
        headers: BTreeMap<String, Secret>,
        body: Option<serde_json::Value>,
        success_codes: Vec<u16>,
    },
}

/// A named hook with its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct HookConfig {
    pub name: String,
    pub kind: HookKind,
    pub timeout: Duration,
    /// Attempts after the first one that failed.
    pub retries: u32,
    /// Between SIGTERM and SIGKILL of the process group when an exec hook times out.
    pub kill_grace: Duration,
    /// Wait before the first retry; doubles per retry, capped at [`MAX_HOOK_BACKOFF`].
    pub retry_backoff: Duration,
    /// Record and announce what would run, never run it (a rule that names a dry-run hook
    /// is a rule in dry run).
    pub dry_run: bool,
}

/// Longest wait between two attempts of a hook (also caps an HTTP hook's `Retry-After`):
/// a rollback that waits longer than this is not a rollback any more.
pub const MAX_HOOK_BACKOFF: Duration = Duration::from_secs(300);
/// SIGTERM→SIGKILL wait of an exec hook that sets no `kill_grace` (and of one no longer in the
/// config when a shutdown stops it).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

impl HookConfig {
    /// An exec hook with default limits (timeout 60 s, 2 retries, 5 s kill grace).
    pub fn exec(name: &str, argv: Vec<String>) -> HookConfig {
        HookConfig {
            name: name.to_string(),
            kind: HookKind::Exec {
                argv,
                env: Vec::new(),
                workdir: None,
            },
            timeout: Duration::from_secs(60),
            retries: 2,
            kill_grace: Duration::from_secs(5),
            retry_backoff: Duration::from_secs(1),
            dry_run: false,
        }
    }
}

/// The validated daemon configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub deployments_dir: Option<PathBuf>,
    /// Directory of Prometheus `file_sd` target files deployments may name (by file name
    /// only), so the API cannot be used to read arbitrary files.
    pub file_sd_dir: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub dry_run: bool,
    pub shutdown_grace: Duration,
    /// How long a metrics source may fail before a deployment is held and people are told.
    pub source_grace: Duration,
    /// Finished deployments (with their timeline and hook attempts) and sent or dead
    /// notifications older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    pub scrape: ScrapeConfig,
    pub prometheus: Option<PrometheusConfig>,
    pub hooks: BTreeMap<String, HookConfig>,
    pub notifiers: BTreeMap<String, NotifierConfig>,
    pub ops_notifiers: Vec<String>,
    /// Per service: its live schema probe and the migration gates' settings.
    pub schemas: BTreeMap<String, crate::schema::config::SchemaConfig>,
    /// The shared PostgreSQL store with its leader lease; `None` is SQLite in `state_dir`.
    pub postgres: Option<crate::store::config::PgConfig>,
}

impl Config {
    /// Names rule files may use in `on_fail`, `on_pass`, ...
    pub fn action_names(&self) -> BTreeSet<String> {
        self.hooks
            .keys()
            .chain(self.notifiers.keys())
            .cloned()
            .collect()
    }

    /// A configuration for tests and the demo, rooted in `dir`.
    pub fn for_dir(dir: &Path, rules_dir: &Path) -> Config {
        Config {
            path: dir.join("config.yaml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.join("state"),
            rules_dir: rules_dir.to_path_buf(),
            deployments_dir: None,
            file_sd_dir: None,
            api_token_file: None,
            public_url: None,
            dry_run: false,
            shutdown_grace: Duration::from_secs(10),
            source_grace: Duration::from_secs(60),
            retention: None,
            scrape: ScrapeConfig::default(),
            prometheus: None,
            hooks: BTreeMap::new(),
            notifiers: BTreeMap::new(),
            ops_notifiers: Vec::new(),
            schemas: BTreeMap::new(),
            postgres: None,
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
/// relative paths). Stage one is serde into [`RawConfig`]; stage two validates it section by
/// section, each section a function that reads its raw part and reports into one [`Check`].
pub fn parse_config(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    if text.trim().is_empty() {
        return Err(vec![Diagnostic::file(
            path,
            "config file is empty (expected at least `rules_dir:`)",
        )]);
    }
    let raw: RawConfig = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| vec![Diagnostic::from_yaml(path, &e)])?;
    let mut c = Check {
        path,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        diags: Vec::new(),
    };
    let (listen, api_token_file) = c.listen(&raw);
    let rules_dir = match &raw.rules_dir {
        Some(r) => c.resolve(&r.value),
        None => {
            c.err((1, 1), "`rules_dir` is required".into());
            PathBuf::new()
        }
    };
    let state_dir = raw.state_dir.as_ref().map_or_else(
        || PathBuf::from("/var/lib/rollguard"),
        |s| c.resolve(&s.value),
    );
    let scrape = c.scrape(raw.scrape.as_ref());
    let prometheus = raw.prometheus.as_ref().map(|p| c.prometheus(&p.value));
    let hooks = c.hooks(&raw.hooks);
    let public_url = raw.public_url.map(|u| u.trim_end_matches('/').to_string());
    let notifiers = c.notifiers(&raw.notifiers, &hooks, public_url.as_ref());
    for o in &raw.ops_notifiers {
        if !notifiers.contains_key(&o.value) {
            c.err(
                loc(o),
                format!(
                    "`ops_notifiers` names `{}`, which is not under `notifiers:`",
                    o.value
                ),
            );
        }
    }
    let shutdown_grace = c.duration(
        &raw.shutdown_grace,
        Duration::from_secs(30),
        "shutdown_grace",
    );
    let source_grace = c.duration(&raw.source_grace, Duration::from_secs(60), "source_grace");
    let retention = c.retention(raw.retention.as_ref());
    let hook_names: BTreeSet<String> = hooks.keys().cloned().collect();
    let schemas = crate::schema::config::validate(
        &raw.schemas,
        &hook_names,
        prometheus.is_some(),
        &mut |at, m| c.err(at, m),
    );
    let postgres = raw.store.as_ref().and_then(|s| {
        let base = c.base.clone();
        crate::store::config::validate(s, &|p| resolve_in(&base, p), &mut |at, m| c.err(at, m))
    });
    if !c.diags.is_empty() {
        return Err(c.diags);
    }
    Ok(Config {
        path: path.to_path_buf(),
        listen,
        state_dir,
        rules_dir,
        deployments_dir: raw.deployments_dir.as_ref().map(|d| c.resolve(&d.value)),
        file_sd_dir: raw.file_sd_dir.as_ref().map(|d| c.resolve(&d.value)),
        api_token_file,
        public_url,
        dry_run: raw.dry_run,
        shutdown_grace,
        source_grace,
        retention,
        scrape,
        prometheus,
        hooks,
        notifiers,
        ops_notifiers: raw.ops_notifiers.iter().map(|o| o.value.clone()).collect(),
        schemas,
        postgres,
    })
}

/// Where a spanned scalar starts, for diagnostics.
fn loc<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// Stage two of config loading: the file (for locations and relative paths) and every problem
/// found so far. Each section validates its raw part here and returns its typed value, falling
/// back to a default after reporting, so one run lists all problems.
struct Check<'a> {
    path: &'a Path,
    base: PathBuf,
    diags: Vec<Diagnostic>,
}

impl Check<'_> {
    fn err(&mut self, at: (u64, u64), msg: String) {
        self.diags.push(Diagnostic::new(self.path, at.0, at.1, msg));
    }

    /// Relative paths are resolved against the config file's directory.
    fn resolve(&self, p: &str) -> PathBuf {
        resolve_in(&self.base, p)
    }

    /// A duration above zero, or `default` when the field is absent (or wrong, after reporting).
    fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        default: Duration,
        field: &str,
    ) -> Duration {
        let Some(s) = v else { return default };
        match units::parse_duration(&s.value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(loc(s), format!("`{field}` must be longer than zero"));
                default
            }
            Err(e) => {
                self.err(loc(s), format!("`{field}`: {e}"));
                default
            }
        }
    }

    /// The API address, and the token file that a non-loopback address requires.
    fn listen(&mut self, raw: &RawConfig) -> (SocketAddr, Option<PathBuf>) {
        let default = SocketAddr::from(([127, 0, 0, 1], 9797));
        let listen = match &raw.listen {
            None => default,
            Some(l) => l.value.parse::<SocketAddr>().unwrap_or_else(|_| {
                self.err(
                    loc(l),
                    format!(
                        "`listen` must be IP:PORT such as 127.0.0.1:9797, got `{}`",
                        l.value
                    ),
                );
                default
            }),
        };
        let api_token_file = raw.api_token_file.as_ref().map(|p| self.resolve(&p.value));
        if !listen.ip().is_loopback() && api_token_file.is_none() {
            let at = raw.listen.as_ref().map_or((1, 1), loc);
            self.err(at, "`listen` is not a loopback address, so `api_token_file` is required (the API can start and abort rollbacks)".into());
        }
        (listen, api_token_file)
    }

    fn scrape(&mut self, raw: Option<&RawScrape>) -> ScrapeConfig {
        let mut scrape = ScrapeConfig::default();
        let Some(s) = raw else { return scrape };
        scrape.timeout = self.duration(&s.timeout, scrape.timeout, "scrape.timeout");
        if let Some(m) = &s.max_body {
            match units::parse_bytes(&m.value) {
                Ok(v) if (1024.0..=1e9).contains(&v) => scrape.max_body_bytes = v as usize,
                Ok(_) => self.err(
                    loc(m),
                    "`scrape.max_body` must be between 1KiB and 1GB".into(),
                ),
                Err(e) => self.err(loc(m), format!("`scrape.max_body`: {e}")),
            }
        }
        if let Some(c) = &s.concurrency {
            if c.value == 0 || c.value > 10_000 {
                self.err(
                    loc(c),
                    "`scrape.concurrency` must be between 1 and 10000".into(),
                );
            } else {
                scrape.concurrency = c.value;
            }
        }
        scrape.strict = s.strict.unwrap_or(true);
        scrape.honor_timestamps = s.honor_timestamps.unwrap_or(true);
        scrape.tls = tls(s.tls.clone(), &|p| self.resolve(p));
        scrape.bearer_token = s.bearer_token.clone();
        scrape.basic_auth = s.basic_auth.clone();
        scrape
    }

    fn prometheus(&mut self, r: &RawPrometheus) -> PrometheusConfig {
        let mut c = PrometheusConfig::new(&r.url.value);
        let at = loc(&r.url);
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            self.err(
                at,
                format!(
                    "`prometheus.url` must start with http:// or https://, got `{}`",
                    c.url
                ),
            );
        } else if c.url.contains('?') || c.url.contains('#') {
            self.err(at, "`prometheus.url` is a base URL (with any path prefix, e.g. http://mimir/prometheus); put query parameters under `prometheus.params`".into());
        } else if c.url.ends_with("/api/v1") || c.url.ends_with("/api/v1/query") {
            self.err(at, format!("`prometheus.url` is the base URL; rollguard appends /api/v1/query itself (use `{}`)", c.url.trim_end_matches("/query").trim_end_matches("/api/v1")));
        }
        c.headers = r.headers.clone();
        c.bearer_token = r.bearer_token.clone();
        c.basic_auth = r.basic_auth.clone();
        c.timeout = self.duration(&r.timeout, c.timeout, "prometheus.timeout");
        c.instance_label = r
            .instance_label
            .clone()
            .unwrap_or_else(|| "instance".into());
        c.tls = tls(r.tls.clone(), &|p| self.resolve(p));
        c.params = r.params.clone();
        for reserved in ["query", "time", "timeout"] {
            if c.params.contains_key(reserved) {
                self.err(at, format!("`prometheus.params` must not set `{reserved}` (rollguard sets it for each query)"));
            }
        }
        if let Some(n) = &r.concurrency {
            if n.value == 0 || n.value > 1000 {
                self.err(
                    loc(n),
                    "`prometheus.concurrency` must be between 1 and 1000".into(),
                );
            } else {
                c.concurrency = n.value;
            }
        }
        if let Some(d) = &r.eval_delay {
            match units::parse_duration(&d.value) {
                Ok(v) if v <= Duration::from_secs(600) => c.eval_delay = v,
                Ok(_) => self.err(loc(d), "`prometheus.eval_delay` must be at most 10m".into()),
                Err(e) => self.err(loc(d), format!("`prometheus.eval_delay`: {e}")),
            }
        }
        c.max_backoff = self.duration(&r.max_backoff, c.max_backoff, "prometheus.max_backoff");
        c.accept_partial = r.accept_partial;
        c
    }

    fn hooks(&mut self, raw: &BTreeMap<String, Spanned<RawHook>>) -> BTreeMap<String, HookConfig> {
        let mut hooks = BTreeMap::new();
        for (name, h) in raw {
            if let Some(hook) = self.hook(name, &h.value, loc(h)) {
                hooks.insert(name.clone(), hook);
            }
        }
        hooks
    }

    fn hook(&mut self, name: &str, r: &RawHook, at: (u64, u64)) -> Option<HookConfig> {
        let kind = match (&r.exec, &r.http) {
            (Some(argv), None) => self.exec_hook(name, argv, r, at),
            (None, Some(http)) => self.http_hook(name, http, at),
            _ => {
                self.err(
                    at,
                    format!("hook `{name}` needs exactly one of `exec` or `http`"),
                );
                return None;
            }
        };
        if matches!(kind, HookKind::Http { .. })
            && (!r.env.is_empty() || r.workdir.is_some() || r.kill_grace.is_some())
        {
            self.err(
                at,
                format!(
                    "hook `{name}`: `env`, `workdir` and `kill_grace` apply only to exec hooks"
                ),
            );
        }
        let timeout = self.duration(
            &r.timeout,
            Duration::from_secs(60),
            &format!("hooks.{name}.timeout"),
        );
        let kill_grace = self.duration(
            &r.kill_grace,
            DEFAULT_KILL_GRACE,
            &format!("hooks.{name}.kill_grace"),
        );
        let retry_backoff = self
            .duration(
                &r.retry_backoff,
                Duration::from_secs(1),
                &format!("hooks.{name}.retry_backoff"),
            )
            .min(MAX_HOOK_BACKOFF);
        Some(HookConfig {
            name: name.to_string(),
            kind,
            timeout,
            retries: r.retries.unwrap_or(2).min(20),
            kill_grace,
            retry_backoff,
            dry_run: r.dry_run,
        })
    }

    fn exec_hook(&mut self, name: &str, argv: &[String], r: &RawHook, at: (u64, u64)) -> HookKind {
        if argv.is_empty() || argv[0].trim().is_empty() {
            self.err(
                at,
                format!(
                    "hook `{name}`: `exec` needs a program, e.g. [\"/usr/local/bin/rollback\", \"{{{{id}}}}\"]"
                ),
            );
        }
        if argv.len() == 3
            && matches!(argv[0].as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash")
            && argv[1] == "-c"
            && argv[2].contains("{{")
        {
            self.err(
                at,
                format!(
                    "hook `{name}`: do not build a shell command line from deployment data; pass facts as separate argv elements or read ROLLGUARD_* environment variables"
                ),
            );
        }
        for a in argv {
            check_placeholders(a, name, "exec", at, &mut |at, m| self.err(at, m));
        }
        HookKind::Exec {
            argv: argv.to_vec(),
            env: r.env.clone(),
            workdir: r
                .workdir
                .as_ref()
                .map(|w| self.resolve(&w.to_string_lossy())),
        }
    }

    fn http_hook(&mut self, name: &str, http: &RawHttpHook, at: (u64, u64)) -> HookKind {
        let method = http
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            self.err(at, format!("hook `{name}`: unsupported method `{method}`"));
        }
        let mut err = |at: (u64, u64), m: String| self.err(at, m);
        if let Secret::Inline(u) = &http.url {
            check_placeholders(u, name, "url", at, &mut err);
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                err(
                    at,
                    format!("hook `{name}`: `url` must start with http:// or https://"),
                );
            }
        }
        if let Some(body) = &http.body {
            json_strings(body, &mut |t| {
                check_placeholders(t, name, "body", at, &mut err)
            });
        }
        if http.success_codes.iter().any(|c| !(100..=599).contains(c)) {
            err(
                at,
                format!("hook `{name}`: `success_codes` must be HTTP status codes (100-599)"),
            );
        }
        HookKind::Http {
            url: http.url.clone(),
            method,
            headers: http.headers.clone(),
            body: http.body.clone(),
            success_codes: if http.success_codes.is_empty() {
                vec![200, 201, 202, 204]
            } else {
                http.success_codes.clone()
            },
        }
    }

    fn notifiers(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawNotifier>>,
        hooks: &BTreeMap<String, HookConfig>,
        public_url: Option<&String>,
    ) -> BTreeMap<String, NotifierConfig> {
        let mut notifiers = BTreeMap::new();
        let base = self.base.clone();
        let resolve = |p: &str| resolve_in(&base, p);
        for (name, n) in raw {
            let at = loc(n);
            if hooks.contains_key(name) {
                self.err(
                    at,
                    format!(
                        "`{name}` is both a hook and a notifier; rule files name them in the same lists, so names must be unique"
                    ),
                );
            }
            let Some(kind) =
                notifier_kind(name, &n.value, at, &resolve, &mut |at, m| self.err(at, m))
            else {
                continue;
            };
            let mut cfg = NotifierConfig::new(kind);
            if let Some(p) = &n.value.pace {
                match units::parse_duration(&p.value) {
                    Ok(d) => cfg.pace = d,
                    Err(e) => self.err(loc(p), format!("`notifiers.{name}.pace`: {e}")),
                }
            }
            if let Some(m) = n.value.max_attempts {
                if m == 0 || m > 100 {
                    self.err(
                        at,
                        format!("notifier `{name}`: `max_attempts` must be between 1 and 100"),
                    );
                } else {
                    cfg.max_attempts = m;
                }
            }
            cfg.timeout = self.duration(
                &n.value.timeout,
                cfg.timeout,
                &format!("notifiers.{name}.timeout"),
            );
            cfg.retry_backoff = self.duration(
                &n.value.retry_backoff,
                cfg.retry_backoff,
                &format!("notifiers.{name}.retry_backoff"),
            );
            cfg.public_url = public_url.cloned();
            notifiers.insert(name.clone(), cfg);
        }
        notifiers
    }

    /// Shorter than a day would delete what `rollguard report` and people still read.
    fn retention(&mut self, raw: Option<&Spanned<String>>) -> Option<Duration> {
        let r = raw?;
        match units::parse_duration(&r.value) {
            Ok(d) if d >= Duration::from_secs(86_400) => Some(d),
            Ok(_) => {
                self.err(loc(r), "`retention` must be at least 1d".into());
                None
            }
            Err(e) => {
                self.err(loc(r), format!("`retention`: {e}"));
                None
            }
        }
    }
}

/// Builds the typed destination from the one kind key a notifier names.
fn notifier_kind(
    name: &str,
    raw: &RawNotifier,
    at: (u64, u64),
    resolve: &dyn Fn(&str) -> PathBuf,
    err: &mut dyn FnMut((u64, u64), String),
) -> Option<NotifierKind> {
    let mut kinds = Vec::new();
    if let Some(r) = &raw.slack {
        kinds.push(NotifierKind::Slack { url: r.url.clone() });
    }
    if let Some(r) = &raw.mattermost {
        kinds.push(NotifierKind::Mattermost { url: r.url.clone() });
    }
    if let Some(r) = &raw.teams {
        if let Secret::Inline(u) = &r.url
            && is_retired_teams_url(u)
        {
            err(
                at,
                format!(
                    "notifier `{name}`: Office 365 connector URLs (webhook.office.com) are retired; create a Teams Workflows webhook and use its URL"
                ),
            );
        }
        kinds.push(NotifierKind::Teams { url: r.url.clone() });
    }
    if let Some(r) = &raw.discord {
        kinds.push(NotifierKind::Discord { url: r.url.clone() });
    }
    if let Some(r) = &raw.google_chat {
        kinds.push(NotifierKind::GoogleChat { url: r.url.clone() });
    }
    if let Some(r) = &raw.pagerduty {
        if let Some(u) = &r.url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            err(
                at,
                format!("notifier `{name}`: `pagerduty.url` must start with http:// or https://"),
            );
        }
        kinds.push(NotifierKind::Pagerduty {
            routing_key: r.routing_key.clone(),
            url: r.url.as_ref().map(|u| u.trim_end_matches('/').to_string()),
            min_severity: r.min_severity.unwrap_or(Severity::Critical),
            source: r.source.clone(),
        });
    }
    if let Some(r) = &raw.alertmanager {
        kinds.push(alertmanager_kind(name, r, at, resolve, err));
    }
    if let Some(r) = &raw.webhook {
        kinds.push(webhook_kind(name, r, at, err));
    }
    if kinds.len() != 1 {
        err(
            at,
            format!(
                "notifier `{name}` needs exactly one of slack, mattermost, teams, discord, google_chat, pagerduty, alertmanager, webhook"
            ),
        );
        return None;
    }
    kinds.pop()
}

/// An Alertmanager destination: the URL, extra labels that are valid label names, and the
/// refresh timings.
fn alertmanager_kind(
    name: &str,
    r: &RawAlertmanager,
    at: (u64, u64),
    resolve: &dyn Fn(&str) -> PathBuf,
    err: &mut dyn FnMut((u64, u64), String),
) -> NotifierKind {
    let urls: Vec<String> = r.url.iter().chain(&r.urls).cloned().collect();
    if urls.is_empty() || (r.url.is_some() && !r.urls.is_empty()) {
        err(
            at,
            format!(
                "notifier `{name}`: give `alertmanager.url` (one Alertmanager) or `alertmanager.urls` (every replica of a cluster), not both"
            ),
        );
    }
    for u in &urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            err(
                at,
                format!(
                    "notifier `{name}`: Alertmanager URL `{u}` must start with http:// or https://"
                ),
            );
        }
    }
    let urls: Vec<String> = urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    if urls.iter().collect::<std::collections::BTreeSet<_>>().len() != urls.len() {
        err(
            at,
            format!("notifier `{name}`: an Alertmanager URL is listed twice"),
        );
    }
    if r.bearer_token.is_some() && r.basic_auth.is_some() {
        err(
            at,
            format!(
                "notifier `{name}`: give `bearer_token` or `basic_auth`, not both (both set the Authorization header)"
            ),
        );
    }
    for k in r.labels.keys() {
        let ok = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || k == "alertname" {
            err(
                at,
                format!(
                    "notifier `{name}`: label `{k}` is not a valid extra Prometheus label name (`alertname` is set by rollguard)"
                ),
            );
        }
    }
    let mut dur = |v: &Option<Spanned<String>>, default: Duration, field: &str| match v {
        None => default,
        Some(s) => match units::parse_duration(&s.value) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                err(
                    (s.referenced.line(), s.referenced.column()),
                    format!("notifier `{name}`: `{field}` must be a duration above zero"),
                );
                default
            }
        },
    };
    let resend = dur(
        &r.resend_interval,
        Duration::from_secs(60),
        "resend_interval",
    );
    let max_active = dur(&r.max_active, Duration::from_secs(24 * 3600), "max_active");
    NotifierKind::Alertmanager {
        urls,
        bearer_token: r.bearer_token.clone(),
        basic_auth: r.basic_auth.clone(),
        tls: tls(r.tls.clone(), resolve),
        labels: r.labels.clone(),
        resend,
        max_active,
    }
}

/// A generic webhook: an inline `secret` must be `whsec_` keys; `hmac_secret` says how to move.
fn webhook_kind(
    name: &str,
    r: &RawWebhook,
    at: (u64, u64),
    err: &mut dyn FnMut((u64, u64), String),
) -> NotifierKind {
    if r.hmac_secret.is_some() {
        err(
            at,
            format!(
                "notifier `{name}`: `hmac_secret` (an HMAC over the body only, replayable) is replaced by Standard Webhooks signing: set `secret: whsec_<base64>` (e.g. `echo whsec_$(openssl rand -base64 32)`) and verify with a Standard Webhooks library (docs/notifications.md)"
            ),
        );
    }
    if let Some(Secret::Inline(v)) = &r.secret
        && let Err(e) = crate::standard_webhooks::keys(v)
    {
        err(at, format!("notifier `{name}`: `secret`: {e}"));
    }
    NotifierKind::Webhook {
        url: r.url.clone(),
        secret: r.secret.clone(),
    }
}

/// Office 365 connector URLs stopped working when Microsoft retired connectors; only Teams
/// Workflows URLs accept messages now.
pub fn is_retired_teams_url(u: &str) -> bool {
    url::Url::parse(u)
        .ok()
        .and_then(|p| {
            p.host_str()
                .map(|h| h == "webhook.office.com" || h.ends_with(".webhook.office.com"))
        })
        .unwrap_or(false)
        || u.contains("webhook.office.com/")
}

/// Reports `{{name}}` placeholders a hook uses that no deployment fact fills, at config
/// time rather than during a rollback.
fn check_placeholders(
    template: &str,
    hook: &str,
    field: &str,
    at: (u64, u64),
    err: &mut dyn FnMut((u64, u64), String),
) {
    for (p, _) in crate::template::placeholders(template) {
        if !crate::action::Facts::knows(&p) {
            err(
                at,
                format!(
                    "hook `{hook}`: unknown placeholder `{{{{{p}}}}}` in `{field}` (known: {})",
                    crate::action::PLACEHOLDERS.join(", ")
                ),
            );
        }
    }
}

/// Calls `f` on every string inside a JSON value.
fn json_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, f)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, f)),
        _ => {}
    }
}

/// `p` as is when absolute, else below `base`.
fn resolve_in(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
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
        assert!(matches!(
            c.notifiers["chat"].kind,
            NotifierKind::Slack {
                url: Secret::File { .. }
            }
        ));
        assert_eq!(c.action_names().len(), 4);
    }

    #[test]
    fn errors_are_located_and_collected() {
        let text = "listen: 0.0.0.0:9797\nrules_dir: r\nhooks:\n  rb:\n    timeout: 5s\nops_notifiers: [nope]\nshutdown_grace: soon\n";
        let e: Vec<String> = parse_config(Path::new("c.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("c.yaml:1:9: `listen` is not a loopback address"),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("hook `rb` needs exactly one of")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("c.yaml:6:17: `ops_notifiers` names `nope`")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("c.yaml:7:17: `shutdown_grace`")),
            "{e:#?}"
        );
    }

    #[test]
    fn retention_is_at_least_a_day() {
        let ok = parse_config(Path::new("c.yaml"), "rules_dir: r\nretention: 90d\n").unwrap();
        assert_eq!(ok.retention, Some(Duration::from_secs(90 * 86_400)));
        let e = parse_config(Path::new("c.yaml"), "rules_dir: r\nretention: 1h\n").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "c.yaml:2:12: `retention` must be at least 1d",
            "{e:#?}"
        );
    }

    #[test]
    fn retired_teams_connector_rejected() {
        let text = "rules_dir: r\nnotifiers:\n  t:\n    teams:\n      url: https://x.webhook.office.com/webhookb2/abc\n";
        let e = parse_config(Path::new("c.yaml"), text).unwrap_err();
        assert!(e[0].message.contains("retired"));
    }

    #[test]
    fn every_notifier_kind_and_hook_option_parses() {
        let text = r#"
rules_dir: r
public_url: https://rg.example/
hooks:
  rb:
    exec: ["/bin/rollback", "{{id}}", "{{param.app}}"]
    kill_grace: 2s
    retry_backoff: 100ms
    dry_run: true
    workdir: work
notifiers:
  s: {slack: {url: "https://hooks.slack.com/services/T/B/x"}, pace: 2s, max_attempts: 3, retry_backoff: 50ms, timeout: 3s}
  m: {mattermost: {url: {env: MM}}}
  t: {teams: {url: "https://x.logic.azure.com/workflows/a?sig=b"}}
  d: {discord: {url: {file: /etc/d}}}
  g: {google_chat: {url: "https://chat.googleapis.com/v1/spaces/S/messages?key=k&token=t"}}
  p: {pagerduty: {routing_key: {env: PD}, min_severity: warning, source: ops-1}}
  a: {alertmanager: {url: "http://am:9093/", labels: {team: pay}, resend_interval: 30s, max_active: 2h}}
  w: {webhook: {url: "http://127.0.0.1:1/h", secret: {file: /etc/s}}}
"#;
        let c = parse_config(Path::new("/etc/rollguard/config.yaml"), text).unwrap();
        let rb = &c.hooks["rb"];
        assert_eq!(
            (rb.kill_grace, rb.retry_backoff, rb.dry_run),
            (Duration::from_secs(2), Duration::from_millis(100), true)
        );
        assert!(
            matches!(&rb.kind, HookKind::Exec { workdir: Some(w), .. } if w == Path::new("/etc/rollguard/work"))
        );
        let s = &c.notifiers["s"];
        assert_eq!(
            (s.pace, s.max_attempts, s.retry_backoff, s.timeout),
            (
                Duration::from_secs(2),
                3,
                Duration::from_millis(50),
                Duration::from_secs(3)
            )
        );
        assert_eq!(s.public_url.as_deref(), Some("https://rg.example"));
        assert_eq!(
            c.notifiers["g"].pace,
            Duration::from_secs(1),
            "kind default"
        );
        assert!(matches!(
            c.notifiers["p"].kind,
            NotifierKind::Pagerduty {
                min_severity: Severity::Warning,
                ..
            }
        ));
        assert!(
            matches!(&c.notifiers["a"].kind, NotifierKind::Alertmanager { urls, resend, .. } if urls == &["http://am:9093"] && *resend == Duration::from_secs(30))
        );
        assert_eq!(c.notifiers.len(), 8);
    }

    #[test]
    fn an_alertmanager_cluster_is_one_lane_per_replica() {
        let text = "rules_dir: r\nnotifiers:\n  am:\n    alertmanager:\n      urls: [\"http://am-0:9093/\", \"https://am-1:9093\"]\n      bearer_token: {file: token}\n      tls: {ca_file: ca.pem}\n";
        let c = parse_config(Path::new("/etc/rg/c.yaml"), text).expect("valid");
        let am = &c.notifiers["am"];
        let NotifierKind::Alertmanager {
            urls,
            bearer_token,
            tls,
            ..
        } = &am.kind
        else {
            panic!("{am:?}")
        };
        assert_eq!(urls, &["http://am-0:9093", "https://am-1:9093"]);
        assert!(bearer_token.is_some());
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/rg/ca.pem")));
        let lanes = am.lanes("am");
        let names: Vec<&str> = lanes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["am", "am#2"]);
        assert!(
            matches!(&lanes[1].1.kind, NotifierKind::Alertmanager { urls, .. } if urls == &["https://am-1:9093"])
        );

        for (bad, want) in [
            ("url: http://a:9093, urls: [\"http://b:9093\"]", "not both"),
            ("labels: {}", "give `alertmanager.url`"),
            (
                "urls: [\"http://a:9093\", \"http://a:9093/\"]",
                "listed twice",
            ),
            (
                "url: http://a:9093, bearer_token: t, basic_auth: {username: u, password: p}",
                "`bearer_token` or `basic_auth`",
            ),
        ] {
            let text = format!("rules_dir: r\nnotifiers:\n  am: {{alertmanager: {{{bad}}}}}\n");
            let e = parse_config(Path::new("c.yaml"), &text).unwrap_err();
            assert!(e.iter().any(|d| d.message.contains(want)), "{bad}: {e:#?}");
        }
    }

    #[test]
    fn bad_hooks_and_notifiers_are_reported() {
        let text = "rules_dir: r\nhooks:\n  rb:\n    exec: [\"/bin/x\", \"{{nope}}\"]\n  h:\n    http: {url: \"http://x/{{id}}\", body: {a: \"{{verdikt}}\"}}\n    kill_grace: 1s\nnotifiers:\n  two: {slack: {url: a}, discord: {url: b}}\n  none: {pace: 1s}\n  am: {alertmanager: {url: \"am:9093\", labels: {alertname: x}}}\n";
        let e: Vec<String> = parse_config(Path::new("c.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            e.iter()
                .any(|m| m.contains("unknown placeholder `{{nope}}`")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("unknown placeholder `{{verdikt}}` in `body`")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("`kill_grace` apply only to exec hooks")),
            "{e:#?}"
        );
        assert_eq!(
            e.iter()
                .filter(|m| m.contains("needs exactly one of slack"))
                .count(),
            2,
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("Alertmanager URL `am:9093` must start with http")),
            "{e:#?}"
        );
        assert!(e.iter().any(|m| m.contains("label `alertname`")), "{e:#?}");
    }

    #[test]
    fn schemas_section_is_read_with_defaults() {
        let cfg = parse_config(
            Path::new("/etc/rollguard/config.yaml"),
            "rules_dir: rules\nhooks:\n  forward:\n    exec: [/bin/true]\nschemas:\n  checkout:\n    exec: [psql, -XAtc, select max(version) from schema_migrations]\n    preflight: wait\n    roll_forward: [forward]\n",
        )
        .unwrap();
        let s = &cfg.schemas["checkout"];
        assert_eq!(s.preflight, crate::schema::config::Preflight::Wait);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.roll_forward, vec!["forward".to_string()]);
    }

    #[test]
    fn every_schemas_mistake_is_located() {
        let text = "rules_dir: rules\nschemas:\n  checkout:\n    exec: [psql]\n    http: {url: http://x/v, pointer: /v}\n  billing:\n    prometheus: schema_version\n    timeout: soon\n    preflight: maybe\n    roll_forward: [nope]\n";
        let diags = parse_config(Path::new("c.yaml"), text).unwrap_err();
        let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        let joined = all.join("\n");
        assert!(
            joined.contains("c.yaml:4:5: schemas.checkout needs exactly one probe"),
            "{joined}"
        );
        assert!(
            joined.contains("needs the `prometheus:` source"),
            "{joined}"
        );
        assert!(
            joined.contains("c.yaml:8:14: schemas.billing.timeout"),
            "{joined}"
        );
        assert!(
            joined.contains("c.yaml:9:16: schemas.billing.preflight"),
            "{joined}"
        );
        assert!(joined.contains("no hook named `nope`"), "{joined}");
    }
}

//! Rule files: what an analysis checks, how sure it must be, and what to do about it.
//!
//! Loading has two stages, as in ripgrep's low/high args: YAML is deserialised into raw
//! structs that deny unknown fields (so a typo is an error, never silently ignored), then one
//! validation pass turns them into an [`AnalysisTemplate`] — durations parsed, selectors
//! parsed, parameters checked, hook and notifier names resolved. Every problem in every file
//! is collected as a located [`Diagnostic`] before anything is rejected, and the daemon's
//! reload, `rollguard check` and the tests all call [`load_rules`].
//!
//! A template becomes a runnable [`AnalysisSpec`] when a deployment supplies its parameters
//! ([`AnalysisTemplate::instantiate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, suggest};
use crate::query::{MetricQuery, PromqlQuery, QueryKind, SeriesQuery};
use crate::selector::Selector;
use crate::template;
use crate::units;
use crate::written;
use crate::yamlfile::{read_limited, rule_files, short_hash, yaml_options};

// ---------------------------------------------------------------------------------------
// Stage 1: raw YAML shapes.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    analysis: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<Option<ParamValue>>>,
    interval: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    min_duration: Option<Spanned<String>>,
    max_duration: Option<Spanned<String>>,
    alpha: Option<Spanned<f64>>,
    no_data_grace: Option<Spanned<String>>,
    at_max_duration: Option<AtLimit>,
    enforce: Option<Spanned<Enforcement>>,
    traffic_tolerance: Option<Spanned<f64>>,
    reload: Option<ReloadPolicy>,
    checks: Spanned<Vec<RawCheck>>,
    #[serde(default)]
    on_fail: Vec<Spanned<String>>,
    #[serde(default)]
    on_no_data: Vec<Spanned<String>>,
    #[serde(default)]
    on_pass: Vec<Spanned<String>>,
    #[serde(default)]
    on_inconclusive: Vec<Spanned<String>>,
    #[serde(default)]
    on_step: Vec<Spanned<String>>,
}

/// Parameter defaults may be written as strings or numbers (`port: 8080`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ParamValue {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl ParamValue {
    fn into_string(self) -> String {
        match self {
            ParamValue::S(s) => s,
            ParamValue::I(i) => i.to_string(),
            ParamValue::F(f) => f.to_string(),
            ParamValue::B(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    kind: Spanned<CheckKind>,
    description: Option<String>,
    errors: Option<Spanned<String>>,
    requests: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    divide_by: Option<Spanned<String>>,
    query: Option<Spanned<String>>,
    /// Growth: each instance's process start time (Unix seconds), to see whether the canary
    /// warms up alone next to an older baseline.
    start_time: Option<Spanned<String>>,
    worse_when: Option<Spanned<Direction>>,
    tolerance: Option<Spanned<f64>>,
    quantiles: Option<Spanned<Vec<f64>>>,
    max_extra_slope: Option<Spanned<String>>,
    limit: Option<Spanned<String>>,
    min_time_to_limit: Option<Spanned<String>>,
    above: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    min: Option<Spanned<f64>>,
    #[serde(default, rename = "for")]
    for_: Option<Spanned<String>>,
    confidence: Option<Spanned<f64>>,
    critical: Option<bool>,
    enforce: Option<Spanned<Enforcement>>,
    /// This check's own warm-up, in place of the kind's default (see `CheckSpec::warmup`).
    warmup: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------
// Stage 2: validated types.

/// The statistical test a check runs (see docs/judge.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    Ratio,
    Histogram,
    Growth,
    Gauge,
    Threshold,
    MannWhitney,
}

impl CheckKind {
    /// The fields a check of this kind takes: any other is an error, not ignored.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            CheckKind::Ratio => &["errors", "requests", "worse_when", "tolerance"],
            CheckKind::Histogram => &["metric", "quantiles", "tolerance"],
            CheckKind::Growth => &[
                "metric",
                "divide_by",
                "query",
                "start_time",
                "requests",
                "max_extra_slope",
                "limit",
                "min_time_to_limit",
            ],
            CheckKind::Gauge => &[
                "metric",
                "divide_by",
                "query",
                "requests",
                "worse_when",
                "tolerance",
                "above",
            ],
            CheckKind::Threshold => &[
                "errors",
                "requests",
                "metric",
                "divide_by",
                "query",
                "max",
                "min",
                "for",
            ],
            CheckKind::MannWhitney => &[
                "metric",
                "divide_by",
                "query",
                "worse_when",
                "tolerance",
                "confidence",
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Ratio => "ratio",
            CheckKind::Histogram => "histogram",
            CheckKind::Growth => "growth",
            CheckKind::Gauge => "gauge",
            CheckKind::Threshold => "threshold",
            CheckKind::MannWhitney => "mann-whitney",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way is worse for the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

/// How far a failing check may act, from "only record" to "roll back" (graduated
/// enforcement, so a new rule can run in shadow before it is trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Record and report what would have happened; never notify, hold or roll back.
    Shadow,
    /// Notify on failure; never hold or roll back.
    Notify,
    /// Hold the deployment (no promotion, no further steps) and notify.
    Hold,
    /// Roll back.
    Rollback,
}

/// Whether running analyses switch to an edited rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadPolicy {
    /// Running analyses keep the version they started with (the default: a rule edit never
    /// changes the statistics of an analysis half way through).
    #[default]
    Pin,
    /// Running analyses restart their judge on the new version.
    Follow,
}

/// The per-kind settings of a check, with metric queries referenced by index into
/// [`AnalysisSpec::queries`].
#[derive(Clone, Debug, PartialEq)]
pub enum CheckConfig {
    Ratio {
        errors: usize,
        requests: usize,
        tolerance: f64,
        worse_when: Direction,
    },
    Histogram {
        metric: usize,
        quantiles: Vec<f64>,
        tolerance: f64,
    },
    Growth {
        metric: usize,
        /// Query of each instance's process start time, when the rule names one.
        start_time: Option<usize>,
        /// Request counter whose split between the arms is followed, when the rule names
        /// one: a change of the canary's load per instance starts the trend over.
        requests: Option<usize>,
        max_extra_slope: f64,
        limit: Option<f64>,
        min_time_to_limit: Duration,
    },
    Gauge {
        metric: usize,
        /// Request counter by which a level is compared at equal load per instance, when the
        /// rule names one.
        requests: Option<usize>,
        worse_when: Direction,
        tolerance: f64,
        above: Option<f64>,
    },
    Threshold {
        source: ThresholdSource,
        max: Option<f64>,
        min: Option<f64>,
        for_: Duration,
    },
    MannWhitney {
        metric: usize,
        worse_when: Direction,
        tolerance: f64,
        confidence: f64,
    },
}

/// What an absolute guard measures on the canary.
#[derive(Clone, Debug, PartialEq)]
pub enum ThresholdSource {
    Ratio { errors: usize, requests: usize },
    Gauge { metric: usize },
}

/// One compiled check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub kind: CheckKind,
    pub description: Option<String>,
    pub critical: bool,
    pub enforce: Enforcement,
    pub config: CheckConfig,
    /// The check's own `warmup:`, when the rule sets one.
    pub own_warmup: Option<Duration>,
}

impl CheckSpec {
    /// How long this check waits before judging. Count checks (`ratio`, and `threshold` on
    /// a ratio) judge from the first interval: the conditional test compares the arms
    /// within each interval, so a cold canary's start-up errors are real errors to users and
    /// there is nothing to calibrate. The other kinds wait for the analysis' `warmup`: the
    /// histogram picks its bucket edges from the baseline then, growth and gauges must not
    /// read a process filling its caches as a trend or a level.
    pub fn warmup(&self, analysis: Duration) -> Duration {
        self.own_warmup.unwrap_or(match &self.config {
            CheckConfig::Ratio { .. }
            | CheckConfig::Threshold {
                source: ThresholdSource::Ratio { .. },
                ..
            } => Duration::ZERO,
            _ => analysis,
        })
    }

    /// What a failure of this check may do: its enforcement, capped at `hold` when it is
    /// not critical.
    pub fn effective_enforcement(&self) -> Enforcement {
        if self.critical {
            self.enforce
        } else {
            self.enforce.min(Enforcement::Hold)
        }
    }
}

/// Hook and notifier names to run on each outcome of an analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actions {
    pub on_fail: Vec<String>,
    pub on_no_data: Vec<String>,
    pub on_pass: Vec<String>,
    pub on_inconclusive: Vec<String>,
    pub on_step: Vec<String>,
}

/// Timing and error budget of an analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub interval: Duration,
    pub warmup: Duration,
    pub min_duration: Duration,
    pub max_duration: Duration,
    pub no_data_grace: Duration,
    /// What `max_duration` does when no check failed but not every one proved itself.
    pub at_limit: AtLimit,
}

/// The verdict at `max_duration` for an analysis in which nothing failed but not every check
/// proved the canary within its tolerance (rare events, short analyses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtLimit {
    /// Promote when no check shows evidence of harm: every check has judged data and its
    /// evidence is below the fourth root of its threshold (`judge::harm_hint`). What Argo
    /// Rollouts and Kayenta do at the end of an analysis, with a bar.
    #[default]
    Promote,
    /// Leave it to a person: inconclusive unless every check passed.
    Inconclusive,
}

/// A validated rule file, before a deployment supplies its parameters.
#[derive(Clone, Debug)]
pub struct AnalysisTemplate {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    /// The file's text, kept so a deployment can be resumed on the exact version it started.
    pub source: Arc<str>,
    /// Short hash of the file's text.
    pub version: String,
    /// Parameter defaults; `None` means the deployment must supply it.
    pub params: BTreeMap<String, Option<String>>,
    pub timing: Timing,
    pub alpha: f64,
    pub traffic_tolerance: f64,
    pub reload: ReloadPolicy,
    pub actions: Actions,
    checks: Vec<TemplateCheck>,
}

/// A check whose selectors (and written query) may still contain `{{param}}` placeholders.
#[derive(Clone, Debug)]
struct TemplateCheck {
    name: String,
    kind: CheckKind,
    description: Option<String>,
    critical: bool,
    enforce: Enforcement,
    warmup: Option<Duration>,
    selectors: Vec<(SelectorRole, String)>,
    settings: Settings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelectorRole {
    Errors,
    Requests,
    Metric,
    DivideBy,
    /// A written PromQL query (`query:`), in place of `metric`.
    Query,
    /// Growth: each instance's process start time.
    StartTime,
}

#[derive(Clone, Debug)]
struct Settings {
    worse_when: Direction,
    tolerance: f64,
    quantiles: Vec<f64>,
    max_extra_slope: f64,
    limit: Option<f64>,
    min_time_to_limit: Duration,
    above: Option<f64>,
    max: Option<f64>,
    min: Option<f64>,
    for_: Duration,
    confidence: f64,
}

/// An analysis ready to run for one deployment.
#[derive(Clone, Debug)]
pub struct AnalysisSpec {
    pub name: String,
    pub version: String,
    pub params: BTreeMap<String, String>,
    pub timing: Timing,
    pub alpha: f64,
    pub traffic_tolerance: f64,
    pub reload: ReloadPolicy,
    pub actions: Actions,
    pub checks: Vec<CheckSpec>,
    pub queries: Vec<MetricQuery>,
}

impl AnalysisSpec {
    /// The first check that reads a written `query:`, which only the Prometheus source can
    /// evaluate (the scrape source and `backtest` refuse such analyses up front).
    pub fn written_query_check(&self) -> Option<&str> {
        self.checks
            .iter()
            .find(|c| {
                let metric = match &c.config {
                    CheckConfig::Growth { metric, .. }
                    | CheckConfig::Gauge { metric, .. }
                    | CheckConfig::MannWhitney { metric, .. }
                    | CheckConfig::Threshold {
                        source: ThresholdSource::Gauge { metric },
                        ..
                    } => *metric,
                    _ => return false,
                };
                matches!(self.queries.get(metric), Some(MetricQuery::Promql(_)))
            })
            .map(|c| c.name.as_str())
    }

    /// Number of checks that can act (shadow checks do not spend the error budget).
    pub fn acting_checks(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.enforce != Enforcement::Shadow)
            .count()
            .max(1)
    }
}

/// Why a deployment's parameters do not fit an analysis.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("analysis `{analysis}` needs parameter `{name}` (no default)")]
    Missing { analysis: String, name: String },
    #[error("analysis `{analysis}` has no parameter `{name}`{hint}")]
    Unknown {
        analysis: String,
        name: String,
        hint: String,
    },
    #[error("parameter `{name}` has a character that is not allowed in a label value: {value:?}")]
    Unsafe { name: String, value: String },
    #[error("check `{check}`: {message}")]
    Selector { check: String, message: String },
}

impl ParamError {
    fn selector(check: &str, message: impl Into<String>) -> Self {
        ParamError::Selector {
            check: check.to_string(),
            message: message.into(),
        }
    }
}

/// Parameter values end up inside quoted PromQL label values; quotes, backslashes, braces
/// and control characters could escape the quotes and change which series are selected.
fn param_value_is_safe(v: &str) -> bool {
    !v.chars()
        .any(|c| matches!(c, '"' | '\'' | '`' | '\\' | '{' | '}') || c.is_control())
}

impl AnalysisTemplate {
    /// Resolves parameters (deployment overrides over defaults) and compiles the selectors
    /// and written queries.
    pub fn instantiate(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<AnalysisSpec, ParamError> {
        self.compile(overrides, true)
    }

    /// The analysis with placeholder values for the parameters a deployment must supply:
    /// its checks and timing as every deployment will run them (for `rollguard check`).
    pub fn probe(&self) -> Result<AnalysisSpec, ParamError> {
        let probe: BTreeMap<String, String> = self
            .params
            .iter()
            .filter(|(_, d)| d.is_none())
            .map(|(k, _)| (k.clone(), "x".to_string()))
            .collect();
        self.compile(&probe, false)
    }

    /// The template's parameters for one deployment: overrides checked (known and safe to put
    /// in a selector), defaults filled in, required ones present.
    fn params_for(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ParamError> {
        let mut params = BTreeMap::new();
        for (k, v) in overrides {
            if !self.params.contains_key(k) {
                return Err(ParamError::Unknown {
                    analysis: self.name.clone(),
                    name: k.clone(),
                    hint: suggest(k, self.params.keys().map(String::as_str))
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                });
            }
            if !param_value_is_safe(v) {
                return Err(ParamError::Unsafe {
                    name: k.clone(),
                    value: v.clone(),
                });
            }
            params.insert(k.clone(), v.clone());
        }
        for (k, default) in &self.params {
            if !params.contains_key(k) {
                match default {
                    Some(d) => {
                        params.insert(k.clone(), d.clone());
                    }
                    None => {
                        return Err(ParamError::Missing {
                            analysis: self.name.clone(),
                            name: k.clone(),
                        });
                    }
                }
            }
        }
        Ok(params)
    }

    /// `check_written: false` skips the PromQL syntax check of written queries: the loader's
    /// trial compilation uses stand-in values for required parameters, which may not be valid
    /// where a query uses them (`[{{window}}]`); the loader checks the syntax itself when it can.
    fn compile(
        &self,
        overrides: &BTreeMap<String, String>,
        check_written: bool,
    ) -> Result<AnalysisSpec, ParamError> {
        let params = self.params_for(overrides)?;
        let mut queries: Vec<MetricQuery> = Vec::new();
        let mut intern = |q: MetricQuery| -> usize {
            if let Some(i) = queries.iter().position(|x| *x == q) {
                i
            } else {
                queries.push(q);
                queries.len() - 1
            }
        };
        let mut checks = Vec::new();
        for c in &self.checks {
            checks.push(compile_check(c, &params, check_written, &mut intern)?);
        }
        Ok(AnalysisSpec {
            name: self.name.clone(),
            version: self.version.clone(),
            params,
            timing: self.timing.clone(),
            alpha: self.alpha,
            traffic_tolerance: self.traffic_tolerance,
            reload: self.reload,
            actions: self.actions.clone(),
            checks,
            queries,
        })
    }
}

/// The check's selector in `role` with the deployment's parameters filled in, parsed; `None`
/// when the check has no selector in that role.
fn render_selector(
    c: &TemplateCheck,
    params: &BTreeMap<String, String>,
    role: SelectorRole,
) -> Result<Option<Selector>, ParamError> {
    let Some((_, text)) = c.selectors.iter().find(|(r, _)| *r == role) else {
        return Ok(None);
    };
    let rendered =
        template::render(text, |n| params.get(n).cloned()).map_err(|u| ParamError::Selector {
            check: c.name.clone(),
            message: format!("unknown parameter `{}`", u.name),
        })?;
    Selector::parse(&rendered)
        .map(Some)
        .map_err(|e| ParamError::Selector {
            check: c.name.clone(),
            message: format!("`{rendered}`: {e}"),
        })
}

/// One check of a template with its parameters filled in: selectors rendered and parsed,
/// queries interned (`intern` returns the index of an equal query when one exists, so two
/// checks that read the same series fetch it once).
fn compile_check(
    c: &TemplateCheck,
    params: &BTreeMap<String, String>,
    check_written: bool,
    intern: &mut dyn FnMut(MetricQuery) -> usize,
) -> Result<CheckSpec, ParamError> {
    let sel = |role| render_selector(c, params, role);
    let need = |role: SelectorRole| -> Result<Selector, ParamError> {
        sel(role)?.ok_or_else(|| ParamError::Selector {
            check: c.name.clone(),
            message: "missing selector".into(),
        })
    };
    let s = &c.settings;
    let gauge = |intern: &mut dyn FnMut(MetricQuery) -> usize,
                 kind: QueryKind|
     -> Result<usize, ParamError> {
        if let Some((_, text)) = c.selectors.iter().find(|(r, _)| *r == SelectorRole::Query) {
            let text = written::fill_params(text, |n| params.get(n).cloned())
                .map_err(|e| ParamError::selector(&c.name, e))?;
            if check_written {
                written::check(&text)
                    .map_err(|e| ParamError::selector(&c.name, format!("`query` {text:?}: {e}")))?;
            }
            return Ok(intern(MetricQuery::Promql(PromqlQuery { text })));
        }
        Ok(intern(
            SeriesQuery {
                kind,
                selector: need(SelectorRole::Metric)?,
                divide_by: sel(SelectorRole::DivideBy)?,
            }
            .into(),
        ))
    };
    let counter =
        |role, intern: &mut dyn FnMut(MetricQuery) -> usize| -> Result<usize, ParamError> {
            Ok(intern(MetricQuery::series(QueryKind::Counter, need(role)?)))
        };
    let config = match c.kind {
        CheckKind::Ratio => CheckConfig::Ratio {
            errors: counter(SelectorRole::Errors, intern)?,
            requests: counter(SelectorRole::Requests, intern)?,
            tolerance: s.tolerance,
            worse_when: s.worse_when,
        },
        CheckKind::Histogram => CheckConfig::Histogram {
            metric: intern(MetricQuery::series(
                QueryKind::Histogram,
                need(SelectorRole::Metric)?,
            )),
            quantiles: s.quantiles.clone(),
            tolerance: s.tolerance,
        },
        CheckKind::Growth => CheckConfig::Growth {
            metric: gauge(intern, QueryKind::Latest)?,
            start_time: sel(SelectorRole::StartTime)?
                .map(|s| intern(MetricQuery::series(QueryKind::Latest, s))),
            requests: sel(SelectorRole::Requests)?
                .map(|s| intern(MetricQuery::series(QueryKind::Counter, s))),
            max_extra_slope: s.max_extra_slope,
            limit: s.limit,
            min_time_to_limit: s.min_time_to_limit,
        },
        CheckKind::Gauge => CheckConfig::Gauge {
            metric: gauge(intern, QueryKind::Gauge)?,
            requests: sel(SelectorRole::Requests)?
                .map(|s| intern(MetricQuery::series(QueryKind::Counter, s))),
            worse_when: s.worse_when,
            tolerance: s.tolerance,
            above: s.above,
        },
        CheckKind::Threshold => {
            let source = if c.selectors.iter().any(|(r, _)| *r == SelectorRole::Errors) {
                ThresholdSource::Ratio {
                    errors: counter(SelectorRole::Errors, intern)?,
                    requests: counter(SelectorRole::Requests, intern)?,
                }
            } else {
                ThresholdSource::Gauge {
                    metric: gauge(intern, QueryKind::Gauge)?,
                }
            };
            CheckConfig::Threshold {
                source,
                max: s.max,
                min: s.min,
                for_: s.for_,
            }
        }
        CheckKind::MannWhitney => CheckConfig::MannWhitney {
            metric: gauge(intern, QueryKind::Gauge)?,
            worse_when: s.worse_when,
            tolerance: s.tolerance,
            confidence: s.confidence,
        },
    };
    Ok(CheckSpec {
        name: c.name.clone(),
        kind: c.kind,
        description: c.description.clone(),
        critical: c.critical,
        enforce: c.enforce,
        config,
        own_warmup: c.warmup,
    })
}

/// All analyses loaded from a rules directory, swapped in as one unit.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub analyses: BTreeMap<String, Arc<AnalysisTemplate>>,
    /// Hash over all files' versions: changes whenever any rule changes.
    pub version: String,
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// The loaded analyses' names, comma-separated (for "no such analysis" messages).
    pub fn names(&self) -> String {
        self.analyses.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Loads every `*.yaml`/`*.yml` file under `paths` (files or directories), validating hook
/// and notifier names against `actions` when given. Returns every problem found.
pub fn load_rules(
    paths: &[PathBuf],
    actions: Option<&BTreeSet<String>>,
) -> Result<RuleSet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        match rule_files(p) {
            Ok(mut f) => files.append(&mut f),
            Err(d) => diags.push(d),
        }
    }
    let mut set = RuleSet::default();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in &files {
        match read_limited(f) {
            Ok(text) => match parse_rule_file(f, &text, actions) {
                Ok(t) => {
                    if let Some(prev) = origin.get(&t.name) {
                        diags.push(Diagnostic::new(
                            f,
                            1,
                            1,
                            format!(
                                "analysis `{}` is already defined in {}",
                                t.name,
                                prev.display()
                            ),
                        ));
                    } else {
                        origin.insert(t.name.clone(), f.clone());
                        set.analyses.insert(t.name.clone(), Arc::new(t));
                    }
                }
                Err(mut d) => diags.append(&mut d),
            },
            Err(d) => diags.push(d),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let joined: String = set
        .analyses
        .values()
        .map(|a| format!("{}={};", a.name, a.version))
        .collect();
    set.version = short_hash(joined.as_bytes());
    set.files = files;
    Ok(set)
}

fn loc<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// Parses and validates one rule file.
pub fn parse_rule_file(
    path: &Path,
    text: &str,
    actions: Option<&BTreeSet<String>>,
) -> Result<AnalysisTemplate, Vec<Diagnostic>> {
    if text.trim().is_empty() {
        return Err(vec![Diagnostic::file(
            path,
            "file is empty (expected an `analysis:` with `checks:`)",
        )]);
    }
    let raw: RawRuleFile = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| vec![Diagnostic::from_yaml(path, &e)])?;
    Validator {
        path,
        diags: Vec::new(),
    }
    .rule_file(raw, text, actions)
}

struct Validator<'a> {
    path: &'a Path,
    diags: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn err(&mut self, at: (u64, u64), msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(self.path, at.0, at.1, msg));
    }

    /// A number that must lie strictly between `lo` and `hi`: its value, or `default` when it
    /// is not given; out of range (or NaN), the error `message(value)` at its place and the
    /// default.
    fn between(
        &mut self,
        v: &Option<Spanned<f64>>,
        (lo, hi): (f64, f64),
        default: f64,
        message: impl Fn(f64) -> String,
    ) -> f64 {
        match v {
            Some(x) if !(x.value > lo && x.value < hi) => {
                self.err(loc(x), message(x.value));
                default
            }
            Some(x) => x.value,
            None => default,
        }
    }

    fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        default: Duration,
        field: &str,
        allow_zero: bool,
    ) -> Duration {
        let Some(s) = v else { return default };
        match units::parse_duration(&s.value) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.err(loc(s), format!("`{field}` must be longer than zero"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(loc(s), format!("`{field}`: {e}"));
                default
            }
        }
    }

    fn rule_file(
        mut self,
        raw: RawRuleFile,
        text: &str,
        actions: Option<&BTreeSet<String>>,
    ) -> Result<AnalysisTemplate, Vec<Diagnostic>> {
        let name = raw.analysis.value.trim().to_string();
        if !is_valid_name(&name) {
            self.err(
                loc(&raw.analysis),
                "analysis name must be 1-64 characters of letters, digits, `-`, `_` or `.`",
            );
        }
        let timing = self.timing(&raw);
        let alpha = self.between(&raw.alpha, (0.0, 0.5), 0.01, |v| {
            format!(
                "`alpha` must be in (0, 0.5) — it is the false-rollback budget, e.g. 0.01; got {v}"
            )
        });
        let traffic_tolerance = self.between(&raw.traffic_tolerance, (0.0, 1.0), 0.5, |_| {
            "`traffic_tolerance` must be in (0, 1): the relative deviation of the canary's traffic share that makes the verdict inconclusive".into()
        });

        let has_query = raw.checks.value.iter().any(|c| c.query.is_some());
        let params = self.params(raw.params, has_query);

        let default_enforce = raw
            .enforce
            .as_ref()
            .map_or(Enforcement::Rollback, |e| e.value);
        let mut checks = Vec::new();
        let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        if raw.checks.value.is_empty() {
            self.err(loc(&raw.checks), "an analysis needs at least one check");
        }
        for c in raw.checks.value {
            let cname = c.name.value.trim().to_string();
            if !is_valid_name(&cname) {
                self.err(
                    loc(&c.name),
                    "check name must be 1-64 characters of letters, digits, `-`, `_` or `.`",
                );
            }
            if let Some(prev) = seen.get(&cname) {
                self.err(
                    loc(&c.name),
                    format!("duplicate check name `{cname}` (first at line {})", prev.0),
                );
            } else {
                seen.insert(cname.clone(), loc(&c.name));
            }
            if let Some(tc) = self.check(c, cname, default_enforce, &params) {
                checks.push(tc);
            }
        }

        let mut list = |v, field| self.action_list(v, field, actions);
        let actions = Actions {
            on_fail: list(raw.on_fail, "on_fail"),
            on_no_data: list(raw.on_no_data, "on_no_data"),
            on_pass: list(raw.on_pass, "on_pass"),
            on_inconclusive: list(raw.on_inconclusive, "on_inconclusive"),
            on_step: list(raw.on_step, "on_step"),
        };
        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let template = AnalysisTemplate {
            name,
            description: raw.description,
            path: self.path.to_path_buf(),
            source: Arc::from(text),
            version: short_hash(text.as_bytes()),
            params,
            timing,
            alpha,
            traffic_tolerance,
            reload: raw.reload.unwrap_or_default(),
            actions,
            checks,
        };
        // Compile once with placeholder values so selector mistakes are found now, not when
        // the first deployment arrives.
        if let Err(e) = template.probe() {
            return Err(vec![Diagnostic::new(self.path, 1, 1, e.to_string())]);
        }
        Ok(template)
    }

    /// The analysis' timing, each duration checked against the others.
    fn timing(&mut self, raw: &RawRuleFile) -> Timing {
        let timing = Timing {
            interval: self.duration(&raw.interval, Duration::from_secs(10), "interval", false),
            warmup: self.duration(&raw.warmup, Duration::from_secs(60), "warmup", true),
            min_duration: self.duration(
                &raw.min_duration,
                Duration::from_secs(300),
                "min_duration",
                true,
            ),
            max_duration: self.duration(
                &raw.max_duration,
                Duration::from_secs(1800),
                "max_duration",
                false,
            ),
            no_data_grace: self.duration(
                &raw.no_data_grace,
                Duration::from_secs(60),
                "no_data_grace",
                true,
            ),
            at_limit: raw.at_max_duration.unwrap_or_default(),
        };
        if timing.interval < Duration::from_secs(1)
            && let Some(i) = &raw.interval
        {
            self.err(loc(i), "`interval` must be at least 1s");
        }
        if timing.max_duration < timing.min_duration
            && let Some(m) = raw.max_duration.as_ref().or(raw.min_duration.as_ref())
        {
            self.err(
                loc(m),
                "`max_duration` must not be shorter than `min_duration`",
            );
        }
        if timing.max_duration <= timing.warmup
            && let Some(m) = raw.max_duration.as_ref().or(raw.warmup.as_ref())
        {
            self.err(loc(m), "`max_duration` must be longer than `warmup`");
        }
        timing
    }

    /// Parameter names and defaults: names usable in `{{…}}`, defaults safe in a label value,
    /// and no name that a written `query:` fills itself.
    fn params(
        &mut self,
        raw: BTreeMap<String, Spanned<Option<ParamValue>>>,
        has_query: bool,
    ) -> BTreeMap<String, Option<String>> {
        let mut params = BTreeMap::new();
        for (k, v) in raw {
            if !is_valid_param(&k) {
                self.err(
                    loc(&v),
                    format!("parameter name `{k}` must be letters, digits and `_`"),
                );
            }
            if has_query && written::is_builtin(&k) {
                self.err(
                loc(&v),
                format!("parameter name `{k}` is taken: in `query:`, `{{{{{k}}}}}` is filled per arm by rollguard"),
            );
            }
            let at = loc(&v);
            let val = v.value.map(ParamValue::into_string);
            if let Some(d) = &val
                && !param_value_is_safe(d)
            {
                self.err(
                    at,
                    format!("default of `{k}` has a character not allowed in a label value"),
                );
            }
            params.insert(k, val);
        }
        params
    }

    /// An action list (`on_fail`, …): every name must be a hook or notifier of the daemon
    /// config, when the config is known.
    fn action_list(
        &mut self,
        v: Vec<Spanned<String>>,
        field: &str,
        actions: Option<&BTreeSet<String>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for a in v {
            if let Some(known) = actions
                && !known.contains(&a.value)
            {
                let mut d = Diagnostic::new(
                    self.path,
                    a.referenced.line(),
                    a.referenced.column(),
                    format!(
                        "`{field}` names `{}`, which is not a hook or notifier in the daemon config",
                        a.value
                    ),
                );
                d.hint = suggest(&a.value, known.iter().map(String::as_str));
                self.diags.push(d);
            }
            out.push(a.value);
        }
        out
    }

    /// Reports every field set that the check's kind does not take.
    fn misplaced(&mut self, kind: CheckKind, c: &RawCheck) {
        let allowed = kind.fields();
        let present: [(&str, Option<(u64, u64)>); 18] = [
            ("errors", c.errors.as_ref().map(loc)),
            ("requests", c.requests.as_ref().map(loc)),
            ("metric", c.metric.as_ref().map(loc)),
            ("divide_by", c.divide_by.as_ref().map(loc)),
            ("query", c.query.as_ref().map(loc)),
            ("start_time", c.start_time.as_ref().map(loc)),
            ("worse_when", c.worse_when.as_ref().map(loc)),
            ("tolerance", c.tolerance.as_ref().map(loc)),
            ("quantiles", c.quantiles.as_ref().map(loc)),
            ("max_extra_slope", c.max_extra_slope.as_ref().map(loc)),
            ("limit", c.limit.as_ref().map(loc)),
            ("min_time_to_limit", c.min_time_to_limit.as_ref().map(loc)),
            ("above", c.above.as_ref().map(loc)),
            ("max", c.max.as_ref().map(loc)),
            ("min", c.min.as_ref().map(loc)),
            ("for", c.for_.as_ref().map(loc)),
            ("confidence", c.confidence.as_ref().map(loc)),
            ("enforce", None),
        ];
        for (field, l) in present {
            if let Some(l) = l
                && !allowed.contains(&field)
            {
                self.err(
                    l,
                    format!(
                        "`{field}` does not apply to a `{kind}` check (it takes: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The check's selectors (or written query) by role, each checked; a missing required
    /// one is reported at the check's name.
    fn selectors(
        &mut self,
        kind: CheckKind,
        c: &RawCheck,
        at: (u64, u64),
        params: &BTreeMap<String, Option<String>>,
    ) -> Vec<(SelectorRole, String)> {
        let allowed = kind.fields();
        let mut selectors = Vec::new();
        let mut selector = |me: &mut Self,
                            role: SelectorRole,
                            field: &str,
                            v: &Option<Spanned<String>>,
                            required: bool| {
            match v {
                Some(s) => {
                    me.selector_ok(s, field, params);
                    selectors.push((role, s.value.clone()));
                }
                None if required && field == "metric" && allowed.contains(&"query") => me.err(
                    at,
                    format!("a `{kind}` check needs `metric` (a selector) or `query` (PromQL)"),
                ),
                None if required => me.err(at, format!("a `{kind}` check needs `{field}`")),
                None => {}
            }
        };
        match kind {
            CheckKind::Ratio => {
                selector(self, SelectorRole::Errors, "errors", &c.errors, true);
                selector(self, SelectorRole::Requests, "requests", &c.requests, true);
            }
            CheckKind::Threshold if c.errors.is_some() || c.requests.is_some() => {
                selector(self, SelectorRole::Errors, "errors", &c.errors, true);
                selector(self, SelectorRole::Requests, "requests", &c.requests, true);
                if let Some(m) = c.metric.as_ref().or(c.query.as_ref()) {
                    self.err(
                    loc(m),
                    "a threshold check takes either `errors`+`requests`, `metric` or `query`, not two of them",
                );
                }
            }
            _ if c.query.is_some() && allowed.contains(&"query") => {
                if let Some(q) = &c.query {
                    self.query_ok(q, params);
                    selectors.push((SelectorRole::Query, q.value.clone()));
                }
                if let Some(m) = c.metric.as_ref().or(c.divide_by.as_ref()) {
                    self.err(
                    loc(m),
                    format!("a `{kind}` check takes either `metric` (with `divide_by`) or `query`, not both"),
                );
                }
            }
            _ => {
                selector(self, SelectorRole::Metric, "metric", &c.metric, true);
                selector(
                    self,
                    SelectorRole::DivideBy,
                    "divide_by",
                    &c.divide_by,
                    false,
                );
            }
        }
        if kind == CheckKind::Growth
            && let Some(s) = &c.start_time
        {
            self.selector_ok(s, "start_time", params);
            selectors.push((SelectorRole::StartTime, s.value.clone()));
        }
        // The request counter of a level compared at equal load, or of a trend that follows
        // the traffic split.
        if matches!(kind, CheckKind::Gauge | CheckKind::Growth)
            && let Some(r) = &c.requests
        {
            if c.above.is_some() {
                self.err(
                    loc(r),
                    "`requests` compares a level at equal load per instance; a check with `above` counts instances beyond a value, which load does not scale",
                );
            }
            self.selector_ok(r, "requests", params);
            selectors.push((SelectorRole::Requests, r.value.clone()));
        }
        selectors
    }

    /// The allowed worsening, whose meaning (and so whose valid range) depends on the kind.
    fn tolerance(&mut self, kind: CheckKind, t: Option<&Spanned<f64>>) -> f64 {
        let default_tolerance = match kind {
            CheckKind::Ratio => 1.1,
            CheckKind::Histogram => 1.25,
            CheckKind::MannWhitney => 0.25,
            _ => 0.0,
        };
        match t {
            Some(t) => {
                let ok = match kind {
                    CheckKind::Ratio | CheckKind::Histogram => t.value >= 1.0 && t.value <= 100.0,
                    CheckKind::MannWhitney => t.value >= 0.0 && t.value < 10.0,
                    _ => t.value >= 0.0 && t.value.is_finite(),
                };
                if !ok {
                    let msg = match kind {
                        CheckKind::Ratio => {
                            "`tolerance` is the canary/baseline ratio allowed before a check counts as worse: at least 1.0 (e.g. 1.1 = 10 % worse)"
                        }
                        CheckKind::Histogram => {
                            "`tolerance` is the odds ratio of slow requests allowed: at least 1.0 (e.g. 1.25)"
                        }
                        CheckKind::MannWhitney => {
                            "`tolerance` is the fraction of the effect estimate (Kayenta uses 0.25)"
                        }
                        _ => "`tolerance` must be a non-negative number",
                    };
                    self.err(loc(t), msg);
                }
                t.value
            }
            None => default_tolerance,
        }
    }

    fn check(
        &mut self,
        c: RawCheck,
        name: String,
        default_enforce: Enforcement,
        params: &BTreeMap<String, Option<String>>,
    ) -> Option<TemplateCheck> {
        let kind = c.kind.value;
        let at = loc(&c.name);
        let before = self.diags.len();

        self.misplaced(kind, &c);
        let selectors = self.selectors(kind, &c, at, params);
        let tolerance = self.tolerance(kind, c.tolerance.as_ref());

        let quantiles = match &c.quantiles {
            Some(q) => {
                if q.value.is_empty() || q.value.iter().any(|x| !(*x > 0.0 && *x < 1.0)) {
                    self.err(loc(q), "`quantiles` must be a non-empty list of numbers in (0, 1), e.g. [0.5, 0.99]");
                }
                q.value.clone()
            }
            None => vec![0.5, 0.9, 0.99],
        };

        let max_extra_slope = match (&c.max_extra_slope, kind) {
            (Some(s), _) => match units::parse_rate(&s.value) {
                // 0 is allowed: "no extra growth at all" (the check can then fail but
                // hardly pass; its false-rollback rate holds there too).
                Ok(v) if v >= 0.0 => v,
                Ok(_) => {
                    self.err(loc(s), "`max_extra_slope` must not be negative");
                    0.0
                }
                Err(e) => {
                    self.err(loc(s), format!("`max_extra_slope`: {e}"));
                    0.0
                }
            },
            (None, CheckKind::Growth) => {
                self.err(at, "a `growth` check needs `max_extra_slope` (e.g. 1MiB/min): the extra growth per time that matters");
                0.0
            }
            _ => 0.0,
        };
        let limit = c
            .limit
            .as_ref()
            .and_then(|l| match units::parse_bytes(&l.value) {
                Ok(v) if v > 0.0 => Some(v),
                Ok(_) => {
                    self.err(loc(l), "`limit` must be positive");
                    None
                }
                Err(e) => {
                    self.err(loc(l), format!("`limit`: {e}"));
                    None
                }
            });
        let min_time_to_limit = self.duration(
            &c.min_time_to_limit,
            Duration::from_secs(3600),
            "min_time_to_limit",
            false,
        );
        let for_ = self.duration(&c.for_, Duration::ZERO, "for", true);
        let warmup = c
            .warmup
            .is_some()
            .then(|| self.duration(&c.warmup, Duration::ZERO, "warmup", true));
        if kind == CheckKind::Threshold && c.max.is_none() && c.min.is_none() {
            self.err(at, "a `threshold` check needs `max` or `min`");
        }
        if let (Some(lo), Some(hi)) = (&c.min, &c.max)
            && lo.value >= hi.value
        {
            self.err(loc(lo), "`min` must be below `max`");
        }
        for v in [&c.max, &c.min, &c.above].into_iter().flatten() {
            if !v.value.is_finite() {
                self.err(loc(v), "must be a finite number");
            }
        }
        let confidence = self.between(&c.confidence, (0.5, 1.0), 0.98, |_| {
            "`confidence` must be in (0.5, 1), e.g. 0.98".into()
        });

        if self.diags.len() > before {
            return None;
        }
        Some(TemplateCheck {
            name,
            kind,
            description: c.description,
            critical: c.critical.unwrap_or(true),
            enforce: c.enforce.map_or(default_enforce, |e| e.value),
            warmup,
            selectors,
            settings: Settings {
                worse_when: c.worse_when.map_or(Direction::Higher, |w| w.value),
                tolerance,
                quantiles,
                max_extra_slope,
                limit,
                min_time_to_limit,
                above: c.above.map(|a| a.value),
                max: c.max.map(|a| a.value),
                min: c.min.map(|a| a.value),
                for_,
                confidence,
            },
        })
    }

    /// A `{{name}}` that is neither a declared parameter nor one of `builtins`, with a hint.
    fn unknown_placeholder(
        &mut self,
        at: (u64, u64),
        field: &str,
        name: &str,
        params: &BTreeMap<String, Option<String>>,
        builtins: &[&str],
    ) {
        let mut msg =
            format!("`{field}` uses `{{{{{name}}}}}`, which is not declared under `params:`");
        if !builtins.is_empty() {
            let list: Vec<String> = builtins.iter().map(|b| format!("`{{{{{b}}}}}`")).collect();
            msg.push_str(&format!(" (nor is it one of {})", list.join(", ")));
        }
        let mut d = Diagnostic::new(self.path, at.0, at.1, msg);
        d.hint = suggest(
            name,
            params
                .keys()
                .map(String::as_str)
                .chain(builtins.iter().copied()),
        );
        self.diags.push(d);
    }

    /// Checks a written query: its placeholders against the declared parameters, that it
    /// places the arm's matchers, and (when every parameter it uses outside quotes has a
    /// default) its PromQL syntax and result type. Syntax that depends on a value only a
    /// deployment gives is checked when the deployment is registered.
    fn query_ok(&mut self, s: &Spanned<String>, params: &BTreeMap<String, Option<String>>) {
        let (line, col) = loc(s);
        let found = written::placeholders(&s.value);
        let mut ok = true;
        for p in &found {
            if !written::is_builtin(&p.name) && !params.contains_key(&p.name) {
                ok = false;
                self.unknown_placeholder(
                    at_offset((line, col), &s.value, p.offset),
                    "query",
                    &p.name,
                    params,
                    &[written::ARM, written::ROLE],
                );
            }
        }
        if !found.iter().any(|p| p.name == written::ARM) {
            ok = false;
            self.err(
                (line, col),
                r#"`query` must place `{{arm}}` inside its selectors' braces (e.g. `sum(rate(http_requests_total{ {{arm}}, code=~"5.." }[1m]))`): without it both arms read the same series"#,
            );
        }
        let decidable = found.iter().all(|p| {
            p.quoted || written::is_builtin(&p.name) || matches!(params.get(&p.name), Some(Some(_)))
        });
        if !ok || !decidable {
            return;
        }
        let probe = written::fill_params(&s.value, |n| probe_value(params, n))
            .and_then(|text| written::check(&text));
        if let Err(e) = probe {
            self.err((line, col), format!("`query`: {e}"));
        }
    }

    /// Checks placeholders against the declared parameters and the selector's syntax with
    /// placeholder values, reporting the column inside the YAML value.
    fn selector_ok(
        &mut self,
        s: &Spanned<String>,
        field: &str,
        params: &BTreeMap<String, Option<String>>,
    ) {
        let (line, col) = loc(s);
        let mut ok = true;
        for (name, offset) in template::placeholders(&s.value) {
            if !params.contains_key(&name) {
                ok = false;
                self.unknown_placeholder(
                    at_offset((line, col), &s.value, offset),
                    field,
                    &name,
                    params,
                    &[],
                );
            }
        }
        if !ok {
            return;
        }
        let probe = template::render(&s.value, |n| probe_value(params, n));
        if let Ok(text) = probe
            && let Err(e) = Selector::parse(&text)
        {
            // The column is exact when no placeholder precedes the error.
            self.err(
                (line, col + e.column as u64),
                format!("`{field}`: invalid selector: {}", e.message),
            );
        }
    }
}

/// Where byte `offset` of a YAML string value that starts at `start` is in the file. A value
/// over several lines is a block scalar (`query: |`), whose lines all start at the first
/// line's column.
fn at_offset(start: (u64, u64), text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    match before.rfind('\n') {
        None => (start.0, start.1 + before.chars().count() as u64),
        Some(nl) => (
            start.0 + before.matches('\n').count() as u64,
            start.1 + before[nl + 1..].chars().count() as u64,
        ),
    }
}

/// The value a placeholder takes when a rule is checked on its own: its default, or `x`.
fn probe_value(params: &BTreeMap<String, Option<String>>, name: &str) -> Option<String> {
    Some(
        params
            .get(name)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "x".into()),
    )
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_valid_param(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"analysis: http-service
description: test
params:
  job: api
  env: ~
interval: 10s
warmup: 30s
min_duration: 2m
max_duration: 10m
alpha: 0.01
checks:
  - name: error-ratio
    kind: ratio
    errors: 'http_requests_total{job="{{job}}",env="{{env}}",code=~"5.."}'
    requests: 'http_requests_total{job="{{job}}",env="{{env}}"}'
    tolerance: 1.1
  - name: latency
    kind: histogram
    metric: 'http_request_duration_seconds{job="{{job}}"}'
    quantiles: [0.5, 0.99]
  - name: memory
    kind: growth
    metric: 'process_resident_memory_bytes{job="{{job}}"}'
    max_extra_slope: 1MiB/min
    enforce: shadow
on_fail: [rollback, chat]
"#;

    fn actions() -> BTreeSet<String> {
        ["rollback", "chat", "promote"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn errs(text: &str) -> Vec<String> {
        match parse_rule_file(Path::new("r.yaml"), text, Some(&actions())) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn good_file_compiles_and_instantiates() {
        let t = parse_rule_file(Path::new("r.yaml"), GOOD, Some(&actions())).unwrap();
        assert_eq!(t.name, "http-service");
        assert_eq!(t.timing.min_duration, Duration::from_secs(120));
        let mut p = BTreeMap::new();
        assert!(matches!(t.instantiate(&p), Err(ParamError::Missing { .. })));
        p.insert("env".to_string(), "prod".to_string());
        let spec = t.instantiate(&p).unwrap();
        assert_eq!(spec.checks.len(), 3);
        assert_eq!(spec.queries.len(), 4);
        assert_eq!(spec.acting_checks(), 2);
        let MetricQuery::Series(q) = &spec.queries[0] else {
            panic!("{:?}", spec.queries[0])
        };
        assert_eq!(q.selector.matchers[1].value, "prod");
        p.insert("env".to_string(), "x\",job=~\".*".to_string());
        assert!(matches!(t.instantiate(&p), Err(ParamError::Unsafe { .. })));
        p.insert("evn".to_string(), "a".to_string());
        p.remove("env");
        assert!(
            t.instantiate(&p)
                .unwrap_err()
                .to_string()
                .contains("did you mean `env`")
        );
    }

    #[test]
    fn typo_is_located_with_hint() {
        let e = errs(&GOOD.replace("    tolerance: 1.1", "    tolerence: 1.1"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("r.yaml:16:5: unknown field `tolerence`"),
            "{e:?}"
        );
        assert!(e[0].contains("did you mean `tolerance`?"), "{e:?}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let bad = GOOD
            .replace("alpha: 0.01", "alpha: 1.5")
            .replace("on_fail: [rollback, chat]", "on_fail: [rollbak, chat]")
            .replace("quantiles: [0.5, 0.99]", "quantiles: [0.5, 99]")
            .replace(
                "{{job}}\",env=\"{{env}}\",code",
                "{{jbo}}\",env=\"{{env}}\",code",
            )
            .replace("max_duration: 10m", "max_duration: -5m");
        let e = errs(&bad);
        assert_eq!(e.len(), 5, "{e:#?}");
        // Each error: how it starts, and what else it says.
        let wants: [(&str, &[&str]); 5] = [
            ("r.yaml:9:15: `max_duration`", &[]),
            ("r.yaml:10:8: `alpha`", &[]),
            ("", &["`{{jbo}}`", "did you mean `job`"]),
            ("r.yaml:20:16: `quantiles`", &[]),
            (
                "r.yaml:26:11: `on_fail` names `rollbak`",
                &["did you mean `rollback`"],
            ),
        ];
        for (start, says) in wants {
            let found = e
                .iter()
                .any(|m| m.starts_with(start) && says.iter().all(|s| m.contains(s)));
            assert!(found, "{start} {says:?}: {e:#?}");
        }
    }

    #[test]
    fn a_level_compared_at_equal_load_reads_the_request_counter() {
        let gauge = |extra: &str| {
            format!(
                "analysis: pool\ninterval: 10s\nmax_duration: 30m\nchecks:\n  - name: held\n    kind: gauge\n    metric: 'in_use'\n    requests: 'http_requests_total'\n{extra}"
            )
        };
        let t = parse_rule_file(Path::new("r.yaml"), &gauge(""), None).unwrap();
        let spec = t.instantiate(&BTreeMap::new()).unwrap();
        let CheckConfig::Gauge {
            requests: Some(r), ..
        } = spec.checks[0].config
        else {
            panic!("{:?}", spec.checks[0].config);
        };
        assert_eq!(
            spec.queries[r],
            MetricQuery::series(
                QueryKind::Counter,
                Selector::parse("http_requests_total").unwrap()
            )
        );
        // Counting instances beyond a value is not scaled by load: said, at the field.
        let e = errs(&gauge("    above: 0.9\n"));
        assert!(
            e[0].starts_with("r.yaml:8:15: `requests` compares a level at equal load"),
            "{e:?}"
        );
        // A growth check follows the split with the same counter.
        let growth =
            gauge("    max_extra_slope: 1MiB/min\n").replace("kind: gauge", "kind: growth");
        let t = parse_rule_file(Path::new("r.yaml"), &growth, None).unwrap();
        let spec = t.instantiate(&BTreeMap::new()).unwrap();
        let CheckConfig::Growth {
            requests: Some(g), ..
        } = spec.checks[0].config
        else {
            panic!("{:?}", spec.checks[0].config);
        };
        assert_eq!(spec.queries[g], spec.queries[r]);
    }

    #[test]
    fn misplaced_field_and_bad_selector() {
        let bad = GOOD.replace(
            "    quantiles: [0.5, 0.99]",
            "    quantiles: [0.5, 0.99]\n    max_extra_slope: 1MiB/min",
        );
        let e = errs(&bad);
        assert!(
            e[0].contains("`max_extra_slope` does not apply to a `histogram` check"),
            "{e:?}"
        );
        let bad = GOOD.replace(r#"code=~"5..""#, r#"code~"5..""#);
        let e = errs(&bad);
        assert!(e[0].contains("invalid selector"), "{e:?}");
    }

    #[test]
    fn duplicate_names_and_empty() {
        let bad = GOOD.replace("name: latency", "name: error-ratio");
        assert!(errs(&bad)[0].contains("duplicate check name `error-ratio` (first at line 12)"));
        assert!(errs("")[0].contains("file is empty"));
        assert!(errs("analysis: x\nchecks: []\n")[0].contains("at least one check"));
    }

    const WRITTEN: &str = r#"analysis: written
params:
  window: 1m
  job: ~
checks:
  - name: error-rate
    kind: threshold
    query: 'sum(rate(http_requests_total{ {{arm}}, job="{{job}}", code=~"5.." }[{{window}}])) / sum(rate(http_requests_total{ {{arm}}, job="{{job}}" }[{{window}}]))'
    max: 0.05
  - name: p99
    kind: gauge
    query: 'histogram_quantile(0.99, sum by (le) (rate(lat_bucket{{{arm}}}[{{window}}])))'
"#;

    #[test]
    fn written_queries_compile_with_params_and_keep_the_arm() {
        let t = parse_rule_file(Path::new("w.yaml"), WRITTEN, None).unwrap();
        let p = BTreeMap::from([("job".to_string(), "api".to_string())]);
        let spec = t.instantiate(&p).unwrap();
        assert_eq!(spec.written_query_check(), Some("error-rate"));
        let MetricQuery::Promql(q) = &spec.queries[1] else {
            panic!("{:?}", spec.queries)
        };
        assert_eq!(
            q.text,
            "histogram_quantile(0.99, sum by (le) (rate(lat_bucket{{{arm}}}[1m])))"
        );
        // A window that stands outside quotes must be a word, and valid where it stands.
        let mut p2 = p.clone();
        p2.insert("window".into(), "1m]) or vector(0) #".into());
        let e = t.instantiate(&p2).unwrap_err().to_string();
        assert!(e.contains("outside quotes"), "{e}");
        p2.insert("window".into(), "banana".into());
        let e = t.instantiate(&p2).unwrap_err().to_string();
        assert!(
            e.contains("check `error-rate`") && e.contains("invalid PromQL"),
            "{e}"
        );
        // Selector-only analyses do not need Prometheus.
        let g = parse_rule_file(Path::new("r.yaml"), GOOD, Some(&actions())).unwrap();
        let env = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        assert_eq!(g.instantiate(&env).unwrap().written_query_check(), None);
    }

    #[test]
    fn written_query_mistakes_are_located() {
        let e = errs(&WRITTEN.replace("[{{window}}])) / sum", "[{{window}}]) / sum"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("r.yaml:8:12: `query`: invalid PromQL"),
            "{e:?}"
        );
        let e = errs(&WRITTEN.replace("lat_bucket{{{arm}}}", "lat_bucket"));
        assert!(
            e[0].starts_with("r.yaml:12:12: `query` must place `{{arm}}`"),
            "{e:?}"
        );
        let e = errs(&WRITTEN.replace("[{{window}}])))'", "[{{windw}}])))'"));
        assert!(
            e[0].contains("`{{windw}}`") && e[0].contains("did you mean `window`"),
            "{e:?}"
        );
        // In a block scalar the line and column are those of the placeholder itself.
        let e = errs(&WRITTEN.replace(
            "    query: 'histogram_quantile(0.99, sum by (le) (rate(lat_bucket{{{arm}}}[{{window}}])))'",
            "    query: |\n      histogram_quantile(0.99,\n        sum by (le) (rate(lat_bucket{{{arm}}}[{{windw}}])))",
        ));
        assert!(
            e[0].starts_with("r.yaml:14:47: `query` uses `{{windw}}`"),
            "{e:?}"
        );
        let e = errs(&WRITTEN.replace("kind: gauge", "kind: ratio"));
        assert!(
            e[0].contains("`query` does not apply to a `ratio` check"),
            "{e:?}"
        );
        let e = errs(&WRITTEN.replace("    max: 0.05", "    max: 0.05\n    metric: x"));
        assert!(e[0].contains("or `query`, not both"), "{e:?}");
        let e = errs(&WRITTEN.replace("  window: 1m", "  window: 1m\n  role: x"));
        assert!(e[0].contains("parameter name `role` is taken"), "{e:?}");
        let e = errs(&WRITTEN.replace(
            "histogram_quantile(0.99, sum by (le) (rate(lat_bucket{{{arm}}}[{{window}}])))",
            "lat_bucket{{{arm}}}[{{window}}]",
        ));
        assert!(e[0].contains("range vector"), "{e:?}");
    }
}

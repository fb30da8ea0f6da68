//! `rollguard backtest`: replays recorded samples through the same judge the daemon runs,
//! with simulated time, so an SRE can see what a rule would have decided — and when — before
//! trusting it.
//!
//! Input: OpenMetrics text with a timestamp on every sample (what `promtool tsdb
//! create-blocks-from openmetrics` takes), one file per instance; several files per arm are
//! summed like `sum by (role)`. Text-format (0.0.4) files with millisecond timestamps work too.
//! The judge is evaluated every rule `interval` from the first sample; at each evaluation time
//! every series takes its latest sample no older than the lookback (Prometheus' instant
//! vector semantics), so missing scrapes and restarts behave as they do live.
//!
//! With `--prometheus URL` or `--config FILE` it replays a past window from a
//! Prometheus-compatible server instead: the daemon's own queries, sent as range queries whose
//! steps are the rule's interval (see [`replay_prometheus`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::config::PrometheusConfig;
use crate::expo::{self, Format};
use crate::judge::{CheckReport, Judge, Step, Verdict};
use crate::query::{Arms, Frame, LOOKBACK_MS};
use crate::rules::{AnalysisSpec, load_rules};
use crate::selector::{Matcher, parse_matchers};
use crate::series::{ArmCollector, SeriesRef, TargetSamples};
use crate::source::promql::{self, PromClient};

#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// Rule file or directory.
    #[arg(long)]
    pub rules: PathBuf,
    /// Analysis name.
    #[arg(long)]
    pub analysis: String,
    /// Parameter overrides, KEY=VALUE.
    #[arg(long = "param", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Recorded files of the baseline (one per instance).
    #[arg(long, num_args = 1.., required_unless_present_any = ["prometheus", "config"])]
    pub baseline: Vec<PathBuf>,
    /// Recorded files of the canary (one per instance).
    #[arg(long, num_args = 1.., required_unless_present_any = ["prometheus", "config"])]
    pub canary: Vec<PathBuf>,
    /// Replay a past window from a Prometheus-compatible server at this base URL instead of
    /// files.
    #[arg(long, conflicts_with_all = ["baseline", "canary", "config"])]
    pub prometheus: Option<String>,
    /// Replay from the server in this daemon config's `prometheus:` section (with its
    /// credentials, tenant headers and parameters).
    #[arg(long, conflicts_with_all = ["baseline", "canary"])]
    pub config: Option<PathBuf>,
    /// With a server: label matchers of the baseline, as a deployment gives them.
    #[arg(long, requires = "canary_selector")]
    pub baseline_selector: Option<String>,
    /// With a server: label matchers of the canary.
    #[arg(long, requires = "baseline_selector")]
    pub canary_selector: Option<String>,
    /// With a server: read the baseline this long before the canary (a bake), e.g. `1d`.
    #[arg(long)]
    pub baseline_offset: Option<String>,
    /// With a server: start of the window (RFC 3339 such as 2026-11-27T14:00:00Z, or Unix
    /// seconds).
    #[arg(long)]
    pub from: Option<String>,
    /// With a server: end of the window (default: now); the window never runs past the
    /// rule's max_duration.
    #[arg(long)]
    pub until: Option<String>,
    /// Expected canary share of requests in percent (enables the traffic-split check).
    #[arg(long)]
    pub canary_weight: Option<f64>,
    /// How to print the replay.
    #[arg(long, value_enum, default_value_t = BacktestFormat::Text)]
    pub format: BacktestFormat,
}

/// `rollguard backtest --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BacktestFormat {
    /// One line per check state change, then the verdict.
    Text,
    /// One JSON object with every interval's checks and the verdict.
    Json,
    /// One self-contained HTML file (inline stylesheet and SVG, no script, no requests):
    /// the status page's charts of every check, with the decision marked.
    Html,
}

pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

/// One series of a recorded file.
#[derive(Debug)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value), sorted by time.
    pub points: Vec<(i64, f64)>,
}

/// A recorded instance.
#[derive(Debug)]
pub struct Recording {
    pub name: String,
    pub series: Vec<Series>,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// Why a recording cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct InputError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// Parses one recorded file. Every malformed line and every sample without a timestamp is an
/// error naming the file and line.
pub fn parse_recording(name: &str, text: &str) -> Result<Recording, InputError> {
    let format = if text.lines().any(|l| l.trim() == "# EOF") || text.contains("# UNIT ") {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let exp = expo::parse(text, format);
    if let Some(e) = exp.errors.first() {
        return Err(InputError {
            path: name.into(),
            line: e.line,
            message: format!(
                "{} ({} malformed lines in all)",
                e.message,
                exp.errors.len()
            ),
        });
    }
    let mut index: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
    let mut series: Vec<Series> = Vec::new();
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    for s in &exp.samples {
        let Some(ts) = s.timestamp_ms else {
            return Err(InputError {
                path: name.into(),
                line: s.line,
                message: format!(
                    "sample `{}` has no timestamp (recorded files need one on every sample)",
                    s.name
                ),
            });
        };
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect();
        labels.sort();
        let key = (s.name.to_string(), labels);
        let i = *index.entry(key.clone()).or_insert_with(|| {
            series.push(Series {
                name: key.0.clone(),
                labels: key.1.clone(),
                points: Vec::new(),
            });
            series.len() - 1
        });
        series[i].points.push((ts, s.value));
        first = Some(first.map_or(ts, |f| f.min(ts)));
        last = Some(last.map_or(ts, |l| l.max(ts)));
    }
    for s in &mut series {
        s.points.sort_by_key(|p| p.0);
    }
    if series.is_empty() {
        return Err(InputError {
            path: name.into(),
            line: 0,
            message: "no samples".into(),
        });
    }
    Ok(Recording {
        name: name.into(),
        series,
        first_ms: first,
        last_ms: last,
    })
}

/// A series' value at an evaluation time.
struct At<'a> {
    series: &'a Series,
    value: f64,
    timestamp_ms: i64,
}

impl SeriesRef for At<'_> {
    fn name(&self) -> &str {
        &self.series.name
    }
    fn label(&self, name: &str) -> Option<&str> {
        self.series
            .labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn labels(&self) -> Vec<(&str, &str)> {
        self.series
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    fn value(&self) -> f64 {
        self.value
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Some(self.timestamp_ms)
    }
}

fn at(rec: &Recording, t_ms: i64) -> Vec<At<'_>> {
    rec.series
        .iter()
        .filter_map(|s| {
            let i = s.points.partition_point(|p| p.0 <= t_ms);
            let p = s.points.get(i.checked_sub(1)?)?;
            (t_ms - p.0 <= LOOKBACK_MS).then_some(At {
                series: s,
                value: p.1,
                timestamp_ms: p.0,
            })
        })
        .collect()
}

/// The outcome of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub verdict: String,
    /// Seconds since the first sample when the verdict was reached (null if never).
    pub decided_at_s: Option<f64>,
    pub reason: String,
    pub checks: Vec<JsonCheck>,
    #[serde(skip)]
    pub timeline: Vec<Step>,
}

/// One check in the JSON output.
#[derive(Clone, Debug, Serialize)]
pub struct JsonCheck {
    pub name: String,
    pub kind: String,
    pub outcome: String,
    pub evidence: Option<f64>,
    pub effect: Option<f64>,
    pub effect_lower: Option<f64>,
    pub effect_upper: Option<f64>,
    pub effect_measure: Option<String>,
    pub explanation: String,
}

fn finite(x: f64) -> Option<f64> {
    if x.is_nan() {
        None
    } else {
        Some(x.clamp(-1e300, 1e300))
    }
}

impl JsonCheck {
    fn from(r: &CheckReport) -> JsonCheck {
        JsonCheck {
            name: r.name.clone(),
            kind: r.kind.to_string(),
            outcome: r.outcome.as_str().into(),
            evidence: finite(r.evidence),
            effect: r.effect.as_ref().and_then(|e| finite(e.estimate)),
            effect_lower: r.effect.as_ref().and_then(|e| finite(e.lower)),
            effect_upper: r.effect.as_ref().and_then(|e| finite(e.upper)),
            effect_measure: r.effect.as_ref().map(|e| e.measure.clone()),
            explanation: r.explanation.clone(),
        }
    }
}

/// Replays recordings through the judge. Stops at the first terminal verdict; if the data
/// ends first the verdict is `inconclusive` with `decided_at_s` null.
pub fn replay(
    spec: &AnalysisSpec,
    recs: Arms<&[Recording]>,
    expected_share: Option<f64>,
) -> Outcome {
    let all = recs.baseline.iter().chain(recs.canary.iter());
    let start = all.clone().filter_map(|r| r.first_ms).min().unwrap_or(0);
    let end = all.filter_map(|r| r.last_ms).max().unwrap_or(0);
    let interval_ms = spec.timing.interval.as_millis().max(1) as i64;
    let mut cols = Arms {
        baseline: ArmCollector::new(),
        canary: ArmCollector::new(),
    };
    let frames = (0..)
        .map(|k| start + k * interval_ms)
        .take_while(|t_ms| *t_ms <= end)
        .map(|t_ms| {
            let collect = |col: &mut ArmCollector, arm: &[Recording]| {
                let views: Vec<Vec<At<'_>>> = arm.iter().map(|r| at(r, t_ms)).collect();
                let targets: Vec<TargetSamples<'_, At<'_>>> = arm
                    .iter()
                    .zip(&views)
                    .map(|(r, v)| TargetSamples {
                        target: r.name.as_str(),
                        samples: if v.is_empty() {
                            Err("no fresh samples".to_string())
                        } else {
                            Ok(v.as_slice())
                        },
                    })
                    .collect();
                col.collect(&spec.queries, &targets)
            };
            let b = collect(&mut cols.baseline, recs.baseline);
            let c = collect(&mut cols.canary, recs.canary);
            crate::series::frame(&mut cols, &spec.queries, b, c)
        });
    judge_frames(
        spec,
        expected_share,
        frames,
        "the recording ended before a decision",
    )
}

/// Runs the judge on one frame per interval (the first at analysis time zero), stopping at
/// the first terminal verdict.
fn judge_frames(
    spec: &AnalysisSpec,
    expected_share: Option<f64>,
    frames: impl Iterator<Item = Frame>,
    ended: &str,
) -> Outcome {
    let mut judge = Judge::new(spec);
    let mut timeline = Vec::new();
    for (k, frame) in frames.enumerate() {
        let t = spec.timing.interval * k as u32;
        let step = judge.step(spec, t, &frame, expected_share);
        let terminal = step.verdict.is_terminal();
        timeline.push(step);
        if terminal {
            break;
        }
    }
    let last = timeline.last();
    let checks = last
        .map(|s| s.checks.iter().map(JsonCheck::from).collect())
        .unwrap_or_default();
    let (verdict, decided, reason) = match last.map(|s| &s.verdict) {
        Some(
            v @ (Verdict::Rollback { .. } | Verdict::Promote { .. } | Verdict::Inconclusive { .. }),
        ) => (
            v.name().to_string(),
            last.map(|s| s.t.as_secs_f64()),
            v.reason().to_string(),
        ),
        _ => ("inconclusive".to_string(), None, ended.to_string()),
    };
    Outcome {
        verdict,
        decided_at_s: decided,
        reason,
        checks,
        timeline,
    }
}

/// Replays a past window from a Prometheus-compatible server: the daemon's own per-interval
/// path (the same queries, the same collector, one evaluation time per interval for both
/// arms), with one range query per selector and arm instead of one instant query per
/// interval.
pub async fn replay_prometheus(
    spec: &AnalysisSpec,
    client: &PromClient,
    arms: &Arms<Vec<Matcher>>,
    (start_ms, end_ms): (i64, i64),
    baseline_offset_ms: i64,
    expected_share: Option<f64>,
) -> Outcome {
    let step = spec.timing.interval.as_millis().max(1) as i64;
    let (b, c) = tokio::join!(
        client.fetch_arm_range(
            &spec.queries,
            &arms.baseline,
            "baseline",
            (
                start_ms - baseline_offset_ms,
                end_ms - baseline_offset_ms,
                step
            )
        ),
        client.fetch_arm_range(
            &spec.queries,
            &arms.canary,
            "canary",
            (start_ms, end_ms, step)
        )
    );
    let mut cols = Arms {
        baseline: ArmCollector::new(),
        canary: ArmCollector::new(),
    };
    let frames = b.iter().zip(&c).map(|((_, b), (_, c))| {
        let b = promql::collect(&mut cols.baseline, &spec.queries, b);
        let c = promql::collect(&mut cols.canary, &spec.queries, c);
        crate::series::frame(&mut cols, &spec.queries, b, c)
    });
    judge_frames(
        spec,
        expected_share,
        frames,
        "the window ended before a decision",
    )
}

/// A time given on the command line: RFC 3339 or Unix seconds; milliseconds since the epoch.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0) as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map(crate::source::scrape::epoch_ms)
        .map_err(|e| {
            format!("`{s}` is neither RFC 3339 (2026-11-27T14:00:00Z) nor Unix seconds: {e}")
        })
}

/// `backtest --prometheus/--config`: the client, the arms and the window from the arguments.
fn run_prometheus(args: &BacktestArgs, spec: &AnalysisSpec) -> Result<Outcome, String> {
    let cfg = match (&args.prometheus, &args.config) {
        (Some(url), _) => PrometheusConfig::new(url),
        (None, Some(path)) => crate::config::load_config(path)
            .map_err(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?
            .prometheus
            .ok_or_else(|| format!("{} has no `prometheus:` section", path.display()))?,
        (None, None) => return Err("give recorded files, --prometheus or --config".into()),
    };
    let (Some(b), Some(c)) = (&args.baseline_selector, &args.canary_selector) else {
        return Err(
            "replaying from a server needs --baseline-selector and --canary-selector".into(),
        );
    };
    let matchers =
        |s: &str, which: &str| parse_matchers(s).map_err(|e| format!("--{which}-selector: {e}"));
    let arms = Arms::new(matchers(b, "baseline")?, matchers(c, "canary")?);
    let from = parse_time(
        args.from
            .as_deref()
            .ok_or("replaying from a server needs --from")?,
    )?;
    let now = crate::source::scrape::epoch_ms(std::time::SystemTime::now());
    let until = match &args.until {
        Some(u) => parse_time(u)?,
        None => now,
    }
    .min(from + spec.timing.max_duration.as_millis() as i64);
    if until <= from {
        return Err("--until must be after --from".into());
    }
    let offset = match &args.baseline_offset {
        Some(o) => crate::units::parse_duration(o)
            .map_err(|e| format!("--baseline-offset: {e}"))?
            .as_millis() as i64,
        None => 0,
    };
    let client = PromClient::new(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // An unreachable server is a failed backtest, not a window of source errors.
    rt.block_on(client.instant("vector(1)"))
        .map_err(|e| format!("the server did not answer a test query: {e}"))?;
    let share = args.canary_weight.map(|w| w / 100.0);
    Ok(rt.block_on(replay_prometheus(
        spec,
        &client,
        &arms,
        (from, until),
        offset,
        share,
    )))
}

fn load(paths: &[PathBuf]) -> Result<Vec<Recording>, InputError> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read(p).map_err(|e| InputError {
                path: p.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            })?;
            let text = String::from_utf8(text).map_err(|e| InputError {
                path: p.display().to_string(),
                line: 0,
                message: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            })?;
            parse_recording(&p.display().to_string(), &text)
        })
        .collect()
}

/// Loads rules and recordings and runs the replay.
pub fn run(args: &BacktestArgs) -> Result<Outcome, String> {
    let rules = load_rules(std::slice::from_ref(&args.rules), None).map_err(|d| {
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let template = rules.analyses.get(&args.analysis).ok_or_else(|| {
        format!(
            "no analysis `{}` in {} (have: {})",
            args.analysis,
            args.rules.display(),
            rules.names()
        )
    })?;
    let params: BTreeMap<String, String> = args.params.iter().cloned().collect();
    let spec = template.instantiate(&params).map_err(|e| e.to_string())?;
    if args.prometheus.is_some() || args.config.is_some() {
        return run_prometheus(args, &spec);
    }
    if let Some(check) = spec.written_query_check() {
        return Err(format!(
            "check `{check}` is a written PromQL `query:`; recorded files hold raw series, and only a Prometheus server can evaluate PromQL (write the check with selectors to backtest it)"
        ));
    }
    let b = load(&args.baseline).map_err(|e| e.to_string())?;
    let c = load(&args.canary).map_err(|e| e.to_string())?;
    let share = args.canary_weight.map(|w| w / 100.0);
    Ok(replay(
        &spec,
        Arms {
            baseline: &b,
            canary: &c,
        },
        share,
    ))
}

/// `rollguard backtest`: exit 0 for any verdict, 1 for bad input.
pub fn main(args: BacktestArgs) -> ExitCode {
    match run(&args) {
        Ok(out) => {
            match args.format {
                BacktestFormat::Json => {
                    println!("{}", serde_json::to_string(&out).unwrap_or_default());
                }
                BacktestFormat::Html => print!(
                    "{}",
                    render_html(
                        &out,
                        &format!("backtest of {}", args.analysis),
                        &describe_input(&args)
                    )
                ),
                BacktestFormat::Text => print!("{}", render_timeline(&out)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollguard backtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The human timeline: one line per check state change, then the verdict.
pub fn render_timeline(out: &Outcome) -> String {
    let mut s = String::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for step in &out.timeline {
        for c in &step.checks {
            let o = c.outcome.as_str().to_string();
            if last.get(&c.name) != Some(&o) || step.verdict.is_terminal() {
                s.push_str(&format!(
                    "{:>7}  {:<18} {:<12} {}\n",
                    crate::units::format_duration(step.t),
                    c.name,
                    o,
                    c.explanation
                ));
                last.insert(c.name.clone(), o);
            }
        }
    }
    let at = out
        .decided_at_s
        .map(|d| {
            format!(
                " at {}",
                crate::units::format_duration(Duration::from_secs_f64(d))
            )
        })
        .unwrap_or_default();
    s.push_str(&format!(
        "verdict: {}{at}: {}\n",
        out.verdict.to_uppercase(),
        out.reason
    ));
    s
}

/// One line saying what was replayed, for the report's subtitle.
fn describe_input(args: &BacktestArgs) -> String {
    let names = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| {
                f.file_name()
                    .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = match (&args.prometheus, &args.config) {
        (Some(url), _) => format!("from {}", crate::net::redact_url(url)),
        (None, Some(c)) => format!("from the Prometheus of {}", c.display()),
        (None, None) => format!(
            "baseline {}; canary {}",
            names(&args.baseline),
            names(&args.canary)
        ),
    };
    format!("rules {} · {source}", args.rules.display())
}

/// The replay as one self-contained HTML page: the same charts as the status page (both
/// arms and the evidence against its threshold per check, the decision marked), built from
/// the replayed steps the same way the daemon builds a deployment's.
pub fn render_html(out: &Outcome, title: &str, subtitle: &str) -> String {
    let mut chart = crate::chart::History::default();
    for step in &out.timeline {
        chart.record(step);
    }
    let last = out.timeline.last();
    let latest: Vec<CheckReport> = last
        .map(|s| s.checks.iter().chain(s.traffic.iter()).cloned().collect())
        .unwrap_or_default();
    crate::status::report_page(&crate::status::ReportView {
        title,
        subtitle,
        verdict: &out.verdict,
        reason: &out.reason,
        chart: &chart,
        latest: &latest,
        end_ms: last.map_or(0, |s| u64::try_from(s.t.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// Convenience for tests and benches: in-memory texts.
pub fn recordings(texts: &[String], prefix: &str) -> Result<Vec<Recording>, InputError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| parse_recording(&format!("{prefix}-{i}"), t))
        .collect()
}

//! The judge: a pure state machine that turns each interval's metrics into an outcome per
//! check and a verdict for the analysis.
//!
//! No I/O, no clock: the caller passes the analysis time `t` and the [`Frame`] of fetched
//! values. The daemon, `rollguard backtest` and `rollguard demo` all drive this same code, and
//! its whole state serialises (the daemon persists it every interval and resumes it after a
//! restart).
//!
//! Each check is an anytime-valid test of "the canary is worse than the baseline beyond the
//! tolerance", so it may be looked at after every scrape. A check fails when its evidence
//! (an e-value) reaches `checks / alpha` (Bonferroni over the acting checks); by Ville's
//! inequality the chance that any check of a good canary ever gets there is at most alpha.
//! Missing data and source errors are outcomes of their own and never count as evidence
//! either way.

mod change;
pub mod fmt;
mod gauge;
mod growth;
mod histogram;
mod load;
mod mann_whitney;
mod ratio;
mod threshold;
mod traffic;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::query::{Arms, Fetch, Frame, Observed};
use crate::rules::{AnalysisSpec, AtLimit, CheckConfig, CheckKind, Enforcement};

/// A check's state at one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Evidence that the canary is worse reached the threshold.
    Fail,
    /// The confidence bound rules out harm beyond the tolerance.
    Pass,
    /// Data is flowing but the evidence is not decisive yet (includes warm-up).
    Pending,
    /// The metric is missing (no series matched, no traffic).
    NoData,
    /// The metrics source failed (scrape error, Prometheus down).
    SourceError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Pass => "pass",
            Outcome::Pending => "pending",
            Outcome::NoData => "no_data",
            Outcome::SourceError => "source_error",
        }
    }

    fn is_missing(self) -> bool {
        matches!(self, Outcome::NoData | Outcome::SourceError)
    }
}

/// Serde for numbers that may be NaN or infinite: JSON writes them as `null`, and `null`
/// reads back as NaN (so persisted reports survive a round trip).
pub(crate) mod lenient_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(v.signum() * f64::MAX)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The size of a difference, with its anytime-valid confidence bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// What is measured: `rate ratio`, `odds ratio of slow requests`, `extra growth`, ...
    pub measure: String,
    #[serde(with = "lenient_f64")]
    pub estimate: f64,
    #[serde(with = "lenient_f64")]
    pub lower: f64,
    #[serde(with = "lenient_f64")]
    pub upper: f64,
    /// Confidence level of the bounds (e.g. 0.99).
    #[serde(with = "lenient_f64")]
    pub confidence: f64,
    /// Unit of the three numbers (`ratio`, `bytes/min`, ...).
    pub unit: String,
    /// `lower` is the end of the tested range: the true value is at or below it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_lower: bool,
    /// `upper` is the end of the tested range: the true value is at or above it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_upper: bool,
}

/// A ratio's anytime-valid bounds from a grid, with its estimate, made fit to show: a bound
/// on the grid's last point means "there or beyond" (the grid cannot tell), and the estimate
/// is kept inside the bounds (an empirical ratio can fall between grid points, or beyond an
/// end, where the bounds cannot follow it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounded {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    pub open_lower: bool,
    pub open_upper: bool,
}

impl Bounded {
    pub fn from_grid(grid: &crate::stats::grid::LogGrid, alpha: f64, estimate: f64) -> Bounded {
        let (lower, upper) = grid.confidence_interval(alpha);
        let first = grid.params.first().copied().unwrap_or(f64::NAN);
        let last = grid.params.last().copied().unwrap_or(f64::NAN);
        let open_lower = lower <= first;
        let open_upper = upper >= last;
        let estimate = if estimate.is_nan() {
            grid.mle()
        } else {
            estimate
        };
        let estimate = if lower <= upper {
            estimate.clamp(lower, upper)
        } else {
            estimate
        };
        Bounded {
            estimate,
            lower,
            upper,
            open_lower,
            open_upper,
        }
    }

    /// `x1.72, 99 % bounds x1.20–x2.6`; an open end reads `≥ x70` (or `≤ x0.016`).
    pub fn text(&self, alpha: f64) -> String {
        let lo = if self.open_lower {
            format!("≤ {}", fmt::times(self.lower))
        } else {
            fmt::times(self.lower)
        };
        let hi = if self.open_upper {
            format!("≥ {}", fmt::times(self.upper))
        } else {
            fmt::times(self.upper)
        };
        let est = if self.open_upper && self.estimate >= self.upper {
            format!("≥ {}", fmt::times(self.upper))
        } else if self.open_lower && self.estimate <= self.lower {
            format!("≤ {}", fmt::times(self.lower))
        } else {
            fmt::times(self.estimate)
        };
        format!("{est}, {} bounds {lo}–{hi}", fmt::level(alpha))
    }
}

/// One arm's value as reported (a ratio, a level, a slope) and the amount of data behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmValue {
    #[serde(with = "lenient_f64")]
    pub value: f64,
    /// Sample size: requests for ratios, observations for histograms, points for gauges.
    #[serde(with = "lenient_f64")]
    pub n: f64,
}

/// What one check concluded at one interval, with its numbers and a plain-language reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    pub kind: CheckKind,
    pub outcome: Outcome,
    pub enforce: Enforcement,
    pub critical: bool,
    /// Evidence against "canary not worse" (an e-value; for fixed-horizon tests, 1/p).
    #[serde(with = "lenient_f64")]
    pub evidence: f64,
    /// Evidence needed to fail.
    #[serde(with = "lenient_f64")]
    pub threshold: f64,
    pub effect: Option<Effect>,
    pub baseline: Option<ArmValue>,
    pub canary: Option<ArmValue>,
    pub explanation: String,
}

/// The analysis' verdict after an interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Keep watching.
    Continue,
    /// Do not advance or promote; tell people. Not terminal.
    Hold { reason: String },
    /// Terminal: a critical check failed.
    Rollback { check: String, reason: String },
    /// Terminal: every check passed after the minimum duration, or no check showed evidence
    /// of harm by the maximum duration.
    Promote {
        #[serde(default)]
        basis: PassBasis,
        reason: String,
    },
    /// Terminal: out of time without enough evidence, or traffic misrouted.
    Inconclusive { reason: String },
}

impl Verdict {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Verdict::Rollback { .. } | Verdict::Promote { .. } | Verdict::Inconclusive { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Hold { .. } => "hold",
            Verdict::Rollback { .. } => "rollback",
            Verdict::Promote { .. } => "promote",
            Verdict::Inconclusive { .. } => "inconclusive",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Continue => "",
            Verdict::Hold { reason }
            | Verdict::Rollback { reason, .. }
            | Verdict::Promote { reason, .. }
            | Verdict::Inconclusive { reason } => reason,
        }
    }
}

/// Evidence at which a check that has not failed still counts as a hint of harm at
/// `max_duration`: the fourth root of its threshold, a quarter of the way to a rollback on the
/// log scale (4.2 for a threshold of 300). Measured on the simulated fleet (docs/judge.md):
/// healthy canaries stay below it (their e-values shrink), while x2 error regressions too
/// rare to prove by 30 minutes rise above it; at the square root, some of those were promoted.
pub fn harm_hint(threshold: f64) -> f64 {
    threshold.powf(0.25)
}

/// A check's evidence as an e-value. The sequential kinds report e-values already; the
/// fixed-sample ones (`growth`'s Mann-Kendall confirmation, `mann-whitney`) report 1/p, and a
/// p-value of a fifth is common by chance. Vovk and Shafer's calibrator e = 1/(2·√p) turns
/// it into a valid e-value, so the hint of harm means the same for every kind.
fn as_e_value(kind: CheckKind, evidence: f64) -> f64 {
    match kind {
        CheckKind::Growth | CheckKind::MannWhitney => 0.5 * evidence.max(0.0).sqrt(),
        _ => evidence,
    }
}

/// Which kind of pass a promotion is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassBasis {
    /// Every check's confidence bound ruled out harm beyond its tolerance.
    #[default]
    Proven,
    /// At `max_duration`, no check failed or showed evidence of harm, though not every one
    /// could prove itself within its tolerance (rare events, little traffic).
    NoHarmAtLimit,
    /// A person promoted it (`rollguard deploy promote`).
    Manual,
}

impl PassBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            PassBasis::Proven => "proven within tolerance",
            PassBasis::NoHarmAtLimit => "no evidence of harm at the limit",
            PassBasis::Manual => "promoted by a person",
        }
    }
}

/// The result of one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub t: Duration,
    pub verdict: Verdict,
    pub checks: Vec<CheckReport>,
    /// The traffic-split check, when the deployment says what share the canary should get.
    pub traffic: Option<CheckReport>,
    /// Checks that failed for the first time at this interval (for notifications; shadow
    /// checks are announced once this way and never acted upon).
    pub newly_failed: Vec<String>,
}

/// Per-kind state, serialisable for persistence.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum CheckState {
    Ratio(ratio::RatioState),
    Histogram(histogram::HistogramState),
    Growth(growth::GrowthState),
    Gauge(gauge::GaugeState),
    Threshold(threshold::ThresholdState),
    MannWhitney(mann_whitney::MwState),
}

impl CheckState {
    /// Feeds one interval to the check's own test.
    fn step(&mut self, c: &crate::rules::CheckSpec, ctx: &Ctx) -> Partial {
        match (self, &c.config) {
            (
                CheckState::Ratio(s),
                CheckConfig::Ratio {
                    errors,
                    requests,
                    tolerance,
                    worse_when,
                },
            ) => s.step(ctx, c, *errors, *requests, *tolerance, *worse_when),
            (
                CheckState::Histogram(s),
                CheckConfig::Histogram {
                    metric,
                    quantiles,
                    tolerance,
                },
            ) => s.step(ctx, *metric, quantiles, *tolerance),
            (
                CheckState::Growth(s),
                CheckConfig::Growth {
                    metric,
                    start_time,
                    requests,
                    max_extra_slope,
                    limit,
                    min_time_to_limit,
                },
            ) => s.step(
                ctx,
                (*metric, *start_time, *requests),
                *max_extra_slope,
                *limit,
                *min_time_to_limit,
            ),
            (
                CheckState::Gauge(s),
                CheckConfig::Gauge {
                    metric,
                    requests,
                    worse_when,
                    ..
                },
            ) => s.step(ctx, *metric, *requests, *worse_when),
            (
                CheckState::Threshold(s),
                CheckConfig::Threshold {
                    source,
                    max,
                    min,
                    for_,
                },
            ) => s.step(ctx, source, *max, *min, *for_),
            (
                CheckState::MannWhitney(s),
                CheckConfig::MannWhitney {
                    metric,
                    worse_when,
                    tolerance,
                    confidence,
                },
            ) => s.step(ctx, *metric, *worse_when, *tolerance, *confidence),
            _ => Partial::missing(Missing::Error(
                "internal: check state does not match its rule".into(),
            )),
        }
    }
}

/// What every check kind sees at one interval.
pub(crate) struct Ctx<'a> {
    pub t: Duration,
    pub in_warmup: bool,
    /// Evidence needed to fail (acting checks / alpha).
    pub threshold: f64,
    pub alpha: f64,
    pub spec: &'a AnalysisSpec,
    pub frame: &'a Frame,
}

impl Ctx<'_> {
    /// The outcome of a sequential check that has neither failed nor passed yet.
    pub fn not_yet(&self, ev: f64) -> (Outcome, String) {
        (
            Outcome::Pending,
            format!(
                "not enough evidence yet (evidence {} of {})",
                fmt::evidence(ev),
                fmt::evidence(self.threshold)
            ),
        )
    }

    /// A sequential check's outcome and why: failed when the log-evidence `ln_e` reaches the
    /// threshold (`failing` says what went wrong), else passed if `passed` says how, else not
    /// yet decided.
    pub fn decide(
        &self,
        ln_e: f64,
        ev: f64,
        failing: &str,
        passed: Option<String>,
    ) -> (Outcome, String) {
        if ln_e >= self.threshold.ln() {
            let (e, t) = (fmt::evidence(ev), fmt::evidence(self.threshold));
            (Outcome::Fail, format!("{failing} (evidence {e} ≥ {t})"))
        } else if let Some(why) = passed {
            (Outcome::Pass, why)
        } else {
            self.not_yet(ev)
        }
    }

    /// An effect with its bounds at this check's confidence level (1 − alpha).
    pub fn effect(
        &self,
        measure: impl Into<String>,
        unit: &str,
        estimate: f64,
        lower: f64,
        upper: f64,
    ) -> Option<Effect> {
        Some(Effect {
            measure: measure.into(),
            estimate,
            lower,
            upper,
            confidence: 1.0 - self.alpha,
            unit: unit.into(),
            open_lower: false,
            open_upper: false,
        })
    }

    /// An effect from a grid's [`Bounded`] ratio.
    pub fn bounded_effect(&self, measure: impl Into<String>, b: &Bounded) -> Option<Effect> {
        Some(Effect {
            open_lower: b.open_lower,
            open_upper: b.open_upper,
            ..self.effect(measure, "ratio", b.estimate, b.lower, b.upper)?
        })
    }
}

impl ArmValue {
    pub(crate) fn of(value: f64, n: f64) -> Option<ArmValue> {
        Some(ArmValue { value, n })
    }
}

/// The part of a report a check kind fills in.
pub(crate) struct Partial {
    pub outcome: Outcome,
    pub evidence: f64,
    pub effect: Option<Effect>,
    pub baseline: Option<ArmValue>,
    pub canary: Option<ArmValue>,
    pub explanation: String,
}

impl Partial {
    pub fn missing(m: Missing) -> Partial {
        let (outcome, explanation) = match m {
            Missing::NoData(s) => (Outcome::NoData, format!("no data: {s}")),
            Missing::Error(s) => (Outcome::SourceError, format!("metrics source error: {s}")),
        };
        Partial {
            outcome,
            evidence: f64::NAN,
            effect: None,
            baseline: None,
            canary: None,
            explanation,
        }
    }

    pub fn pending(explanation: impl Into<String>) -> Partial {
        Partial {
            outcome: Outcome::Pending,
            evidence: f64::NAN,
            effect: None,
            baseline: None,
            canary: None,
            explanation: explanation.into(),
        }
    }
}

/// Why a check has no input this interval.
pub(crate) enum Missing {
    NoData(String),
    Error(String),
}

impl Ctx<'_> {
    /// Both arms' values of query `i`, or why they are missing (errors win over no-data).
    pub fn get(&self, i: usize) -> Result<Arms<&Observed>, Missing> {
        let Some(a) = self.frame.values.get(i) else {
            return Err(Missing::Error(format!("query {i} was not fetched")));
        };
        match (&a.baseline, &a.canary) {
            (Fetch::Value(b), Fetch::Value(c)) => Ok(Arms {
                baseline: b,
                canary: c,
            }),
            (Fetch::Error(e), _) => Err(Missing::Error(format!("baseline: {e}"))),
            (_, Fetch::Error(e)) => Err(Missing::Error(format!("canary: {e}"))),
            (Fetch::NoData(e), _) => Err(Missing::NoData(format!("baseline: {e}"))),
            (_, Fetch::NoData(e)) => Err(Missing::NoData(format!("canary: {e}"))),
        }
    }

    /// Counter increases of query `i` for both arms.
    pub fn counter(&self, i: usize) -> Result<Arms<f64>, Missing> {
        let a = self.get(i)?;
        match (a.baseline, a.canary) {
            // Increases are finite and non-negative; anything else is a broken input, not
            // evidence.
            (Observed::Counter(b), Observed::Counter(c))
                if [b, c].iter().all(|x| x.is_finite() && **x >= 0.0) =>
            {
                Ok(Arms {
                    baseline: *b,
                    canary: *c,
                })
            }
            (Observed::Counter(_), Observed::Counter(_)) => Err(Missing::Error(
                "a counter increase was not a finite, non-negative number".into(),
            )),
            _ => Err(Missing::Error("unexpected value type for a counter".into())),
        }
    }

    /// Per-instance gauge values of query `i` for both arms (non-empty).
    pub fn gauges(&self, i: usize) -> Result<Arms<&[f64]>, Missing> {
        let a = self.get(i)?;
        match (a.baseline, a.canary) {
            (Observed::Gauge(b), Observed::Gauge(c)) if !b.is_empty() && !c.is_empty() => {
                Ok(Arms {
                    baseline: b,
                    canary: c,
                })
            }
            (Observed::Gauge(_), Observed::Gauge(_)) => {
                Err(Missing::NoData("no instance reported a value".into()))
            }
            _ => Err(Missing::Error("unexpected value type for a gauge".into())),
        }
    }

    /// Cumulative bucket increases of query `i` for both arms.
    pub fn buckets(&self, i: usize) -> Result<Arms<&[(f64, f64)]>, Missing> {
        let a = self.get(i)?;
        match (a.baseline, a.canary) {
            (Observed::Buckets(b), Observed::Buckets(c))
                if [b, c].iter().all(|v| {
                    v.iter()
                        .all(|(le, n)| !le.is_nan() && n.is_finite() && *n >= 0.0)
                }) =>
            {
                Ok(Arms {
                    baseline: b,
                    canary: c,
                })
            }
            (Observed::Buckets(_), Observed::Buckets(_)) => Err(Missing::Error(
                "a histogram bucket was not a finite, non-negative count".into(),
            )),
            _ => Err(Missing::Error(
                "unexpected value type for a histogram".into(),
            )),
        }
    }
}

/// When a check can first reach a verdict, from the analysis' timing: its warm-up, then what
/// its test needs (a histogram's first interval after the edges are set, a growth check's
/// floor window and trend points, a level gauge's blocks, Mann-Whitney's single look at
/// `min_duration`), and why.
pub fn earliest_decision(
    check: &crate::rules::CheckSpec,
    spec: &AnalysisSpec,
) -> (Duration, String) {
    let timing = &spec.timing;
    let warmup = check.warmup(timing.warmup);
    let interval = timing.interval;
    match &check.config {
        CheckConfig::Growth { start_time, .. } => {
            let w = growth::window(interval, timing.warmup, timing.max_duration);
            let trend = growth::time_to_first_trend(w);
            let fmt = crate::units::format_duration;
            let what = format!(
                "a {} floor window and {} trend points after the",
                fmt(w),
                growth::MIN_POINTS
            );
            match start_time {
                // With start times, the worst case: a canary warming up alone.
                Some(_) if growth::SETTLE > warmup => (
                    growth::SETTLE + trend,
                    format!(
                        "{what} {} settling time of a canary that starts after its baseline; {} when both start together",
                        fmt(growth::SETTLE),
                        fmt(warmup + trend)
                    ),
                ),
                _ => (warmup + trend, format!("{what} {} warm-up", fmt(warmup))),
            }
        }
        CheckConfig::Gauge {
            above: None,
            requests,
            ..
        } => {
            let blocks = gauge::MIN_BLOCKS as u32 + 1;
            // Compared at equal load, the level waits for a minute of requests too.
            let load = requests.map_or(Duration::ZERO, |_| {
                interval * load::load_window(interval)[1] as u32
            });
            let start = if load > warmup {
                format!(
                    "the first {} of requests (to compare at equal load)",
                    crate::units::format_duration(load)
                )
            } else {
                format!("the {} warm-up", crate::units::format_duration(warmup))
            };
            (
                warmup.max(load) + interval * (gauge::BLOCK as u32 * blocks),
                format!(
                    "{blocks} blocks of {} intervals after {start}",
                    gauge::BLOCK
                ),
            )
        }
        CheckConfig::MannWhitney { .. } => (
            timing.min_duration.max(warmup + interval * 5),
            "one look at min_duration with at least five points after the warm-up".into(),
        ),
        CheckConfig::Threshold { for_, .. } => (
            warmup + (*for_).max(interval),
            format!(
                "the `for` duration after the {} warm-up",
                crate::units::format_duration(warmup)
            ),
        ),
        _ => (
            warmup + interval,
            format!(
                "one interval after the {} warm-up",
                crate::units::format_duration(warmup)
            ),
        ),
    }
}

/// Warnings for checks that can never decide before `max_duration`: such an analysis never
/// promotes (its verdict is inconclusive at best), which `rollguard check` says up front.
pub fn timing_warnings(spec: &AnalysisSpec) -> Vec<String> {
    spec.checks
        .iter()
        .filter(|c| c.enforce != Enforcement::Shadow)
        .filter_map(|c| {
            let (at, why) = earliest_decision(c, spec);
            (at > spec.timing.max_duration).then(|| {
                format!(
                    "analysis `{}`: check `{}` can first decide at {} ({why}) but max_duration is {}: it never decides, so the analysis never promotes; lengthen max_duration, or shorten warmup or interval",
                    spec.name,
                    c.name,
                    crate::units::format_duration(at),
                    crate::units::format_duration(spec.timing.max_duration)
                )
            })
        })
        .collect()
}

/// Mean of finite values (NaN when none).
pub(crate) fn mean(v: &[f64]) -> f64 {
    let (sum, n) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// A check's last judged outcome and evidence (pending with no evidence before any data).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Standing {
    outcome: Outcome,
    #[serde(with = "lenient_f64")]
    evidence: f64,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            outcome: Outcome::Pending,
            evidence: f64::NAN,
        }
    }
}

impl Step {
    /// The step recorded when the judge itself failed on an interval's data (it panicked or
    /// never returned; see `deploy::judge_guard`): the analysis ends inconclusive with the
    /// reason, for a person. No check is reported, since none finished.
    pub fn judge_failed(t: Duration, why: &str) -> Step {
        Step {
            t,
            verdict: Verdict::Inconclusive {
                reason: format!(
                    "the judge failed on this interval's data ({why}): nothing was rolled back or promoted; decide by hand, and please report it with this deployment's `rollguard backtest`"
                ),
            },
            checks: Vec::new(),
            traffic: None,
            newly_failed: Vec::new(),
        }
    }
}

/// A judge for one analysis of one deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Judge {
    checks: Vec<CheckState>,
    /// When each check's input first went missing (for the no-data grace period).
    missing_since: Vec<Option<Duration>>,
    last_outcomes: Vec<Outcome>,
    /// Each check's last outcome with data: what it stands at through a short gap.
    #[serde(default)]
    standing: Vec<Standing>,
    traffic: traffic::TrafficState,
    /// Rule version the state belongs to.
    pub version: String,
}

impl Judge {
    pub fn new(spec: &AnalysisSpec) -> Judge {
        // Restarted e-processes start once per minute of analysis.
        let per_minute = change::restart_every(spec.timing.interval, spec.timing.max_duration);
        let checks = spec
            .checks
            .iter()
            .map(|c| match &c.config {
                CheckConfig::Ratio { tolerance, .. } => {
                    CheckState::Ratio(ratio::RatioState::new(*tolerance, per_minute))
                }
                CheckConfig::Histogram { tolerance, .. } => {
                    CheckState::Histogram(histogram::HistogramState::new(*tolerance, per_minute))
                }
                CheckConfig::Growth { requests, .. } => {
                    CheckState::Growth(growth::GrowthState::new(
                        requests.map(|_| load::load_window(spec.timing.interval)),
                    ))
                }
                CheckConfig::Gauge {
                    tolerance,
                    above,
                    requests,
                    ..
                } => CheckState::Gauge(gauge::GaugeState::new(
                    *tolerance,
                    *above,
                    per_minute,
                    requests.map(|_| load::load_window(spec.timing.interval)),
                )),
                CheckConfig::Threshold { .. } => {
                    CheckState::Threshold(threshold::ThresholdState::new(&c.config))
                }
                CheckConfig::MannWhitney { .. } => {
                    CheckState::MannWhitney(mann_whitney::MwState::default())
                }
            })
            .collect();
        Judge {
            checks,
            missing_since: vec![None; spec.checks.len()],
            last_outcomes: vec![Outcome::Pending; spec.checks.len()],
            standing: vec![Standing::default(); spec.checks.len()],
            traffic: traffic::TrafficState::default(),
            version: spec.version.clone(),
        }
    }

    /// Restores a persisted judge, or starts afresh if it does not fit the spec (the rule
    /// changed shape under a `follow` reload).
    pub fn restore(spec: &AnalysisSpec, json: Option<&str>) -> Judge {
        json.and_then(|j| serde_json::from_str::<Judge>(j).ok())
            .filter(|j| j.checks.len() == spec.checks.len() && j.version == spec.version)
            .unwrap_or_else(|| Judge::new(spec))
    }

    /// Feeds one interval. `t` is the analysis time at the end of the interval;
    /// `expected_canary_share` (0-1) enables the traffic-split check.
    pub fn step(
        &mut self,
        spec: &AnalysisSpec,
        t: Duration,
        frame: &Frame,
        expected_canary_share: Option<f64>,
    ) -> Step {
        let m = spec.acting_checks() as f64;
        let ctx = Ctx {
            t,
            in_warmup: t <= spec.timing.warmup,
            threshold: m / spec.alpha,
            alpha: spec.alpha,
            spec,
            frame,
        };
        let mut reports = Vec::with_capacity(spec.checks.len());
        let mut newly_failed = Vec::new();
        if self.standing.len() != spec.checks.len() {
            self.standing = vec![Standing::default(); spec.checks.len()];
        }
        for (i, (c, state)) in spec.checks.iter().zip(self.checks.iter_mut()).enumerate() {
            let ctx = Ctx {
                in_warmup: t <= c.warmup(spec.timing.warmup),
                ..ctx
            };
            let ctx = &ctx;
            let mut p = state.step(c, ctx);
            // A failure is final: the e-process crossed its threshold once and for all.
            if self.last_outcomes[i] == Outcome::Fail && p.outcome != Outcome::Fail {
                p.outcome = Outcome::Fail;
                p.explanation = format!("failed earlier; now: {}", p.explanation);
            }
            if p.outcome == Outcome::Fail && self.last_outcomes[i] != Outcome::Fail {
                newly_failed.push(c.name.clone());
            }
            if p.outcome.is_missing() {
                self.missing_since[i].get_or_insert(t);
            } else {
                self.missing_since[i] = None;
                self.standing[i] = Standing {
                    outcome: p.outcome,
                    evidence: p.evidence,
                };
            }
            self.last_outcomes[i] = p.outcome;
            reports.push(CheckReport {
                name: c.name.clone(),
                kind: c.kind,
                outcome: p.outcome,
                enforce: c.effective_enforcement(),
                critical: c.critical,
                evidence: p.evidence,
                threshold: ctx.threshold,
                effect: p.effect,
                baseline: p.baseline,
                canary: p.canary,
                explanation: p.explanation,
            });
        }
        let traffic = expected_canary_share.and_then(|share| self.traffic.step(&ctx, share));
        let verdict = self.decide(spec, t, &reports, traffic.as_ref());
        Step {
            t,
            verdict,
            checks: reports,
            traffic,
            newly_failed,
        }
    }

    fn decide(
        &self,
        spec: &AnalysisSpec,
        t: Duration,
        reports: &[CheckReport],
        traffic: Option<&CheckReport>,
    ) -> Verdict {
        let mut hold: Option<String> = None;
        for r in reports.iter().filter(|r| r.outcome == Outcome::Fail) {
            match r.enforce {
                Enforcement::Rollback => {
                    return Verdict::Rollback {
                        check: r.name.clone(),
                        reason: format!("{}: {}", r.name, r.explanation),
                    };
                }
                Enforcement::Hold => {
                    hold.get_or_insert_with(|| {
                        format!("{} is failing (hold): {}", r.name, r.explanation)
                    });
                }
                // Announced by the engine when newly failing; never acted upon here.
                Enforcement::Notify | Enforcement::Shadow => {}
            }
        }
        if let Some(tr) = traffic
            && tr.outcome == Outcome::Fail
        {
            return Verdict::Inconclusive {
                reason: format!("traffic misrouted: {}", tr.explanation),
            };
        }
        let acting = |r: &&CheckReport| r.enforce != Enforcement::Shadow;
        if hold.is_none() {
            hold = self.missing_too_long(spec, t, reports);
        }
        // Through a gap shorter than the grace period a check stands where its data last
        // put it: one interval without canary requests does not undo what was shown.
        let standing: Vec<(&CheckReport, Standing)> = reports
            .iter()
            .zip(&self.standing)
            .filter(|(r, _)| acting(r))
            .map(|(r, st)| {
                let now = Standing {
                    outcome: r.outcome,
                    evidence: r.evidence,
                };
                (r, if r.outcome.is_missing() { *st } else { now })
            })
            .collect();
        let all_pass = standing.iter().all(|(_, s)| s.outcome == Outcome::Pass);
        if t >= spec.timing.max_duration {
            return self.at_limit(spec, &standing, all_pass, hold);
        }
        if let Some(h) = hold {
            return Verdict::Hold { reason: h };
        }
        if t >= spec.timing.min_duration && all_pass {
            return Verdict::Promote {
                basis: PassBasis::Proven,
                reason: "proven within tolerance: every check shows the canary is no worse than its tolerance".into(),
            };
        }
        Verdict::Continue
    }

    /// The first acting check whose input has been missing for `no_data_grace`, as a reason.
    fn missing_too_long(
        &self,
        spec: &AnalysisSpec,
        t: Duration,
        reports: &[CheckReport],
    ) -> Option<String> {
        let (r, s) = reports
            .iter()
            .zip(&self.missing_since)
            .filter(|(r, _)| r.enforce != Enforcement::Shadow)
            .find_map(|(r, since)| {
                since
                    .filter(|s| t.saturating_sub(*s) >= spec.timing.no_data_grace)
                    .map(|s| (r, s))
            })?;
        let what = if r.outcome == Outcome::SourceError {
            "metrics source failing"
        } else {
            "no data"
        };
        Some(format!(
            "{what} for {} for {}: {}",
            r.name,
            crate::units::format_duration(t.saturating_sub(s)),
            r.explanation
        ))
    }

    /// The verdict at `max_duration`, from where every check stands after the whole
    /// analysis. Nothing failed (a failure returned earlier); what remains is whether the
    /// canary proved itself, or at least showed no evidence of harm (`at_max_duration`).
    fn at_limit(
        &self,
        spec: &AnalysisSpec,
        standing: &[(&CheckReport, Standing)],
        all_pass: bool,
        hold: Option<String>,
    ) -> Verdict {
        let limit = crate::units::format_duration(spec.timing.max_duration);
        if let Some(h) = hold {
            return Verdict::Inconclusive {
                reason: format!("maximum duration {limit} reached while held: {h}"),
            };
        }
        if all_pass {
            return Verdict::Promote {
                basis: PassBasis::Proven,
                reason: format!(
                    "proven within tolerance: every check passed by the maximum duration {limit}"
                ),
            };
        }
        let open: Vec<&(&CheckReport, Standing)> = standing
            .iter()
            .filter(|(_, s)| s.outcome != Outcome::Pass)
            .collect();
        let describe = |(r, s): &&(&CheckReport, Standing)| {
            format!(
                "{} (evidence {} of {})",
                r.name,
                fmt::evidence(s.evidence),
                fmt::evidence(r.threshold)
            )
        };
        // "No evidence of harm": judged data, and evidence below the harm hint. A check that
        // never judged anything (NaN evidence) is not evidence of anything, so it leaves the
        // verdict to a person.
        let unjudged: Vec<&str> = open
            .iter()
            .filter(|(_, s)| !s.evidence.is_finite())
            .map(|(r, _)| r.name.as_str())
            .collect();
        let harmful: Vec<String> = open
            .iter()
            .filter(|(r, s)| {
                s.evidence.is_finite() && as_e_value(r.kind, s.evidence) >= harm_hint(r.threshold)
            })
            .map(describe)
            .collect();
        if spec.timing.at_limit == AtLimit::Promote && unjudged.is_empty() && harmful.is_empty() {
            let open: Vec<String> = open.iter().map(describe).collect();
            return Verdict::Promote {
                basis: PassBasis::NoHarmAtLimit,
                reason: format!(
                    "no evidence of harm at the limit: maximum duration {limit} reached; {} not proven within tolerance but far from failing",
                    open.join(", ")
                ),
            };
        }
        let mut why = Vec::new();
        if !harmful.is_empty() {
            why.push(format!("some evidence of harm in {}", harmful.join(", ")));
        }
        if !unjudged.is_empty() {
            why.push(format!(
                "never enough data to judge {}",
                unjudged.join(", ")
            ));
        }
        if why.is_empty() {
            let open: Vec<String> = open.iter().map(describe).collect();
            why.push(format!(
                "not proven within tolerance: {} (at_max_duration: inconclusive)",
                open.join(", ")
            ));
        }
        Verdict::Inconclusive {
            reason: format!("maximum duration {limit} reached: {}", why.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sample_evidence_is_calibrated_before_the_hint_of_harm() {
        // 1/p = 6.92 (p = 0.14) is no hint of harm; an e-value of 6.92 is.
        let hint = harm_hint(500.0);
        assert!(as_e_value(CheckKind::Growth, 6.92) < hint);
        assert!(as_e_value(CheckKind::Ratio, 6.92) >= hint);
        // p = 1e-4 is: 1/(2·√p) = 50.
        assert!((as_e_value(CheckKind::MannWhitney, 1e4) - 50.0).abs() < 1e-9);
    }
}

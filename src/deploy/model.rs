//! What a deployment is: the registration request, its lifecycle states, and the record the
//! store keeps.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One arm (baseline or canary): either `/metrics` URLs to scrape, or label matchers for the
/// Prometheus source (`version="v2"`), or a Prometheus `file_sd` file listing targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sd: Option<String>,
    /// Share of traffic (percent) this arm should get; enables the traffic-split check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Baseline only, Prometheus source only: read the baseline this long ago (`1d` = the same
    /// time yesterday). This is how a `bake` compares a fully rolled-out version with the
    /// previous version's recorded behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// The version running in this arm, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The schemas this arm's version works with (needs `min`, tolerates up to `max`); the
    /// migration gates use it with the service's `schemas:` probe (docs/migrations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<crate::schema::SchemaRange>,
}

/// How the rollout proceeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[derive(Default)]
pub enum Strategy {
    /// A single analysis window: promote or roll back at the end.
    #[default]
    Analysis,
    /// Traffic steps (percent). At each step the `on_step` hooks get the new weight once the
    /// step has run `step_duration` with no failing check.
    Canary {
        steps: Vec<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_duration: Option<String>,
    },
    /// After a full rollout: compare the new version (canary arm) with the previous version's
    /// recorded behaviour (baseline arm with an `offset`, Prometheus source) for `watch`
    /// (default 30m); promote if it holds up, roll back if not.
    Bake {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watch: Option<String>,
    },
    /// Verify green (the canary arm) against blue before the switch; on a pass the `on_pass`
    /// hooks switch traffic, then the analysis' absolute guards (`threshold` checks) watch
    /// green for `post_switch` (default 10m); a failure then switches back (`on_fail`).
    BlueGreen {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        post_switch: Option<String>,
    },
}

/// A request's durations, parsed once by [`DeploymentRequest::validate`]: nothing after
/// validation parses a duration string again, or falls back to a default on a bad one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stage {
    /// Canary: how long each step runs (`None`: the analysis' `min_duration` split evenly).
    pub step_duration: Option<Duration>,
    /// Bake: how long the new version is watched (default 30m).
    pub watch: Duration,
    /// Blue-green: how long green is watched after the switch (default 10m).
    pub post_switch: Duration,
    /// Prometheus source: how long ago the baseline is read (zero: now).
    pub baseline_offset: Duration,
    /// The per-deployment timing overrides.
    pub timing: TimingStage,
}

/// Parsed [`TimingOverride`]: the analysis' timing fields this deployment replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TimingStage {
    pub interval: Option<Duration>,
    pub warmup: Option<Duration>,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
}

impl TimingStage {
    /// Applies the overrides to an analysis' timing, checking the result is coherent.
    pub fn apply(&self, t: &mut crate::rules::Timing) -> Result<(), String> {
        if let Some(d) = self.interval {
            t.interval = d;
        }
        if let Some(d) = self.warmup {
            t.warmup = d;
        }
        if let Some(d) = self.min_duration {
            t.min_duration = d;
        }
        if let Some(d) = self.max_duration {
            t.max_duration = d;
        }
        if t.max_duration < t.min_duration || t.max_duration <= t.warmup {
            return Err("timing overrides: max_duration must be at least min_duration and longer than warmup".into());
        }
        Ok(())
    }
}

/// A duration field of a request: parsed, with the field's name in the error.
fn duration(v: Option<&str>, name: &str) -> Result<Option<Duration>, String> {
    v.map(|s| crate::units::parse_duration(s).map_err(|e| format!("`{name}`: {e}")))
        .transpose()
}

/// What a pipeline sends to register a deployment (`POST /api/v1/deployments`, `rollguard
/// deploy start`, or a drop-in file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    pub id: String,
    pub service: Option<String>,
    pub analysis: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub baseline: ArmSpec,
    pub canary: ArmSpec,
    #[serde(default)]
    pub strategy: Strategy,
    /// Per-deployment overrides of the analysis timing (e.g. a shorter bake for a hotfix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<TimingOverride>,
    /// Free-form labels shown in messages and the API (team, ticket, commit).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl DeploymentRequest {
    /// Checks what can be checked without the rules (id syntax, arms present, URLs sane)
    /// and parses every duration once.
    pub fn validate(&self) -> Result<Stage, String> {
        if self.id.is_empty()
            || self.id.len() > 128
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err("`id` must be 1-128 characters of letters, digits, `-`, `_` or `.`".into());
        }
        for (name, arm) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            let ways = usize::from(!arm.targets.is_empty())
                + usize::from(arm.selector.is_some())
                + usize::from(arm.file_sd.is_some());
            if ways != 1 {
                return Err(format!(
                    "`{name}` needs exactly one of `targets` (URLs to scrape), `selector` (PromQL label matchers) or `file_sd`"
                ));
            }
            for t in &arm.targets {
                let ok = url::Url::parse(t)
                    .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .unwrap_or(false);
                if !ok {
                    return Err(format!("`{name}.targets`: `{t}` is not an http(s) URL"));
                }
            }
            if arm.targets.len() > 1000 {
                return Err(format!("`{name}.targets`: at most 1000 targets per arm"));
            }
            if let Some(w) = arm.weight
                && !(w > 0.0 && w <= 100.0)
            {
                return Err(format!("`{name}.weight` must be in (0, 100]"));
            }
        }
        if (self.baseline.selector.is_some()) != (self.canary.selector.is_some()) {
            return Err("both arms must use the same source: `selector` on both (Prometheus) or targets on both".into());
        }
        if let Some(o) = &self.canary.offset {
            return Err(format!(
                "`canary.offset` is not allowed (`{o}`): only the baseline can be read from the past"
            ));
        }
        let mut stage = Stage {
            watch: Duration::from_secs(1800),
            post_switch: Duration::from_secs(600),
            ..Stage::default()
        };
        if let Some(d) = duration(self.baseline.offset.as_deref(), "baseline.offset")? {
            if self.baseline.selector.is_none() || d.is_zero() {
                return Err("`baseline.offset` needs the Prometheus source (`selector` on both arms) and a duration above zero".into());
            }
            stage.baseline_offset = d;
        }
        match &self.strategy {
            Strategy::Bake { watch } => {
                if self.baseline.offset.is_none() {
                    return Err("a `bake` compares with the past: give `baseline.offset` (e.g. \"1d\") and Prometheus selectors".into());
                }
                if let Some(w) = duration(watch.as_deref(), "strategy.watch")? {
                    stage.watch = w;
                }
            }
            Strategy::BlueGreen { post_switch } => {
                if let Some(d) = duration(post_switch.as_deref(), "strategy.post_switch")? {
                    stage.post_switch = d;
                }
            }
            Strategy::Canary {
                steps,
                step_duration,
            } => {
                if steps.is_empty()
                    || steps.iter().any(|w| !(*w > 0.0 && *w <= 100.0))
                    || steps.windows(2).any(|w| w[1] <= w[0])
                {
                    return Err("`strategy.steps` must be increasing weights in (0, 100], e.g. [10, 25, 50, 100]".into());
                }
                if self.hands_over(0) {
                    return Err("`strategy.steps` starts at 100: the baseline would serve no traffic to compare with; start lower (e.g. [10, 25, 50, 100]), or use `bake` after a full rollout".into());
                }
                stage.step_duration = duration(step_duration.as_deref(), "strategy.step_duration")?;
            }
            Strategy::Analysis => {}
        }
        if let Some(o) = &self.timing {
            stage.timing = o.stage()?;
        }
        for (k, v) in &self.labels {
            if k.len() > 64 || v.len() > 256 {
                return Err("labels: keys at most 64 and values at most 256 characters".into());
            }
        }
        Ok(stage)
    }

    /// Whether the canary takes all traffic at canary step `step` (weight 100, no baseline
    /// weight): the baseline serves nothing, so from there on nothing can be compared and
    /// only the absolute guards can watch the canary.
    pub fn hands_over(&self, step: usize) -> bool {
        match &self.strategy {
            Strategy::Canary { steps, .. } => {
                steps.get(step).is_some_and(|w| *w >= 100.0) && self.baseline.weight.is_none()
            }
            Strategy::BlueGreen { .. } | Strategy::Analysis | Strategy::Bake { .. } => false,
        }
    }

    /// Whether the arms are queried through Prometheus rather than scraped.
    pub fn uses_prometheus(&self) -> bool {
        self.canary.selector.is_some()
    }
}

/// Timing fields a deployment may override (durations as in rule files).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

impl TimingOverride {
    /// Parses the overrides (their coherence with the analysis is checked by
    /// [`TimingStage::apply`]).
    pub fn stage(&self) -> Result<TimingStage, String> {
        let interval = duration(self.interval.as_deref(), "timing.interval")?;
        if interval.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err("`timing.interval` must be at least 1s".into());
        }
        Ok(TimingStage {
            interval,
            warmup: duration(self.warmup.as_deref(), "timing.warmup")?,
            min_duration: duration(self.min_duration.as_deref(), "timing.min_duration")?,
            max_duration: duration(self.max_duration.as_deref(), "timing.max_duration")?,
        })
    }
}

/// Lifecycle of a deployment. Terminal states never change again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Analysing,
    /// Not advancing: missing evidence, a failing `hold` check, or paused by a person.
    Held,
    Promoted,
    RolledBack,
    Inconclusive,
    Aborted,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Promoted | State::RolledBack | State::Inconclusive | State::Aborted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Analysing => "analysing",
            State::Held => "held",
            State::Promoted => "promoted",
            State::RolledBack => "rolled_back",
            State::Inconclusive => "inconclusive",
            State::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Analysing,
            State::Held,
            State::Promoted,
            State::RolledBack,
            State::Inconclusive,
            State::Aborted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the store keeps about a deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub request: DeploymentRequest,
    pub state: State,
    /// Index into the canary steps (0 when there are none).
    pub step: u32,
    /// Why the state is what it is (plain words).
    pub reason: String,
    pub rule_path: String,
    pub rule_version: String,
    /// The rule file's text at registration, so a restart resumes the same version.
    #[serde(skip)]
    pub rule_source: String,
    /// Serialized judge state (resumed after a restart).
    #[serde(skip)]
    pub judge: Option<String>,
    /// Latest check reports as JSON.
    pub checks: serde_json::Value,
    /// Every check over time, for the status page (stored in its own column: listing
    /// deployments does not read it).
    #[serde(skip)]
    pub chart: crate::chart::History,
    /// Analysis time consumed so far, in milliseconds.
    pub elapsed_ms: u64,
    /// Analysis time at which the current step started.
    pub step_started_ms: u64,
    /// Set when a person paused the deployment.
    pub paused: bool,
    pub created_at: f64,
    pub updated_at: f64,
    pub finished_at: Option<f64>,
}

//! Deployment policy: what one input (the start, a judged interval, a person's action) does
//! to a deployment. Pure: no I/O and no clock. The engine reads the clock and the world into
//! a [`Context`], calls [`advance`], writes the [`Transition`] in one transaction and only
//! then acts on it; tests drive every strategy through this function alone.
//!
//! Who is told what:
//! - decisions go to the list that owes them (`on_fail` for a rollback or an abort, `on_pass`
//!   for a promotion or a blue-green switch, `on_no_data` for a hold, `on_inconclusive`);
//! - `notify`- and `shadow`-enforced checks that newly fail go to `on_fail` (one notice per
//!   check: two checks failing in the same interval are two notices);
//! - progress ("started", "step", "resumed") goes to the analysis' *watchers*: every notifier
//!   named in any of its action lists, so nobody has to put a pager in `on_fail` to hear that a
//!   canary started;
//! - the results of an owed hook go to the recipients of the notice that owed it; the list is
//!   stored with the action, so a restart announces them the same way.

use std::time::Duration;

use super::engine::Control;
use super::model::{DeploymentRecord, State, Strategy};
use crate::action::Facts;
use crate::events::{Notice, NoticeKind, Subject};
use crate::judge::{CheckReport, Outcome, Step, Verdict};
use crate::rules::{AnalysisSpec, Enforcement};
use crate::store::{Action, EventKind, Purpose, TimelineEvent};

/// What happened to the deployment.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A pending deployment's analysis begins.
    Start,
    /// The judge's answer for one interval.
    Judged(&'a Step),
    /// A person's action (pause, resume, promote, abort).
    Control(&'a Control),
}

/// Facts about the schema a deployment runs against, for the schema gate (issue 14). The
/// schema module fills it before each transition; `None` in [`Context::schema`] means no
/// gate applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchemaFacts {
    /// Set when running the baseline again would be unsafe on the live schema: why, in one
    /// sentence.
    pub rollback_unsafe: Option<String>,
}

/// Everything outside the record that a transition may depend on, read by the caller.
pub struct Context<'a> {
    /// Wall-clock seconds since the Unix epoch, for records and notices people read.
    pub at: f64,
    /// Whether a name from a rule's action list is a hook (the others are notifiers).
    pub is_hook: &'a dyn Fn(&str) -> bool,
    /// Global dry run: hooks are recorded and announced, never run.
    pub dry_run: bool,
    /// The circuit breaker considers this deployment's metrics backend down: holds and
    /// inconclusive verdicts are recorded, their hooks and hold alerts are not.
    pub backend_down: bool,
    /// Link to the deployment for notices (`public_url` + API path).
    pub link: Option<String>,
    /// The schema gate's facts, when one is configured for the service.
    pub schema: Option<&'a SchemaFacts>,
}

/// A notice and who gets it.
#[derive(Clone, Debug, PartialEq)]
pub struct Addressed {
    pub to: Vec<String>,
    pub notice: Notice,
}

/// What an input did: the new record, and everything to write with it and then act on.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The record after the input (state, reason, step, latest checks, `finished_at`).
    pub record: DeploymentRecord,
    /// Timeline entries, in order.
    pub events: Vec<TimelineEvent>,
    /// Hooks owed, each with who is told how it ended.
    pub actions: Vec<Action>,
    /// Notices, any number per input.
    pub notices: Vec<Addressed>,
    /// A blue-green deployment switched traffic to green: the engine recompiles the
    /// post-switch analysis.
    pub switched: bool,
}

impl Transition {
    fn new(record: DeploymentRecord) -> Transition {
        Transition {
            record,
            events: Vec::new(),
            actions: Vec::new(),
            notices: Vec::new(),
            switched: false,
        }
    }

    fn event(&mut self, kind: EventKind, message: String, data: serde_json::Value) {
        self.events.push(TimelineEvent {
            kind,
            message,
            data,
        });
    }

    /// Queues a notice about this deployment for `to`.
    fn tell(
        &mut self,
        ctx: &Context,
        to: Vec<String>,
        kind: NoticeKind,
        title: String,
        text: String,
        checks: Vec<CheckReport>,
    ) {
        let rec = &self.record;
        let notice = Notice {
            kind,
            at: ctx.at,
            subject: Some(subject(rec)),
            title,
            text,
            checks,
            link: ctx.link.clone(),
            key: format!("rollguard/{}", rec.request.id),
        };
        self.notices.push(Addressed { to, notice });
    }

    /// Owes the hooks of `names` for `purpose`; their results go to `notify`.
    fn owe(
        &mut self,
        ctx: &Context,
        names: &[String],
        purpose: Purpose,
        verdict: &Verdict,
        checks: &[CheckReport],
        notify: &[String],
    ) {
        let rec = &self.record;
        for hook in names.iter().filter(|n| (ctx.is_hook)(n)) {
            let action_id = format!("{}-{purpose}-{}-{hook}", rec.request.id, rec.step);
            let facts = Facts {
                deployment: rec.request.id.clone(),
                service: rec.request.service.clone().unwrap_or_default(),
                analysis: rec.request.analysis.clone(),
                action: purpose.to_string(),
                action_id: action_id.clone(),
                verdict: verdict.name().to_string(),
                reason: verdict.reason().to_string(),
                version: rec.request.canary.version.clone().unwrap_or_default(),
                baseline_version: rec.request.baseline.version.clone().unwrap_or_default(),
                step: matches!(rec.request.strategy, Strategy::Canary { .. })
                    .then_some(rec.step + 1),
                weight: weight_at(&rec.request.strategy, rec.step as usize),
                dry_run: ctx.dry_run,
                params: rec.request.params.clone(),
                checks: serde_json::to_value(checks).unwrap_or_default(),
            };
            let mut a = Action::pending(
                action_id,
                &rec.request.id,
                hook,
                purpose,
                serde_json::to_value(&facts).unwrap_or_default(),
            );
            a.notify = notify.to_vec();
            self.actions.push(a);
        }
    }

    /// Ends the deployment in `state` (a decision, or a person's promote or abort).
    fn finish(&mut self, ctx: &Context, state: State, reason: String) {
        self.record.state = state;
        self.record.reason = reason;
        self.record.finished_at = Some(ctx.at);
    }
}

/// Applies one input to a deployment.
pub fn advance(
    record: DeploymentRecord,
    spec: &AnalysisSpec,
    input: Input,
    ctx: &Context,
) -> Transition {
    let mut t = Transition::new(record);
    match input {
        Input::Start => start(&mut t, spec, ctx),
        Input::Judged(step) => judged(&mut t, spec, step, ctx),
        Input::Control(c) => control(&mut t, spec, c, ctx),
    }
    t
}

/// The notifiers named in any of the analysis' action lists, each once, in list order:
/// they hear about progress (started, steps, resumed).
pub fn watchers(spec: &AnalysisSpec, is_hook: &dyn Fn(&str) -> bool) -> Vec<String> {
    let a = &spec.actions;
    let mut out: Vec<String> = Vec::new();
    for n in [
        &a.on_fail,
        &a.on_pass,
        &a.on_no_data,
        &a.on_inconclusive,
        &a.on_step,
    ]
    .into_iter()
    .flatten()
    {
        if !is_hook(n) && !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn start(t: &mut Transition, spec: &AnalysisSpec, ctx: &Context) {
    let watchers = watchers(spec, ctx.is_hook);
    t.record.state = State::Analysing;
    t.record.reason = "analysing".into();
    t.event(
        EventKind::Started,
        format!("analysis `{}` started", spec.name),
        serde_json::Value::Null,
    );
    if let Some(w) = weight_at(&t.record.request.strategy, 0) {
        t.owe(
            ctx,
            &spec.actions.on_step,
            Purpose::Step,
            &Verdict::Continue,
            &[],
            &watchers,
        );
        t.event(
            EventKind::Step,
            format!("step 1 at weight {w}"),
            serde_json::Value::Null,
        );
    }
    let id = t.record.request.id.clone();
    t.tell(
        ctx,
        watchers,
        NoticeKind::DeploymentStarted,
        format!("Canary analysis started: {id}"),
        format!(
            "analysis `{}` (rule {}), watching {} checks",
            spec.name,
            spec.version,
            spec.checks.len()
        ),
        Vec::new(),
    );
}

/// Records newly failing checks; `notify` and `shadow` ones are announced, each on its own.
fn newly_failed(t: &mut Transition, spec: &AnalysisSpec, step: &Step, ctx: &Context) {
    let id = t.record.request.id.clone();
    for name in &step.newly_failed {
        let Some(r) = step.checks.iter().find(|c| &c.name == name) else {
            continue;
        };
        t.event(
            EventKind::CheckFailed,
            format!("{}: {}", r.name, r.explanation),
            serde_json::to_value(r).unwrap_or_default(),
        );
        let (title, text) = match r.enforce {
            // Shadow: recorded (above) and announced once, never acted upon.
            Enforcement::Shadow => (
                format!("Shadow check would fail: {} on {id}", r.name),
                format!("{} (shadow: nothing was done)", r.explanation),
            ),
            Enforcement::Notify => (
                format!("Check failing: {} on {id}", r.name),
                r.explanation.clone(),
            ),
            Enforcement::Hold | Enforcement::Rollback => continue,
        };
        t.tell(
            ctx,
            spec.actions.on_fail.clone(),
            NoticeKind::CheckFailing,
            title,
            text,
            vec![r.clone()],
        );
    }
}

fn judged(t: &mut Transition, spec: &AnalysisSpec, step: &Step, ctx: &Context) {
    t.record.checks = serde_json::to_value(&step.checks).unwrap_or_default();
    newly_failed(t, spec, step, ctx);
    let verdict = if t.record.paused && matches!(step.verdict, Verdict::Promote { .. }) {
        Verdict::Hold {
            reason: "paused by a person; promotion waits for resume".into(),
        }
    } else {
        step.verdict.clone()
    };
    let failing: Vec<CheckReport> = step
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .cloned()
        .collect();
    match &verdict {
        Verdict::Rollback { check, reason } => {
            rollback(t, spec, &verdict, check, reason, step, failing.clone(), ctx)
        }
        Verdict::Promote { reason } => promote(t, spec, &verdict, reason, step, ctx),
        Verdict::Inconclusive { reason } => {
            let r = &spec.actions.on_inconclusive;
            t.finish(ctx, State::Inconclusive, reason.clone());
            // While the metrics backend is down rollguard acts on nothing: the verdict is
            // recorded and announced, its hooks do not run.
            if ctx.backend_down {
                t.event(
                    EventKind::Held,
                    "metrics backend down: on_inconclusive hooks not run".into(),
                    serde_json::Value::Null,
                );
            } else {
                t.owe(ctx, r, Purpose::Inconclusive, &verdict, &step.checks, r);
            }
            t.event(
                EventKind::Decision,
                format!("inconclusive: {reason}"),
                serde_json::Value::Null,
            );
            let id = t.record.request.id.clone();
            t.tell(
                ctx,
                r.clone(),
                NoticeKind::Inconclusive,
                format!("Inconclusive: {id}"),
                reason.clone(),
                step.checks.clone(),
            );
        }
        Verdict::Hold { reason } => hold(t, spec, &verdict, reason, step, ctx),
        Verdict::Continue => {
            let was = t.record.state;
            let paused = t.record.paused;
            t.record.state = if paused {
                State::Held
            } else {
                State::Analysing
            };
            if was == State::Held && !paused {
                t.record.reason = "analysing".into();
                t.event(
                    EventKind::Resumed,
                    "evidence is back; analysis continues".into(),
                    serde_json::Value::Null,
                );
            }
        }
    }
    next_canary_step(t, spec, step, failing.is_empty(), ctx);
}

#[allow(clippy::too_many_arguments)]
fn rollback(
    t: &mut Transition,
    spec: &AnalysisSpec,
    verdict: &Verdict,
    check: &str,
    reason: &str,
    step: &Step,
    failing: Vec<CheckReport>,
    ctx: &Context,
) {
    // The schema gate (issue 14) decides here, from `ctx.schema`, whether the rollback may
    // run or the deployment holds and rolls forward instead.
    let to = &spec.actions.on_fail;
    t.finish(ctx, State::RolledBack, reason.to_string());
    t.owe(ctx, to, Purpose::Rollback, verdict, &step.checks, to);
    t.event(
        EventKind::Decision,
        format!("rollback: {reason}"),
        serde_json::to_value(&step.checks).unwrap_or_default(),
    );
    let hooks: Vec<String> = t.actions.iter().map(|a| a.hook.clone()).collect();
    let did = if hooks.is_empty() {
        "no rollback hook is configured for this analysis".to_string()
    } else {
        format!("running {}", hooks.join(", "))
    };
    let id = t.record.request.id.clone();
    t.tell(
        ctx,
        to.clone(),
        NoticeKind::RollbackStarted,
        format!("Rolling back {id}: {check} failed"),
        format!("{reason}. Action: {did}."),
        failing,
    );
}

fn promote(
    t: &mut Transition,
    spec: &AnalysisSpec,
    verdict: &Verdict,
    reason: &str,
    step: &Step,
    ctx: &Context,
) {
    let to = &spec.actions.on_pass;
    let id = t.record.request.id.clone();
    let strategy = &t.record.request.strategy;
    let last = steps_len(strategy).saturating_sub(1) as u32;
    let blue_green = strategy.post_switch().is_some();
    if blue_green && t.record.step == 0 {
        // Blue-green: green verified; switch traffic, then watch it.
        t.record.step = 1;
        t.record.step_started_ms = t.record.elapsed_ms;
        t.record.reason = format!("switched to green: {reason}");
        t.owe(ctx, to, Purpose::Switch, verdict, &step.checks, to);
        t.event(
            EventKind::Switch,
            format!("green verified, switching traffic: {reason}"),
            serde_json::Value::Null,
        );
        t.tell(
            ctx,
            to.clone(),
            NoticeKind::StepPromoted,
            format!("{id}: switching to green"),
            format!("{reason}; watching green after the switch"),
            step.checks.clone(),
        );
        t.switched = true;
        return;
    }
    if t.record.step < last {
        // Canary steps: advance with the step timer (see `next_canary_step`).
        return;
    }
    if blue_green {
        // Blue-green watch passed: traffic is already on green, nothing to run.
        t.finish(
            ctx,
            State::Promoted,
            format!("green held up after the switch: {reason}"),
        );
    } else {
        t.finish(ctx, State::Promoted, reason.to_string());
        t.owe(ctx, to, Purpose::Promote, verdict, &step.checks, to);
    }
    t.event(
        EventKind::Decision,
        format!("promote: {}", t.record.reason),
        serde_json::Value::Null,
    );
    let text = t.record.reason.clone();
    t.tell(
        ctx,
        to.clone(),
        NoticeKind::Promoted,
        format!("Promoted {id}"),
        text,
        step.checks.clone(),
    );
}

fn hold(
    t: &mut Transition,
    spec: &AnalysisSpec,
    verdict: &Verdict,
    reason: &str,
    step: &Step,
    ctx: &Context,
) {
    let was = t.record.state;
    t.record.state = State::Held;
    if was == State::Held {
        return;
    }
    t.record.reason = reason.to_string();
    t.event(EventKind::Held, reason.to_string(), serde_json::Value::Null);
    if ctx.backend_down {
        // The breaker announces the outage once, for every deployment it holds.
        return;
    }
    let to = &spec.actions.on_no_data;
    t.owe(ctx, to, Purpose::Hold, verdict, &step.checks, to);
    let id = t.record.request.id.clone();
    t.tell(
        ctx,
        to.clone(),
        NoticeKind::Held,
        format!("Holding {id}"),
        format!("{reason}. Nothing is promoted or rolled back until the evidence is back."),
        step.checks.clone(),
    );
}

/// Canary steps advance when the current one has run its time with nothing failing.
fn next_canary_step(
    t: &mut Transition,
    spec: &AnalysisSpec,
    step: &Step,
    nothing_failing: bool,
    ctx: &Context,
) {
    let rec = &t.record;
    let strategy = &rec.request.strategy;
    let in_step = Duration::from_millis(rec.elapsed_ms.saturating_sub(rec.step_started_ms));
    let last = steps_len(strategy).saturating_sub(1) as u32;
    let due = rec.state == State::Analysing
        && matches!(strategy, Strategy::Canary { .. })
        && rec.step < last
        && in_step >= step_duration(strategy, spec)
        && nothing_failing
        && rec.elapsed_ms > spec.timing.warmup.as_millis() as u64;
    if !due {
        return;
    }
    let watchers = watchers(spec, ctx.is_hook);
    t.record.step += 1;
    t.record.step_started_ms = t.record.elapsed_ms;
    let n = t.record.step + 1;
    let w = weight_at(&t.record.request.strategy, t.record.step as usize).unwrap_or(100.0);
    t.owe(
        ctx,
        &spec.actions.on_step,
        Purpose::Step,
        &Verdict::Continue,
        &step.checks,
        &watchers,
    );
    t.event(
        EventKind::Step,
        format!("step {n} at weight {w}"),
        serde_json::Value::Null,
    );
    let id = t.record.request.id.clone();
    t.tell(
        ctx,
        watchers,
        NoticeKind::StepPromoted,
        format!("{id}: step {n} ({w} %)"),
        "no check failing; traffic increased".into(),
        step.checks.clone(),
    );
}

fn control(t: &mut Transition, spec: &AnalysisSpec, c: &Control, ctx: &Context) {
    let (what, who, why) = c.describe();
    let msg = format!(
        "{what} by {who}{}",
        if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        }
    );
    let id = t.record.request.id.clone();
    let checks: Vec<CheckReport> =
        serde_json::from_value(t.record.checks.clone()).unwrap_or_default();
    match c {
        Control::Pause { .. } => {
            t.record.paused = true;
            t.record.state = State::Held;
            t.record.reason = msg.clone();
        }
        Control::Resume { .. } => {
            t.record.paused = false;
            t.record.state = State::Analysing;
            t.record.reason = msg.clone();
            let to = watchers(spec, ctx.is_hook);
            t.tell(
                ctx,
                to,
                NoticeKind::Resumed,
                format!("Resumed {id}"),
                msg.clone(),
                Vec::new(),
            );
        }
        Control::Promote { .. } => {
            let to = &spec.actions.on_pass;
            t.finish(ctx, State::Promoted, msg.clone());
            let v = Verdict::Promote {
                reason: msg.clone(),
            };
            t.owe(ctx, to, Purpose::Promote, &v, &checks, to);
            t.tell(
                ctx,
                to.clone(),
                NoticeKind::Promoted,
                format!("Promoted {id} by hand"),
                msg.clone(),
                Vec::new(),
            );
        }
        Control::Abort { .. } => {
            let to = &spec.actions.on_fail;
            t.finish(ctx, State::Aborted, msg.clone());
            let v = Verdict::Rollback {
                check: "person".into(),
                reason: msg.clone(),
            };
            t.owe(ctx, to, Purpose::Rollback, &v, &checks, to);
            t.tell(
                ctx,
                to.clone(),
                NoticeKind::Aborted,
                format!("Aborted {id}"),
                format!("{msg}; rolling back"),
                Vec::new(),
            );
        }
    }
    t.event(EventKind::Person, msg, serde_json::Value::Null);
}

fn subject(rec: &DeploymentRecord) -> Subject {
    Subject {
        deployment: rec.request.id.clone(),
        service: rec.request.service.clone().unwrap_or_default(),
        analysis: rec.request.analysis.clone(),
        version: rec.request.canary.version.clone().unwrap_or_default(),
        baseline_version: rec.request.baseline.version.clone().unwrap_or_default(),
    }
}

fn steps_len(s: &Strategy) -> usize {
    match s {
        Strategy::Canary { steps, .. } => steps.len(),
        Strategy::BlueGreen { .. } => 2,
        Strategy::Analysis | Strategy::Bake { .. } => 1,
    }
}

/// The canary's traffic weight at step `i` (canary strategy only).
pub fn weight_at(s: &Strategy, i: usize) -> Option<f64> {
    match s {
        Strategy::Canary { steps, .. } => steps.get(i).copied(),
        Strategy::BlueGreen { .. } | Strategy::Analysis | Strategy::Bake { .. } => None,
    }
}

/// How long a canary step runs before the next (unbounded for the other strategies).
pub fn step_duration(s: &Strategy, spec: &AnalysisSpec) -> Duration {
    match s {
        Strategy::Canary {
            steps,
            step_duration,
        } => step_duration
            .as_deref()
            .and_then(|d| crate::units::parse_duration(d).ok())
            .unwrap_or_else(|| spec.timing.min_duration / (steps.len().max(1) as u32)),
        Strategy::BlueGreen { .. } | Strategy::Analysis | Strategy::Bake { .. } => Duration::MAX,
    }
}

/// The canary's expected share of requests, when the deployment says.
pub fn expected_share(rec: &DeploymentRecord, step: u32) -> Option<f64> {
    let c = weight_at(&rec.request.strategy, step as usize).or(rec.request.canary.weight)?;
    let b = rec.request.baseline.weight.unwrap_or(100.0 - c);
    (c > 0.0 && b > 0.0).then(|| c / (c + b))
}

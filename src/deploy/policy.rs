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

use super::model::{DeploymentRecord, Stage, State, Strategy};
use crate::action::Facts;
use crate::events::{Notice, NoticeKind, Subject};
use crate::judge::{CheckReport, Outcome, PassBasis, Step, Verdict};
use crate::rules::{AnalysisSpec, Enforcement};
use crate::store::{Action, EventKind, Purpose, TimelineEvent};

/// A person's action on a running deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Pause { who: String, why: String },
    Resume { who: String, why: String },
    Promote { who: String, why: String },
    Abort { who: String, why: String },
}

impl Control {
    pub fn parse(action: &str, who: String, why: String) -> Option<Control> {
        Some(match action {
            "pause" => Control::Pause { who, why },
            "resume" => Control::Resume { who, why },
            "promote" => Control::Promote { who, why },
            "abort" => Control::Abort { who, why },
            _ => return None,
        })
    }

    pub(crate) fn describe(&self) -> (&'static str, &str, &str) {
        match self {
            Control::Pause { who, why } => ("paused", who, why),
            Control::Resume { who, why } => ("resumed", who, why),
            Control::Promote { who, why } => ("promoted", who, why),
            Control::Abort { who, why } => ("aborted", who, why),
        }
    }
}

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
    /// Set when the live schema could not be read (probe failed, timed out, dirty
    /// migration): the gate never guesses, the rollback holds until it can tell.
    pub rollback_unknown: Option<String>,
    /// The service's `roll_forward` hooks, run instead of an unsafe rollback.
    pub roll_forward: Vec<String>,
    /// Whether they were already owed to this deployment (they run once).
    pub roll_forward_owed: bool,
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
    /// The request's durations, parsed when it was validated.
    pub stage: &'a Stage,
    /// The schema gate's facts, when one is configured for the service.
    pub schema: Option<&'a SchemaFacts>,
    /// Makes the id a hook is given for an owed action (`ROLLGUARD_ACTION_ID`, an HTTP
    /// hook's `Idempotency-Key`): the engine passes [`crate::ids::new_id`], a UUIDv7, so ids
    /// are unique across daemons and state directories. It is written with the action's
    /// facts and read back from them for every retry and after a restart.
    pub new_id: &'a dyn Fn() -> String,
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
    /// A blue-green deployment switched traffic to green, or a canary was handed all
    /// traffic: the engine recompiles the post-switch analysis.
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

    /// Records a timeline entry that carries no data (most of them: the message says it all).
    fn note(&mut self, kind: EventKind, message: String) {
        self.event(kind, message, serde_json::Value::Null);
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

    /// [`Transition::tell`] for a person's action: a kind and title, a sentence, no check
    /// reports.
    fn say(&mut self, ctx: &Context, to: Vec<String>, what: (NoticeKind, String), text: String) {
        self.tell(ctx, to, what.0, what.1, text, Vec::new());
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
            // The row's key names the decision (one per deployment, purpose, step and hook:
            // a decision is recorded once); the id the hook is given is unique everywhere.
            let key = format!("{}-{purpose}-{}-{hook}", rec.request.id, rec.step);
            let facts = Facts {
                deployment: rec.request.id.clone(),
                service: rec.request.service.clone().unwrap_or_default(),
                analysis: rec.request.analysis.clone(),
                action: purpose.to_string(),
                action_id: (ctx.new_id)(),
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
                key,
                &rec.request.id,
                hook,
                purpose,
                serde_json::to_value(&facts).unwrap_or_default(),
            );
            a.notify = notify.to_vec();
            self.actions.push(a);
        }
    }

    /// Owes the `on_step` hooks and records step `n` at weight `w`: the same for a canary's
    /// first step (at the start) and each later one.
    fn enter_step(
        &mut self,
        ctx: &Context,
        spec: &AnalysisSpec,
        n: u32,
        w: f64,
        checks: &[CheckReport],
        watchers: &[String],
    ) {
        self.owe(
            ctx,
            &spec.actions.on_step,
            Purpose::Step,
            &Verdict::Continue,
            checks,
            watchers,
        );
        self.note(EventKind::Step, format!("step {n} at weight {w}"));
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
    t.note(
        EventKind::Started,
        format!("analysis `{}` started", spec.name),
    );
    if let Some(w) = weight_at(&t.record.request.strategy, 0) {
        t.enter_step(ctx, spec, 1, w, &[], &watchers);
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
        Verdict::Promote { .. } => promote(t, spec, &verdict, step, ctx),
        Verdict::Inconclusive { reason } => {
            let r = &spec.actions.on_inconclusive;
            t.finish(ctx, State::Inconclusive, reason.clone());
            // While the metrics backend is down rollguard acts on nothing: the verdict is
            // recorded and announced, its hooks do not run.
            if ctx.backend_down {
                t.note(
                    EventKind::Held,
                    "metrics backend down: on_inconclusive hooks not run".into(),
                );
            } else {
                t.owe(ctx, r, Purpose::Inconclusive, &verdict, &step.checks, r);
            }
            t.note(EventKind::Decision, format!("inconclusive: {reason}"));
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
        Verdict::Hold { .. } => hold(t, spec, &verdict, step, ctx),
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
                t.note(
                    EventKind::Resumed,
                    "evidence is back; analysis continues".into(),
                );
            }
        }
    }
    next_canary_step(t, spec, step, &verdict, failing.is_empty(), ctx);
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
    if schema_blocked(t, spec, verdict, &step.checks, failing.clone(), ctx) {
        return;
    }
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

/// The schema gate (docs/migrations.md): when rolling back would run the baseline on a
/// schema it does not work with (after a contract), or the live schema cannot be read, no
/// rollback hook runs and the deployment is held. People hear it once, in one sentence, and
/// the service's `roll_forward` hooks run once. Returns whether the rollback was blocked.
fn schema_blocked(
    t: &mut Transition,
    spec: &AnalysisSpec,
    verdict: &Verdict,
    checks: &[CheckReport],
    failing: Vec<CheckReport>,
    ctx: &Context,
) -> bool {
    let Some(facts) = ctx.schema else {
        return false;
    };
    let (sentence, unsafe_) = match (&facts.rollback_unsafe, &facts.rollback_unknown) {
        (Some(s), _) => (s.clone(), true),
        (None, Some(s)) => (s.clone(), false),
        (None, None) => return false,
    };
    t.record.state = State::Held;
    if t.record.reason == sentence {
        return true;
    }
    t.record.reason = sentence.clone();
    let why = verdict.reason().to_string();
    t.event(
        EventKind::RollbackBlocked,
        format!("{sentence} (the rollback was decided: {why})"),
        serde_json::json!({ "unsafe": unsafe_ }),
    );
    let to = &spec.actions.on_fail;
    let id = t.record.request.id.clone();
    if unsafe_ {
        if !facts.roll_forward_owed {
            t.owe(
                ctx,
                &facts.roll_forward,
                Purpose::RollForward,
                verdict,
                checks,
                to,
            );
        }
        let hooks: Vec<&str> = t
            .actions
            .iter()
            .filter(|a| a.purpose == Purpose::RollForward)
            .map(|a| a.hook.as_str())
            .collect();
        let did = if hooks.is_empty() {
            "no rollback hook ran".to_string()
        } else {
            format!("no rollback hook ran; running {}", hooks.join(", "))
        };
        t.tell(
            ctx,
            to.clone(),
            NoticeKind::RollbackUnsafe,
            format!("Rollback blocked on {id}: roll forward"),
            format!("{sentence}. The rollback was decided ({why}); {did}; the deployment is held."),
            failing,
        );
    } else {
        t.tell(
            ctx,
            to.clone(),
            NoticeKind::Held,
            format!("Holding {id}: the rollback waits for the schema probe"),
            format!("{sentence}. The rollback was decided ({why})."),
            failing,
        );
    }
    true
}

fn promote(t: &mut Transition, spec: &AnalysisSpec, verdict: &Verdict, step: &Step, ctx: &Context) {
    let reason = verdict.reason();
    let to = &spec.actions.on_pass;
    let id = t.record.request.id.clone();
    let strategy = &t.record.request.strategy;
    let last = steps_len(strategy).saturating_sub(1) as u32;
    let blue_green = matches!(strategy, Strategy::BlueGreen { .. });
    if blue_green && t.record.step == 0 {
        // Blue-green: green verified; switch traffic, then watch it.
        t.record.step = 1;
        t.record.step_started_ms = t.record.elapsed_ms;
        t.record.reason = format!("switched to green: {reason}");
        t.owe(ctx, to, Purpose::Switch, verdict, &step.checks, to);
        t.note(
            EventKind::Switch,
            format!("green verified, switching traffic: {reason}"),
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
        let reason = if t.record.request.hands_over(t.record.step as usize) {
            // The guards' own pass says little; the comparison's (kept as the reason at the
            // hand-over) is the verdict.
            let held = t.record.elapsed_ms.saturating_sub(t.record.step_started_ms);
            format!(
                "{}; then held up with all traffic for {}",
                t.record.reason,
                crate::units::format_duration(Duration::from_millis(held))
            )
        } else {
            reason.to_string()
        };
        t.finish(ctx, State::Promoted, reason);
        t.owe(ctx, to, Purpose::Promote, verdict, &step.checks, to);
    }
    t.note(EventKind::Decision, format!("promote: {}", t.record.reason));
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

fn hold(t: &mut Transition, spec: &AnalysisSpec, verdict: &Verdict, step: &Step, ctx: &Context) {
    let reason = verdict.reason();
    let was = t.record.state;
    t.record.state = State::Held;
    if was == State::Held {
        return;
    }
    t.record.reason = reason.to_string();
    t.note(EventKind::Held, reason.to_string());
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

/// Canary steps advance when the current one has run its time with nothing failing. The
/// step that hands the canary all traffic is the exception: the baseline then serves
/// nothing, so the comparison must have passed first (the judge says promote, as for a
/// blue-green switch); from there only the absolute guards watch the canary, for one more
/// step duration.
fn next_canary_step(
    t: &mut Transition,
    spec: &AnalysisSpec,
    step: &Step,
    verdict: &Verdict,
    nothing_failing: bool,
    ctx: &Context,
) {
    let rec = &t.record;
    let strategy = &rec.request.strategy;
    let in_step = Duration::from_millis(rec.elapsed_ms.saturating_sub(rec.step_started_ms));
    let last = steps_len(strategy).saturating_sub(1) as u32;
    let hands_over = rec.request.hands_over(rec.step as usize + 1);
    let each = step_duration(strategy, ctx.stage, spec);
    let due = rec.state == State::Analysing
        && matches!(strategy, Strategy::Canary { .. })
        && rec.step < last
        && in_step >= each
        && nothing_failing
        && rec.elapsed_ms > spec.timing.warmup.as_millis() as u64
        && (!hands_over || matches!(verdict, Verdict::Promote { .. }));
    if !due {
        return;
    }
    let watchers = watchers(spec, ctx.is_hook);
    t.record.step += 1;
    t.record.step_started_ms = t.record.elapsed_ms;
    let n = t.record.step + 1;
    let w = weight_at(&t.record.request.strategy, t.record.step as usize).unwrap_or(100.0);
    t.enter_step(ctx, spec, n, w, &step.checks, &watchers);
    let id = t.record.request.id.clone();
    let text = if hands_over {
        // The comparison's verdict stands as the reason while the guards watch.
        let reason = verdict.reason();
        t.record.reason = reason.to_string();
        t.switched = true;
        format!(
            "{reason}; the baseline now serves nothing to compare with, so the absolute guards watch the canary for {}",
            crate::units::format_duration(each)
        )
    } else {
        "no check failing; traffic increased".into()
    };
    t.tell(
        ctx,
        watchers,
        NoticeKind::StepPromoted,
        format!("{id}: step {n} ({w} %)"),
        text,
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
            t.say(
                ctx,
                to,
                (NoticeKind::Resumed, format!("Resumed {id}")),
                msg.clone(),
            );
        }
        Control::Promote { .. } => {
            let to = &spec.actions.on_pass;
            t.finish(ctx, State::Promoted, msg.clone());
            let v = Verdict::Promote {
                basis: PassBasis::Manual,
                reason: msg.clone(),
            };
            t.owe(ctx, to, Purpose::Promote, &v, &checks, to);
            t.say(
                ctx,
                to.clone(),
                (NoticeKind::Promoted, format!("Promoted {id} by hand")),
                msg.clone(),
            );
        }
        Control::Abort { .. } => {
            let to = &spec.actions.on_fail;
            let v = Verdict::Rollback {
                check: "person".into(),
                reason: msg.clone(),
            };
            // A person's abort runs no rollback hook on a schema the baseline cannot use
            // either: the deployment ends, the sentence says why, roll forward.
            if schema_blocked(t, spec, &v, &checks, Vec::new(), ctx) {
                let sentence = t.record.reason.clone();
                t.finish(ctx, State::Aborted, format!("{msg}; {sentence}"));
                t.note(EventKind::Person, msg);
                return;
            }
            t.finish(ctx, State::Aborted, msg.clone());
            t.owe(ctx, to, Purpose::Rollback, &v, &checks, to);
            t.say(
                ctx,
                to.clone(),
                (NoticeKind::Aborted, format!("Aborted {id}")),
                format!("{msg}; rolling back"),
            );
        }
    }
    t.note(EventKind::Person, msg);
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
pub fn step_duration(s: &Strategy, stage: &Stage, spec: &AnalysisSpec) -> Duration {
    match s {
        Strategy::Canary { steps, .. } => stage
            .step_duration
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

#[cfg(test)]
mod tests {
    //! One table: every strategy, pause, hold, breaker and person case, driven through
    //! [`advance`] alone (no daemon, no clock, no sleeps).
    use super::*;
    use crate::deploy::{ArmSpec, DeploymentRequest};
    use crate::judge::Outcome;
    use crate::rules::{CheckKind, parse_rule_file};

    const RULE: &str = r#"analysis: web
interval: 10s
warmup: 30s
min_duration: 2m
max_duration: 10m
checks:
  - name: errors
    kind: ratio
    errors: 'http_requests_total{code=~"5.."}'
    requests: 'http_requests_total'
on_fail: [rollback, chat, pager]
on_pass: [promote, chat]
on_no_data: [hold-hook, chat]
on_inconclusive: [cleanup, pager]
on_step: [set-weight]
"#;
    const HOOKS: &[&str] = &["rollback", "promote", "hold-hook", "cleanup", "set-weight"];

    fn spec() -> AnalysisSpec {
        parse_rule_file(std::path::Path::new("web.yaml"), RULE, None)
            .expect("rule")
            .instantiate(&Default::default())
            .expect("spec")
    }

    fn record(strategy: Strategy) -> DeploymentRecord {
        let arm = |u: &str| ArmSpec {
            targets: vec![u.into()],
            ..Default::default()
        };
        let mut req = DeploymentRequest {
            id: "d1".into(),
            service: Some("web".into()),
            analysis: "web".into(),
            params: Default::default(),
            baseline: arm("http://127.0.0.1:1/metrics"),
            canary: arm("http://127.0.0.1:2/metrics"),
            strategy: strategy.clone(),
            timing: None,
            labels: Default::default(),
        };
        // A bake compares with the past: Prometheus selectors, the baseline a day ago.
        if matches!(strategy, Strategy::Bake { .. }) {
            let sel = |v: &str| ArmSpec {
                selector: Some(format!("version=\"{v}\"")),
                ..Default::default()
            };
            req.baseline = ArmSpec {
                offset: Some("1d".into()),
                ..sel("v1")
            };
            req.canary = sel("v2");
        }
        let mut r = crate::store::new_record(req, "web.yaml".into(), "v1".into(), RULE.into());
        r.state = State::Analysing;
        r
    }

    fn report(name: &str, outcome: Outcome, enforce: Enforcement) -> CheckReport {
        CheckReport {
            name: name.into(),
            kind: CheckKind::Ratio,
            outcome,
            enforce,
            critical: false,
            evidence: 1.0,
            threshold: 100.0,
            effect: None,
            baseline: None,
            canary: None,
            explanation: format!("{name} explained"),
        }
    }

    fn judged(verdict: Verdict, checks: Vec<CheckReport>, newly: &[&str]) -> Step {
        Step {
            t: Duration::from_secs(60),
            verdict,
            checks,
            traffic: None,
            newly_failed: newly.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pass() -> Vec<CheckReport> {
        vec![report("errors", Outcome::Pass, Enforcement::Rollback)]
    }

    fn reason(r: &str) -> String {
        r.to_string()
    }

    const CANARY: fn() -> Strategy = || Strategy::Canary {
        steps: vec![10.0, 50.0, 100.0],
        step_duration: None,
    };
    const BLUE_GREEN: fn() -> Strategy = || Strategy::BlueGreen { post_switch: None };
    const BAKE: fn() -> Strategy = || Strategy::Bake { watch: None };

    /// What a transition must produce: state, step, timeline kinds, owed actions as
    /// (purpose, hook, who is told), notices as (kind, to), switched.
    struct Want {
        state: State,
        step: u32,
        events: &'static [&'static str],
        actions: Owed,
        notices: Told,
        switched: bool,
    }

    const WATCHERS: &[&str] = &["chat", "pager"];
    const ON_FAIL: &[&str] = &["rollback", "chat", "pager"];
    const ON_PASS: &[&str] = &["promote", "chat"];
    const ON_NO_DATA: &[&str] = &["hold-hook", "chat"];
    const ON_INCONCLUSIVE: &[&str] = &["cleanup", "pager"];

    #[allow(clippy::large_enum_variant)] // a test table, built once
    enum In {
        Start,
        Judged(Step),
        Person(Control),
    }

    struct Case {
        name: &'static str,
        rec: DeploymentRecord,
        input: In,
        backend_down: bool,
        want: Want,
    }

    fn at(mut r: DeploymentRecord, f: impl FnOnce(&mut DeploymentRecord)) -> DeploymentRecord {
        f(&mut r);
        r
    }

    fn person(what: &str) -> Control {
        Control::parse(what, "ana".into(), "looks wrong".into()).expect("control")
    }

    type Owed = &'static [(&'static str, &'static str, &'static [&'static str])];
    type Told = &'static [(&'static str, &'static [&'static str])];

    impl Want {
        /// A transition that owes no hook and tells no one: most rows start from here and
        /// add only what they owe or tell.
        fn quiet(state: State, step: u32, events: &'static [&'static str]) -> Want {
            Want {
                state,
                step,
                events,
                actions: &[],
                notices: &[],
                switched: false,
            }
        }

        fn owes(self, actions: Owed) -> Want {
            Want { actions, ..self }
        }

        fn tells(self, notices: Told) -> Want {
            Want { notices, ..self }
        }
    }

    /// Rolled back at `step`: the rollback hook owed and `on_fail` told, whatever led there.
    fn rolled_back(step: u32, events: &'static [&'static str]) -> Want {
        Want::quiet(State::RolledBack, step, events)
            .owes(&[("rollback", "rollback", ON_FAIL)])
            .tells(&[("rollback_started", ON_FAIL)])
    }

    /// Promoted at `step`: the promote hook owed and `on_pass` told.
    fn promoted(step: u32, events: &'static [&'static str]) -> Want {
        Want::quiet(State::Promoted, step, events)
            .owes(&[("promote", "promote", ON_PASS)])
            .tells(&[("promoted", ON_PASS)])
    }

    /// Ended inconclusive at `step`: the inconclusive hook owed and `on_inconclusive` told.
    fn ended_inconclusive(step: u32) -> Want {
        Want::quiet(State::Inconclusive, step, &["decision"])
            .owes(&[("inconclusive", "cleanup", ON_INCONCLUSIVE)])
            .tells(&[("inconclusive", ON_INCONCLUSIVE)])
    }

    /// Moved on to canary step `step`: the weight hook owed and the watchers told.
    fn stepped(step: u32) -> Want {
        Want::quiet(State::Analysing, step, &["step"])
            .owes(&[("step", "set-weight", WATCHERS)])
            .tells(&[("step_promoted", WATCHERS)])
    }

    /// An analysis a person paused (held until resumed).
    fn paused() -> DeploymentRecord {
        at(record(Strategy::Analysis), |r| {
            r.paused = true;
            r.state = State::Held;
        })
    }

    fn case(name: &'static str, rec: DeploymentRecord, input: In, want: Want) -> Case {
        Case {
            name,
            rec,
            input,
            backend_down: false,
            want,
        }
    }

    fn promote(r: &str) -> Verdict {
        Verdict::Promote {
            basis: PassBasis::Proven,
            reason: reason(r),
        }
    }

    fn rollback() -> Verdict {
        Verdict::Rollback {
            check: "errors".into(),
            reason: reason("errors: canary worse"),
        }
    }

    fn hold() -> Verdict {
        Verdict::Hold {
            reason: reason("no data from the canary"),
        }
    }

    fn inconclusive() -> Verdict {
        Verdict::Inconclusive {
            reason: reason("out of time"),
        }
    }

    fn failing() -> Vec<CheckReport> {
        vec![report("errors", Outcome::Fail, Enforcement::Rollback)]
    }

    fn held(s: Strategy) -> DeploymentRecord {
        at(record(s), |r| r.state = State::Held)
    }

    /// A canary that has run past warm-up and its 40 s step (2m / 3 steps).
    fn due(step: u32) -> DeploymentRecord {
        at(record(CANARY()), move |r| {
            r.step = step;
            r.elapsed_ms = 200_000;
            r.step_started_ms = 100_000;
        })
    }

    /// The table: the start and each verdict.
    fn decision_cases() -> Vec<Case> {
        vec![
            case(
                "start: analysis",
                at(record(Strategy::Analysis), |r| r.state = State::Pending),
                In::Start,
                Want::quiet(State::Analysing, 0, &["started"])
                    .tells(&[("deployment_started", WATCHERS)]),
            ),
            case(
                "start: canary runs the first step's hooks",
                at(record(CANARY()), |r| r.state = State::Pending),
                In::Start,
                Want::quiet(State::Analysing, 0, &["started", "step"])
                    .owes(&[("step", "set-weight", WATCHERS)])
                    .tells(&[("deployment_started", WATCHERS)]),
            ),
            case(
                "continue: nothing to say",
                record(Strategy::Analysis),
                In::Judged(judged(Verdict::Continue, pass(), &[])),
                Want::quiet(State::Analysing, 0, &[]),
            ),
            case(
                "rollback",
                record(Strategy::Analysis),
                In::Judged(judged(rollback(), failing(), &["errors"])),
                rolled_back(0, &["check_failed", "decision"]),
            ),
            case(
                "promote: analysis",
                record(Strategy::Analysis),
                In::Judged(judged(promote("all good"), pass(), &[])),
                promoted(0, &["decision"]),
            ),
            case(
                "inconclusive",
                record(Strategy::Analysis),
                In::Judged(judged(inconclusive(), pass(), &[])),
                ended_inconclusive(0),
            ),
            case(
                "the judge failed mid-canary: inconclusive, no rollback",
                due(1),
                In::Judged(Step::judge_failed(
                    Duration::from_secs(60),
                    "it panicked: x",
                )),
                ended_inconclusive(1),
            ),
        ]
    }

    /// The table: holds, pause and newly failing checks.
    fn hold_cases() -> Vec<Case> {
        vec![
            case(
                "hold: first interval held",
                record(Strategy::Analysis),
                In::Judged(judged(hold(), pass(), &[])),
                Want::quiet(State::Held, 0, &["held"])
                    .owes(&[("hold", "hold-hook", ON_NO_DATA)])
                    .tells(&[("held", ON_NO_DATA)]),
            ),
            case(
                "hold: already held, said once",
                held(Strategy::Analysis),
                In::Judged(judged(hold(), pass(), &[])),
                Want::quiet(State::Held, 0, &[]),
            ),
            case(
                "hold: evidence back",
                held(Strategy::Analysis),
                In::Judged(judged(Verdict::Continue, pass(), &[])),
                Want::quiet(State::Analysing, 0, &["resumed"]),
            ),
            case(
                "pause: a promotion waits",
                paused(),
                In::Judged(judged(promote("all good"), pass(), &[])),
                Want::quiet(State::Held, 0, &[]),
            ),
            case(
                "pause: a rollback does not wait",
                paused(),
                In::Judged(judged(rollback(), failing(), &[])),
                rolled_back(0, &["decision"]),
            ),
            case(
                "notify and shadow checks failing in one interval: one notice each",
                record(Strategy::Analysis),
                In::Judged(judged(
                    Verdict::Continue,
                    vec![
                        report("errors", Outcome::Fail, Enforcement::Notify),
                        report("latency", Outcome::Fail, Enforcement::Notify),
                        report("memory", Outcome::Fail, Enforcement::Shadow),
                    ],
                    &["errors", "latency", "memory"],
                )),
                Want::quiet(
                    State::Analysing,
                    0,
                    &["check_failed", "check_failed", "check_failed"],
                )
                .tells(&[
                    ("check_failing", ON_FAIL),
                    ("check_failing", ON_FAIL),
                    ("check_failing", ON_FAIL),
                ]),
            ),
        ]
    }

    /// The table: canary steps.
    fn canary_cases() -> Vec<Case> {
        vec![
            case(
                "canary: step not yet due",
                at(record(CANARY()), |r| r.elapsed_ms = 20_000),
                In::Judged(judged(Verdict::Continue, pass(), &[])),
                Want::quiet(State::Analysing, 0, &[]),
            ),
            case(
                "canary: next step once the step ran its time",
                due(0),
                In::Judged(judged(Verdict::Continue, pass(), &[])),
                stepped(1),
            ),
            case(
                "canary: a notify check failing keeps the step, and is announced",
                due(0),
                In::Judged(judged(
                    Verdict::Continue,
                    vec![report("errors", Outcome::Fail, Enforcement::Notify)],
                    &["errors"],
                )),
                Want::quiet(State::Analysing, 0, &["check_failed"])
                    .tells(&[("check_failing", ON_FAIL)]),
            ),
            case(
                "canary: a pass before the last step steps on, not promotes",
                due(0),
                In::Judged(judged(promote("all good"), pass(), &[])),
                stepped(1),
            ),
            case(
                "canary: the step to all traffic waits for the comparison to pass",
                due(1),
                In::Judged(judged(Verdict::Continue, pass(), &[])),
                Want::quiet(State::Analysing, 1, &[]),
            ),
            case(
                "canary: a pass hands all traffic over, and the guards watch on",
                due(1),
                In::Judged(judged(promote("all good"), pass(), &[])),
                Want {
                    switched: true,
                    ..stepped(2)
                },
            ),
            case(
                "canary: promote at the last step",
                due(2),
                In::Judged(judged(promote("all good"), pass(), &[])),
                promoted(2, &["decision"]),
            ),
            case(
                "canary: rollback mid-way",
                due(1),
                In::Judged(judged(rollback(), failing(), &["errors"])),
                rolled_back(1, &["check_failed", "decision"]),
            ),
        ]
    }

    #[test]
    fn a_canary_handed_all_traffic_is_promoted_on_the_comparison_it_passed() {
        let spec = spec();
        let is_hook = |n: &str| HOOKS.contains(&n);
        let rec = due(1);
        let stage = rec.request.validate().expect("valid request");
        let ctx = context(&is_hook, &stage);
        let passed = "no evidence of harm at the limit: errors x1.02";
        let t = advance(
            rec,
            &spec,
            Input::Judged(&judged(promote(passed), pass(), &[])),
            &ctx,
        );
        assert_eq!(t.record.reason, passed, "the comparison's verdict stands");
        let mut rec = t.record;
        rec.elapsed_ms += 40_000;
        let guards = judged(promote("proven within tolerance"), Vec::new(), &[]);
        let t = advance(rec, &spec, Input::Judged(&guards), &ctx);
        assert_eq!(t.record.state, State::Promoted);
        assert_eq!(
            t.record.reason,
            format!("{passed}; then held up with all traffic for 40s")
        );
    }

    #[test]
    fn a_canary_that_starts_at_all_traffic_is_refused() {
        let mut r = record(Strategy::Canary {
            steps: vec![100.0],
            step_duration: None,
        });
        let err = r.request.validate().expect_err("nothing to compare with");
        assert!(err.contains("starts at 100"), "{err}");
        r.request.baseline.weight = Some(10.0);
        r.request
            .validate()
            .expect("a baseline with its own weight is compared");
    }

    /// The table: blue-green and bake.
    fn blue_green_and_bake_cases() -> Vec<Case> {
        vec![
            case(
                "blue-green: verified green switches",
                record(BLUE_GREEN()),
                In::Judged(judged(promote("green is fine"), pass(), &[])),
                Want {
                    switched: true,
                    ..Want::quiet(State::Analysing, 1, &["switch"])
                        .owes(&[("switch", "promote", ON_PASS)])
                        .tells(&[("step_promoted", ON_PASS)])
                },
            ),
            case(
                "blue-green: the watch after the switch passes, nothing to run",
                at(record(BLUE_GREEN()), |r| r.step = 1),
                In::Judged(judged(promote("guards held"), pass(), &[])),
                Want::quiet(State::Promoted, 1, &["decision"]).tells(&[("promoted", ON_PASS)]),
            ),
            case(
                "blue-green: a failure after the switch switches back",
                at(record(BLUE_GREEN()), |r| r.step = 1),
                In::Judged(judged(rollback(), failing(), &[])),
                rolled_back(1, &["decision"]),
            ),
            case(
                "bake: held up for the watch",
                record(BAKE()),
                In::Judged(judged(promote("held up"), pass(), &[])),
                promoted(0, &["decision"]),
            ),
            case(
                "bake: worse than the past rolls back",
                record(BAKE()),
                In::Judged(judged(rollback(), failing(), &[])),
                rolled_back(0, &["decision"]),
            ),
        ]
    }

    /// The table: a person's pause, resume, promote and abort.
    fn person_cases() -> Vec<Case> {
        vec![
            case(
                "person: pause",
                record(Strategy::Analysis),
                In::Person(person("pause")),
                Want::quiet(State::Held, 0, &["person"]),
            ),
            case(
                "person: resume",
                paused(),
                In::Person(person("resume")),
                Want::quiet(State::Analysing, 0, &["person"]).tells(&[("resumed", WATCHERS)]),
            ),
            case(
                "person: promote",
                record(CANARY()),
                In::Person(person("promote")),
                promoted(0, &["person"]),
            ),
            case(
                "person: abort rolls back",
                record(BLUE_GREEN()),
                In::Person(person("abort")),
                Want::quiet(State::Aborted, 0, &["person"])
                    .owes(&[("rollback", "rollback", ON_FAIL)])
                    .tells(&[("aborted", ON_FAIL)]),
            ),
        ]
    }

    /// The circuit breaker: the backend is down, so holds are recorded, not announced, and
    /// an inconclusive verdict runs no hooks.
    fn breaker_case(name: &'static str, verdict: Verdict, want: Want) -> Case {
        let input = In::Judged(judged(verdict, pass(), &[]));
        Case {
            backend_down: true,
            ..case(name, record(Strategy::Analysis), input, want)
        }
    }

    /// The whole table, with the circuit breaker's cases.
    fn cases() -> Vec<Case> {
        let mut v = decision_cases();
        v.extend(hold_cases());
        v.extend(canary_cases());
        v.extend(blue_green_and_bake_cases());
        v.extend(person_cases());
        v.push(breaker_case(
            "breaker: hold while the backend is down",
            hold(),
            Want::quiet(State::Held, 0, &["held"]),
        ));
        v.push(breaker_case(
            "breaker: inconclusive while the backend is down",
            inconclusive(),
            Want::quiet(State::Inconclusive, 0, &["held", "decision"])
                .tells(&[("inconclusive", ON_INCONCLUSIVE)]),
        ));
        v
    }

    #[test]
    fn every_strategy_and_control_case() {
        let spec = spec();
        let is_hook = |n: &str| HOOKS.contains(&n);
        for c in cases() {
            let stage = c.rec.request.validate().expect("valid request");
            let ctx = Context {
                at: 1_700_000_000.0,
                backend_down: c.backend_down,
                link: Some("https://rg.example/api/v1/deployments/d1".into()),
                ..context(&is_hook, &stage)
            };
            let input = match &c.input {
                In::Start => Input::Start,
                In::Judged(s) => Input::Judged(s),
                In::Person(p) => Input::Control(p),
            };
            let t = advance(c.rec.clone(), &spec, input, &ctx);
            let w = &c.want;
            let name = c.name;
            assert_eq!(t.record.state, w.state, "{name}: state");
            assert_eq!(t.record.step, w.step, "{name}: step");
            assert_eq!(t.switched, w.switched, "{name}: switched");
            let events: Vec<&str> = t.events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(events, w.events, "{name}: timeline");
            let actions: Vec<(&str, &str, Vec<&str>)> = t
                .actions
                .iter()
                .map(|a| {
                    (
                        a.purpose.as_str(),
                        a.hook.as_str(),
                        a.notify.iter().map(String::as_str).collect(),
                    )
                })
                .collect();
            let want: Vec<(&str, &str, Vec<&str>)> = w
                .actions
                .iter()
                .map(|(p, h, n)| (*p, *h, n.to_vec()))
                .collect();
            assert_eq!(actions, want, "{name}: actions");
            let notices: Vec<(&str, Vec<&str>)> = t
                .notices
                .iter()
                .map(|n| {
                    (
                        n.notice.kind.as_str(),
                        n.to.iter().map(String::as_str).collect(),
                    )
                })
                .collect();
            let want: Vec<(&str, Vec<&str>)> =
                w.notices.iter().map(|(k, to)| (*k, to.to_vec())).collect();
            assert_eq!(notices, want, "{name}: notices");
            // Terminal states carry their time; nothing else does.
            assert_eq!(
                t.record.finished_at.is_some(),
                w.state.is_terminal(),
                "{name}: finished_at"
            );
            for n in &t.notices {
                assert_eq!(
                    n.notice.at, ctx.at,
                    "{name}: the context's clock, not the wall's"
                );
                assert_eq!(n.notice.link, ctx.link, "{name}: link");
            }
            for a in &t.actions {
                let facts: Facts = serde_json::from_value(a.facts.clone()).expect("facts");
                assert_eq!(facts.action, a.purpose.as_str(), "{name}: facts");
                assert_eq!(a.status, PENDING, "{name}: owed, not started");
            }
        }
    }

    /// A context with nothing unusual (no dry run, backend up, no link, no schema facts) and
    /// fixed action ids: each test changes only what it is about.
    fn context<'a>(is_hook: &'a dyn Fn(&str) -> bool, stage: &'a Stage) -> Context<'a> {
        Context {
            at: 5.0,
            is_hook,
            dry_run: false,
            backend_down: false,
            link: None,
            stage,
            schema: None,
            new_id: &test_id,
        }
    }

    /// The engine makes a UUIDv7 per action; the table tests need a fixed one.
    fn test_id() -> String {
        "act-1".into()
    }

    const PENDING: crate::store::ActionStatus = crate::store::ActionStatus::Pending;

    #[test]
    fn the_same_input_gives_the_same_transition() {
        let spec = spec();
        let is_hook = |n: &str| HOOKS.contains(&n);
        let stage = record(CANARY()).request.validate().expect("valid request");
        let ctx = Context {
            dry_run: true,
            ..context(&is_hook, &stage)
        };
        let step = judged(rollback(), failing(), &["errors"]);
        let a = advance(record(CANARY()), &spec, Input::Judged(&step), &ctx);
        let b = advance(record(CANARY()), &spec, Input::Judged(&step), &ctx);
        assert_eq!(a.actions, b.actions);
        assert_eq!(a.events, b.events);
        assert_eq!(
            a.notices.iter().map(|n| &n.notice).collect::<Vec<_>>(),
            b.notices.iter().map(|n| &n.notice).collect::<Vec<_>>()
        );
        let facts: Facts = serde_json::from_value(a.actions[0].facts.clone()).expect("facts");
        assert!(facts.dry_run, "a global dry run reaches the hook's facts");
        assert_eq!(facts.step, Some(1));
        assert_eq!(facts.weight, Some(10.0));
        assert_eq!(a.actions[0].id, "d1-rollback-0-rollback");
        assert_eq!(facts.action_id, "act-1");
    }

    #[test]
    fn watchers_are_the_notifiers_of_every_list_once() {
        let is_hook = |n: &str| HOOKS.contains(&n);
        assert_eq!(watchers(&spec(), &is_hook), vec!["chat", "pager"]);
    }

    /// The schema gate: an unsafe rollback runs no rollback hook, holds, pages `on_fail`
    /// once with the sentence and owes `roll_forward` once; an unknown schema holds too.
    #[test]
    fn an_unsafe_rollback_holds_and_rolls_forward_once() {
        let spec = spec();
        let is_hook = |n: &str| HOOKS.contains(&n) || n == "forward";
        let sentence = "rolling back to v1 is unsafe: schema 42 removed what v1 needs (v1 works up to 41) — roll forward";
        let facts = SchemaFacts {
            rollback_unsafe: Some(sentence.into()),
            roll_forward: vec!["forward".into()],
            ..Default::default()
        };
        let stage = record(Strategy::Analysis)
            .request
            .validate()
            .expect("valid request");
        let ctx = |schema| Context {
            schema,
            ..context(&is_hook, &stage)
        };
        let step = judged(rollback(), failing(), &[]);
        // A fresh analysis judged failing, with the schema gate reading `facts`.
        let failing_on = |facts: &SchemaFacts| {
            advance(
                record(Strategy::Analysis),
                &spec,
                Input::Judged(&step),
                &Context {
                    schema: Some(facts),
                    ..context(&is_hook, &stage)
                },
            )
        };
        let t = failing_on(&facts);
        assert_eq!(t.record.state, State::Held);
        assert_eq!(t.record.reason, sentence);
        let owed: Vec<(Purpose, &str)> = t
            .actions
            .iter()
            .map(|a| (a.purpose, a.hook.as_str()))
            .collect();
        assert_eq!(owed, vec![(Purpose::RollForward, "forward")]);
        assert_eq!(t.notices.len(), 1);
        assert_eq!(t.notices[0].notice.kind, NoticeKind::RollbackUnsafe);
        assert_eq!(t.notices[0].to, vec!["rollback", "chat", "pager"]);
        assert!(t.notices[0].notice.text.starts_with(sentence));
        assert_eq!(t.events[0].kind, EventKind::RollbackBlocked);

        // The next interval says the same: nothing new is owed, told or recorded.
        let owed_facts = SchemaFacts {
            roll_forward_owed: true,
            ..facts.clone()
        };
        let again = advance(
            t.record,
            &spec,
            Input::Judged(&step),
            &ctx(Some(&owed_facts)),
        );
        assert_eq!(again.record.state, State::Held);
        assert!(again.actions.is_empty() && again.notices.is_empty() && again.events.is_empty());

        // Unknown schema: held, no hook at all; a safe gate rolls back as usual.
        let unknown = SchemaFacts {
            rollback_unknown: Some("cannot tell".into()),
            ..Default::default()
        };
        let t = failing_on(&unknown);
        assert_eq!(t.record.state, State::Held);
        assert!(t.actions.is_empty());
        let t = failing_on(&SchemaFacts::default());
        assert_eq!(t.record.state, State::RolledBack);
    }
}

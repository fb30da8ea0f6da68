//! The engine's side of the migration gates (the decisions themselves are pure, in
//! [`crate::schema`]): declared ranges checked at registration, the pre-flight gate (refuse,
//! or keep the canary pending until the migration lands), the rollback gate before any
//! rollback hook, the contract check, and the watch that puts schema changes on the
//! timelines of the service's running deployments.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::engine::{Control, Engine, EngineError};
use super::model::{ArmSpec, DeploymentRecord, DeploymentRequest, Stage, State};
use super::policy::{Input, SchemaFacts};
use crate::judge::Judge;
use crate::rules::AnalysisSpec;
use crate::schema::{
    Live, Preflight, Preflighted, Range, RollbackGate, SchemaConfig, SchemaVersion, User,
};
use crate::store::{EventKind, Purpose, TimelineEvent, Writes};

fn event(kind: EventKind, message: String) -> TimelineEvent {
    TimelineEvent {
        kind,
        message,
        data: serde_json::Value::Null,
    }
}

/// The contract gate's answer (`GET /api/v1/schemas/{service}/contract?to=N`).
#[derive(Clone, Debug, Serialize)]
pub struct ContractAnswer {
    pub service: String,
    pub to: String,
    pub safe: bool,
    /// One sentence per blocking version, empty when safe.
    pub reasons: Vec<String>,
    /// Every version rollguard knows still needs the database, with its declared maximum.
    pub users: Vec<User>,
}

impl Engine {
    /// A deployment arm's declared range, parsed with its service's ordering, or `None`
    /// when the service has no `schemas:` entry or the arm declared nothing.
    pub(super) fn arm_range(
        &self,
        req: &DeploymentRequest,
        arm: &ArmSpec,
    ) -> Option<(SchemaConfig, Range)> {
        let cfg = self.schemas.config(req.service.as_deref()?)?.clone();
        let range = arm.schema.as_ref()?.parse(cfg.order.as_deref()).ok()?;
        Some((cfg, range))
    }

    /// Declared ranges must parse with the service's ordering, and need a `schemas:` entry.
    pub(super) fn check_ranges(&self, req: &DeploymentRequest) -> Result<(), EngineError> {
        for (name, arm) in [("baseline", &req.baseline), ("canary", &req.canary)] {
            let Some(r) = &arm.schema else { continue };
            let Some(service) = req.service.as_deref() else {
                return Err(EngineError::Invalid(format!(
                    "`{name}.schema` needs `service`, whose `schemas:` entry says how to read the live schema"
                )));
            };
            let Some(cfg) = self.schemas.config(service) else {
                return Err(EngineError::Invalid(format!(
                    "`{name}.schema`: service `{service}` has no `schemas:` entry in the daemon config, so its live schema cannot be read"
                )));
            };
            r.parse(cfg.order.as_deref())
                .map_err(|e| EngineError::Invalid(format!("`{name}.schema`: {e}")))?;
        }
        Ok(())
    }

    /// The pre-flight gate at registration: with `preflight: refuse`, a canary that needs a
    /// migration that has not run is refused; a canary the live schema has been contracted
    /// past is refused in either mode. An unknown live schema is not refused: the deployment
    /// is registered and waits (the gate never guesses). An id already registered is not
    /// checked again.
    pub async fn preflight(&self, req: &DeploymentRequest) -> Result<(), EngineError> {
        if self.store.get(&req.id)?.is_some() {
            return Ok(());
        }
        self.check_ranges(req)?;
        let Some((cfg, range)) = self.arm_range(req, &req.canary) else {
            return Ok(());
        };
        let live = self.live_schema(&cfg).await;
        match crate::schema::preflight(&cfg.service, &range, req.canary.version.as_deref(), &live) {
            Preflighted::NeedsMigration(msg) if cfg.preflight == Preflight::Refuse => {
                Err(EngineError::Schema(msg))
            }
            Preflighted::Refuse(msg) => Err(EngineError::Schema(msg)),
            _ => Ok(()),
        }
    }

    /// Before the analysis starts: waits (state `pending`, the reason saying why) until the
    /// live schema fits the canary. Returns false when the deployment ended while waiting
    /// (aborted, refused, or the daemon is stopping).
    pub(super) async fn wait_for_schema(
        self: &Arc<Self>,
        rec: &mut DeploymentRecord,
        spec: &AnalysisSpec,
        judge: &Judge,
        stage: &Stage,
        rx: &mut mpsc::Receiver<Control>,
    ) -> Result<bool, EngineError> {
        let Some((cfg, range)) = self.arm_range(&rec.request, &rec.request.canary) else {
            return Ok(true);
        };
        let mut waited = false;
        loop {
            let live = self.live_schema(&cfg).await;
            let answer = crate::schema::preflight(
                &cfg.service,
                &range,
                rec.request.canary.version.as_deref(),
                &live,
            );
            match answer {
                Preflighted::Start => {
                    if waited {
                        let msg = format!("{}: the canary can start", live.describe());
                        self.persist(rec, judge, Writes::events(&[event(EventKind::Schema, msg)]))?;
                    }
                    return Ok(true);
                }
                Preflighted::Refuse(msg) => {
                    // It can never start on this schema: recorded, then aborted like a
                    // person would (the rollback hooks take the canary away).
                    let refused = [event(EventKind::SchemaRefused, msg.clone())];
                    self.persist(rec, judge, Writes::events(&refused))?;
                    let c = Control::Abort {
                        who: "rollguard".into(),
                        why: msg,
                    };
                    self.transition(rec, spec, judge, stage, Input::Control(&c), None)?;
                    return Ok(false);
                }
                Preflighted::NeedsMigration(msg) | Preflighted::Unknown(msg) => {
                    if rec.reason != msg {
                        rec.reason = msg.clone();
                        self.persist(
                            rec,
                            judge,
                            Writes::events(&[event(EventKind::SchemaWait, msg)]),
                        )?;
                    }
                    waited = true;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.persist(rec, judge, Writes::default())?;
                    return Ok(false);
                }
                c = rx.recv() => match c {
                    None => return Ok(false),
                    Some(c @ (Control::Abort { .. } | Control::Promote { .. })) => {
                        self.transition(rec, spec, judge, stage, Input::Control(&c), None)?;
                        if rec.state.is_terminal() {
                            return Ok(false);
                        }
                    }
                    Some(_) => {
                        tracing::info!(deployment = %rec.request.id, "pause/resume ignored: the deployment waits for its migration and has not started");
                    }
                },
                _ = tokio::time::sleep(cfg.every) => {}
            }
        }
    }

    /// The rollback gate's facts, probed now: `None` when the service has no `schemas:`
    /// entry or the baseline declared no range (nothing to check; the rollback proceeds).
    pub(super) async fn schema_facts(&self, rec: &DeploymentRecord) -> Option<SchemaFacts> {
        let (cfg, range) = self.arm_range(&rec.request, &rec.request.baseline)?;
        let live = self.live_schema(&cfg).await;
        let gate =
            crate::schema::rollback_gate(&range, rec.request.baseline.version.as_deref(), &live);
        let mut facts = SchemaFacts {
            roll_forward: cfg.roll_forward.clone(),
            // Unknown counts as owed: better a missing roll-forward than a second one.
            roll_forward_owed: self
                .store
                .actions_of(&rec.request.id)
                .map(|a| a.iter().any(|x| x.purpose == Purpose::RollForward))
                .unwrap_or(true),
            ..Default::default()
        };
        match gate {
            RollbackGate::Safe => {}
            RollbackGate::Unsafe(s) => facts.rollback_unsafe = Some(s),
            RollbackGate::Unknown(s) => facts.rollback_unknown = Some(s),
        }
        Some(facts)
    }

    /// The contract gate: may `service`'s schema be contracted to `to`? Not while an active
    /// deployment's arm, or the version the latest finished deployment left serving, works
    /// only up to a schema below `to`.
    pub fn contract_check(&self, service: &str, to: &str) -> Result<ContractAnswer, EngineError> {
        let cfg = self.schemas.config(service).ok_or_else(|| {
            EngineError::Invalid(format!(
                "service `{service}` has no `schemas:` entry in the daemon config"
            ))
        })?;
        let order = cfg.order.as_deref();
        let to_v = SchemaVersion::parse(to, order).map_err(EngineError::Invalid)?;
        let recs = self.store.list(None, Some(service), 1000)?;
        let mut users = Vec::new();
        let mut user = |rec: &DeploymentRecord, arm: &str, why: &str| {
            let a = if arm == "canary" {
                &rec.request.canary
            } else {
                &rec.request.baseline
            };
            let max = a
                .schema
                .as_ref()
                .and_then(|r| r.parse(order).ok())
                .and_then(|r| r.max);
            users.push(User {
                deployment: rec.request.id.clone(),
                arm: arm.into(),
                version: a.version.clone(),
                why: why.into(),
                works_up_to: max.as_ref().map(|m| m.to_string()),
                max,
            });
        };
        for rec in recs.iter().filter(|r| !r.state.is_terminal()) {
            user(rec, "baseline", "active");
            user(rec, "canary", "active");
        }
        // Newest first: the latest finished deployment says which version serves now.
        if let Some(last) = recs.iter().find(|r| r.state.is_terminal()) {
            let arm = if last.state == State::Promoted {
                "canary"
            } else {
                "baseline"
            };
            user(last, arm, "serving");
        }
        let reasons: Vec<String> = crate::schema::contract_blockers(&to_v, &users)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        Ok(ContractAnswer {
            service: service.into(),
            to: to.into(),
            safe: reasons.is_empty(),
            reasons,
            users,
        })
    }

    /// Reads `cfg`'s live schema now; a change since the last known version goes onto the
    /// timeline of each running deployment of the service (whichever probe sees it first).
    pub(super) async fn live_schema(&self, cfg: &SchemaConfig) -> Live {
        let (live, change) = self.schemas.probe(cfg).await;
        let result = if matches!(live, Live::Known(_)) {
            "ok"
        } else {
            "error"
        };
        crate::telemetry::Telemetry::inc(
            &self.telemetry.schema_probes,
            &[("service", &cfg.service), ("result", result)],
        );
        if let Some(c) = change {
            tracing::info!(service = %cfg.service, from = %c.from, to = %c.to, "schema changed");
            let open = self
                .store
                .list(None, Some(&cfg.service), 1000)
                .unwrap_or_default();
            let schema = TimelineEvent {
                kind: EventKind::Schema,
                message: format!("schema {} → {}", c.from, c.to),
                data: serde_json::json!({"service": cfg.service, "from": c.from.as_str(), "to": c.to.as_str()}),
            };
            for rec in open.iter().filter(|r| !r.state.is_terminal()) {
                if self.store.add_event(&rec.request.id, &schema).is_ok() {
                    let _ = self.changes.send(super::engine::Change {
                        deployment: rec.request.id.clone(),
                    });
                }
            }
        }
        live
    }

    /// `{service, live, error, probed_at}` as last probed.
    pub fn live_view(&self, service: &str) -> serde_json::Value {
        let mut v = serde_json::json!({ "service": service });
        if let Some((live, at)) = self.schemas.last(service) {
            match live {
                Live::Known(x) => v["live"] = x.as_str().into(),
                Live::Unknown(e) => v["error"] = e.into(),
            }
            v["probed_at"] = at.into();
        }
        v
    }

    /// What the API shows about a deployment's schemas: the live one and how each declared
    /// range fits it.
    pub fn schema_view(&self, rec: &DeploymentRecord) -> Option<serde_json::Value> {
        let service = rec.request.service.as_deref()?;
        self.schemas.config(service)?;
        let mut v = self.live_view(service);
        let live = self.schemas.last(service).and_then(|(l, _)| match l {
            Live::Known(x) => Some(x),
            Live::Unknown(_) => None,
        });
        for (name, arm) in [
            ("baseline", &rec.request.baseline),
            ("canary", &rec.request.canary),
        ] {
            let Some((_, range)) = self.arm_range(&rec.request, arm) else {
                continue;
            };
            let fit = match &live {
                None => "unknown",
                Some(l) => match range.fit(l) {
                    crate::schema::Fit::Fits => "fits",
                    crate::schema::Fit::TooOld { .. } => "needs_migration",
                    crate::schema::Fit::TooNew { .. } => "contracted_past",
                },
            };
            v[name] = serde_json::json!({
                "min": range.min.as_ref().map(|x| x.as_str().to_string()),
                "max": range.max.as_ref().map(|x| x.as_str().to_string()),
                "fit": fit,
            });
        }
        Some(v)
    }

    /// Probes every configured service every `every`; a change goes onto the timeline of
    /// each of its running deployments (so `rollguard report` can count migrations).
    pub fn watch_schemas(self: &Arc<Self>) {
        for cfg in self.schemas.services().cloned().collect::<Vec<_>>() {
            let me = self.clone();
            self.tracker.spawn(async move {
                loop {
                    if let Live::Unknown(e) = me.live_schema(&cfg).await {
                        tracing::warn!(service = %cfg.service, error = %e, "schema probe failed");
                    }
                    tokio::select! {
                        _ = me.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(cfg.every) => {}
                    }
                }
            });
        }
    }
}

//! `mann-whitney` checks: Kayenta's judge, for parity with existing canary configs.
//!
//! This is a fixed-horizon test: it is evaluated once, when the analysis reaches its minimum
//! duration, on the per-interval means of each arm (Kayenta's classifier: Hodges–Lehmann
//! interval at `confidence`, effect beyond `tolerance` × |estimate|, statistics.md §2.1).
//! Evaluating it once avoids the peeking that inflates Kayenta's false-positive rate; the
//! sequential checks are the better choice for new rules.

use serde::{Deserialize, Serialize};

use super::fmt::level;
use super::{ArmValue, Ctx, Effect, Outcome, Partial, mean};
use crate::rules::Direction;
use crate::stats::mann_whitney::{
    Classification, Direction as KDir, KayentaConfig, kayenta_classify,
};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MwState {
    baseline: Vec<f64>,
    canary: Vec<f64>,
    decided: Option<(Outcome, f64, f64, f64, String)>,
}

impl MwState {
    pub(crate) fn step(
        &mut self,
        ctx: &Ctx,
        metric: usize,
        worse_when: Direction,
        tolerance: f64,
        confidence: f64,
    ) -> Partial {
        if let Some((o, est, lo, hi, why)) = &self.decided {
            return self.partial(*o, *est, *lo, *hi, why.clone(), confidence);
        }
        let g = match ctx.gauges(metric) {
            Ok(g) => g,
            Err(m) => return Partial::missing(m),
        };
        if ctx.in_warmup {
            return Partial::pending(format!(
                "warm-up until {}",
                crate::units::format_duration(ctx.spec.timing.warmup)
            ));
        }
        self.baseline.push(mean(g.baseline));
        self.canary.push(mean(g.canary));
        if ctx.t < ctx.spec.timing.min_duration || self.canary.len() < 5 {
            return Partial::pending(format!(
                "collecting points for a one-time test at {} ({} so far)",
                crate::units::format_duration(ctx.spec.timing.min_duration),
                self.canary.len()
            ));
        }
        let cfg = KayentaConfig {
            tolerance,
            confidence,
            direction: if worse_when == Direction::Higher {
                KDir::Increase
            } else {
                KDir::Decrease
            },
            ..KayentaConfig::default()
        };
        let r = kayenta_classify(&self.canary, &self.baseline, &cfg);
        let (o, why) = match r.classification {
            Classification::High | Classification::Low => (
                Outcome::Fail,
                "shifted beyond the tolerance (Kayenta classifier)".to_string(),
            ),
            Classification::Pass => (
                Outcome::Pass,
                "no shift beyond the tolerance (Kayenta classifier)".to_string(),
            ),
            Classification::NoData => (Outcome::NoData, "no data in an arm".to_string()),
        };
        self.decided = Some((
            o,
            r.interval.estimate,
            r.interval.lower,
            r.interval.upper,
            why.clone(),
        ));
        self.partial(
            o,
            r.interval.estimate,
            r.interval.lower,
            r.interval.upper,
            why,
            confidence,
        )
    }

    fn partial(
        &self,
        o: Outcome,
        est: f64,
        lo: f64,
        hi: f64,
        why: String,
        confidence: f64,
    ) -> Partial {
        Partial {
            outcome: o,
            evidence: if o == Outcome::Fail {
                f64::INFINITY
            } else {
                0.0
            },
            effect: Some(Effect {
                measure: "shift (Hodges–Lehmann)".into(),
                estimate: est,
                lower: lo,
                upper: hi,
                confidence,
                unit: "level".into(),
                open_lower: false,
                open_upper: false,
            }),
            baseline: Some(ArmValue {
                value: mean(&self.baseline),
                n: self.baseline.len() as f64,
            }),
            canary: Some(ArmValue {
                value: mean(&self.canary),
                n: self.canary.len() as f64,
            }),
            explanation: format!(
                "canary mean {:.4} vs baseline {:.4}, shift {est:.4} ({} bounds {lo:.4}–{hi:.4}) over {} points — {why}",
                mean(&self.canary),
                mean(&self.baseline),
                level(1.0 - confidence),
                self.canary.len()
            ),
        }
    }
}

//! The traffic-split check (sample-ratio mismatch): does the canary get the share of requests
//! the deployment says it should? If the anytime-valid bounds on its share (Lindon–Malek
//! Dirichlet mixture, statistics.md §1.3, §8P) exclude the expected share widened by the
//! rule's `traffic_tolerance`, the comparison is not the one intended and the verdict becomes
//! inconclusive rather than pass or fail.

use serde::{Deserialize, Serialize};

use super::fmt::{count, pct};
use super::{ArmValue, CheckReport, Ctx, Outcome};
use crate::rules::{CheckConfig, CheckKind, Enforcement};
use crate::stats::dirichlet::share_confidence_sequence;

/// Prior concentration of the Dirichlet mixture (the Netflix default).
const K: f64 = 100.0;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrafficState {
    requests: [f64; 2],
}

impl TrafficState {
    /// `expected` is the canary's expected share of requests (0-1).
    pub(crate) fn step(&mut self, ctx: &Ctx, expected: f64) -> Option<CheckReport> {
        let requests = ctx.spec.checks.iter().find_map(|c| match &c.config {
            CheckConfig::Ratio { requests, .. } => Some(*requests),
            _ => None,
        })?;
        if !(expected > 0.0 && expected < 1.0) || ctx.in_warmup {
            return None;
        }
        if let Ok(n) = ctx.counter(requests) {
            self.requests[0] += n.baseline.max(0.0);
            self.requests[1] += n.canary.max(0.0);
        }
        let (na, nb) = (self.requests[0], self.requests[1]);
        if na + nb <= 0.0 {
            return None;
        }
        let (lo, hi) = share_confidence_sequence(na, nb, K, ctx.alpha);
        let tol = ctx.spec.traffic_tolerance;
        let (want_lo, want_hi) = (expected * (1.0 - tol), (expected * (1.0 + tol)).min(1.0));
        let observed = nb / (na + nb);
        let misrouted = hi < want_lo || lo > want_hi;
        let explanation = format!(
            "canary received {} of {} requests ({} bounds {}–{}), expected {} ± {:.0} %",
            pct(observed),
            count(na + nb),
            super::fmt::level(ctx.alpha),
            pct(lo),
            pct(hi),
            pct(expected),
            tol * 100.0
        );
        Some(CheckReport {
            name: "traffic-split".into(),
            kind: CheckKind::Ratio,
            outcome: if misrouted {
                Outcome::Fail
            } else {
                Outcome::Pass
            },
            enforce: Enforcement::Hold,
            critical: false,
            evidence: if misrouted { f64::INFINITY } else { 0.0 },
            threshold: ctx.threshold,
            effect: ctx.effect("canary share of requests", "share", observed, lo, hi),
            baseline: ArmValue::of(1.0 - observed, na),
            canary: ArmValue::of(observed, nb),
            explanation: if misrouted {
                format!("{explanation} — traffic is misrouted")
            } else {
                format!("{explanation} — as configured")
            },
        })
    }
}

//! Evidence that stays sharp when a canary goes bad part-way through.
//!
//! An e-process started at the beginning of the analysis carries everything seen since: if
//! the canary was fine for ten minutes and then its error rate jumped, those ten good minutes
//! weigh against the large ratios that now fit the data, and detection is slowed. So next to
//! the e-process started when the check starts judging, it starts a fresh one every minute (every
//! max_duration/60 for analyses over an hour, see [`restart_every`]) and
//! reports the weighted average of all of them: weight 1/2 for the first, and
//! 1/(2·j·(j+1)) for the one started j minutes later. Each is a test martingale from its
//! start (1 before it), and a fixed-weight average of test martingales is one, so Ville's
//! inequality still bounds the false-alarm probability by alpha at any number of looks. The
//! weights favour early changes (most regressions show soon after a deploy); a change at
//! minute j costs ln(2·j·(j+1)) of evidence instead of everything before it.
//!
//! All grids share their parameters, so each interval's log-likelihood is computed once and
//! added to every grid. Beyond [`MAX_RESTARTS`] no new grids start, which can only lower the
//! reported evidence (a partial sum of the average), never make it invalid.

use serde::{Deserialize, Serialize};

use crate::stats::grid::LogGrid;
use crate::stats::special::log_sum_exp;

/// Restarted e-processes kept (one per minute: the first hour of an analysis).
pub const MAX_RESTARTS: usize = 60;

/// Intervals between restarts: a minute of the rule's intervals (at least one), or longer
/// when the analysis is, so that the [`MAX_RESTARTS`] restarts cover all of it (a four-hour
/// analysis restarts every four minutes rather than watching only its first hour).
pub fn restart_every(interval: std::time::Duration, max_duration: std::time::Duration) -> u32 {
    let interval_ms = interval.as_millis().max(1);
    let period_ms = 60_000u128.max(max_duration.as_millis() / MAX_RESTARTS as u128);
    period_ms.div_ceil(interval_ms).clamp(1, 100_000) as u32
}

/// A grid from the start plus restarted grids.
///
/// Persisted every interval, so restarts are written without the parameters and prior they
/// share with `base` (see [`Wire`]): about half the size of writing every grid whole.
#[derive(Clone, Debug)]
pub struct ChangeGrid {
    /// Since the end of warm-up; also the source of the confidence sequence and estimates.
    pub base: LogGrid,
    /// (j, grid started j restart periods after the base).
    restarts: Vec<(u32, LogGrid)>,
    /// Updates between restarts.
    every: u32,
    updates: u32,
}

/// How a [`ChangeGrid`] is stored: restarts as `[j, updates, loglik]`.
#[derive(Serialize)]
struct Wire<'a> {
    base: &'a LogGrid,
    restarts: Vec<(u32, u64, &'a [f64])>,
    every: u32,
    updates: u32,
}

/// A stored restart: compact, or whole as written before the compact form existed.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredRestart {
    Compact(u32, u64, Vec<f64>),
    Whole(u32, LogGrid),
}

#[derive(Deserialize)]
struct StoredGrid {
    base: LogGrid,
    restarts: Vec<StoredRestart>,
    every: u32,
    updates: u32,
}

impl Serialize for ChangeGrid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            base: &self.base,
            restarts: self
                .restarts
                .iter()
                .map(|(j, g)| (*j, g.updates, g.loglik.as_slice()))
                .collect(),
            every: self.every,
            updates: self.updates,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChangeGrid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = StoredGrid::deserialize(d)?;
        let n = w.base.params.len();
        let mut restarts = Vec::with_capacity(w.restarts.len());
        for r in w.restarts {
            let (j, g) = match r {
                StoredRestart::Compact(j, updates, loglik) => {
                    let mut g = w.base.clone();
                    g.loglik = loglik;
                    g.updates = updates;
                    (j, g)
                }
                StoredRestart::Whole(j, g) => (j, g),
            };
            if g.loglik.len() != n || g.params.len() != n {
                return Err(serde::de::Error::custom(
                    "a restarted grid does not match the base grid",
                ));
            }
            restarts.push((j, g));
        }
        Ok(ChangeGrid {
            base: w.base,
            restarts,
            every: w.every.max(1),
            updates: w.updates,
        })
    }
}

impl ChangeGrid {
    /// `every` is the number of updates (intervals) per restart period (one minute).
    pub fn new(base: LogGrid, every: u32) -> Self {
        ChangeGrid {
            base,
            restarts: Vec::new(),
            every: every.max(1),
            updates: 0,
        }
    }

    /// Adds one interval's log-likelihood `f(param)` to every grid (skipping non-finite
    /// contributions entirely, as [`LogGrid::add`] does).
    pub fn add(&mut self, f: impl Fn(f64) -> f64) -> bool {
        if self.updates > 0
            && self.updates.is_multiple_of(self.every)
            && self.restarts.len() < MAX_RESTARTS
        {
            let mut fresh = self.base.clone();
            fresh.reset();
            self.restarts.push((self.updates / self.every, fresh));
        }
        let vals: Vec<f64> = self.base.params.iter().map(|&p| f(p)).collect();
        if vals.iter().any(|v| !v.is_finite()) {
            return false;
        }
        for g in std::iter::once(&mut self.base).chain(self.restarts.iter_mut().map(|(_, g)| g)) {
            for (l, v) in g.loglik.iter_mut().zip(&vals) {
                *l += v;
            }
            g.updates += 1;
        }
        self.updates += 1;
        true
    }

    /// ln of the weighted average of the one-sided e-processes.
    pub fn ln_e_value_greater(&self) -> f64 {
        ln_restart_average(
            self.base.ln_e_value_greater(),
            self.restarts
                .iter()
                .map(|(j, g)| (*j, g.ln_e_value_greater())),
        )
    }
}

/// ln of the weighted average of an e-process from the start (`ln_first`) and the ones
/// restarted later (`(j, ln e)` for the one started j restart periods after it): weight 1/2
/// for the first and 1/(2·j·(j+1)) for the jth; the weights of restarts not started yet
/// belong to processes still at 1. Any check that restarts its e-process uses these weights
/// (the module's doc says why they keep Ville's bound).
pub fn ln_restart_average(ln_first: f64, restarts: impl Iterator<Item = (u32, f64)>) -> f64 {
    let mut terms = vec![0.5f64.ln() + ln_first];
    let mut started = 0.0;
    for (j, ln_e) in restarts {
        let inverse_weight = 2.0 * f64::from(j) * (f64::from(j) + 1.0);
        started += 1.0 / inverse_weight;
        terms.push(-inverse_weight.ln() + ln_e);
    }
    let pending = (0.5 - started).max(0.0);
    if pending > 0.0 {
        terms.push(pending.ln());
    }
    log_sum_exp(&terms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::grid::thinning_loglik;

    fn fed(intervals: usize) -> ChangeGrid {
        let mut g = ChangeGrid::new(LogGrid::new(1.1, 64f64.ln(), 48), 6);
        for i in 0..intervals {
            let canary = if i < 20 { 10.0 } else { 25.0 };
            g.add(|r| thinning_loglik(r, 10.0, canary, 1000.0, 1000.0));
        }
        g
    }

    #[test]
    fn restarts_follow_the_interval_and_cover_the_analysis() {
        let s = std::time::Duration::from_secs;
        assert_eq!(restart_every(s(10), s(1800)), 6);
        assert_eq!(restart_every(s(1), s(1800)), 60);
        assert_eq!(restart_every(s(120), s(1800)), 1);
        // Four hours: every four minutes, so the sixty restarts reach the end.
        assert_eq!(restart_every(s(10), s(4 * 3600)), 24);
    }

    #[test]
    fn stored_compactly_and_restored_exactly() {
        let g = fed(40);
        let json = serde_json::to_string(&g).unwrap();
        let back: ChangeGrid = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ln_e_value_greater(), g.ln_e_value_greater());
        assert_eq!(back.restarts.len(), 6);
        // The same grid written whole, as before the compact form: half again as large, and
        // still read back to the same state.
        let mut whole = serde_json::to_value(&g).unwrap();
        whole["restarts"] = serde_json::to_value(&g.restarts).unwrap();
        let whole = whole.to_string();
        assert!(
            json.len() * 3 < whole.len() * 2,
            "{} vs {}",
            json.len(),
            whole.len()
        );
        let old: ChangeGrid = serde_json::from_str(&whole).unwrap();
        assert_eq!(old.ln_e_value_greater(), g.ln_e_value_greater());
        // A restart that does not fit the base is an error, not a panic later.
        let mut bad = serde_json::to_value(&g).unwrap();
        bad["restarts"][0][2] = serde_json::json!([0.0]);
        assert!(serde_json::from_value::<ChangeGrid>(bad).is_err());
    }

    #[test]
    fn starts_at_one_and_sees_a_late_change() {
        let mut g = ChangeGrid::new(LogGrid::new(1.1, 64f64.ln(), 48), 6);
        assert!(g.ln_e_value_greater().abs() < 1e-12);
        // 30 good intervals, then the canary's errors jump x10.
        for _ in 0..30 {
            g.add(|r| thinning_loglik(r, 10.0, 10.0, 1000.0, 1000.0));
        }
        let before = g.ln_e_value_greater();
        let mut base_only = g.base.clone();
        for _ in 0..2 {
            g.add(|r| thinning_loglik(r, 10.0, 100.0, 1000.0, 1000.0));
            base_only.add(|r| thinning_loglik(r, 10.0, 100.0, 1000.0, 1000.0));
        }
        assert!(before < 0.0);
        assert!(g.ln_e_value_greater() > base_only.ln_e_value_greater() - 0.5f64.ln().abs());
        assert!(
            g.ln_e_value_greater() > 300f64.ln(),
            "{}",
            g.ln_e_value_greater()
        );
    }
}

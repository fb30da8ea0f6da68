//! DORA figures from the state store: deployment frequency, change failure rate and the
//! time the analyses took to decide, per service (`rollguard report`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::deploy::State;
use crate::store::{Store, StoreError, now};

/// One service's figures over the window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServiceReport {
    pub service: String,
    pub deployments: usize,
    pub promoted: usize,
    pub rolled_back: usize,
    pub inconclusive: usize,
    pub aborted: usize,
    /// Deployments per day.
    pub frequency_per_day: f64,
    /// (rolled back + aborted) / finished.
    pub change_failure_rate: f64,
    /// Median time from registration to the final decision, seconds.
    pub median_decision_s: f64,
    /// Schema changes seen while a deployment of the service ran (each change once).
    pub migrations: usize,
    /// Rollbacks the live schema made unsafe (no rollback hook ran; roll forward).
    pub blocked_rollbacks: usize,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub window_days: f64,
    pub services: Vec<ServiceReport>,
}

/// Computes the report over the last `since`.
pub fn dora(store: &dyn Store, since: Duration) -> Result<Report, StoreError> {
    let from = now() - since.as_secs_f64();
    let rows = store.finished_since(from)?;
    let days = (since.as_secs_f64() / 86400.0).max(1e-9);
    let mut by: BTreeMap<String, (ServiceReport, Vec<f64>)> = BTreeMap::new();
    for (svc, state, created, finished) in rows {
        let e = entry(&mut by, svc);
        e.0.deployments += 1;
        match state {
            State::Promoted => e.0.promoted += 1,
            State::RolledBack => e.0.rolled_back += 1,
            State::Inconclusive => e.0.inconclusive += 1,
            State::Aborted => e.0.aborted += 1,
            _ => {}
        }
        e.1.push(finished - created);
    }
    // Migrations: each (from, to) change once, however many deployments saw it.
    let mut seen = std::collections::BTreeSet::new();
    for (svc, data) in store.events_since(crate::store::EventKind::Schema, from)? {
        let (Some(f), Some(t)) = (data["from"].as_str(), data["to"].as_str()) else {
            continue;
        };
        if seen.insert((svc.clone(), f.to_string(), t.to_string())) {
            entry(&mut by, svc).0.migrations += 1;
        }
    }
    for (svc, data) in store.events_since(crate::store::EventKind::RollbackBlocked, from)? {
        if data["unsafe"] == true {
            entry(&mut by, svc).0.blocked_rollbacks += 1;
        }
    }
    let services = by
        .into_values()
        .map(|(mut r, mut d)| {
            r.frequency_per_day = r.deployments as f64 / days;
            r.change_failure_rate =
                (r.rolled_back + r.aborted) as f64 / r.deployments.max(1) as f64;
            d.sort_by(f64::total_cmp);
            r.median_decision_s = d.get(d.len() / 2).copied().unwrap_or(f64::NAN);
            r
        })
        .collect();
    Ok(Report {
        window_days: days,
        services,
    })
}

/// One service's row (created on first use).
fn entry(
    by: &mut BTreeMap<String, (ServiceReport, Vec<f64>)>,
    svc: String,
) -> &mut (ServiceReport, Vec<f64>) {
    by.entry(svc.clone()).or_insert_with(|| {
        (
            ServiceReport {
                service: if svc.is_empty() { "(none)".into() } else { svc },
                ..Default::default()
            },
            Vec::new(),
        )
    })
}

/// A table for people.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "last {:.0} days\n{:<24} {:>7} {:>9} {:>8} {:>12} {:>8} {:>14} {:>10} {:>10}\n",
        r.window_days,
        "SERVICE",
        "DEPLOYS",
        "PER DAY",
        "FAILED",
        "FAILURE RATE",
        "INCONCL",
        "MEDIAN DECIDE",
        "MIGRATIONS",
        "BLOCKED RB"
    );
    for x in &r.services {
        s.push_str(&format!(
            "{:<24} {:>7} {:>9.2} {:>8} {:>11.1}% {:>8} {:>13.0}s {:>10} {:>10}\n",
            x.service,
            x.deployments,
            x.frequency_per_day,
            x.rolled_back + x.aborted,
            x.change_failure_rate * 100.0,
            x.inconclusive,
            x.median_decision_s,
            x.migrations,
            x.blocked_rollbacks
        ));
    }
    if r.services.is_empty() {
        s.push_str("(no finished deployments)\n");
    }
    s
}

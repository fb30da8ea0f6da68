//! The vocabulary every renderer shares: what is queued, the request to send, and what a
//! delivery changes in the destination's incidents. The dispatch to each destination's
//! renderer is in [`super::dispatch`], so renderers depend on this module and never the
//! other way round.

use serde::{Deserialize, Serialize};

use crate::config::NotifierConfig;
use crate::events::Notice;
use crate::store::Incident;

/// What sits in the outbox for one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Queued {
    /// A notice (or one part of it, for destinations that take two requests).
    Notice {
        notice: Box<Notice>,
        #[serde(default)]
        part: Part,
    },
    /// Send every active alert again with a new lease (Alertmanager).
    Refresh,
}

impl Queued {
    /// Reads an outbox payload (rows written before the envelope existed hold a bare notice).
    pub fn from_payload(v: &serde_json::Value) -> Option<Queued> {
        serde_json::from_value(v.clone()).ok().or_else(|| {
            serde_json::from_value(v.clone())
                .ok()
                .map(|notice| Queued::Notice {
                    notice: Box::new(notice),
                    part: Part::Message,
                })
        })
    }
}

/// Which request of a notice: the destination's usual message, or PagerDuty's change event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    #[default]
    Message,
    Change,
}

/// An HTTP request to send, with the exact body bytes (signatures cover these bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Rendered {
    /// A JSON POST.
    pub fn json(url: String, body: &serde_json::Value) -> Result<Rendered, String> {
        let body =
            serde_json::to_vec(body).map_err(|e| format!("cannot serialise the message: {e}"))?;
        Ok(Rendered {
            url,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body,
        })
    }
}

/// What delivering one item takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Send this; once the destination accepted it, apply the incident changes.
    Send {
        request: Rendered,
        changes: Vec<Change>,
    },
    /// Nothing to send (e.g. a resolve for an incident that was never opened); the changes
    /// still apply (an alert that aged out is forgotten).
    Skip {
        reason: String,
        changes: Vec<Change>,
    },
}

/// How a destination's open incidents change once a request is accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// `at`: when it started (Alertmanager's `startsAt`, kept across refreshes).
    Open {
        key: String,
        alertname: String,
        notice: serde_json::Value,
        at: f64,
    },
    Close {
        key: String,
        alertname: String,
    },
}

/// What a renderer knows besides the item.
pub struct Ctx<'a> {
    pub config: &'a NotifierConfig,
    /// Unix seconds now.
    pub now: f64,
    /// The delivery id (UUIDv7, stored with the outbox row): stable across retries and
    /// restarts, unique across daemons, so receivers can drop repeats.
    pub delivery: &'a str,
    /// This destination's open incidents: for the notice's key, or all of them for a refresh.
    pub open: &'a [Incident],
}

/// Discord puts its retry delay in the JSON body (`retry_after`, seconds).
pub fn retry_after_from_body(body: &str) -> Option<std::time::Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let s = v.get("retry_after")?.as_f64()?;
    Some(std::time::Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

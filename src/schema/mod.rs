//! Expand-contract migrations: what schema is live per service, which schema each version of
//! the code works with, and the three gates built on that (pre-flight, rollback, contract).
//!
//! The rule that makes a rollback safe is that the baseline's version still works on the
//! **live** schema. During the expand phase it does; after a contract migration it may not,
//! and rolling back would then put code on a database that no longer has what it needs,
//! turning an incident into an outage. The gates here are pure: they take the live version
//! (or the probe's error) and the declared ranges and return a decision with one sentence a
//! person can act on. The probes that find the live version are in [`probe`]; the daemon
//! config section (`schemas:`) is in [`config`].
//!
//! A gate never guesses: when the live schema is unknown (probe failed, timed out, or the
//! migration tool reports a failed/dirty migration) it holds and says why.

pub mod config;
pub mod probe;

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use config::{Preflight, ProbeKind, SchemaConfig};

/// A schema version as a migration tool writes it, with one documented ordering.
///
/// Versions are sequences of unsigned integers separated by `.` or `_` (an optional leading
/// `v`/`V` is ignored), compared component by component with missing components taken as
/// zero, so `2 < 10`, `1.9 < 1.10`, `1.0 == 1`, and timestamps (`20240105120000`) compare as
/// the integers they are. Tools whose versions are not numbers (Alembic revision ids, pgroll
/// migration names) declare an `order:` list in the service's `schemas:` entry; a version
/// is then its position in that list. Anything else is refused when parsed, never guessed.
#[derive(Clone, Debug)]
pub struct SchemaVersion {
    text: String,
    key: Vec<u64>,
}

impl SchemaVersion {
    /// Parses `text` with the numeric ordering, or as a position in `order` when given.
    pub fn parse(text: &str, order: Option<&[String]>) -> Result<SchemaVersion, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty schema version".into());
        }
        if let Some(order) = order {
            return match order.iter().position(|o| o == t) {
                Some(i) => Ok(SchemaVersion {
                    text: t.to_string(),
                    key: vec![i as u64 + 1],
                }),
                None => Err(format!(
                    "schema version `{}` is not in this service's `order:` list",
                    crate::diag::one_line(t)
                )),
            };
        }
        let digits = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let mut key = Vec::new();
        for part in digits.split(['.', '_']) {
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{}` is not a schema version: expected numbers separated by `.` or `_` (e.g. 42, 1.2.3, 20240105120000), or declare an `order:` list for this service",
                    crate::diag::one_line(&t.chars().take(80).collect::<String>())
                ));
            }
            key.push(part.parse::<u64>().map_err(|e| e.to_string())?);
        }
        while key.len() > 1 && key.last() == Some(&0) {
            key.pop();
        }
        Ok(SchemaVersion {
            text: t.to_string(),
            key,
        })
    }

    /// The version as the tool wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for SchemaVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SchemaVersion {}
impl PartialOrd for SchemaVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SchemaVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // Trailing zeros were removed when parsing, so `1.0` and `1` have the same key.
        self.key.cmp(&other.key)
    }
}
impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A version bound as a deployment sends it: a JSON number (`42`) or a string (`"1.2"`,
/// `"20240105120000"`, an Alembic revision). Kept as text; it is parsed against the
/// service's ordering at registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bound(pub String);

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            U(u64),
            S(String),
            F(f64),
        }
        match Raw::deserialize(d)? {
            Raw::U(n) => Ok(Bound(n.to_string())),
            Raw::S(s) => Ok(Bound(s)),
            Raw::F(f) => Err(serde::de::Error::custom(format!(
                "schema version {f} is a decimal number, which loses digits (1.10 becomes 1.1): write dotted versions as strings, e.g. \"1.10\""
            ))),
        }
    }
}

/// The schemas one version of the code works with: the minimum it needs (its migrations
/// must have run) and, when known, the maximum it tolerates (the last schema before a
/// contract that removed something it uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Bound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
}

/// A [`SchemaRange`] parsed with the service's ordering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: Option<SchemaVersion>,
    pub max: Option<SchemaVersion>,
}

impl SchemaRange {
    /// Parses both bounds; `min` above `max` is refused.
    pub fn parse(&self, order: Option<&[String]>) -> Result<Range, String> {
        let p = |b: &Option<Bound>, which: &str| {
            b.as_ref()
                .map(|b| SchemaVersion::parse(&b.0, order).map_err(|e| format!("`{which}`: {e}")))
                .transpose()
        };
        let r = Range {
            min: p(&self.min, "min")?,
            max: p(&self.max, "max")?,
        };
        if let (Some(lo), Some(hi)) = (&r.min, &r.max)
            && lo > hi
        {
            return Err(format!(
                "`min` ({lo}) is above `max` ({hi}): no schema fits"
            ));
        }
        Ok(r)
    }
}

/// How a live schema relates to a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    Fits,
    /// The code needs a newer schema (its migrations have not run).
    TooOld {
        min: SchemaVersion,
    },
    /// The schema was contracted past what the code tolerates.
    TooNew {
        max: SchemaVersion,
    },
}

impl Range {
    pub fn fit(&self, live: &SchemaVersion) -> Fit {
        if let Some(min) = &self.min
            && live < min
        {
            return Fit::TooOld { min: min.clone() };
        }
        if let Some(max) = &self.max
            && live > max
        {
            return Fit::TooNew { max: max.clone() };
        }
        Fit::Fits
    }
}

/// What the probe says about the live schema at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    Known(SchemaVersion),
    /// The probe failed, timed out, or returned something that is not a version (a dirty or
    /// failed migration): a `source_error`, never taken for a version.
    Unknown(String),
}

impl Live {
    /// `schema 42` or `schema unknown (why)`, for sentences.
    pub fn describe(&self) -> String {
        match self {
            Live::Known(v) => format!("schema {v}"),
            Live::Unknown(why) => format!("schema unknown ({why})"),
        }
    }
}

/// `v1`, or `the baseline` when the deployment did not name the version.
fn name(version: Option<&str>, arm: &str) -> String {
    match version {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => format!("the {arm}"),
    }
}

/// The pre-flight gate's answer for a canary about to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflighted {
    Start,
    /// The canary needs a migration that has not run yet: refuse, or wait for it.
    NeedsMigration(String),
    /// The live schema is past what the canary tolerates: it can never start on it.
    Refuse(String),
    /// The live schema is unknown: hold, say why, look again.
    Unknown(String),
}

/// Migrations before code: may the canary start on the live schema?
pub fn preflight(service: &str, canary: &Range, version: Option<&str>, live: &Live) -> Preflighted {
    let who = name(version, "canary");
    match live {
        Live::Unknown(why) => Preflighted::Unknown(format!(
            "waiting: cannot tell whether {who} can run, the schema probe of `{service}` failed: {why}"
        )),
        Live::Known(v) => match canary.fit(v) {
            Fit::Fits => Preflighted::Start,
            Fit::TooOld { min } => Preflighted::NeedsMigration(format!(
                "{who} needs schema {min} or newer, but `{service}` is at schema {v}: run the migration first (migrations before code)"
            )),
            Fit::TooNew { max } => Preflighted::Refuse(format!(
                "{who} works up to schema {max}, but `{service}` is already at schema {v}"
            )),
        },
    }
}

/// The rollback gate's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackGate {
    Safe,
    /// Rolling back would run the baseline on a schema it does not work with: roll forward.
    Unsafe(String),
    /// The live schema is unknown: hold and look again.
    Unknown(String),
}

/// Before any rollback hook: does the baseline still work on the live schema?
pub fn rollback_gate(baseline: &Range, version: Option<&str>, live: &Live) -> RollbackGate {
    let who = name(version, "baseline");
    match live {
        Live::Unknown(why) => RollbackGate::Unknown(format!(
            "cannot tell whether rolling back to {who} is safe: the schema probe failed ({why}); holding, nothing rolled back"
        )),
        Live::Known(v) => {
            // Either misfit is the same sentence to the person: unsafe, roll forward.
            let why = match baseline.fit(v) {
                Fit::Fits => return RollbackGate::Safe,
                Fit::TooNew { max } => {
                    format!("schema {v} removed what {who} needs ({who} works up to {max})")
                }
                Fit::TooOld { min } => {
                    format!("{who} needs schema {min} or newer and the live schema is {v}")
                }
            };
            RollbackGate::Unsafe(format!(
                "rolling back to {who} is unsafe: {why} — roll forward"
            ))
        }
    }
}

/// One version of the code that still needs the database (an arm of an active deployment,
/// or the version a finished deployment left serving).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub deployment: String,
    /// `baseline` or `canary`.
    pub arm: String,
    pub version: Option<String>,
    /// `active` or `serving`.
    pub why: String,
    #[serde(skip)]
    pub max: Option<SchemaVersion>,
    pub works_up_to: Option<String>,
}

/// The contract gate: contracting to `to` is safe while no user tolerates only less. Returns
/// the users that block it, each with a sentence.
pub fn contract_blockers<'a>(to: &SchemaVersion, users: &'a [User]) -> Vec<(&'a User, String)> {
    users
        .iter()
        .filter_map(|u| {
            let max = u.max.as_ref()?;
            (max < to).then(|| {
                let who = name(u.version.as_deref(), &u.arm);
                let what = if u.why == "serving" {
                    "is still serving"
                } else {
                    "is in an active deployment"
                };
                (
                    u,
                    format!(
                        "{who} ({} of deployment {}) {what} and works only up to schema {max}",
                        u.arm, u.deployment
                    ),
                )
            })
        })
        .collect()
}

/// The daemon's view of every configured service's schema: the settings, the prober, and
/// the last answer per service (for the API and for telling schema changes apart).
pub struct Schemas {
    config: std::collections::BTreeMap<String, SchemaConfig>,
    prober: probe::Prober,
    last: std::sync::Mutex<std::collections::HashMap<String, (Live, f64)>>,
}

/// A schema change seen between two probes of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: SchemaVersion,
    pub to: SchemaVersion,
}

impl Schemas {
    pub fn new(
        config: std::collections::BTreeMap<String, SchemaConfig>,
        prom: Option<std::sync::Arc<crate::source::promql::PromClient>>,
    ) -> Result<Schemas, String> {
        Ok(Schemas {
            config,
            prober: probe::Prober::new(prom)?,
            last: Default::default(),
        })
    }

    /// The settings of `service`, when it has a `schemas:` entry.
    pub fn config(&self, service: &str) -> Option<&SchemaConfig> {
        self.config.get(service)
    }

    /// Every configured service.
    pub fn services(&self) -> impl Iterator<Item = &SchemaConfig> {
        self.config.values()
    }

    /// Probes `cfg`'s service now. Returns the live schema and, when it differs from the
    /// last known version, the change (an unknown answer in between is not a change).
    pub async fn probe(&self, cfg: &SchemaConfig) -> (Live, Option<Change>) {
        let live = self.prober.live(cfg).await;
        let Ok(mut last) = self.last.lock() else {
            return (live, None);
        };
        let mut change = None;
        if let Live::Known(to) = &live {
            // Compared with the last *known* version: a failed probe in between is no change.
            if let Some((Live::Known(from), _)) = last.get(&known_key(&cfg.service))
                && from != to
            {
                change = Some(Change {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            last.insert(known_key(&cfg.service), (live.clone(), crate::store::now()));
        }
        last.insert(cfg.service.clone(), (live.clone(), crate::store::now()));
        (live, change)
    }

    /// The last probe's answer for `service` and when it came (Unix seconds).
    pub fn last(&self, service: &str) -> Option<(Live, f64)> {
        self.last.lock().ok()?.get(service).cloned()
    }
}

/// Where the last known version of a service is kept, next to its last answer.
fn known_key(service: &str) -> String {
    format!("{service}\u{0}known")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SchemaVersion {
        SchemaVersion::parse(s, None).unwrap()
    }

    #[test]
    fn numeric_ordering_is_by_component_not_by_text() {
        assert!(v("2") < v("10"));
        assert!(v("1.9") < v("1.10"));
        assert_eq!(v("1.0"), v("1"));
        assert_eq!(v("V2_1"), v("2.1"));
        assert!(v("20240105120000") > v("20231231235959"));
        assert_eq!(v(" 42\n").as_str(), "42");
    }

    #[test]
    fn anything_else_is_refused_not_guessed() {
        for bad in [
            "",
            "dirty",
            "42 dirty",
            "1..2",
            "-1",
            "ae1027a6acf",
            "1.2.x",
        ] {
            assert!(SchemaVersion::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_order_list_orders_revision_ids() {
        let order = vec!["ae10".to_string(), "1975".to_string(), "27c6".to_string()];
        let a = SchemaVersion::parse("1975", Some(&order)).unwrap();
        let b = SchemaVersion::parse("27c6", Some(&order)).unwrap();
        assert!(a < b);
        assert!(SchemaVersion::parse("ffff", Some(&order)).is_err());
    }

    #[test]
    fn the_rollback_sentence_names_schema_and_limit() {
        let r = SchemaRange {
            min: Some(Bound("40".into())),
            max: Some(Bound("41".into())),
        }
        .parse(None)
        .unwrap();
        assert_eq!(
            rollback_gate(&r, Some("v1"), &Live::Known(v("42"))),
            RollbackGate::Unsafe(
                "rolling back to v1 is unsafe: schema 42 removed what v1 needs (v1 works up to 41) — roll forward".into()
            )
        );
        assert_eq!(
            rollback_gate(&r, Some("v1"), &Live::Known(v("41"))),
            RollbackGate::Safe
        );
        assert!(matches!(
            rollback_gate(&r, None, &Live::Unknown("timed out".into())),
            RollbackGate::Unknown(_)
        ));
    }

    #[test]
    fn preflight_wants_migrations_before_code() {
        let r = SchemaRange {
            min: Some(Bound("42".into())),
            max: None,
        }
        .parse(None)
        .unwrap();
        assert!(matches!(
            preflight("db", &r, Some("v2"), &Live::Known(v("41"))),
            Preflighted::NeedsMigration(_)
        ));
        assert_eq!(
            preflight("db", &r, Some("v2"), &Live::Known(v("42"))),
            Preflighted::Start
        );
    }

    #[test]
    fn bounds_are_numbers_or_strings_never_decimals() {
        let r: SchemaRange = serde_json::from_str(r#"{"min": 42, "max": "1.10"}"#).unwrap();
        assert_eq!(r.min, Some(Bound("42".into())));
        assert_eq!(r.max, Some(Bound("1.10".into())));
        let e = serde_json::from_str::<SchemaRange>(r#"{"max": 1.10}"#).unwrap_err();
        assert!(
            e.to_string().contains("write dotted versions as strings"),
            "{e}"
        );
    }

    #[test]
    fn min_above_max_is_refused() {
        let r = SchemaRange {
            min: Some(Bound("5".into())),
            max: Some(Bound("4".into())),
        };
        assert!(r.parse(None).is_err());
    }

    #[test]
    fn contract_is_blocked_by_users_that_tolerate_less() {
        let users = vec![
            User {
                deployment: "d1".into(),
                arm: "baseline".into(),
                version: Some("v1".into()),
                why: "active".into(),
                max: Some(v("41")),
                works_up_to: Some("41".into()),
            },
            User {
                deployment: "d1".into(),
                arm: "canary".into(),
                version: Some("v2".into()),
                why: "active".into(),
                max: None,
                works_up_to: None,
            },
        ];
        assert_eq!(contract_blockers(&v("42"), &users).len(), 1);
        assert!(contract_blockers(&v("41"), &users).is_empty());
    }
}

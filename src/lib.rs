//! rollguard: watches canary and blue-green deployments, compares the canary against its
//! baseline with anytime-valid sequential statistics, and rolls back automatically.
//!
//! See `docs/ARCHITECTURE.md` for the map of the modules.

#[macro_use]
mod text_enum;

pub mod action;
pub mod api;
pub mod backtest;
pub mod chart;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod deploy;
pub mod diag;
pub mod escape;
pub mod events;
pub mod exit;
pub mod expo;
pub mod ids;
pub mod judge;
pub mod leader;
pub mod logging;
pub mod net;
pub mod preflight;
pub mod query;
pub mod reload;
pub mod report;
pub mod rules;
pub mod schema;
pub mod secret;
pub mod selector;
pub mod series;
pub mod signals;
pub mod sim;
pub mod source;
pub mod standard_webhooks;
pub mod stats;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod template;
pub mod units;
pub mod written;
pub mod yamlfile;

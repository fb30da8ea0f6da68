//! Every integration test but `hooks_exec`, in one test binary.
//!
//! Each file under `tests/` is a module here, not a binary of its own: thirty-odd binaries
//! each linking the whole crate and its dependencies were most of CI's build time. Run one
//! group with `cargo test --release --test all daemon_e2e::`. `hooks_exec` stays a binary of
//! its own because it changes the process environment (`std::env::set_var`), which is not
//! safe with other tests' threads running.

mod support;

mod backtest;
mod cli_usage;
mod client_wait;
mod daemon_e2e;
mod deployments;
mod expo_corpus;
mod expo_openmetrics;
mod expo_oracle;
mod expo_proptest;
mod faults_crash;
mod faults_injection;
mod faults_notify;
mod faults_storage;
mod grafana_dashboard;
mod ha;
mod hooks_exactly_once;
mod judge_sim;
mod judge_verdicts;
mod lost_messages;
mod migrations;
mod notify_delivery;
mod notify_formats;
mod prometheus_api;
mod prometheus_e2e;
mod reload;
mod rules_check;
mod service_health;
mod service_shutdown;
mod source_scrape;
mod source_scrape_e2e;
mod stats_grid_sim;
mod stats_robustness;
mod status_page;
mod systemd_journal;
mod systemd_notify;
mod templates;
mod webhook_receiver;

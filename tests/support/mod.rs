//! Test support for the integration tests (`tests/all.rs`, as `mod support;`) and the benches
//! (`#[path = "../tests/support/mod.rs"] mod support;`): real parts only — the real
//! `rollguard` binary, real HTTP servers on 127.0.0.1:0, a real Prometheus and PostgreSQL,
//! temporary directories — and waiting on events instead of sleeping.
//!
//! - [`daemon`]: the daemon process (config and rule files, start, API, stop, crash);
//! - [`service`]: the daemon as systemd starts it (notification socket, signals);
//! - [`fleet`]: simulated targets (one fleet, or the benches' farm of many deployments);
//! - [`raw`]: raw HTTP responders that misbehave on purpose, and TLS;
//! - [`receivers`]: what notifications reach (chat, alerting and webhook fakes, a recorder);
//! - [`prometheus`], [`postgres`]: real servers, one per test;
//! - [`proxy`]: a TCP proxy a test can cut (a daemon cut off from its database);
//! - [`http`]: small blocking HTTP clients;
//! - [`measure`]: what the benches measure (hook start times, CPU, memory, quantiles);
//! - [`expo`]: the exposition parser's invariants (shared with the fuzz target);
//! - [`prop`]: property-test inputs (the awkward f64 values).
//!
//! Each binary that includes this (the test binaries, two benches) uses only part of it, so
//! unused items and re-exports are not warned about.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod expo;
pub mod fleet;
pub mod http;
pub mod measure;
pub mod postgres;
pub mod prometheus;
pub mod prop;
pub mod proxy;
pub mod raw;
pub mod receivers;
pub mod service;

pub use daemon::{
    BIN, Daemon, RATIO_RULE, assert_rolled_back_by_the_ratio_check, cli, hook_action_id, lines,
    slow_rule, wait_for,
};
pub use fleet::FleetServer;
pub use http::http;

/// A child process, killed and reaped when this is dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails unless `log` contains `needle`, showing the whole log: the line is what the test is
/// about, and the rest is what a failure needs to be understood.
#[track_caller]
pub fn assert_logged(log: &str, needle: &str) {
    assert!(log.contains(needle), "`{needle}` is not in the log:\n{log}");
}

/// Fails naming the first of `wants` that `text` lacks (`what` says whose text it is): for the
/// tests that check a message or an output says several things.
#[track_caller]
pub fn assert_says_all(what: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{what} lacks `{want}`: {text}");
    }
}

/// A free loopback port: bound to port 0, read, and released for a server to take.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

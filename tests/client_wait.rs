//! Issue 17: `rollguard deploy start --wait` and `deploy wait` as a pipeline runs them — the
//! daemon is killed with SIGKILL while the CLI waits and comes back on the same port: the CLI
//! ends with the verdict's exit code, not "cannot reach". `--timeout` is the whole budget: a
//! long poll never runs past it, and only a daemon unreachable until then gives exit 3.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, BIN, Daemon, FleetServer, RATIO_RULE};

/// The daemon with the ratio rule in `dir`, listening on `listen`: started again after a crash,
/// it answers where the waiting CLI looks.
fn daemon_at(dir: tempfile::TempDir, listen: &str) -> Daemon {
    Daemon::start_at(dir, &[("errors.yaml", RATIO_RULE)], "", listen)
}

/// The CLI exited 0 (else its stderr `err` and the daemon's log are shown) and said `says`.
fn cli_succeeded(out: &std::process::Output, err: &str, d: &Daemon, says: &str) {
    let code = out.status.code();
    assert_eq!(code, Some(0), "CLI said:\n{err}\ndaemon:\n{}", d.log());
    assert!(err.contains(says), "{err}");
}

#[test]
fn wait_rides_out_a_daemon_crash_and_ends_with_the_verdict() {
    let fleet = FleetServer::good(31);
    let listen = format!("127.0.0.1:{}", support::free_port());
    let d = daemon_at(tempfile::tempdir().expect("tempdir"), &listen);
    let cli = Command::new(BIN)
        .args([
            "deploy",
            "--server",
            &d.url,
            "start",
            "--id",
            "ride",
            "--analysis",
            "errors",
        ])
        .args([
            "--baseline",
            &fleet.target("baseline-0"),
            &fleet.target("baseline-1"),
        ])
        .args([
            "--canary",
            &fleet.target("canary-0"),
            &fleet.target("canary-1"),
        ])
        .args(["--wait", "--timeout", "90s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploy start --wait");
    // Registered and being judged: now the daemon dies under the waiting CLI.
    let running = support::wait_for(Duration::from_secs(20), || {
        let (code, v) = d.get("/api/v1/deployments/ride");
        (code == 200 && v["state"] == "analysing").then_some(())
    });
    if running.is_none() {
        let mut cli = cli;
        let _ = cli.kill();
        let out = cli.wait_with_output().expect("CLI output");
        panic!(
            "the deployment never ran: {:?}\nCLI: {}\ndaemon: {}",
            d.get("/api/v1/deployments/ride"),
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    let dir = d.crash();
    let d = daemon_at(dir, &listen);
    let out = cli.wait_with_output().expect("CLI ends");
    let err = String::from_utf8_lossy(&out.stderr);
    cli_succeeded(&out, &err, &d, "retrying until the timeout");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("state promoted"), "{status}");
}

#[test]
fn timeout_is_exact_and_unreachable_is_exit_3() {
    let fleet = FleetServer::good(32);
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    let (code, v) = d.post(
        "/api/v1/deployments",
        &serde_json::json!({
            "id": "slow", "analysis": "errors",
            "baseline": {"targets": [fleet.target("baseline-0")]},
            "canary": {"targets": [fleet.target("canary-0")]}
        }),
    );
    assert_eq!(code, 201, "{v}");
    // Running for at least min_duration (8 s): a 2 s wait must end at 2 s, not after a 20 s poll.
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "deploy",
            "--server",
            &d.url,
            "wait",
            "slow",
            "--timeout",
            "2s",
        ])
        .output()
        .expect("deploy wait");
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 2s"));
    assert!(
        took < Duration::from_millis(3500),
        "--timeout 2s took {took:?}"
    );

    // Nothing listens there: retried for the whole second, then exit 3 with the reason.
    let nobody = format!("http://127.0.0.1:{}", support::free_port());
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "deploy",
            "--server",
            &nobody,
            "wait",
            "slow",
            "--timeout",
            "1s",
        ])
        .output()
        .expect("deploy wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot reach rollguard"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "gave up early: {err}"
    );
}

/// Issue 17, the API client: `deploy start --wait` issued while the daemon is down (killed,
/// not yet restarted) retries the registration until the daemon is back, then waits for the
/// verdict. The same command again is a no-op: one deployment, analysed once.
#[test]
fn registration_while_the_daemon_is_down_is_retried_and_made_once() {
    let fleet = FleetServer::good(37);
    let listen = format!("127.0.0.1:{}", support::free_port());
    let d = daemon_at(tempfile::tempdir().expect("tempdir"), &listen);
    let url = d.url.clone();
    let dir = d.crash();
    let stderr = dir.path().join("cli.stderr");
    let start = |wait: bool| {
        let mut c = Command::new(BIN);
        c.args(["deploy", "--server", &url, "start", "--id", "reg"])
            .args(["--analysis", "errors"])
            .args(["--baseline", &fleet.target("baseline-0")])
            .args(["--canary", &fleet.target("canary-0")]);
        if wait {
            c.args(["--wait", "--timeout", "90s"]);
        }
        c
    };
    let cli = start(true)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn deploy start --wait");
    // The CLI has met the dead daemon and is retrying: now the daemon comes back.
    support::wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&stderr)
            .ok()
            .filter(|e| e.contains("retrying until the timeout"))
    })
    .expect("the CLI retries while the daemon is down");
    let d = daemon_at(dir, &listen);
    let out = cli.wait_with_output().expect("CLI ends");
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    cli_succeeded(&out, &err, &d, "registered deployment reg");
    // A pipeline that retries the whole step: registered already, nothing new starts.
    let again = start(false).output().expect("deploy start again");
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{again_err}");
    assert!(again_err.contains("already registered"), "{again_err}");
    let (_, events) = d.get("/api/v1/deployments/reg/events");
    let started = events["events"]
        .as_array()
        .or(events.as_array())
        .map(|e| e.iter().filter(|e| e["kind"] == "started").count());
    assert_eq!(started, Some(1), "{events:#}");
}

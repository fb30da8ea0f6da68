//! Issue 8: the real binary as a `Type=notify` service. This machine has no systemd as PID 1
//! (`systemd-run --user` fails: "Failed to connect to bus"), so the test plays the service
//! manager: it binds the notification socket, passes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` the way systemd does, sends real signals and reads the datagrams.

use crate::support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::service::{NOOP_HOOKS, NotifySocket, Service, ServiceDir, api_from_ready};
use support::{BIN, slow_rule};

const T: Duration = Duration::from_secs(20);

/// Starts the daemon as systemd would: `WATCHDOG_PID` is the daemon's own pid, which only a
/// shell that `exec`s the binary knows in advance.
fn start(
    dir: &ServiceDir,
    sock: &NotifySocket,
    watchdog_usec: &str,
    watchdog_pid: Option<&str>,
) -> Service {
    let script = match watchdog_pid {
        None => r#"WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" run --config "$1""#.to_string(),
        Some(pid) => {
            format!(r#"WATCHDOG_PID={pid}; export WATCHDOG_PID; exec "$0" run --config "$1""#)
        }
    };
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(script).arg(BIN).arg(dir.config());
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", watchdog_usec)
        .stderr(std::fs::File::create(dir.log_file()).expect("log"));
    Service::spawn(c)
}

fn monotonic_usec(msg: &str) -> u128 {
    msg.lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"))
}

#[test]
fn ready_reloading_stopping_in_order_with_watchdog_pings() {
    let dir = ServiceDir::new(
        &[("errors.yaml", &slow_rule())],
        &format!("{NOOP_HOOKS}shutdown_grace: 5s\n"),
    );
    let mut sock = NotifySocket::bind(dir.path());
    let mut svc = start(&dir, &sock, "300000", None);

    let ready = sock.wait_for(T, "READY=1", |m| m.starts_with("READY=1"));
    assert!(ready.contains("STATUS=running; rules "), "{ready}");
    // The API is bound before READY=1: it answers right away.
    let url = api_from_ready(&ready);
    let (code, _) = support::http::get(&format!("{url}/healthz"));
    assert_eq!(code, 200, "log:\n{}", dir.log());

    // Watchdog: WATCHDOG_USEC=300 ms, so a ping about every 150 ms.
    let mut pings = sock.seen.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    while pings < 3 {
        sock.wait_for(T, "WATCHDOG=1", |m| m == "WATCHDOG=1\n");
        pings += 1;
    }

    // SIGHUP: RELOADING=1 and MONOTONIC_USEC in one datagram, then READY=1 again.
    svc.signal(Signal::SIGHUP);
    let r1 = sock.wait_for(T, "RELOADING=1", |m| m.starts_with("RELOADING=1"));
    let t1 = monotonic_usec(&r1);
    let back = sock.wait_for(T, "READY=1 after the reload", |m| m.starts_with("READY=1"));
    assert!(back.contains("STATUS=running; rules "), "{back}");
    svc.signal(Signal::SIGHUP);
    let r2 = sock.wait_for(T, "second RELOADING=1", |m| m.starts_with("RELOADING=1"));
    assert!(monotonic_usec(&r2) > t1, "{r1:?} then {r2:?}");
    sock.wait_for(T, "READY=1 after the second reload", |m| {
        m.starts_with("READY=1")
    });

    // SIGTERM: STOPPING=1, with the stop timeout extended to the longest the stop can take
    // (5 s grace + 5 s kill grace + 3 + 3 + 2 + 2 + 5 s of bookkeeping), then exit 0.
    svc.signal(Signal::SIGTERM);
    let stopping = sock.wait_for(T, "STOPPING=1", |m| m.starts_with("STOPPING=1"));
    assert!(
        stopping.contains("EXTEND_TIMEOUT_USEC=25000000"),
        "{stopping}"
    );
    let status = svc.wait(T).expect("the daemon exits after SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", dir.log());

    let states: Vec<String> = sock
        .states()
        .into_iter()
        .filter(|s| !s.starts_with("STATUS="))
        .collect();
    assert_eq!(
        states,
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ],
        "{:#?}",
        sock.seen
    );
    support::assert_logged(&dir.log(), "rollguard stopped cleanly");
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_names_another_process() {
    // A hook or a child that inherited the variables must not keep the unit alive.
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], NOOP_HOOKS);
    let mut sock = NotifySocket::bind(dir.path());
    let mut svc = start(&dir, &sock, "100000", Some("1"));
    sock.wait_for(T, "READY=1", |m| m.starts_with("READY=1"));
    // Ten watchdog periods of silence.
    while let Some(m) = sock.recv(Duration::from_secs(1)) {
        assert_ne!(
            m, "WATCHDOG=1\n",
            "pinged for another pid: {:#?}",
            sock.seen
        );
    }
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
}

#[test]
fn invalid_rules_exit_78_and_never_report_ready() {
    // 78 (EX_CONFIG) is in the unit's RestartPreventExitStatus=: a broken rule must not
    // make systemd restart the daemon in a loop.
    let dir = ServiceDir::new(
        &[("errors.yaml", "analysis: errors\nchecks: nope\n")],
        NOOP_HOOKS,
    );
    let mut sock = NotifySocket::bind(dir.path());
    let mut svc = start(&dir, &sock, "300000", None);
    let status = svc.wait(T).expect("exits");
    assert_eq!(status.code(), Some(78), "log:\n{}", dir.log());
    while sock.recv(Duration::from_millis(200)).is_some() {}
    assert!(
        !sock.states().iter().any(|s| s == "READY=1"),
        "{:#?}",
        sock.seen
    );
    assert!(
        sock.seen
            .iter()
            .any(|m| m.contains("STATUS=failed to start: invalid rules")),
        "{:#?}",
        sock.seen
    );
}

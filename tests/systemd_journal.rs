//! Issue 8: logs go to the journal's native protocol when stderr is the journal stream, with
//! structured fields and stable MESSAGE_IDs; plain text or JSON on stderr otherwise.
//!
//! The journal test needs root (CI runs as root): the daemon runs in a private mount
//! namespace where `/run/systemd/journal/socket` is a datagram socket this test binds, so
//! the real binary speaks the real protocol to a real socket without touching the host's
//! journal.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::http::post;
use support::service::{NOOP_HOOKS, Service, ServiceDir};
use support::{BIN, slow_rule};

const T: Duration = Duration::from_secs(20);

/// One journal entry in the native protocol: `KEY=value\n`, or `KEY\n` + a little-endian
/// u64 length + the bytes + `\n` for values that may contain newlines.
fn parse_entry(mut b: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            m.entry(String::from_utf8_lossy(&line[..eq]).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            m.entry(key)
                .or_default()
                .push(String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    m
}

fn field<'a>(e: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    e.get(k)
        .and_then(|v| v.first())
        .map(String::as_str)
        .unwrap_or("")
}

#[test]
fn native_journal_fields_and_message_ids() {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("skipped: needs root for a private mount namespace (CI runs as root)");
        return;
    }
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], NOOP_HOOKS);
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir_all(&journal_dir).expect("journal dir");
    let journal = UnixDatagram::bind(journal_dir.join("socket")).expect("bind journal socket");
    journal
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");

    // stderr is a file; JOURNAL_STREAM names it, as systemd names the stream socket.
    let stderr = std::fs::File::create(dir.log_file()).expect("stderr file");
    let meta = stderr.metadata().expect("metadata");
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && mount --bind "$0" /run/systemd/journal && exec "$1" run --config "$2""#)
        .arg(&journal_dir)
        .arg(BIN)
        .arg(dir.config())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut svc = Service::spawn(c);
    let url = dir.wait_listen_addr(T);

    // A person aborts a deployment (event with a deployment), and a broken rule edit is
    // rejected on SIGHUP (a key event with a stable MESSAGE_ID).
    let dead = "http://127.0.0.1:9/metrics";
    let (code, v) = post(
        &format!("{url}/api/v1/deployments"),
        &json!({"id": "j1", "analysis": "errors", "baseline": {"targets": [dead]}, "canary": {"targets": [dead]}}),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = post(
        &format!("{url}/api/v1/deployments/j1/abort"),
        &json!({"who": "test"}),
    );
    assert_eq!(code, 202, "{v}");
    std::fs::write(
        dir.path().join("rules/errors.yaml"),
        slow_rule().replace("tolerance:", "tolerence:"),
    )
    .expect("break the rule");
    svc.signal(Signal::SIGHUP);

    let mut entries = Vec::new();
    let start = Instant::now();
    let want = rollguard::events::NoticeKind::RuleReloadFailed.message_id();
    let mut buf = vec![0u8; 256 * 1024];
    // The abort is applied by the deployment's loop and the reload by the reload task, in
    // either order: collect until both are in.
    let has = |entries: &[BTreeMap<String, Vec<String>>], k: &str, v: &str| {
        entries.iter().any(|e| field(e, k) == v)
    };
    while !(has(&entries, "MESSAGE_ID", want) && has(&entries, "EVENT", "aborted")) {
        assert!(
            start.elapsed() < T,
            "no rule_reload_failed or aborted entry; got {entries:#?}"
        );
        // tracing-journald probes the socket with an empty datagram when it starts.
        match journal.recv(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => entries.push(parse_entry(&buf[..n])),
        }
    }
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));

    for e in &entries {
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), "rollguard", "{e:?}");
        assert!(!field(e, "MESSAGE").is_empty(), "{e:?}");
        assert!(
            !e.keys().any(|k| k.starts_with("F_")),
            "prefixed fields: {e:?}"
        );
    }
    let listening = entries
        .iter()
        .find(|e| field(e, "MESSAGE").starts_with("rollguard listening"))
        .expect("start-up line");
    assert_eq!(
        field(listening, "PRIORITY"),
        "5",
        "INFO maps to notice: {listening:?}"
    );
    let aborted = entries
        .iter()
        .find(|e| field(e, "EVENT") == "aborted")
        .expect("aborted event");
    assert_eq!(field(aborted, "DEPLOYMENT"), "j1", "{aborted:?}");
    assert_eq!(field(aborted, "PRIORITY"), "4", "{aborted:?}");
    let rejected = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID") == want)
        .expect("reload failure");
    assert_eq!(field(rejected, "EVENT"), "rule_reload_failed");
    assert!(
        field(rejected, "MESSAGE").contains("tolerence"),
        "{rejected:?}"
    );
    // Nothing went to stderr: the journal got it all.
    assert_eq!(dir.log(), "", "stderr should be empty under the journal");
}

/// Runs the daemon with `c` until it listens, then stops it with SIGTERM (a clean exit); its
/// log.
fn start_and_stop(dir: &ServiceDir, c: std::process::Command) -> String {
    let (mut svc, _) = dir.start_logged(c);
    svc.signal(Signal::SIGTERM);
    assert!(svc.wait(T).is_some_and(|s| s.success()));
    dir.log()
}

#[test]
fn plain_stderr_when_journal_stream_names_something_else() {
    // A child of a systemd service inherits JOURNAL_STREAM with stderr elsewhere.
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], NOOP_HOOKS);
    let mut c = dir.command();
    c.env("JOURNAL_STREAM", "1:1");
    let log = start_and_stop(&dir, c);
    let line = log
        .lines()
        .find(|l| l.contains("rollguard listening"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        !line.starts_with('<') && !line.contains('\u{1b}'),
        "no priority prefix or colours in a file: {line:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = ServiceDir::new(&[("errors.yaml", &slow_rule())], NOOP_HOOKS);
    let mut c = dir.command();
    c.args(["--log-format", "json"]);
    let log = start_and_stop(&dir, c);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("rollguard listening"))
        })
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(start["level"], "INFO");
    assert!(
        start["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{start}"
    );
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "rollguard stopped cleanly"),
        "{log}"
    );
}

//! Issue 17: signed webhooks verified by an independent implementation — the Standard
//! Webhooks reference library for Python (PyPI `standardwebhooks`), run as a real receiver
//! process. It checks `webhook-id`, `webhook-timestamp` and `webhook-signature` the way
//! receivers' own code does, and rejects a replayed request whose timestamp is stale.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::receivers::WEBHOOK_SECRET;
use crate::support::{self, Daemon, FleetServer, RATIO_RULE};

const RECEIVER: &str = r#"
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks.webhooks import Webhook

secret, log = sys.argv[1], sys.argv[2]
hook = Webhook(secret)

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {"id": headers.get("webhook-id"), "ts": headers.get("webhook-timestamp"),
                 "sig": headers.get("webhook-signature"), "body": body.decode()}
        try:
            hook.verify(body, headers)
            entry["ok"] = True
        except Exception as e:
            entry["ok"] = False
            entry["error"] = str(e)
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(204 if entry["ok"] else 400)
        self.end_headers()
    def log_message(self, *a):
        pass

srv = HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// The Python receiver on a free port; its log of verified (or rejected) requests.
struct Receiver {
    _child: support::KillOnDrop,
    port: u16,
    log: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &std::path::Path) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).expect("write receiver");
        let log = dir.join("received.jsonl");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(WEBHOOK_SECRET)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (with `pip install standardwebhooks`, as scripts/test does)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("receiver stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the receiver did not start (is `standardwebhooks` installed?): {line:?}")
        });
        Receiver {
            _child: support::KillOnDrop(child),
            port,
            log,
        }
    }

    fn entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[test]
fn the_reference_library_verifies_every_message_and_rejects_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(dir.path());
    let fleet = FleetServer::bad(41);
    let extra = format!(
        "notifiers:\n  audit:\n    webhook:\n      url: http://127.0.0.1:{}/hook\n      secret: {WEBHOOK_SECRET}\n    pace: 10ms\n",
        rx.port
    );
    let rule = RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [rollback, audit]");
    let d = Daemon::start(&[("errors.yaml", &rule)], &extra);
    let (code, v) = d.post(
        "/api/v1/deployments",
        &serde_json::json!({"id": "signed", "analysis": "errors",
            "baseline": {"targets": [fleet.target("baseline-0")]},
            "canary": {"targets": [fleet.target("canary-0")]}}),
    );
    assert_eq!(code, 201, "{v}");
    d.wait_state("signed", &["rolled_back"], Duration::from_secs(60));
    // The rollback decision and the rollback hook's result.
    let got = support::wait_for(Duration::from_secs(20), || {
        let e = rx.entries();
        (e.len() >= 2).then_some(e)
    })
    .unwrap_or_else(|| panic!("received: {:?}\nlog:\n{}", rx.entries(), d.log()));
    for e in &got {
        assert_eq!(e["ok"], true, "rejected by the reference library: {e}");
    }
    let mut ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "one delivery id per message: {got:?}");

    // A captured request replayed ten minutes later: the timestamp is signed, so the
    // receiver's library refuses it even though id, body and signature are untouched.
    let first = &got[0];
    let stale = first["ts"]
        .as_str()
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0)
        - 600;
    let status = replay(rx.port, first, &stale.to_string());
    assert_eq!(status, 400, "a stale replay was accepted");
    let last = rx.entries().pop().expect("the replay was logged");
    assert_eq!(last["ok"], false, "{last}");
}

/// Sends `entry`'s body, id and signature again with another timestamp; returns the status.
fn replay(port: u16, entry: &serde_json::Value, ts: &str) -> u16 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/hook"))
            .header("content-type", "application/json")
            .header("webhook-id", entry["id"].as_str().unwrap_or(""))
            .header("webhook-timestamp", ts)
            .header("webhook-signature", entry["sig"].as_str().unwrap_or(""))
            .body(entry["body"].as_str().unwrap_or("").to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

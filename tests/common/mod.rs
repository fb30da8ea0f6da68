//! Shared helpers for the black-box tests: the real `rollguard` binary, real HTTP servers on
//! 127.0.0.1:0, temporary directories, and waiting on events instead of sleeping.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_rollguard");

/// The deployment `v` (as the API shows it) was rolled back because RATIO_RULE's check failed.
pub fn assert_rolled_back_by_the_ratio_check(v: &Value) {
    assert_eq!(v["state"], "rolled_back", "{v:#}");
    let check = &v["checks"][0];
    assert_eq!(check["outcome"], "fail");
    assert!(
        check["explanation"]
            .as_str()
            .unwrap()
            .contains("worse than the x1.5 tolerance"),
        "{check}"
    );
}

/// A rule file for tests: one error-ratio check, fast timing (overridable per deployment).
pub const RATIO_RULE: &str = r#"analysis: errors
params:
  job: ".*"
interval: 1s
warmup: 2s
min_duration: 8s
max_duration: 30s
no_data_grace: 2s
alpha: 0.01
checks:
  - name: error-ratio
    kind: ratio
    errors: 'http_requests_total{job=~"{{job}}",code=~"5.."}'
    requests: 'http_requests_total{job=~"{{job}}"}'
    tolerance: 1.5
on_fail: [rollback]
on_pass: [promote]
"#;

/// A daemon process with its own directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub url: String,
    pub marker: PathBuf,
}

impl Daemon {
    /// Starts `rollguard run` with `rules` (file name, text) and `extra` appended to the
    /// config. Hooks `rollback` and `promote` append a line to `marker`.
    pub fn start(rules: &[(&str, &str)], extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, rules, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, rules: &[(&str, &str)], extra: &str) -> Daemon {
        Self::start_at(dir, rules, extra, "127.0.0.1:0")
    }

    /// Like [`Daemon::start_in`] on a given `listen` address (a restart on the same port).
    pub fn start_at(
        dir: tempfile::TempDir,
        rules: &[(&str, &str)],
        extra: &str,
        listen: &str,
    ) -> Daemon {
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        for (name, text) in rules {
            std::fs::write(rules_dir.join(name), text).expect("write rule");
        }
        let marker = dir.path().join("marker");
        let config = format!(
            r#"listen: {listen}
state_dir: state
rules_dir: rules
shutdown_grace: 5s
hooks:
  rollback:
    exec: ["/bin/sh", "-c", "echo \"rollback $ROLLGUARD_DEPLOYMENT $ROLLGUARD_ACTION_ID\" >> \"$0\"", "{marker}"]
    timeout: 10s
  promote:
    exec: ["/bin/sh", "-c", "echo \"promote $ROLLGUARD_DEPLOYMENT\" >> \"$0\"", "{marker}"]
    timeout: 10s
{extra}"#,
            marker = marker.display()
        );
        std::fs::write(dir.path().join("config.yaml"), config).expect("write config");
        let _ = std::fs::remove_file(dir.path().join("state/listen.addr"));
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("daemon.log")).expect("log"),
            ))
            .spawn()
            .expect("spawn rollguard");
        let addr_file = dir.path().join("state/listen.addr");
        let addr = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| {
            panic!(
                "daemon did not start; log:\n{}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            )
        });
        Daemon {
            url: format!("http://{addr}"),
            dir,
            child,
            marker,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn marker_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stops the daemon with SIGTERM and waits for it; returns the directory for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();

        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// kill -9, as a crash.
    pub fn crash(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http("POST", &format!("{}{path}", self.url), Some(body), None)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &format!("{}{path}", self.url), None, None)
    }

    /// Long-polls the deployment until its state is one of `states` (or the timeout).
    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let start = std::time::Instant::now();
        let mut after = 0;
        loop {
            let (code, v) = self.get(&format!(
                "/api/v1/deployments/{id}/events?after={after}&wait=5"
            ));
            assert_eq!(code, 200, "events: {v}");
            after = v["next"].as_i64().unwrap_or(after);
            let state = v["state"].as_str().unwrap_or("").to_string();
            if states.contains(&state.as_str()) {
                return self.get(&format!("/api/v1/deployments/{id}")).1;
            }
            if start.elapsed() > timeout {
                panic!(
                    "deployment {id} still {state} after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some` (for conditions no event announces).
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP call with a small client (tests stay synchronous).
pub fn http(method: &str, url: &str, body: Option<&Value>, token: Option<&str>) -> (u16, Value) {
    rollguard::net::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                url,
            )
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    code,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    })
}

/// A simulated fleet served over HTTP on its own runtime thread.
pub struct FleetServer {
    pub addr: std::net::SocketAddr,
    pub fleet: rollguard::demo::Fleet,
    _rt: tokio::runtime::Runtime,
}

impl FleetServer {
    /// A fleet whose canaries return 8× the baseline's errors from the start (simulated time
    /// at 20× speed): the rollback case of most tests.
    pub fn bad(seed: u64) -> FleetServer {
        Self::start(
            rollguard::sim::Scenario {
                fault: rollguard::sim::Fault::ErrorRatio { factor: 8.0 },
                fault_at_s: 0.0,
                seed,
                ..rollguard::sim::Scenario::default()
            },
            20.0,
        )
    }

    /// A fleet with no fault (simulated time at 50× speed): the promotion case.
    pub fn good(seed: u64) -> FleetServer {
        Self::start(
            rollguard::sim::Scenario {
                seed,
                ..rollguard::sim::Scenario::default()
            },
            50.0,
        )
    }

    pub fn start(scenario: rollguard::sim::Scenario, speed: f64) -> FleetServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let fleet = rt.block_on(async { rollguard::demo::Fleet::new(&scenario, speed) });
        let addr = rt.block_on(fleet.serve()).expect("serve fleet");
        FleetServer {
            addr,
            fleet,
            _rt: rt,
        }
    }

    pub fn target(&self, instance: &str) -> String {
        format!("http://{}/{instance}/metrics", self.addr)
    }
}

/// The id the first hook of deployment `dep` was given (`ROLLGUARD_ACTION_ID`: a UUIDv7
/// made when the action was owed, so tests read it from the API instead of predicting it).
pub fn hook_action_id(base_url: &str, dep: &str) -> String {
    wait_for(Duration::from_secs(20), || {
        let (_, v) = http(
            "GET",
            &format!("{base_url}/api/v1/deployments/{dep}"),
            None,
            None,
        );
        v["actions"][0]["facts"]["action_id"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("{dep} owes no action"))
}

/// A temporary file path helper.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

//! The real `rollguard` binary as a child process: its directory (config and rule files),
//! starting it, its API, and stopping or killing it. Waiting is on events (the listen address
//! file, the events long-poll) instead of sleeping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_rollguard");

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

/// [`RATIO_RULE`] with other timing: `timing` replaces its `min_duration`, `max_duration` and
/// `no_data_grace` lines.
pub fn ratio_rule_timed(timing: &str) -> String {
    RATIO_RULE.replace(
        "min_duration: 8s\nmax_duration: 30s\nno_data_grace: 2s\n",
        timing,
    )
}

/// [`RATIO_RULE`] whose deployments are analysed every second and never decide within a test.
pub fn slow_rule() -> String {
    ratio_rule_timed("min_duration: 10m\nmax_duration: 1h\n")
}

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

/// The config file's text: where to listen, the state directory, `rules/`, then `body`.
pub fn config(listen: &str, state_dir: &str, body: &str) -> String {
    format!("listen: {listen}\nstate_dir: {state_dir}\nrules_dir: rules\n{body}")
}

/// Writes `config.yaml` (the whole text) and the rule files (name, text) under `rules/`.
pub fn write_dir(dir: &Path, rules: &[(&str, &str)], config: &str) {
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    for (name, text) in rules {
        std::fs::write(rules_dir.join(name), text).expect("write rule");
    }
    std::fs::write(dir.join("config.yaml"), config).expect("write config");
}

/// `rollguard run --config <dir>/config.yaml`.
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("run").arg("--config").arg(dir.join("config.yaml"));
    c
}

/// Waits for the daemon's listen address in `file` (`state/listen.addr`); its base URL.
/// Panics after `timeout` with `log()`.
pub fn wait_listen_addr(file: &Path, timeout: Duration, log: impl Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        if let Some(a) = std::fs::read_to_string(file).ok().filter(|s| !s.is_empty()) {
            return format!("http://{a}");
        }
        assert!(
            start.elapsed() < timeout,
            "daemon did not start; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Hooks `rollback` and `promote` (indented under `hooks:`) that append a line to `marker`.
pub fn marker_hooks(marker: &Path) -> String {
    format!(
        r#"  rollback:
    exec: ["/bin/sh", "-c", "echo \"rollback $ROLLGUARD_DEPLOYMENT $ROLLGUARD_ACTION_ID\" >> \"$0\"", "{marker}"]
    timeout: 10s
  promote:
    exec: ["/bin/sh", "-c", "echo \"promote $ROLLGUARD_DEPLOYMENT\" >> \"$0\"", "{marker}"]
    timeout: 10s
"#,
        marker = marker.display()
    )
}

/// A hook `name` (indented under `hooks:`) that appends its action id to `<effect>.started`,
/// sleeps `sleep_s` seconds, then appends it to `effect`: whether and when a run started,
/// and whether it finished.
pub fn recording_hook(name: &str, effect: &Path, sleep_s: f64, timeout: &str) -> String {
    format!(
        "  {name}:\n    exec: [\"/bin/sh\", \"-c\", \"echo \\\"$ROLLGUARD_ACTION_ID\\\" >> \\\"$0.started\\\"; sleep {sleep_s}; echo \\\"$ROLLGUARD_ACTION_ID\\\" >> \\\"$0\\\"\", \"{}\"]\n    timeout: {timeout}\n",
        effect.display()
    )
}

/// A daemon process with its own directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub url: String,
    pub marker: PathBuf,
    client: Client,
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
        let hooks = marker_hooks(&dir.path().join("marker"));
        Self::launch(dir, rules, &hooks, extra, listen)
    }

    /// Starts `rollguard run` with these rule files and `hooks` (YAML, indented under
    /// `hooks:`) instead of the marker hooks.
    pub fn start_with_hooks(rules: &[(&str, &str)], hooks: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, rules, hooks, extra, "127.0.0.1:0")
    }

    fn launch(
        dir: tempfile::TempDir,
        rules: &[(&str, &str)],
        hooks: &str,
        extra: &str,
        listen: &str,
    ) -> Daemon {
        let body = format!("shutdown_grace: 5s\nhooks:\n{hooks}{extra}");
        write_dir(dir.path(), rules, &config(listen, "state", &body));
        let addr_file = dir.path().join("state/listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let cmd = command(dir.path());
        Self::spawn(dir, cmd, &addr_file)
    }

    /// Spawns `cmd` (a daemon on the config in `dir`), logging to `daemon.log`, and waits
    /// for its listen address in `addr_file`.
    pub fn spawn(dir: tempfile::TempDir, mut cmd: Command, addr_file: &Path) -> Daemon {
        let log = dir.path().join("daemon.log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
            .spawn()
            .expect("spawn rollguard");
        let url = wait_listen_addr(addr_file, Duration::from_secs(30), || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        Daemon {
            url,
            marker: dir.path().join("marker"),
            dir,
            child,
            client: Client::new(),
        }
    }

    /// Starts one daemon of a pair on PostgreSQL (docs/ha.md): its store at `url` as `node`
    /// with `lease`, these rule files, `hooks` (indented under `hooks:`) and `extra` config.
    pub fn start_on_postgres(
        url: &str,
        node: &str,
        lease: &str,
        rules: &[(&str, &str)],
        hooks: &str,
        extra: &str,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = format!(
            "shutdown_grace: 5s\nstore:\n  postgres:\n    url: {url}\n    node: {node}\n    lease: {lease}\nhooks:\n{hooks}{extra}"
        );
        write_dir(dir.path(), rules, &config("127.0.0.1:0", "state", &body));
        let addr = dir.path().join("state/listen.addr");
        let cmd = command(dir.path());
        Self::spawn(dir, cmd, &addr)
    }

    /// This daemon's role (`leader`, `standby`, `single`) from `/api/v1/leader`.
    pub fn role(&self) -> String {
        let (_, v) = self.get("/api/v1/leader");
        v["role"].as_str().unwrap_or_default().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path in the daemon's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn marker_lines(&self) -> Vec<String> {
        lines(&self.marker)
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
        self.call("POST", path, Some(body))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    /// The body of a GET as text (`/metrics`).
    pub fn get_text(&self, path: &str) -> String {
        let url = format!("{}{path}", self.url);
        self.client.text("GET", &url, None, None, CALL_TIMEOUT).1
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let (code, text) = self.client.text(method, &url, body, None, CALL_TIMEOUT);
        (code, super::http::json_or_string(text))
    }

    /// Registers a deployment through the API; it must be accepted as new (201). Its record.
    pub fn register(&self, body: &Value) -> Value {
        let (code, v) = self.post("/api/v1/deployments", body);
        assert_eq!(code, 201, "{v}; log:\n{}", self.log());
        v
    }

    /// The daemon's own `/metrics` text.
    pub fn metrics(&self) -> String {
        self.get_text("/metrics")
    }

    /// No rollback hook has run (`why`: what the test expected instead).
    pub fn assert_no_rollback(&self, why: &str) {
        let lines = self.marker_lines();
        assert!(
            !lines.iter().any(|l| l.starts_with("rollback")),
            "{why}: {lines:?}"
        );
    }

    /// Long-polls the deployment until it has finished (rolled back, promoted or
    /// inconclusive); its record.
    pub fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        self.wait_state(id, DONE, timeout)
    }

    /// Waits (up to 20 s) until a marker hook has written a line; the lines.
    pub fn wait_marker(&self) -> Vec<String> {
        wait_for(Duration::from_secs(20), || {
            Some(self.marker_lines()).filter(|l| !l.is_empty())
        })
        .unwrap_or_else(|| panic!("no hook ran; log:\n{}", self.log()))
    }

    /// Long-polls the deployment until its state is one of `states` (or the timeout).
    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let start = Instant::now();
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

    /// Saves an edit of rule file `file` (`text` under a comment naming `tag`) and waits
    /// until the API shows the new rules version; the milliseconds that took.
    pub fn reload_ms(&self, file: &str, text: &str, tag: usize) -> f64 {
        let (_, v) = self.get("/api/v1/rules");
        let before = v["version"].as_str().unwrap_or_default().to_string();
        let path = self.path("rules").join(file);
        let edited = format!("# edit {tag}\n{text}");
        let start = Instant::now();
        std::fs::write(&path, edited).expect("write rule");
        loop {
            let (_, v) = self.get("/api/v1/rules");
            if v["version"].as_str().is_some_and(|x| x != before) {
                return start.elapsed().as_secs_f64() * 1e3;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "rule edit never took effect: {v}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sum, count and buckets of a histogram in the daemon's own `/metrics`.
    pub fn histogram(&self, name: &str) -> (f64, f64, Vec<(String, f64)>) {
        let text = self.get_text("/metrics");
        let mut sum = 0.0;
        let mut count = 0.0;
        let mut buckets = Vec::new();
        for l in text.lines() {
            let Some((k, v)) = l.rsplit_once(' ') else {
                continue;
            };
            let v: f64 = v.parse().unwrap_or(0.0);
            if k == format!("{name}_sum") {
                sum = v;
            } else if k == format!("{name}_count") {
                count = v;
            } else if let Some(rest) = k.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                buckets.push((rest.trim_end_matches("\"}").to_string(), v));
            }
        }
        (sum, count, buckets)
    }

    /// A counter's value in the daemon's own `/metrics` (summed over label sets).
    pub fn counter(&self, name: &str) -> f64 {
        self.get_text("/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| {
                let k = l.split([' ', '{']).next().unwrap_or("");
                k == name
            })
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }
}

/// The states a deployment ends in.
pub const DONE: &[&str] = &["rolled_back", "promoted", "inconclusive"];

/// API calls wait this long: long enough for the events long-poll and a daemon under the
/// benches' load.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `v` (a deployment's record) is held because its metrics source fails.
pub fn assert_held_by_failing_source(v: &Value) {
    assert_eq!(v["state"], "held", "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("metrics source failing"),
        "{v:#}"
    );
}

/// A file's lines (none when it does not exist): what hooks appended to their marker.
pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The id the first hook of deployment `dep` was given (`ROLLGUARD_ACTION_ID`: a UUIDv7
/// made when the action was owed, so tests read it from the API instead of predicting it).
pub fn hook_action_id(base_url: &str, dep: &str) -> String {
    wait_for(Duration::from_secs(20), || {
        let (_, v) = super::http(
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

/// Polls `f` every 20 ms until it returns `Some` (for conditions no event announces).
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
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

/// Runs `cmd` to its end: exit code (-1 when a signal ended it), stdout and stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rollguard <args>` as a client of the daemon at `url` (`ROLLGUARD_URL`): exit code and
/// stdout followed by stderr.
pub fn cli(url: &str, args: &[&str]) -> (i32, String) {
    let (code, out, err) = run(Command::new(BIN).args(args).env("ROLLGUARD_URL", url));
    (code, out + &err)
}

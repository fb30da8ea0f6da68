//! The real `rollguard` binary as a child process for the benches, and a small blocking HTTP
//! client for its API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_rollguard");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub url: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Daemon {
    /// Starts `rollguard run` with these rule files and `hooks` (YAML, indented under
    /// `hooks:`), logging at the default level (info) to `daemon.log`.
    pub fn start(rules: &[(&str, String)], hooks: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        for (name, text) in rules {
            std::fs::write(rules_dir.join(name), text).expect("rule");
        }
        let config = format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nrules_dir: rules\nshutdown_grace: 5s\nhooks:\n{hooks}{extra}"
        );
        std::fs::write(dir.path().join("config.yaml"), config).expect("config");
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
        let start = Instant::now();
        let addr = loop {
            if let Some(a) = std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
            {
                break a;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon did not start: {}",
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        rollguard::net::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        Daemon {
            url: format!("http://{addr}"),
            dir,
            child,
            rt,
            client: reqwest::Client::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, String) {
        self.rt.block_on(async {
            let mut r = self
                .client
                .request(method, format!("{}{path}", self.url))
                .timeout(Duration::from_secs(60));
            if let Some(b) = body {
                r = r.json(b);
            }
            match r.send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    (code, resp.text().await.unwrap_or_default())
                }
                Err(e) => (0, e.to_string()),
            }
        })
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (c, t) = self.call(reqwest::Method::POST, path, Some(body));
        (c, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (c, t) = self.call(reqwest::Method::GET, path, None);
        (c, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    pub fn get_text(&self, path: &str) -> String {
        self.call(reqwest::Method::GET, path, None).1
    }

    /// Sum and count of a histogram in the daemon's own `/metrics`.
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

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hook that records its own start time (bash's `$EPOCHREALTIME`, no extra process) and
/// the deployment, one line per run, in `<dir>/hook-starts`.
pub fn timestamp_hook(name: &str, dir: &Path) -> String {
    format!(
        "  {name}:\n    exec: [\"/bin/bash\", \"-c\", \"echo \\\"$EPOCHREALTIME $ROLLGUARD_DEPLOYMENT\\\" >> \\\"$0/hook-starts\\\"\", \"{}\"]\n    timeout: 10s\n",
        dir.display()
    )
}

/// The hook-start lines: deployment → wall time.
pub fn hook_starts(dir: &Path) -> std::collections::HashMap<String, f64> {
    std::fs::read_to_string(dir.join("hook-starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, d) = l.split_once(' ')?;
            Some((d.to_string(), t.parse::<f64>().ok()?))
        })
        .collect()
}

/// Wall time of a deployment's decision (the `decision` event, written before any hook runs),
/// and the analysis time at which it was taken.
pub fn decision(d: &Daemon, id: &str) -> Option<(f64, f64, f64)> {
    let (_, v) = d.get(&format!("/api/v1/deployments/{id}/events?after=0"));
    let evs = v["events"].as_array()?;
    let started = evs.iter().find(|e| e["kind"] == "started")?["at"].as_f64()?;
    let at = evs.iter().find(|e| e["kind"] == "decision")?["at"].as_f64()?;
    let (_, rec) = d.get(&format!("/api/v1/deployments/{id}"));
    let t = rec["elapsed_s"].as_f64()?;
    Some((started, at, t))
}

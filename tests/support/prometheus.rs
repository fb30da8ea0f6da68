//! A real Prometheus server for one test: the Debian package's `/usr/bin/prometheus` (or the
//! one on `PATH`), on a free loopback port, with a temporary TSDB and a generated config that
//! scrapes targets the test serves every second. It can be stopped and started again on the
//! same port and data (an outage), and is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::http::blocking_get;

/// One scrape target: `host:port`, the metrics path, and labels added by Prometheus.
pub struct Target {
    pub address: String,
    pub path: String,
    pub labels: Vec<(String, String)>,
}

/// A running (or stopped) Prometheus.
pub struct Prometheus {
    /// Base URL of the HTTP API, including the route prefix if any.
    pub url: String,
    port: u16,
    prefix: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("prometheus")
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second (`honor_labels: true`, so the
    /// targets' own `instance` labels name the instances) and waits until it is ready.
    pub fn start(targets: &[Target]) -> Prometheus {
        Self::start_with_prefix(targets, "")
    }

    /// The same with the API under a route prefix (e.g. `/prometheus`, as behind Mimir's or a
    /// reverse proxy's path).
    pub fn start_with_prefix(targets: &[Target], prefix: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    honor_labels: true\n    static_configs:\n",
        );
        for t in targets {
            cfg.push_str(&format!(
                "      - targets: ['{}']\n        labels:\n          __metrics_path__: '{}'\n",
                t.address, t.path
            ));
            for (k, v) in &t.labels {
                cfg.push_str(&format!("          {k}: '{v}'\n"));
            }
        }
        std::fs::write(dir.path().join("prometheus.yml"), cfg).expect("write config");
        let port = free_port();
        let mut p = Prometheus {
            url: format!("http://127.0.0.1:{port}{prefix}"),
            port,
            prefix: prefix.to_string(),
            dir,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prometheus.log"))
            .expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg(format!(
            "--config.file={}",
            self.dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            self.dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
        if !self.prefix.is_empty() {
            cmd.arg(format!(
                "--web.external-url=http://127.0.0.1:{}{}",
                self.port, self.prefix
            ))
            .arg(format!("--web.route-prefix={}", self.prefix));
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start Prometheus ({}): {e}; install the `prometheus` package",
                binary().display()
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls `/-/ready` until Prometheus answers 200 (it replays its WAL first).
    fn wait_ready(&mut self) {
        let url = format!("{}/-/ready", self.url);
        let start = std::time::Instant::now();
        loop {
            if blocking_get(&url).is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "Prometheus exited ({status}) before it was ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Prometheus not ready after 60 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (an outage: no clean shutdown), keeping its port and data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and TSDB, and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query with a plain client; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = format!("{}/api/v1/query?query={}", self.url, url_escape(promql));
        blocking_get(&url)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until `promql` returns at least `n` series (the targets have been scraped).
    pub fn wait_series(&self, promql: &str, n: usize, timeout: Duration) {
        let start = std::time::Instant::now();
        while self.query(promql).len() < n {
            assert!(
                start.elapsed() < timeout,
                "`{promql}` has fewer than {n} series after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

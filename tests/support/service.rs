//! Helpers for the service tests (`tests/service_*.rs`, `tests/systemd_*.rs`): the real
//! binary started the way systemd starts it — with a notification socket the test binds, the
//! watchdog variables, its own environment — and real signals sent to it.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::daemon;

/// Hooks the test rules name, doing nothing (tests that watch hooks define their own).
pub const NOOP_HOOKS: &str =
    "hooks:\n  rollback:\n    exec: [\"/bin/true\"]\n  promote:\n    exec: [\"/bin/true\"]\n";

/// A temporary service directory: `config.yaml`, `rules/`, `state/`.
pub struct ServiceDir {
    pub dir: tempfile::TempDir,
}

impl ServiceDir {
    /// Writes the config (`extra` appended: hooks, grace, …) and the rule files.
    pub fn new(rules: &[(&str, &str)], extra: &str) -> ServiceDir {
        let dir = tempfile::tempdir().expect("tempdir");
        daemon::write_dir(
            dir.path(),
            rules,
            &daemon::config("127.0.0.1:0", "state", extra),
        );
        ServiceDir { dir }
    }

    /// Rewrites `config.yaml` with `extra` after the listen, state and rules lines (for a
    /// config that names paths in this directory).
    pub fn set_config(&self, extra: &str) {
        let text = daemon::config("127.0.0.1:0", "state", extra);
        std::fs::write(self.config(), text).expect("config");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The command systemd's `ExecStart=` would run, with a clean environment.
    pub fn command(&self) -> Command {
        let mut c = daemon::command(self.path());
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("RUST_LOG", "info");
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Spawns `c` (from [`ServiceDir::command`]) with stderr to the log file, and waits for
    /// its listen address: the running service and its API's base URL.
    pub fn start_logged(&self, mut c: Command) -> (Service, String) {
        c.stderr(std::fs::File::create(self.log_file()).expect("log"));
        let svc = Service::spawn(c);
        let url = self.wait_listen_addr(Duration::from_secs(20));
        (svc, url)
    }

    /// Waits for `state/listen.addr` (for daemons started without a notification socket);
    /// the API's base URL.
    pub fn wait_listen_addr(&self, timeout: Duration) -> String {
        daemon::wait_listen_addr(&self.path().join("state/listen.addr"), timeout, || {
            self.log()
        })
    }
}

impl Drop for ServiceDir {
    /// Hooks run in process groups of their own and may outlive a daemon a failed test left
    /// behind: end every process group whose command line names this directory.
    fn drop(&mut self) {
        let needle = self.dir.path().display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&needle) {
                continue;
            }
            if let Ok(pgid) = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
                && pgid.as_raw() > 1
                && pgid != nix::unistd::getpgrp()
            {
                let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
            }
        }
    }
}

/// The notification socket a service manager would listen on.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    /// Every message received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until a message satisfies `pred` (returned) or `timeout` passes (panics
    /// with everything seen so far).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let left = timeout
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("no {what} within {timeout:?}; seen: {:#?}", self.seen));
            match self.recv(left) {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!("no {what} within {timeout:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// The next message, or `None` after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<String> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(m.clone());
                Some(m)
            }
            Err(_) => None,
        }
    }

    /// Messages seen so far other than watchdog pings, by their first line.
    pub fn states(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|m| !m.starts_with("WATCHDOG=1"))
            .filter_map(|m| m.lines().next().map(str::to_string))
            .collect()
    }
}

/// A running daemon process. Its exit is awaited on a thread, so tests wait on an event
/// instead of polling.
pub struct Service {
    pub pid: i32,
    exited: mpsc::Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

impl Service {
    pub fn spawn(mut cmd: Command) -> Service {
        let mut child: Child = cmd.spawn().expect("spawn rollguard");
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                let _ = tx.send(s);
            }
        });
        Service {
            pid,
            exited: rx,
            status: None,
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal the daemon");
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.exited.recv_timeout(timeout).ok();
        }
        self.status
    }

    /// Whether it is still running (without waiting).
    pub fn running(&mut self) -> bool {
        self.wait(Duration::ZERO).is_none()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.running() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.wait(Duration::from_secs(10));
        }
    }
}

/// The API address from the `READY=1` status line (`… API on 127.0.0.1:PORT`).
pub fn api_from_ready(msg: &str) -> String {
    let status = msg
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_default();
    let addr = status.rsplit("API on ").next().unwrap_or_default().trim();
    format!("http://{addr}")
}

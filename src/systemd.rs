//! systemd integration for `Type=notify`: readiness, reload and stop notifications, and the
//! watchdog, sent as `sd_notify(3)` datagrams to `$NOTIFY_SOCKET`.
//!
//! The socket address and the watchdog period are read from the environment once, into a
//! [`Notifier`] value that the daemon passes around. Nothing else reads those variables, so
//! tests build a `Notifier` for a socket of their own instead of changing the process
//! environment, and a daemon started outside systemd simply holds a disabled one.
//! Messages are formatted by the `sd-notify` crate; sending is done here so that abstract
//! socket addresses (`@name`, used by some container managers) work too.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Why a notification could not be delivered. Never fatal for the daemon, but worth a log
/// line: a lost `READY=1` makes systemd time the start out.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot send to the notification socket {socket}: {source}")]
    Send {
        socket: String,
        source: std::io::Error,
    },
    #[error("the notification socket {socket} took {sent} of {len} bytes")]
    Short {
        socket: String,
        sent: usize,
        len: usize,
    },
}

/// Where notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A socket in the file system (systemd's `/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract socket (`NOTIFY_SOCKET=@name`).
    Abstract(Vec<u8>),
}

/// Talks to the service manager. Cheap to clone; a disabled notifier ignores every call.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing (not started by systemd, tests, the demo).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Reads `NOTIFY_SOCKET`, and `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or names this
    /// process (a child that inherited the variables must not ping on our behalf).
    pub fn from_env() -> Notifier {
        let target =
            std::env::var_os("NOTIFY_SOCKET").and_then(|s| parse_target(&s.to_string_lossy()));
        Notifier {
            target,
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
        }
    }

    /// A notifier for an explicit socket path and watchdog period (tests).
    pub fn for_socket(path: impl Into<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            target: Some(Target::Path(path.into())),
            watchdog,
        }
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog period systemd expects pings within (`WatchdogSec=`), if any.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// `READY=1`: configuration valid, rules loaded, state store open, API bound. Also sent
    /// after every reload, which is what ends the reload for systemd.
    pub fn ready(&self, status: &str) {
        self.send_logged(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` in the same datagram, as `Type=notify-reload`
    /// (systemd ≥ 253) requires; older systemd ignores the timestamp.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(m) => self.send_logged(&[
                NotifyState::Reloading,
                m,
                NotifyState::Status("reloading rules"),
            ]),
            Err(_) => self.send_logged(&[
                NotifyState::Reloading,
                NotifyState::Status("reloading rules"),
            ]),
        }
    }

    /// `STOPPING=1`, plus `EXTEND_TIMEOUT_USEC=` set to `within`, the longest the stop can
    /// take: a `shutdown_grace` raised above the unit's `TimeoutStopSec=` is then not cut
    /// short by SIGKILL (the extension never shortens the configured timeout).
    pub fn stopping(&self, within: Duration) {
        let usec = u32::try_from(within.as_micros()).unwrap_or(u32::MAX);
        self.send_logged(&[
            NotifyState::Stopping,
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status("stopping: finishing hooks"),
        ]);
    }

    /// `STATUS=…`, the line `systemctl status` shows.
    pub fn status(&self, s: &str) {
        self.send_logged(&[NotifyState::Status(s)]);
    }

    /// `WATCHDOG=1`.
    pub fn ping(&self) {
        self.send_logged(&[NotifyState::Watchdog]);
    }

    fn send_logged(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = self.send(states) {
            tracing::warn!(error = %e, "systemd notification lost");
        }
    }

    /// Sends one datagram with every state on its own line.
    pub fn send(&self, states: &[NotifyState<'_>]) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        let socket = match target {
            Target::Path(p) => p.display().to_string(),
            Target::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
        };
        let err = |source| NotifyError::Send {
            socket: socket.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        let sent = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
                sock.send_to_addr(msg.as_bytes(), &addr)
            }
        }
        .map_err(err)?;
        if sent != msg.len() {
            return Err(NotifyError::Short {
                socket,
                sent,
                len: msg.len(),
            });
        }
        Ok(())
    }

    /// Pings the watchdog at half its period for as long as `healthy()` holds.
    ///
    /// The ping is conditional rather than a bare timer: `healthy()` is the engine's view of
    /// whether every analysis loop completed a step recently. When a loop wedges, the pings
    /// stop, systemd's `WatchdogSec=` expires, and `Restart=on-failure` restarts the daemon,
    /// which resumes every deployment from the store. The timer itself runs on the same
    /// runtime as the loops, so a runtime whose worker threads are all blocked stops pinging
    /// too.
    pub async fn watchdog(
        self,
        healthy: Arc<dyn Fn() -> bool + Send + Sync>,
        shutdown: CancellationToken,
    ) {
        let Some(period) = self.watchdog_period() else {
            return;
        };
        let every = (period / 2).max(Duration::from_millis(50));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if healthy() {
                if stalled {
                    tracing::info!(
                        "analysis loops are making progress again; watchdog pings resumed"
                    );
                    self.status("running");
                    stalled = false;
                }
                self.ping();
            } else if !stalled {
                tracing::error!(watchdog = ?period, "an analysis loop is not making progress; withholding the watchdog ping so systemd restarts rollguard");
                self.status("analysis loop stalled; waiting for the watchdog");
                stalled = true;
            }
        }
    }
}

/// `NOTIFY_SOCKET` is an absolute path or `@` + an abstract name; anything else is ignored
/// (sd_notify(3) does the same).
fn parse_target(s: &str) -> Option<Target> {
    if let Some(name) = s.strip_prefix('@') {
        return (!name.is_empty()).then(|| Target::Abstract(name.as_bytes().to_vec()));
    }
    s.starts_with('/').then(|| Target::Path(PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn socket() -> (tempfile::TempDir, UnixDatagram, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, sock, path)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("/run/systemd/notify"),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_target("@sd-notify"),
            Some(Target::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(parse_target("relative"), None);
        assert_eq!(parse_target("@"), None);
    }

    #[test]
    fn messages_are_single_datagrams() {
        let (_d, sock, path) = socket();
        let n = Notifier::for_socket(&path, None);
        n.ready("listening on 127.0.0.1:1");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=listening on 127.0.0.1:1\n");
        n.reloading();
        let r = recv(&sock);
        assert!(r.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{r}");
        n.stopping(Duration::from_secs(45));
        assert_eq!(
            recv(&sock),
            "STOPPING=1\nEXTEND_TIMEOUT_USEC=45000000\nSTATUS=stopping: finishing hooks\n"
        );
    }

    #[test]
    fn abstract_sockets_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rollguard-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier {
            target: parse_target(&format!("@{name}")),
            watchdog: None,
        };
        n.ping();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
    }

    #[test]
    fn disabled_sends_nothing_and_a_missing_socket_is_an_error() {
        assert!(Notifier::disabled().send(&[NotifyState::Ready]).is_ok());
        let n = Notifier::for_socket("/nonexistent/rollguard/notify", None);
        assert!(matches!(
            n.send(&[NotifyState::Ready]),
            Err(NotifyError::Send { .. })
        ));
    }

    #[tokio::test]
    async fn watchdog_pings_only_while_healthy() {
        let (_d, sock, path) = socket();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let stop = CancellationToken::new();
        // A 200 ms watchdog: a ping every 100 ms while healthy.
        let n = Notifier::for_socket(&path, Some(Duration::from_millis(200)));
        let task =
            tokio::spawn(n.watchdog(Arc::new(move || h.load(Ordering::SeqCst)), stop.clone()));
        let sock = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(recv(&sock), "WATCHDOG=1\n");
            }
            sock
        })
        .await
        .expect("pings");
        healthy.store(false, Ordering::SeqCst);
        let sock = tokio::task::spawn_blocking(move || {
            // At most one ping was already on its way; then the stall is announced.
            let mut m = recv(&sock);
            if m == "WATCHDOG=1\n" {
                m = recv(&sock);
            }
            assert!(m.starts_with("STATUS=analysis loop stalled"), "{m:?}");
            // Five periods of silence.
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            assert!(sock.recv(&mut buf).is_err(), "pinged while stalled");
            sock
        })
        .await
        .expect("silence");
        healthy.store(true, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            assert_eq!(recv(&sock), "STATUS=running\n");
            assert_eq!(recv(&sock), "WATCHDOG=1\n");
        })
        .await
        .expect("resumed");
        stop.cancel();
        task.await.expect("watchdog task");
    }
}

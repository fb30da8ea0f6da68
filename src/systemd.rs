//! systemd integration: `Type=notify` readiness, reload and stop notifications, and the
//! watchdog. Every function is a no-op when not started by systemd (no `NOTIFY_SOCKET`).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// READY=1 with a status line.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 with MONOTONIC_USEC in one datagram (required by `Type=notify-reload`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(m) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading, m]);
        }
        Err(_) => {
            let _ = sd_notify::notify(&[NotifyState::Reloading]);
        }
    }
}

/// STOPPING=1.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// STATUS=... (shown by `systemctl status`).
pub fn status(s: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(s)]);
}

/// Pings the watchdog at half its period while `healthy()` holds. A stuck analysis loop makes
/// `healthy()` false, the pings stop, and systemd restarts the service.
pub async fn watchdog(healthy: Arc<dyn Fn() -> bool + Send + Sync>, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if healthy() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("analysis loop is not making progress; withholding the watchdog ping");
        }
    }
}

//! The only module that touches OS signals: SIGTERM/SIGINT mean "shut down", SIGHUP means
//! "reload the rules". Everything else receives plain futures and channels, so tests can
//! trigger both without signals.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received"),
                _ = i.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Without signal handlers, never return: the process is stopped by SIGKILL.
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            std::future::pending::<()>().await;
        }
    }
}

/// A channel that receives one message per SIGHUP. Installed before READY=1, because the
/// default action of SIGHUP is to terminate.
pub fn reloads() -> Result<mpsc::Receiver<()>, std::io::Error> {
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading rules");
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

//! The only module that touches OS signals: SIGTERM and SIGINT mean "shut down", SIGHUP
//! means "reload the rules". Everything else receives plain futures and channels, so tests
//! and the demo trigger both without signals.
//!
//! Handlers are installed when these functions are *called*, not when their futures are
//! first polled. That matters twice over: SIGHUP's default action is to terminate, and a
//! SIGTERM that arrives while the daemon is still starting (resuming deployments, binding
//! the API) must be remembered and honoured once start-up is done, not kill the process
//! half-way. tokio keeps a delivery that arrives before anyone waits for it.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// A signal handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler: {source}")]
pub struct SignalError {
    signal: &'static str,
    source: std::io::Error,
}

fn install(kind: SignalKind, name: &'static str) -> Result<Signal, SignalError> {
    signal(kind).map_err(|source| SignalError {
        signal: name,
        source,
    })
}

/// Installs SIGTERM and SIGINT handlers now; the future completes on the first of them.
///
/// If the handlers cannot be installed (no tokio runtime, or the kernel refuses), the
/// future never completes and the error is logged: the default dispositions stay in force,
/// so the process can still be stopped, just not gracefully.
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    let handlers = install(SignalKind::terminate(), "SIGTERM")
        .and_then(|t| Ok((t, install(SignalKind::interrupt(), "SIGINT")?)));
    async move {
        match handlers {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "graceful shutdown is not available");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Installs the SIGHUP handler now and returns a channel that receives one message per
/// SIGHUP (bursts collapse into one pending reload). Install it before `READY=1`: systemd
/// sends no reload before that, but an operator's `kill -HUP` might.
pub fn reloads() -> Result<mpsc::Receiver<()>, SignalError> {
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading rules");
            if tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
}

//! Leadership among daemons that share a PostgreSQL store: one leads by a lease with a
//! fencing token, the others stand by (docs/ha.md).
//!
//! The leader renews every third of the lease. When it cannot renew in time (the database is
//! unreachable, or answers that the lease is gone) it steps down *before* its lease can have
//! ended: it forgets its token, so the store refuses its writes, and the daemon stops (its
//! hooks stopped, exit code [`EX_LEASE_LOST`](crate::exit::EX_LEASE_LOST)) and is restarted by
//! its service manager as a standby. Exiting is the whole-process answer Kubernetes'
//! controller-runtime gives to a lost lease: no task can go on acting by accident.
//!
//! A standby tries to take the lease about every second, and succeeds once it has expired
//! by the database's clock. Every comparison of lease times is done by the database, so the
//! hosts' clocks never need to agree; the local deadline to step down runs on the monotonic
//! clock from the moment the last successful renewal was *sent*.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{LeaseView, PgStore};

/// What this daemon is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// SQLite: the only daemon, always acting.
    Single,
    Standby,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }
}

/// Where leadership stands, for `/readyz`, `/metrics` and the API.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub role: Role,
    pub node: String,
    /// The fencing token while this daemon leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<i64>,
    /// Seconds since this daemon last renewed its lease (leader) or last read who leads.
    pub lease_age: Option<f64>,
    /// The lease as the database showed it at the last look.
    pub lease: Option<LeaseView>,
}

/// The lease loop's shared state.
pub struct Leadership {
    store: Arc<PgStore>,
    lease: Duration,
    /// Where this daemon's API is reached (known once it is bound); stored in the lease so
    /// standbys can say where changes go.
    url: Mutex<String>,
    state: Mutex<(Role, Option<Instant>, Option<LeaseView>)>,
}

impl Leadership {
    pub fn new(store: Arc<PgStore>, lease: Duration) -> Arc<Leadership> {
        Arc::new(Leadership {
            store,
            lease,
            url: Mutex::new(String::new()),
            state: Mutex::new((Role::Standby, None, None)),
        })
    }

    /// Where this daemon's API is reached, once bound.
    pub fn set_url(&self, url: String) {
        *self.url.lock().unwrap_or_else(|p| p.into_inner()) = url;
    }

    pub fn role(&self) -> Role {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn status(&self) -> Status {
        let (role, last, lease) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Status {
            role,
            node: self.store.node().to_string(),
            token: self.store.token(),
            lease_age: last.map(|l| l.elapsed().as_secs_f64()),
            lease,
        }
    }

    /// How long the leader may go without a successful renewal before it steps down: the
    /// lease less a fifth (at least half a second) for the stop itself.
    fn step_down_after(&self) -> Duration {
        self.lease
            .saturating_sub((self.lease / 5).max(Duration::from_millis(500)))
    }

    /// Takes part in the election until `shutdown`. Calls `on_lead` once when this daemon
    /// becomes leader; cancels `lost` (and returns) when it has to step down.
    pub async fn run(
        self: Arc<Self>,
        on_lead: impl FnOnce() + Send,
        lost: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let mut on_lead = Some(on_lead);
        let standby_poll = (self.lease / 3).min(Duration::from_secs(1));
        let renew_every = self.lease / 3;
        // While leading: when to step down, `step_down_after` from the moment the last
        // successful renewal (or the acquisition) was sent.
        let mut down_at: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            let store = self.store.clone();
            let lease = self.lease;
            let url = self.url.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let call = tokio::task::spawn_blocking(move || {
                let token = store.acquire_or_renew(lease, &url)?;
                Ok::<_, crate::store::StoreError>((token, store.lease().ok()))
            });
            let result = match down_at {
                Some(d) => tokio::time::timeout_at(d, call).await.ok(),
                None => Some(call.await),
            };
            match result {
                Some(Ok(Ok((Some(token), view)))) => {
                    down_at = Some(sent + self.step_down_after());
                    self.set(Role::Leader, Some(sent), view);
                    if let Some(f) = on_lead.take() {
                        tracing::info!(node = %self.store.node(), token, lease = ?self.lease, "took the leader lease: acting from now on");
                        f();
                    }
                }
                Some(Ok(Ok((None, view)))) => {
                    if down_at.is_some() {
                        tracing::error!(
                            "the leader lease is gone (it expired and another daemon took it): stepping down"
                        );
                        return self.step_down(&lost);
                    }
                    self.set(Role::Standby, Some(sent), view);
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!(error = %e, role = self.role().as_str(), "cannot reach the leader lease");
                }
                Some(Err(e)) => tracing::error!(error = %e, "lease task failed"),
                None => {}
            }
            if down_at.is_some_and(|d| Instant::now() >= d) {
                tracing::error!(lease = ?self.lease, "could not renew the leader lease in time: stepping down before it can expire");
                return self.step_down(&lost);
            }
            let next = match down_at {
                Some(d) => (sent + renew_every).min(d),
                None => sent + standby_poll,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn set(&self, role: Role, at: Option<Instant>, view: Option<LeaseView>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = (role, at.or(s.1), view.or(s.2.take()));
    }

    fn step_down(&self, lost: &CancellationToken) {
        self.store.step_down();
        self.set(Role::Standby, None, None);
        lost.cancel();
    }

    /// A clean stop gives the lease up so a standby takes over at once.
    pub fn release(&self) {
        if let Err(e) = self.store.release() {
            tracing::warn!(error = %e, "could not release the leader lease; a standby takes over when it expires");
        }
    }
}

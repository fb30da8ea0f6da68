//! One judge step on a blocking thread, within a time budget.
//!
//! The judge is pure and tested on every awkward input we know of (proptests, scipy vectors),
//! but statrs' Beta quantile once looped forever on a busy service's counts (0 errors in 10⁹
//! requests). Run inline, such a step wedges a runtime worker for good, and after a watchdog
//! restart it wedges again on the same saved state. Here a step that panics or overruns its
//! budget ends that deployment's analysis inconclusive, with the reason, for a person: never a
//! rollback and never a promotion on a judgement that did not finish, and the other
//! deployments go on.

use std::time::Duration;

use crate::judge::{Judge, Step};
use crate::query::Frame;
use crate::rules::AnalysisSpec;

/// How long one judge step may take. A step takes well under a millisecond (`cargo bench
/// --bench judge_step`), so only a step that will never end reaches 30 s.
pub const STEP_BUDGET: Duration = Duration::from_secs(30);

/// Runs `f` on tokio's blocking pool. `Err` with the reason when it panicked or did not finish
/// within `budget`; its thread is then left behind (a thread cannot be stopped from outside).
pub async fn bounded<T: Send + 'static>(
    budget: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(budget, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(format!("it panicked: {text}"))
        }
        Ok(Err(e)) => Err(format!("it was cancelled: {e}")),
        Err(_) => Err(format!(
            "it did not finish within {}",
            crate::units::format_duration(budget)
        )),
    }
}

/// One step of `judge` on `frame`, within [`STEP_BUDGET`]. Returns the judge to go on with
/// and the step; when the step failed, a fresh judge (the analysis ends anyway) and
/// [`Step::judge_failed`], logged as an error of `deployment`.
pub async fn step(
    deployment: &str,
    judge: Judge,
    spec: &AnalysisSpec,
    t: Duration,
    frame: Frame,
    share: Option<f64>,
) -> (Judge, Step) {
    let owned = spec.clone();
    let run = move || {
        let mut judge = judge;
        let step = judge.step(&owned, t, &frame, share);
        (judge, step)
    };
    match bounded(STEP_BUDGET, run).await {
        Ok(done) => done,
        Err(why) => {
            tracing::error!(deployment, reason = %why, "the judge failed on this interval's data; the analysis ends inconclusive");
            (Judge::new(spec), Step::judge_failed(t, &why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_comes_back() {
        assert_eq!(bounded(STEP_BUDGET, || 6 * 7).await, Ok(42));
    }

    #[tokio::test]
    async fn a_panic_is_an_error_with_its_message() {
        let r: Result<(), String> = bounded(STEP_BUDGET, || panic!("NaN in a quantile")).await;
        assert_eq!(r, Err("it panicked: NaN in a quantile".into()));
    }

    /// A step that never ends (it waits on a channel no one sends on): the budget runs out,
    /// and the blocked thread is let go when the test drops the sender.
    #[tokio::test]
    async fn a_step_that_never_ends_runs_out_of_its_budget() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let r = bounded(Duration::from_millis(100), move || wait.recv().is_ok()).await;
        assert_eq!(r, Err("it did not finish within 100ms".into()));
        drop(release);
    }
}

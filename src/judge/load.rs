//! The arms' load per instance, from a request counter (`requests:` on a `gauge` or
//! `growth` check): what a level compared at equal load is scaled by, and what tells a
//! growth check that the traffic split moved.
//!
//! Connections in use, busy workers and live memory follow the requests a pod serves, so an
//! arm's level means little without its load: a canary pod given a tenth of a baseline
//! pod's traffic holds a tenth of its connections, and its memory rises when a weight step
//! gives it more.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::gauge::BLOCK;
use super::{Ctx, Missing};
use crate::query::Arms;

/// The time over which the arms' requests per instance are measured: two minutes, a whole
/// number of the usual scrape periods (10, 15, 20, 30 and 60 s), so that every instance's
/// counter rose the same number of times in it whatever its scrape offset, and short enough
/// that a change of the canary's traffic share is followed within two minutes. Until two
/// minutes have been seen, the last minute (also a whole number of them), so that a level is
/// judged from the end of a one-minute warm-up.
const LOAD_SPANS: [Duration; 2] = [Duration::from_secs(120), Duration::from_secs(60)];

/// Intervals in each of [`LOAD_SPANS`], at least a gauge block's.
pub(crate) fn load_window(interval: Duration) -> [usize; 2] {
    let per = interval.as_secs_f64().max(1e-3);
    LOAD_SPANS.map(|span| ((span.as_secs_f64() / per).ceil() as usize).max(BLOCK))
}

/// The arms' request increases over the last intervals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Load {
    /// Intervals in [`LOAD_SPANS`]: the window, and the shorter one used until it is full.
    windows: [usize; 2],
    /// (baseline, canary) increases, newest last, with the instances that reported the
    /// check's metric in that interval (0 when none did).
    recent: VecDeque<((f64, f64), (usize, usize))>,
    /// The counter had matched nothing by the end of the warm-up: the arms are taken as
    /// they are for the rest of the analysis (see [`Load::follow`]).
    #[serde(default)]
    absent: bool,
}

/// The canary's requests per instance over the baseline's, as far as known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LoadRatio {
    /// Less than a minute of requests seen yet.
    Measuring,
    /// The baseline served nothing over the window: there is no load to compare at.
    NoBaseline,
    /// The request counter matched nothing by the end of the warm-up.
    Absent,
    /// `k`, and the variance of its logarithm from the counts (Poisson: 1/B + 1/C).
    Ratio { k: f64, ln_var: f64 },
}

impl Load {
    /// `windows` from [`load_window`].
    pub(crate) fn new(windows: [usize; 2]) -> Load {
        Load {
            windows,
            ..Load::default()
        }
    }

    /// Follows the counter `requests` for one interval, warm-up and missing metrics
    /// included, so that the window is whole when it is first needed. A counter that has
    /// matched nothing by the end of the warm-up (a service whose counter has another name
    /// than the rule's) leaves the arms taken as they are, rather than holding every
    /// deployment for want of it; decided once, so that one analysis never mixes the two.
    /// Once the counter has answered, a missing answer is missing data (the error).
    /// `metric`: the check's own values this interval, whose instances per arm are counted.
    pub(crate) fn follow(
        &mut self,
        ctx: &Ctx,
        requests: usize,
        metric: &Result<Arms<&[f64]>, Missing>,
    ) -> Result<(), Missing> {
        let instances = metric
            .as_ref()
            .map_or((0, 0), |g| (g.baseline.len(), g.canary.len()));
        match ctx.counter(requests) {
            Ok(_) if self.absent => {}
            Ok(n) => self.push((n.baseline, n.canary), instances),
            Err(Missing::NoData(_)) if !self.seen() => {}
            Err(m) => return Err(m),
        }
        self.absent |= !self.seen() && !ctx.in_warmup;
        Ok(())
    }

    /// Whether the request counter has answered yet (the window is never emptied).
    fn seen(&self) -> bool {
        !self.recent.is_empty()
    }

    fn push(&mut self, (baseline, canary): (f64, f64), instances: (usize, usize)) {
        self.recent.push_back(((baseline, canary), instances));
        while self.recent.len() > self.windows[0] {
            self.recent.pop_front();
        }
    }

    /// The canary's requests per instance over the baseline's over the window (the shorter
    /// one until it is whole). An arm's instances are the most that reported the metric in
    /// one interval of the window: where each sample is judged once, an interval sees only
    /// the instances scraped since the last, while the counter's increases cover them all.
    pub(crate) fn ratio(&self) -> LoadRatio {
        if self.absent {
            return LoadRatio::Absent;
        }
        let Some(w) = self.windows.into_iter().find(|w| self.recent.len() >= *w) else {
            return LoadRatio::Measuring;
        };
        let ((b, c), (n_b, n_c)) = self.recent.iter().rev().take(w).fold(
            ((0.0, 0.0), (0, 0)),
            |((b, c), (n_b, n_c)), ((x, y), (m_b, m_c))| {
                ((b + x, c + y), (n_b.max(*m_b), n_c.max(*m_c)))
            },
        );
        if b > 0.0 {
            LoadRatio::Ratio {
                k: (c / n_c.max(1) as f64) / (b / n_b.max(1) as f64),
                ln_var: 1.0 / b + 1.0 / c.max(1.0),
            }
        } else {
            LoadRatio::NoBaseline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_the_requests_per_instance_over_whole_minutes() {
        assert_eq!(load_window(Duration::from_secs(10)), [12, 6]);
        assert_eq!(load_window(Duration::from_secs(60)), [BLOCK, BLOCK]);
        let mut load = Load::new(load_window(Duration::from_secs(10)));
        // Two canary instances at a ninth of a baseline instance's requests each, four
        // baseline instances.
        for _ in 0..5 {
            load.push((360.0, 20.0), (4, 2));
        }
        assert_eq!(
            load.ratio(),
            LoadRatio::Measuring,
            "less than a minute seen"
        );
        load.push((360.0, 20.0), (4, 2));
        let LoadRatio::Ratio { k, .. } = load.ratio() else {
            panic!("a minute seen")
        };
        assert!((k - 1.0 / 9.0).abs() < 1e-12, "{k}");
        // The weight is raised: after two minutes only the new split counts. Samples judged
        // once: an interval sees some of the instances, the window all of them.
        for i in 0..12 {
            load.push((200.0, 100.0), ([1, 4, 0][i % 3], [2, 0, 1][i % 3]));
        }
        let LoadRatio::Ratio { k, .. } = load.ratio() else {
            panic!("two minutes seen")
        };
        assert!((k - 1.0).abs() < 1e-12, "{k}");
        // A baseline without requests leaves no load to compare at.
        for _ in 0..12 {
            load.push((0.0, 100.0), (4, 2));
        }
        assert_eq!(load.ratio(), LoadRatio::NoBaseline);
    }
}

//! Server-side SVG charts of one check: both arms over time, and the evidence against its
//! threshold on a log scale, each with a marker at the decision.
//!
//! Plain SVG text with classes (styled by the page's stylesheet, or the report's inline
//! one) and presentation attributes only: no `style=` attributes, so the page's
//! Content-Security-Policy needs no `unsafe-inline`. Every text that came from outside
//! (check names, verdict reasons) goes through [`esc`].

use std::fmt::Write;

use super::esc;
use crate::chart::{Point, Series};
use crate::judge::{Outcome, fmt};

/// Drawing area in SVG units (the page scales it to the screen's width).
const W: f64 = 640.0;
const H: f64 = 150.0;
/// Left margin for the axis labels, and a little on the other sides.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;
/// Evidence below this is drawn at the bottom of the log axis.
const EV_FLOOR: f64 = 0.01;

/// The time axis shared by every chart of a page: 0 to `end_ms` of analysis time.
#[derive(Clone, Copy, Debug)]
pub struct Axis {
    pub end_ms: u64,
    /// Where the decision came (analysis time, ms), if any.
    pub decision_ms: Option<u64>,
}

impl Axis {
    fn x(&self, t_ms: u64) -> f64 {
        let span = self.end_ms.max(1) as f64;
        LEFT + (t_ms as f64 / span).min(1.0) * (W - LEFT - RIGHT)
    }
}

/// A vertical scale from `lo` to `hi` (already transformed, e.g. log10).
struct Scale {
    lo: f64,
    hi: f64,
}

impl Scale {
    fn y(&self, v: f64) -> f64 {
        let span = if self.hi > self.lo {
            self.hi - self.lo
        } else {
            1.0
        };
        let f = ((v - self.lo) / span).clamp(0.0, 1.0);
        H - BOTTOM - f * (H - TOP - BOTTOM)
    }
}

/// A number for an axis label: percentages for shares, plain numbers otherwise.
fn label(v: f64, share: bool) -> String {
    if share {
        fmt::pct(v)
    } else if v.abs() >= 1e4 {
        // 263M, 1.2G: levels such as memory in bytes.
        let (d, unit) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(d, _)| v.abs() >= *d)
            .unwrap_or((1.0, ""));
        let x = v / d;
        if x.abs() >= 100.0 {
            format!("{x:.0}{unit}")
        } else {
            format!("{x:.1}{unit}")
        }
    } else if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:.2e}")
    } else {
        fmt::count(v)
    }
}

/// Whether a series' values are shares (error ratios, slow-request shares, traffic split),
/// which read better as percentages.
fn is_share(s: &Series) -> bool {
    let all_unit = s
        .points
        .iter()
        .flat_map(|p| [p.baseline, p.canary])
        .filter(|v| v.is_finite())
        .all(|v| (0.0..=1.0).contains(&v));
    all_unit
        && matches!(
            s.kind,
            None | Some(crate::rules::CheckKind::Ratio) | Some(crate::rules::CheckKind::Histogram)
        )
}

/// `points` joined into polylines, broken wherever the value is missing; a point with no
/// neighbour is drawn as a dot (a line of one point would not show).
fn lines(out: &mut String, class: &str, pts: &[Point], axis: &Axis, y: impl Fn(&Point) -> f64) {
    let mut seg = String::new();
    let mut alone = (0.0, 0.0);
    let mut count = 0;
    let flush = |seg: &mut String, count: &mut usize, alone: (f64, f64), out: &mut String| {
        if *count == 1 {
            let _ = write!(
                out,
                r#"<circle class="{class} dot" cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                alone.0, alone.1
            );
        } else if *count > 1 {
            let _ = write!(
                out,
                r#"<polyline class="{class}" points="{}"/>"#,
                seg.trim_end()
            );
        }
        seg.clear();
        *count = 0;
    };
    for p in pts {
        let v = y(p);
        if v.is_finite() {
            let x = axis.x(p.t);
            let _ = write!(seg, "{x:.1},{v:.1} ");
            alone = (x, v);
            count += 1;
        } else {
            flush(&mut seg, &mut count, alone, out);
        }
    }
    flush(&mut seg, &mut count, alone, out);
}

fn frame(out: &mut String, class: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart {class}" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    let _ = write!(
        out,
        r#"<rect class="plot" x="{LEFT}" y="{TOP}" width="{}" height="{}"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
}

fn ylabel(out: &mut String, y: f64, text: &str) {
    let _ = write!(
        out,
        r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
        LEFT - 4.0,
        y + 3.0,
        esc(text)
    );
}

/// Time ticks (seconds, minutes or hours of analysis) and the decision marker.
fn time_axis(out: &mut String, axis: &Axis, decision: Option<&str>) {
    let total_s = axis.end_ms as f64 / 1000.0;
    let step = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14_400.0, 28_800.0,
    ]
    .into_iter()
    .find(|s| total_s / s <= 6.0)
    .unwrap_or(86_400.0);
    let mut t = 0.0;
    while t <= total_s + 1e-9 {
        let x = axis.x((t * 1000.0) as u64);
        let text = if step < 60.0 {
            format!("{t:.0}s")
        } else if step < 3600.0 {
            format!("{:.0}m", t / 60.0)
        } else {
            format!("{:.0}h", t / 3600.0)
        };
        // The last label would be cut by the right edge if centred.
        let anchor = if x > W - RIGHT - 12.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{}" text-anchor="{anchor}">{text}</text>"#,
            H - 6.0
        );
        t += step;
    }
    if let Some(t) = axis.decision_ms {
        let x = axis.x(t);
        let _ = write!(
            out,
            r#"<line class="decision" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}"><title>{}</title></line>"#,
            H - BOTTOM,
            esc(decision.unwrap_or("decision"))
        );
    }
}

/// Both arms' values over time.
pub fn arms(out: &mut String, s: &Series, axis: &Axis, decision: Option<&str>) {
    let share = is_share(s);
    let (lo, hi) = s.value_range().unwrap_or((0.0, 1.0));
    let lo = lo.min(0.0);
    let hi = if hi > lo { hi * 1.1 } else { lo + 1.0 };
    let scale = Scale { lo, hi };
    let what = if s.measure.is_empty() {
        "values".to_string()
    } else {
        format!("values ({})", s.measure)
    };
    frame(
        out,
        "arms",
        &format!("{}: baseline and canary {what}", s.name),
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        ylabel(out, scale.y(v), &label(v, share));
    }
    lines(out, "baseline", &s.points, axis, |p| {
        if p.baseline.is_finite() {
            scale.y(p.baseline)
        } else {
            f64::NAN
        }
    });
    lines(out, "canary", &s.points, axis, |p| {
        if p.canary.is_finite() {
            scale.y(p.canary)
        } else {
            f64::NAN
        }
    });
    time_axis(out, axis, decision);
    out.push_str("</svg>");
}

/// The evidence against its threshold (log scale), and a strip of each interval's outcome.
pub fn evidence(out: &mut String, s: &Series, axis: &Axis, decision: Option<&str>) {
    let th = s
        .points
        .iter()
        .rev()
        .map(|p| p.threshold)
        .find(|t| t.is_finite() && *t > 0.0);
    let top = s
        .points
        .iter()
        .map(|p| p.evidence)
        .filter(|e| e.is_finite())
        .fold(th.unwrap_or(10.0) * 10.0, f64::max)
        .min(1e12);
    let scale = Scale {
        lo: EV_FLOOR.log10(),
        hi: top.log10(),
    };
    frame(
        out,
        "evidence",
        &format!("{}: evidence against its threshold", s.name),
    );
    for v in [EV_FLOOR, 1.0] {
        ylabel(out, scale.y(v.log10()), &fmt::evidence(v));
    }
    if let Some(th) = th {
        let y = scale.y(th.log10());
        let _ = write!(
            out,
            r#"<line class="threshold" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/>"#,
            W - RIGHT
        );
        ylabel(out, y, &format!("fail {}", fmt::evidence(th)));
    }
    lines(out, "ev", &s.points, axis, |p| {
        if p.evidence.is_nan() {
            f64::NAN
        } else {
            scale.y(p.evidence.clamp(EV_FLOOR, 1e12).log10())
        }
    });
    outcome_strip(out, &s.points, axis);
    time_axis(out, axis, decision);
    out.push_str("</svg>");
}

/// A thin band under the plot, one cell per point, coloured by the outcome.
fn outcome_strip(out: &mut String, pts: &[Point], axis: &Axis) {
    let mut prev = axis.x(0);
    for p in pts {
        let x = axis.x(p.t);
        let class = match p.outcome {
            Outcome::Fail => "o-fail",
            Outcome::Pass => "o-pass",
            Outcome::Pending => "o-pending",
            Outcome::NoData | Outcome::SourceError => "o-missing",
        };
        let _ = write!(
            out,
            r#"<rect class="{class}" x="{prev:.1}" y="{}" width="{:.1}" height="3"/>"#,
            H - BOTTOM + 1.0,
            (x - prev).max(0.5)
        );
        prev = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str) -> Series {
        Series {
            name: name.into(),
            kind: Some(crate::rules::CheckKind::Ratio),
            measure: "rate ratio".into(),
            points: (1..=10)
                .map(|i| Point {
                    t: i * 10_000,
                    n: 1,
                    baseline: 0.01,
                    canary: if i == 4 { f64::NAN } else { 0.01 * i as f64 },
                    evidence: 2f64.powi(i as i32),
                    threshold: 40.0,
                    outcome: if i > 8 {
                        Outcome::Fail
                    } else {
                        Outcome::Pending
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn draws_both_arms_broken_at_missing_values_and_the_decision() {
        let axis = Axis {
            end_ms: 100_000,
            decision_ms: Some(90_000),
        };
        let mut out = String::new();
        arms(
            &mut out,
            &series("errors"),
            &axis,
            Some("rollback: errors <worse>"),
        );
        assert_eq!(out.matches(r#"class="baseline""#).count(), 1);
        assert_eq!(out.matches(r#"class="canary""#).count(), 2, "{out}");
        assert!(out.contains(r#"class="decision""#));
        assert!(out.contains("rollback: errors &lt;worse&gt;"));
        assert!(!out.contains("style="));
    }

    #[test]
    fn evidence_has_its_threshold_and_outcomes() {
        let axis = Axis {
            end_ms: 100_000,
            decision_ms: None,
        };
        let mut out = String::new();
        evidence(&mut out, &series("<b>x</b>"), &axis, None);
        assert!(out.contains(r#"class="threshold""#));
        assert!(out.contains("fail 40.0"));
        assert_eq!(out.matches("o-fail").count(), 2);
        assert!(out.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!out.contains("<b>"));
    }
}

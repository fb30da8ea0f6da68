//! The words of a notification, before any destination's format: what happened, to which
//! deployment and version, the checks with both arms' numbers and the effect with its
//! bounds, what rollguard did, and a link. Every renderer builds from this, so Slack, Teams
//! and PagerDuty tell the same story; each escapes and truncates for its own limits.

// The judge's number formats, so messages read exactly like explanations.
use crate::events::{Notice, NoticeKind, Severity};
use crate::judge::fmt;
use crate::judge::{CheckReport, Outcome};
use crate::rules::CheckKind;

/// Checks shown per message at most (failing ones come first); the link has the rest.
pub const MAX_CHECKS: usize = 8;

/// A notice in plain words, unescaped.
#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    pub kind: NoticeKind,
    /// Emoji and title: `⏪ Rolling back checkout-42: error-ratio failed`.
    pub headline: String,
    /// Why, and what rollguard did (may span lines).
    pub text: String,
    /// Label/value pairs: deployment, service, versions, analysis.
    pub facts: Vec<(String, String)>,
    pub checks: Vec<CheckLine>,
    /// Checks left out to keep the message short.
    pub more_checks: usize,
    pub link: Option<String>,
    /// Unix seconds.
    pub at: f64,
}

/// One check: its verdict and numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckLine {
    pub name: String,
    /// `FAIL`, `pass`, `pending`, `no data`, `source error`.
    pub outcome: String,
    pub failed: bool,
    /// `canary 4.10 % (n 38 107) vs baseline 0.520 % (n 41 220)`.
    pub arms: Option<String>,
    /// `rate ratio x7.9, 99 % bounds x5.2 – x12`.
    pub effect: Option<String>,
    /// `evidence 412 (fails at 100)`.
    pub evidence: String,
    /// The judge's plain-language explanation.
    pub explanation: String,
}

impl CheckLine {
    /// The numbers on one line: arms; effect; evidence.
    pub fn numbers(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(a) = &self.arms {
            parts.push(a);
        }
        if let Some(e) = &self.effect {
            parts.push(e);
        }
        parts.push(&self.evidence);
        parts.join("; ")
    }
}

/// Builds the digest; `public_url` makes the link when the notice has none.
pub fn digest(n: &Notice, public_url: Option<&str>) -> Digest {
    let mut facts = Vec::new();
    if let Some(s) = &n.subject {
        push(&mut facts, "Deployment", &s.deployment);
        push(&mut facts, "Service", &s.service);
        let version = match (s.version.is_empty(), s.baseline_version.is_empty()) {
            (false, false) => format!(
                "{} (canary) vs {} (baseline)",
                s.version, s.baseline_version
            ),
            (false, true) => format!("{} (canary)", s.version),
            (true, false) => format!("baseline {}", s.baseline_version),
            (true, true) => String::new(),
        };
        push(&mut facts, "Version", &version);
        push(&mut facts, "Analysis", &s.analysis);
    }
    let mut sorted: Vec<&CheckReport> = n.checks.iter().collect();
    sorted.sort_by_key(|c| c.outcome != Outcome::Fail);
    let checks: Vec<CheckLine> = sorted
        .iter()
        .take(MAX_CHECKS)
        .map(|c| check_line(c))
        .collect();
    let link = n.link.clone().or_else(|| {
        let base = public_url?;
        let dep = &n.subject.as_ref()?.deployment;
        (!dep.is_empty()).then(|| format!("{base}/api/v1/deployments/{dep}"))
    });
    Digest {
        kind: n.kind,
        headline: format!("{} {}", emoji(n.kind), n.title),
        text: n.text.clone(),
        facts,
        more_checks: n.checks.len().saturating_sub(MAX_CHECKS),
        checks,
        link: link.map(|l| safe_url(&l)),
        at: n.at,
    }
}

fn push(facts: &mut Vec<(String, String)>, label: &str, value: &str) {
    if !value.is_empty() {
        facts.push((label.to_string(), value.to_string()));
    }
}

/// The checks as lines of chat markup for the services that take Markdown-like text: the
/// name between `bold` marks with outcome and numbers, the explanation in `_italics_`, and
/// how many checks were left out. Interpolated text goes through the service's `escape`.
pub fn check_lines(d: &Digest, bold: &str, escape: fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for c in &d.checks {
        out.push(format!(
            "{bold}{}{bold}: {} — {}",
            escape(&c.name),
            c.outcome,
            escape(&c.numbers())
        ));
        if !c.explanation.is_empty() {
            out.push(format!("_{}_", escape(&c.explanation)));
        }
    }
    if d.more_checks > 0 {
        out.push(format!("… and {} more checks", d.more_checks));
    }
    out
}

/// A glyph per kind, so a channel can be scanned at a glance.
pub fn emoji(k: NoticeKind) -> &'static str {
    match k {
        NoticeKind::DeploymentStarted => "🐤",
        NoticeKind::StepPromoted => "⏩",
        NoticeKind::CheckFailing => "⚠️",
        NoticeKind::RollbackStarted => "⏪",
        NoticeKind::RollbackSucceeded => "✅",
        NoticeKind::RollbackFailed | NoticeKind::HookFailed => "🚨",
        NoticeKind::Held => "⏸️",
        NoticeKind::Resumed => "▶️",
        NoticeKind::Promoted => "🚀",
        NoticeKind::Inconclusive => "❔",
        NoticeKind::Aborted => "⏹️",
        NoticeKind::BackendDown => "📉",
        NoticeKind::BackendRecovered => "📈",
        NoticeKind::RuleReloadFailed => "📝",
        NoticeKind::RulesReloaded => "🗒️",
        NoticeKind::DryRun => "🧪",
        NoticeKind::RollbackUnsafe => "⛔",
    }
}

/// Colour per severity as `0xRRGGBB`: red for failures, amber for warnings, green for good
/// news, grey for the rest.
pub fn colour(k: NoticeKind) -> u32 {
    match (k.severity(), k) {
        (Severity::Critical, _) => 0xE0_1E_5A,
        (Severity::Warning, _) => 0xEC_B2_2E,
        (
            _,
            NoticeKind::RollbackSucceeded
            | NoticeKind::Promoted
            | NoticeKind::BackendRecovered
            | NoticeKind::Resumed,
        ) => 0x2E_B6_7D,
        _ => 0x86_86_86,
    }
}

fn check_line(c: &CheckReport) -> CheckLine {
    let outcome = match c.outcome {
        Outcome::Fail => "FAIL",
        Outcome::Pass => "pass",
        Outcome::Pending => "pending",
        Outcome::NoData => "no data",
        Outcome::SourceError => "source error",
    };
    let arm =
        |v: &crate::judge::ArmValue| format!("{} (n {})", value(c.kind, v.value), fmt::count(v.n));
    let arms = match (&c.canary, &c.baseline) {
        (Some(cv), Some(bv)) => Some(format!("canary {} vs baseline {}", arm(cv), arm(bv))),
        (Some(cv), None) => Some(format!("canary {}", arm(cv))),
        (None, Some(bv)) => Some(format!("baseline {}", arm(bv))),
        (None, None) => None,
    };
    let effect = c.effect.as_ref().map(|e| {
        let f = |x: f64| effect_value(&e.unit, &e.measure, x);
        format!(
            "{} {}, {} bounds {} – {}",
            e.measure,
            f(e.estimate),
            fmt::level(1.0 - e.confidence),
            f(e.lower),
            f(e.upper)
        )
    });
    CheckLine {
        name: c.name.clone(),
        outcome: outcome.to_string(),
        failed: c.outcome == Outcome::Fail,
        arms,
        effect,
        evidence: format!(
            "evidence {} (fails at {})",
            fmt::evidence(c.evidence),
            fmt::evidence(c.threshold)
        ),
        explanation: c.explanation.clone(),
    }
}

/// An arm's value: shares as percentages, other levels as numbers.
fn value(kind: CheckKind, v: f64) -> String {
    match kind {
        CheckKind::Ratio | CheckKind::Histogram => fmt::pct(v),
        _ => number(v),
    }
}

fn effect_value(unit: &str, measure: &str, x: f64) -> String {
    match unit {
        "ratio" if measure.starts_with("canary") => fmt::pct(x),
        "ratio" => fmt::times(x),
        "share" => fmt::pct(x),
        "bytes/min" => format!("{}/min", crate::units::format_bytes(x)),
        "level" | "" => number(x),
        other => format!("{} {other}", number(x)),
    }
}

/// Three significant digits, no exponent for everyday magnitudes.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "?".into()
        } else if x > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e9).contains(&a) {
        format!("{x:.2e}")
    } else if a >= 1000.0 {
        fmt::count(x)
    } else {
        let digits = (2 - a.log10().floor() as i32).clamp(0, 5) as usize;
        format!("{x:.digits$}")
    }
}

/// A link safe to put inside `<url|text>` or markdown `[text](url)`: characters that would
/// end the link are percent-encoded.
pub fn safe_url(u: &str) -> String {
    let mut out = String::with_capacity(u.len());
    for c in u.chars().filter(|c| !c.is_control()) {
        if "|<> ()\"".contains(c) {
            // All ASCII: `%` and two upper-case hex digits (`|` is `%7C`).
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts `s` to at most `max` characters (Unicode scalar values, as Slack, Discord and
/// Mattermost count), marking the cut with `…`.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Cuts `s` to at most `max` bytes of UTF-8 at a character boundary (Google Chat counts
/// bytes), marking the cut with `…`.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ell = '…'.len_utf8();
    if max < ell {
        return String::new();
    }
    let mut end = max - ell;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_bytes() {
        assert_eq!(truncate_chars("ééééé", 3), "éé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
        let t = truncate_bytes("ééééé", 7);
        assert!(t.len() <= 7 && t.ends_with('…'), "{t}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(123456.0), "123 456");
        assert_eq!(safe_url("http://x/a|b>c"), "http://x/a%7Cb%3Ec");
    }
}

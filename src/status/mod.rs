//! The status pages: what people look at instead of JSON. A list of deployments (running
//! first, then recent ones), and a page per deployment with a chart per check (both arms
//! over time, the evidence against its threshold, a marker at the decision, the verdict
//! sentence) and the timeline (steps, actions, hook results with their output,
//! notifications with their delivery status). `rollguard backtest --format html` writes the
//! same charts into one self-contained file ([`report_page`]).
//!
//! Everything here is pure: records in, HTML text out, so the pages are tested and measured
//! without a server. The charts are SVG drawn on the server ([`svg`]); the only script is a
//! few lines that re-fetch the page while the deployment is running ([`SCRIPT`]). Assets are
//! compiled into the binary and nothing is fetched from elsewhere; the daemon sends
//! [`CSP`] with every page. Labels, reasons, hook output and notifier errors are untrusted
//! text: every one goes through [`esc`]. [`web`] is the thin HTTP layer that serves them.

pub mod auth;
pub mod svg;
pub mod web;

use std::fmt::Write;

use crate::chart::History;
use crate::deploy::{DeploymentRecord, State, Strategy};
use crate::judge::CheckReport;
use crate::store::{Action, Event, OutboxItem};

/// The stylesheet of the pages (served as `/status.css`, inlined into reports).
pub const STYLE: &str = include_str!("status.css");
/// The live-update script (served as `/status.js`; reports have none).
pub const SCRIPT: &str = include_str!("status.js");
/// The Content-Security-Policy of the daemon's pages: nothing but our own stylesheet,
/// script and same-origin fetches; no inline script or style, no frames, no other origin.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The report's policy (a file opened from disk): its inline stylesheet and nothing else.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
/// Seconds between live updates of a page whose deployment is still running.
pub const REFRESH_S: u32 = 5;

/// Escapes text for HTML and SVG, in element content and in quoted attributes.
pub fn esc(s: &str) -> String {
    crate::escape::escape_chars(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    })
}

/// How the page gets its stylesheet and script.
enum Assets {
    /// The daemon: `/status.css` and `/status.js`, live updates every `refresh` seconds
    /// (none when the deployment is finished).
    Linked { refresh: Option<u32> },
    /// A report file: inline stylesheet, no script.
    Inline,
}

fn layout(title: &str, assets: Assets, main: &str) -> String {
    let mut out = String::with_capacity(main.len() + STYLE.len() + 600);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">",
    );
    let _ = write!(out, "<title>{} · rollguard</title>", esc(title));
    let linked = matches!(assets, Assets::Linked { .. });
    let refresh = match assets {
        Assets::Linked { refresh } => {
            out.push_str(
                "<link rel=\"stylesheet\" href=\"/status.css\">\
                 <script src=\"/status.js\" defer></script>",
            );
            refresh
        }
        Assets::Inline => {
            let _ = write!(
                out,
                "<meta http-equiv=\"Content-Security-Policy\" content=\"{REPORT_CSP}\"><style>{STYLE}</style>"
            );
            None
        }
    };
    out.push_str("</head>");
    match refresh {
        Some(s) => {
            let _ = write!(out, "<body data-refresh=\"{s}\">");
        }
        None => out.push_str("<body>"),
    }
    if linked {
        out.push_str("<header><a href=\"/\">rollguard</a></header><main>");
    } else {
        // A file has no server to go back to.
        out.push_str("<header>rollguard</header><main>");
    }
    out.push_str(main);
    out.push_str("</main></body></html>\n");
    out
}

/// A page with a message and no live updates (login, not found).
pub fn plain_page(title: &str, body: &str) -> String {
    layout(title, Assets::Linked { refresh: None }, body)
}

/// `3 s`, `12 min`, `5 h`, `2 d`: how long ago, roughly.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} d", s / 86_400.0)
    }
}

/// The strategy and where it is: `canary step 2/4 (25 %)`, `blue-green (switched)`, …
pub fn strategy_text(rec: &DeploymentRecord) -> String {
    match &rec.request.strategy {
        Strategy::Analysis => "analysis".into(),
        Strategy::Canary { steps, .. } => match steps.get(rec.step as usize) {
            Some(w) => format!("canary step {}/{} ({w} %)", rec.step + 1, steps.len()),
            None => format!("canary ({} steps)", steps.len()),
        },
        Strategy::Bake { .. } => "bake".into(),
        Strategy::BlueGreen { .. } if rec.step >= 1 => "blue-green (switched)".into(),
        Strategy::BlueGreen { .. } => "blue-green (verifying)".into(),
    }
}

fn state_badge(s: State) -> String {
    format!(
        "<span class=\"state s-{}\">{}</span>",
        s.as_str(),
        s.as_str().replace('_', " ")
    )
}

/// The list page: running deployments first, then recent ones.
pub fn list_page(running: &[DeploymentRecord], recent: &[DeploymentRecord], now: f64) -> String {
    let mut m = String::with_capacity(256 * (running.len() + recent.len()) + 512);
    m.push_str("<h1>Deployments</h1>");
    for (title, recs) in [("Running", running), ("Recent", recent)] {
        let _ = write!(m, "<h2>{title} <small>{}</small></h2>", recs.len());
        if recs.is_empty() {
            m.push_str("<p class=\"empty\">none</p>");
            continue;
        }
        m.push_str(
            "<table class=\"deployments\"><thead><tr><th>deployment</th><th>service</th>\
             <th>state</th><th>strategy</th><th>age</th><th>verdict</th></tr></thead><tbody>",
        );
        for r in recs {
            let id = esc(&r.request.id);
            let _ = write!(
                m,
                "<tr><td><a href=\"/deployments/{}\">{id}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                esc(&url_segment(&r.request.id)),
                esc(r.request.service.as_deref().unwrap_or("")),
                state_badge(r.state),
                esc(&strategy_text(r)),
                age(now - r.created_at),
                esc(&r.reason),
            );
        }
        m.push_str("</tbody></table>");
    }
    let refresh = Some(REFRESH_S);
    layout("deployments", Assets::Linked { refresh }, &m)
}

/// Percent-encodes a path segment (deployment ids are free text).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Everything the page of one deployment shows.
pub struct DeploymentView<'a> {
    pub rec: &'a DeploymentRecord,
    pub events: &'a [Event],
    pub actions: &'a [Action],
    pub notifications: &'a [OutboxItem],
    /// Wall-clock now (Unix seconds), for ages.
    pub now: f64,
}

/// The page of one deployment.
pub fn deployment_page(v: &DeploymentView) -> String {
    let rec = v.rec;
    let mut m = String::with_capacity(16 * 1024);
    let _ = write!(m, "<h1>{}</h1><p class=\"meta\">", esc(&rec.request.id));
    let _ = write!(
        m,
        "{} · {} · analysis {} · {} · started {} ago</p>",
        state_badge(rec.state),
        esc(rec.request.service.as_deref().unwrap_or("no service")),
        esc(&rec.request.analysis),
        esc(&strategy_text(rec)),
        age(v.now - rec.created_at)
    );
    if !rec.request.labels.is_empty() {
        m.push_str("<ul class=\"labels\">");
        for (k, v) in &rec.request.labels {
            let _ = write!(m, "<li><b>{}</b> {}</li>", esc(k), esc(v));
        }
        m.push_str("</ul>");
    }
    let _ = write!(m, "<p class=\"verdict\">{}</p>", esc(&rec.reason));
    let latest: Vec<CheckReport> = serde_json::from_value(rec.checks.clone()).unwrap_or_default();
    // A person's abort is no judge verdict: the record says when the analysis stopped.
    let decision = rec.chart.decision.as_ref().map(|d| (d.t, d.reason.clone()));
    let decision = decision.or_else(|| {
        rec.state
            .is_terminal()
            .then(|| (rec.elapsed_ms, rec.reason.clone()))
    });
    charts(&mut m, &rec.chart, &latest, decision, rec.elapsed_ms);
    timeline(&mut m, v);
    let refresh = (!rec.state.is_terminal()).then_some(REFRESH_S);
    layout(&rec.request.id, Assets::Linked { refresh }, &m)
}

/// One section per check: its latest outcome and explanation, both arms, the evidence.
fn charts(
    m: &mut String,
    chart: &History,
    latest: &[CheckReport],
    decision: Option<(u64, String)>,
    elapsed_ms: u64,
) {
    m.push_str("<section class=\"checks\"><h2>Checks</h2>");
    if chart.is_empty() && latest.is_empty() {
        m.push_str("<p class=\"empty\">no interval judged yet</p>");
    }
    let last_t = chart
        .checks
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.t))
        .max()
        .unwrap_or(0);
    let axis = svg::Axis {
        end_ms: last_t
            .max(elapsed_ms)
            .max(decision.as_ref().map_or(0, |d| d.0)),
        decision_ms: decision.as_ref().map(|d| d.0),
    };
    let reason = decision.as_ref().map(|d| d.1.as_str());
    for s in &chart.checks {
        let report = latest.iter().find(|r| r.name == s.name);
        let _ = write!(
            m,
            "<article class=\"check\" data-check=\"{}\"><h3>{} <span class=\"kind\">{}</span>",
            esc(&s.name),
            esc(&s.name),
            s.kind.map_or("traffic split", kind_name)
        );
        if let Some(r) = report {
            let _ = write!(
                m,
                " <span class=\"outcome o-{0}\">{0}</span></h3><p class=\"explain\">{1}</p>",
                r.outcome.as_str(),
                esc(&r.explanation)
            );
        } else {
            m.push_str("</h3>");
        }
        svg::arms(m, s, &axis, reason);
        svg::evidence(m, s, &axis, reason);
        m.push_str(
            "<p class=\"legend\"><span class=\"k-baseline\">baseline</span> \
             <span class=\"k-canary\">canary</span> <span class=\"k-ev\">evidence</span> \
             <span class=\"k-threshold\">threshold</span> <span class=\"k-decision\">decision</span></p>",
        );
        if chart.stride > 1 {
            let _ = write!(
                m,
                "<p class=\"note\">each point covers {} intervals</p>",
                chart.stride
            );
        }
        m.push_str("</article>");
    }
    m.push_str("</section>");
}

fn kind_name(k: crate::rules::CheckKind) -> &'static str {
    use crate::rules::CheckKind::*;
    match k {
        Ratio => "ratio",
        Histogram => "histogram",
        Growth => "growth",
        Gauge => "gauge",
        Threshold => "threshold",
        MannWhitney => "mann-whitney",
    }
}

fn time(unix: f64) -> String {
    let t = crate::units::rfc3339(unix);
    format!(
        "<time datetime=\"{t}\">{}</time>",
        t.get(11..19).unwrap_or(&t)
    )
}

/// Steps, actions and decisions; hook results with their output; notifications with their
/// delivery status.
fn timeline(m: &mut String, v: &DeploymentView) {
    m.push_str("<section class=\"timeline\"><h2>Timeline</h2><ol class=\"events\">");
    for e in v.events {
        let _ = write!(
            m,
            "<li class=\"ev-{}\">{} <span class=\"kind\">{}</span> {}</li>",
            e.kind.as_str(),
            time(e.at),
            e.kind.as_str().replace('_', " "),
            esc(&e.message)
        );
    }
    m.push_str("</ol><h2>Hooks</h2>");
    if v.actions.is_empty() {
        m.push_str("<p class=\"empty\">none</p>");
    }
    for a in v.actions {
        let _ = write!(
            m,
            "<div class=\"action a-{0}\"><p><b>{1}</b> for {2}: <span class=\"status\">{0}</span>, \
             {3} attempt(s). {4}</p>",
            a.status.as_str(),
            esc(&a.hook),
            a.purpose.as_str().replace('_', " "),
            a.attempts,
            esc(&a.summary)
        );
        if !a.output.is_empty() {
            let _ = write!(
                m,
                "<details><summary>output</summary><pre>{}</pre></details>",
                esc(&a.output)
            );
        }
        m.push_str("</div>");
    }
    m.push_str("<h2>Notifications</h2>");
    if v.notifications.is_empty() {
        m.push_str("<p class=\"empty\">none</p>");
    } else {
        m.push_str(
            "<table class=\"notifications\"><thead><tr><th>to</th><th>what</th><th>status</th>\
             <th>attempts</th><th>last error</th></tr></thead><tbody>",
        );
        for n in v.notifications {
            let title = n.payload["notice"]["title"]
                .as_str()
                .or_else(|| n.payload["title"].as_str())
                .unwrap_or("");
            let _ = write!(
                m,
                "<tr class=\"n-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&n.status),
                esc(&n.notifier),
                esc(title),
                esc(&n.status),
                n.attempts,
                esc(&n.last_error)
            );
        }
        m.push_str("</tbody></table>");
    }
    m.push_str("</section>");
}

/// What `backtest --format html` shows: the charts of one replayed analysis and its verdict.
pub struct ReportView<'a> {
    pub title: &'a str,
    /// One line under the title (analysis, files, interval).
    pub subtitle: &'a str,
    pub verdict: &'a str,
    pub reason: &'a str,
    pub chart: &'a History,
    /// The last interval's reports (outcome and explanation per check).
    pub latest: &'a [CheckReport],
    /// Analysis time of the last interval (ms).
    pub end_ms: u64,
}

/// One self-contained HTML file: inline stylesheet, inline SVG, no script, no requests.
pub fn report_page(r: &ReportView) -> String {
    let mut m = String::with_capacity(16 * 1024);
    let _ = write!(
        m,
        "<h1>{}</h1><p class=\"meta\">{}</p><p class=\"verdict\"><span class=\"state v-{2}\">{2}</span> {3}</p>",
        esc(r.title),
        esc(r.subtitle),
        esc(r.verdict),
        esc(r.reason)
    );
    let decision = r.chart.decision.as_ref().map(|d| (d.t, d.reason.clone()));
    charts(&mut m, r.chart, r.latest, decision, r.end_ms);
    layout(r.title, Assets::Inline, &m)
}

#[cfg(test)]
mod tests;

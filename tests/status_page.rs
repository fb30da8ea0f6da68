//! Issue 15: the status pages served by a real daemon that judged a real (simulated) fleet:
//! the token gate (login form, `?token=` link, cookie), the page headers (CSP), a chart per
//! check with the decision marker, the timeline with the hook's output, and a hostile label
//! escaped everywhere. `status_page::browser` loads the same page in headless Chromium.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, FleetServer, RATIO_RULE};

pub const TOKEN: &str = "status-page-token-for-tests";
/// A label that would run script, close an attribute or start a tag if it were not escaped.
pub const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'</title><script>alert(2)</script>";

/// Two checks, so the page must draw a chart per check.
fn rule() -> String {
    RATIO_RULE.replace(
        "on_fail: [rollback]",
        r#"  - name: server-errors
    kind: ratio
    errors: 'http_requests_total{job=~"{{job}}",code=~"5.."}'
    requests: 'http_requests_total{job=~"{{job}}"}'
    tolerance: 2.0
on_fail: [rollback]"#,
    )
}

/// A daemon with an API token and one deployment of a bad canary, rolled back.
pub struct Judged {
    pub daemon: Daemon,
    pub _fleet: FleetServer,
    pub id: &'static str,
}

pub fn judged(seed: u64) -> Judged {
    let fleet = FleetServer::bad(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token");
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule())], "api_token_file: token\n");
    let id = "shop-canary";
    let body = json!({
        "id": id,
        "service": "shop",
        "analysis": "errors",
        "labels": { "team": HOSTILE, "<b>key</b>": "v" },
        "baseline": { "targets": [fleet.target("baseline-0"), fleet.target("baseline-1")], "version": "v1" },
        "canary": { "targets": [fleet.target("canary-0")], "version": "v2" }
    });
    let api = format!("{}/api/v1/deployments", d.url);
    let (code, v) = support::http("POST", &api, Some(&body), Some(TOKEN));
    assert_eq!(code, 201, "{v}");
    let done = support::wait_for(Duration::from_secs(60), || {
        let (_, v) = support::http(
            "GET",
            &format!("{api}/{id}/events?wait=5&after=0"),
            None,
            Some(TOKEN),
        );
        (v["state"] == "rolled_back").then_some(())
    });
    assert!(done.is_some(), "not rolled back; log:\n{}", d.log());
    // The rollback hook has run and its result is recorded.
    let hooked = support::wait_for(Duration::from_secs(20), || {
        let (_, v) = support::http("GET", &format!("{api}/{id}"), None, Some(TOKEN));
        (v["actions"][0]["status"] == "succeeded").then_some(())
    });
    assert!(hooked.is_some(), "hook not finished; log:\n{}", d.log());
    Judged {
        daemon: d,
        _fleet: fleet,
        id,
    }
}

/// A GET or POST that does not follow redirects: status, headers, body.
fn raw(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    support::http::Client::no_redirects().send(|c| {
        let mut r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                url,
            )
            .timeout(Duration::from_secs(30));
        if let Some(k) = cookie {
            r = r.header("cookie", k);
        }
        if let Some(f) = form {
            r = r
                .header("content-type", "application/x-www-form-urlencoded")
                .body(f.to_string());
        }
        r
    })
}

fn no_raw_hostile(html: &str) {
    assert!(!html.contains("<img src=x"), "unescaped label in {html}");
    assert!(!html.contains("<script>alert"), "unescaped label in {html}");
    assert!(!html.contains("'</title>"), "unescaped label in {html}");
}

#[test]
fn pages_behind_the_token_with_charts_timeline_and_escaping() {
    let j = judged(151);
    let base = &j.daemon.url;

    // No token: the login form at the page's own address, with the page headers.
    let (code, h, body) = raw("GET", &format!("{base}/"), None, None);
    assert_eq!(code, 401);
    assert!(
        body.contains("<form method=\"post\" action=\"/login\""),
        "{body}"
    );
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!body.contains("shop-canary"));

    // A wrong token is told so; the right one by form or link gives the cookie, not the token.
    let (code, _, body) = raw(
        "POST",
        &format!("{base}/login"),
        None,
        Some("token=nope&next=/"),
    );
    assert_eq!(code, 401);
    assert!(body.contains("not the one configured"));
    let form = format!("token={TOKEN}&next=%2Fdeployments%2Fshop-canary");
    let (code, h, _) = raw("POST", &format!("{base}/login"), None, Some(&form));
    assert_eq!(code, 303);
    assert_eq!(h["location"], "/deployments/shop-canary");
    let (code, h, _) = raw("GET", &format!("{base}/?token={TOKEN}&x=1"), None, None);
    assert_eq!(code, 303);
    assert_eq!(h["location"], "/?x=1", "the token leaves the address");
    let set = h["set-cookie"].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    assert!(!set.contains(TOKEN));
    let cookie = set.split(';').next().unwrap().to_string();
    // A GET of a path on the daemon, with the page cookie.
    let get = |path: &str| raw("GET", &format!("{base}{path}"), Some(&cookie), None);
    // An off-site `next` goes home instead.
    let (code, h, _) = raw(
        "POST",
        &format!("{base}/login"),
        None,
        Some(&format!("token={TOKEN}&next=//evil.example/")),
    );
    assert_eq!(code, 303);
    assert_eq!(h["location"], "/");

    // The list: the deployment, rolled back, with its verdict.
    let (code, h, list) = get("/");
    assert_eq!(code, 200, "{list}");
    assert!(h.contains_key("content-security-policy"));
    assert!(list.contains("href=\"/deployments/shop-canary\""), "{list}");
    assert!(list.contains("s-rolled_back"));

    // The deployment: a chart per check, the decision, the timeline, the hook's result.
    let (code, _, page) = get(&format!("/deployments/{}", j.id));
    assert_eq!(code, 200);
    no_raw_hostile(&page);
    for check in ["error-ratio", "server-errors"] {
        assert!(
            page.contains(&format!("data-check=\"{check}\"")),
            "no chart for {check}: {page}"
        );
    }
    let checks = page.matches("<article class=\"check\"").count();
    assert!(checks >= 2);
    assert_eq!(page.matches("<svg class=\"chart arms\"").count(), checks);
    assert_eq!(
        page.matches("<svg class=\"chart evidence\"").count(),
        checks
    );
    assert!(page.matches("class=\"decision\"").count() >= 2 * checks);
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(page.contains("class=\"ev-decision\""), "{page}");
    assert!(page.contains("class=\"action a-succeeded\""), "{page}");
    assert!(
        !page.contains("data-refresh"),
        "a finished deployment is not polled"
    );

    // Assets are embedded and public (the login form needs its stylesheet).
    let (code, h, css) = raw("GET", &format!("{base}/status.css"), None, None);
    assert_eq!(code, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.contains("svg.chart"));
    let (code, _, _) = raw("GET", &format!("{base}/status.js"), None, None);
    assert_eq!(code, 200);

    // An unknown deployment is a page too, its id escaped.
    let (code, _, page) = get("/deployments/%3Cb%3Enope");
    assert_eq!(code, 404);
    assert!(page.contains("&lt;b&gt;nope"));
    // The API still wants the token itself, not the page cookie.
    let (code, _, _) = get("/api/v1/deployments");
    assert_eq!(code, 401);
}

/// Where the browser test leaves its screenshots: `$ROLLGUARD_ARTIFACTS`, or
/// `target/ci-artifacts/` (which .ci/run keeps).
fn artifacts() -> std::path::PathBuf {
    let dir = std::env::var_os("ROLLGUARD_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-artifacts")
        });
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Runs headless Chromium (Debian `chromium`) on `url` with `args`; stdout and the
/// browser's own log (console messages, CSP violations) as text.
fn chromium(profile: &std::path::Path, args: &[String], url: &str) -> (String, String) {
    let bin = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: apt-get install chromium (scripts/test installs it)"
    );
    let child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // A hung browser must not hang CI: kill it after a minute.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    });
    let out = child.wait_with_output().expect("chromium output");
    let _ = tx.send(());
    let _ = watchdog.join();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The page in a real browser: the DOM after the page's script ran has a chart per check,
/// the decision markers, the timeline and the hostile label as text, not as elements; the
/// browser reports no CSP violation and no script error. Screenshots (desktop and phone
/// width) go to target/ci-artifacts/.
#[test]
fn browser() {
    let j = judged(152);
    let profile = tempfile::tempdir().expect("profile");
    // The `?token=` link: the daemon answers with the cookie and a redirect to the page.
    let url = format!("{}/deployments/{}?token={TOKEN}", j.daemon.url, j.id);
    let (dom, log) = chromium(profile.path(), &["--dump-dom".into()], &url);
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Content Security Policy") || l.contains("Uncaught"))
        .collect();
    assert!(problems.is_empty(), "browser console: {problems:#?}");
    assert!(dom.contains("<h1>shop-canary</h1>"), "not the page: {dom}");
    for check in ["error-ratio", "server-errors"] {
        assert!(dom.contains(&format!("data-check=\"{check}\"")), "{dom}");
    }
    let checks = dom.matches("<article class=\"check\"").count();
    assert_eq!(dom.matches("<svg class=\"chart arms\"").count(), checks);
    assert_eq!(dom.matches("<svg class=\"chart evidence\"").count(), checks);
    assert!(dom.matches("<line class=\"decision\"").count() >= 2 * checks);
    assert!(dom.contains("class=\"ev-decision\""), "no timeline: {dom}");
    assert!(dom.contains("class=\"action a-succeeded\""));
    // Serialised text is re-escaped by the browser: an injected element would show as a tag.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "the label became an element: {dom}");
    assert_eq!(dom.matches("<script").count(), 1, "only status.js");

    let dir = artifacts();
    for (name, size) in [
        ("status.png", "1000,1700"),
        ("status-phone.png", "390,1700"),
    ] {
        let shot = dir.join(name);
        let _ = std::fs::remove_file(&shot);
        chromium(
            profile.path(),
            &[
                format!("--screenshot={}", shot.display()),
                format!("--window-size={size}"),
            ],
            &url,
        );
        let png = std::fs::read(&shot).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "no screenshot at {}",
            shot.display()
        );
    }
}

/// `rollguard demo` prints its status page's address and serves it while it runs; Ctrl-C
/// before the decision ends it with 130 (after the decision the page stays until Ctrl-C,
/// and `--exit` ends right away, which takes the demo's 40 s and is not run here).
#[test]
fn demo_prints_and_serves_its_status_page() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(support::BIN)
        .args(["demo", "--speed", "50"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("status page: ") {
                let url = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo printed no status page address");
    assert!(url.ends_with("/deployments/checkout-v2"), "{url}");
    let (code, h, page) = raw("GET", &url, None, None);
    assert_eq!(code, 200, "{page}");
    assert!(h.contains_key("content-security-policy"));
    assert!(page.contains("<h1>checkout-v2</h1>"), "{page}");
    assert!(
        page.contains("data-refresh="),
        "a running deployment's page updates itself"
    );
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let status = support::wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the demo did not end on Ctrl-C");
    };
    assert_eq!(status.code(), Some(130));
}

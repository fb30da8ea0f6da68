//! Issue 15: the status pages served by a real daemon that judged a real (simulated) fleet:
//! the token gate (login form, `?token=` link, cookie), the page headers (CSP), a chart per
//! check with the decision marker, the timeline with the hook's output, and a hostile label
//! escaped everywhere. `status_page::browser` loads the same page in headless Chromium.

use crate::common;

use std::time::Duration;

use common::{Daemon, FleetServer, RATIO_RULE};
use serde_json::json;

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
    let (code, v) = common::http("POST", &api, Some(&body), Some(TOKEN));
    assert_eq!(code, 201, "{v}");
    let done = common::wait_for(Duration::from_secs(60), || {
        let (_, v) = common::http(
            "GET",
            &format!("{api}/{id}/events?wait=5&after=0"),
            None,
            Some(TOKEN),
        );
        (v["state"] == "rolled_back").then_some(())
    });
    assert!(done.is_some(), "not rolled back; log:\n{}", d.log());
    // The rollback hook has run and its result is recorded.
    let hooked = common::wait_for(Duration::from_secs(20), || {
        let (_, v) = common::http("GET", &format!("{api}/{id}"), None, Some(TOKEN));
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
    rollguard::net::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
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
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap_or_default())
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
    let (code, h, list) = raw("GET", &format!("{base}/"), Some(&cookie), None);
    assert_eq!(code, 200, "{list}");
    assert!(h.contains_key("content-security-policy"));
    assert!(list.contains("href=\"/deployments/shop-canary\""), "{list}");
    assert!(list.contains("s-rolled_back"));

    // The deployment: a chart per check, the decision, the timeline, the hook's result.
    let (code, _, page) = raw(
        "GET",
        &format!("{base}/deployments/{}", j.id),
        Some(&cookie),
        None,
    );
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
    let (code, _, page) = raw(
        "GET",
        &format!("{base}/deployments/%3Cb%3Enope"),
        Some(&cookie),
        None,
    );
    assert_eq!(code, 404);
    assert!(page.contains("&lt;b&gt;nope"));
    // The API still wants the token itself, not the page cookie.
    let (code, _, _) = raw(
        "GET",
        &format!("{base}/api/v1/deployments"),
        Some(&cookie),
        None,
    );
    assert_eq!(code, 401);
}

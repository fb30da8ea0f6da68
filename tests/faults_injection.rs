//! Fault injection, input side: deployment data that tries shell or template injection into
//! hooks. With the real binary, a deployment whose parameters, service, versions or person
//! reason contain `"`, `}`, `{{id}}`, `$(...)`, backticks and other shell metacharacters is
//! either rejected with a message that names the field and the reason, or reaches the hook
//! only as inert data: one argv element, one environment variable, a JSON string (stdin, HTTP
//! body) or a percent-encoded URL part, byte for byte, never expanded or executed.

use crate::support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, RATIO_RULE};

/// A value that would do something if any layer interpreted it: quotes and braces that close
/// a label value or a JSON string, a placeholder, command substitutions in both syntaxes, and
/// the usual shell separators and redirections.
fn payload(dir: &Path) -> String {
    format!(
        "x\"}} {{{{id}}}} $(touch {d}/pwned-dollar) `touch {d}/pwned-backtick` ';|&>{d}/pwned-redirect \\ {{{{param.job}}}}",
        d = dir.display()
    )
}

/// An exec hook that records, with NUL separators, exactly what it received: every argument
/// (`$@`, the rendered placeholders), its environment and its stdin. The shell line is
/// fixed; data only ever arrives as positional parameters.
fn recorder(out: &Path) -> String {
    format!(
        "  rec:\n    exec: [\"/bin/sh\", \"-c\", \"for a in \\\"$@\\\"; do printf '%s\\\\0' \\\"$a\\\"; done > \\\"$0.argv\\\"; env -0 > \\\"$0.env\\\"; cat > \\\"$0.stdin\\\"\", \"{}\", \"{{{{version}}}}\", \"{{{{baseline_version}}}}\", \"{{{{service}}}}\", \"{{{{param.job}}}}\", \"{{{{reason}}}}\", \"{{{{id}}}}\"]\n    timeout: 10s\n    retries: 0\n",
        out.display()
    )
}

/// An HTTP hook with the same data in its URL path and query and in a JSON body template.
fn http_hook(port: u16) -> String {
    format!(
        "  web:\n    http:\n      url: \"http://127.0.0.1:{port}/hook/{{{{version}}}}?v={{{{version}}}}&p={{{{param.job}}}}\"\n      body: {{v: \"{{{{version}}}}\", s: \"{{{{service}}}}\", r: \"{{{{reason}}}}\", nested: [\"{{{{param.job}}}}\"]}}\n    timeout: 5s\n    retries: 0\n"
    )
}

/// What the HTTP hook's receiver saw: (path and query as sent, body).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn receiver() -> (u16, Seen, tokio::runtime::Runtime) {
    let rt = crate::support::http::runtime();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let port = rt.block_on(async move {
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let s = s2.clone();
                async move {
                    s.lock().unwrap().push((uri.to_string(), body.to_vec()));
                    "ok"
                }
            });
        crate::support::http::serve(app).await.port()
    });
    (port, seen, rt)
}

fn nul_split(p: &Path) -> Vec<String> {
    let raw = std::fs::read(p).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn request(id: &str, job: &str, service: &str, version: &str) -> Value {
    json!({
        "id": id, "service": service, "analysis": "errors",
        "params": {"job": job},
        // Nothing listens on port 9: the analysis has no data and only the abort acts.
        "baseline": {"targets": ["http://127.0.0.1:9/metrics"], "version": format!("{version}-base")},
        "canary": {"targets": ["http://127.0.0.1:9/metrics"], "version": version},
        "labels": {"team": version}
    })
}

#[test]
fn parameters_that_could_rewrite_a_selector_are_rejected_with_the_reason() {
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    for (i, bad) in [
        "api\"",
        "api\",code=\"200",
        "api}",
        "{api",
        "{{id}}",
        "`reboot`",
        "a\\b",
        "a'b",
        "line\nbreak",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("bad-{i}");
        let (code, v) = d.post("/api/v1/deployments", &request(&id, bad, "svc", "v2"));
        assert_eq!(code, 422, "{bad:?} was accepted: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("parameter `job`") && msg.contains("not allowed"),
            "unclear message for {bad:?}: {msg}"
        );
        let (code, _) = d.get(&format!("/api/v1/deployments/{id}"));
        assert_eq!(
            code, 404,
            "{bad:?}: a rejected deployment must not be registered"
        );
    }
    // An id is a path component and an action-id prefix: only [A-Za-z0-9._-].
    for bad in ["a b", "a/b", "$(id)", "a`b`", "{{id}}", "..%2f"] {
        let (code, v) = d.post("/api/v1/deployments", &request(bad, "api", "svc", "v2"));
        assert_eq!(code, 422, "{bad:?}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains("`id`"),
            "{v}"
        );
    }
}

#[test]
fn injection_payloads_reach_hooks_only_as_inert_data() {
    let (port, seen, _rt) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let p = payload(dir.path());
    // `$(...)` passes the parameter filter (no quote, brace or backslash): it must stay text.
    let job = format!("api|$(touch {}/pwned-param)", dir.path().display());
    let rule = RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [rec, web]");
    let extra = format!("{}{}", recorder(&out), http_hook(port));
    let d = Daemon::start_in(dir, &[("errors.yaml", &rule)], &extra);

    d.register(&request("inj-1", &job, &p, &p));
    let (code, v) = d.post(
        "/api/v1/deployments/inj-1/abort",
        &json!({"who": p, "reason": p}),
    );
    assert_eq!(code, 202, "{v}");
    let actions = support::wait_for(Duration::from_secs(20), || {
        let (_, v) = d.get("/api/v1/deployments/inj-1");
        let a = v["actions"].as_array()?.clone();
        (a.len() == 2
            && a.iter()
                .all(|x| matches!(x["status"].as_str(), Some("succeeded" | "failed"))))
        .then_some(a)
    })
    .unwrap_or_else(|| panic!("hooks never finished; log:\n{}", d.log()));
    for a in &actions {
        assert_eq!(a["status"], "succeeded", "{a:#}");
    }

    // argv: one element per placeholder, byte for byte, `{{id}}` inside data not expanded.
    let reason = format!("aborted by {p}: {p}");
    let argv = nul_split(&d.dir.path().join("rec.argv"));
    assert_eq!(
        argv,
        vec![
            p.clone(),
            format!("{p}-base"),
            p.clone(),
            job.clone(),
            reason.clone(),
            "inj-1".to_string()
        ]
    );
    // Environment: the same values, one variable each.
    let env = nul_split(&d.dir.path().join("rec.env"));
    for (k, want) in [
        ("ROLLGUARD_VERSION", p.as_str()),
        ("ROLLGUARD_SERVICE", p.as_str()),
        ("ROLLGUARD_PARAM_JOB", job.as_str()),
        ("ROLLGUARD_REASON", reason.as_str()),
        ("ROLLGUARD_DEPLOYMENT", "inj-1"),
    ] {
        let line = format!("{k}={want}");
        assert!(env.contains(&line), "{k} is not {want:?}: {env:#?}");
    }
    // stdin: valid JSON carrying the same strings.
    let stdin: Value =
        serde_json::from_slice(&std::fs::read(d.dir.path().join("rec.stdin")).unwrap()).unwrap();
    assert_eq!(stdin["version"], p.as_str());
    assert_eq!(stdin["params"]["job"], job.as_str());
    assert_eq!(stdin["reason"], reason.as_str());

    // HTTP hook: the body is valid JSON with the strings intact; URL parts percent-encoded, so
    // the payload adds no path segment and no query parameter.
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (uri, body) = &got[0];
    let body: Value = serde_json::from_slice(body).expect("HTTP hook body is JSON");
    assert_eq!(body["v"], p.as_str());
    assert_eq!(body["s"], p.as_str());
    assert_eq!(body["r"], reason.as_str());
    assert_eq!(body["nested"][0], job.as_str());
    let url = url::Url::parse(&format!("http://x{uri}")).unwrap();
    assert_eq!(
        url.path_segments().unwrap().count(),
        2,
        "payload added path segments: {uri}"
    );
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q,
        vec![("v".into(), p.clone()), ("p".into(), job.clone())],
        "{uri}"
    );

    // Nothing was executed: no command substitution, no redirection happened anywhere.
    let pwned: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "injected commands ran: {pwned:?}");
}

#[test]
fn rollguard_check_rejects_placeholders_inside_a_shell_script() {
    // The one way data could become code is a hook that pastes a placeholder into `sh -c`;
    // the config loader refuses it, naming the hook.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/errors.yaml"), RATIO_RULE).unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nstate_dir: state\nrules_dir: rules\nhooks:\n  rollback:\n    exec: [\"/bin/sh\", \"-c\", \"undo {{version}}\"]\n  promote:\n    exec: [\"/bin/true\"]\n",
    )
    .unwrap();
    let (code, out, err) = support::daemon::run(
        std::process::Command::new(support::BIN)
            .arg("check")
            .arg(&cfg),
    );
    let text = out + &err;
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains("config.yaml:6:5: hook `rollback`") && text.contains("shell command line"),
        "{text}"
    );
}

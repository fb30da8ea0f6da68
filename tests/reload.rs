//! Issue 4: hot reload while the daemon runs — edits in place, by rename and by `sed -i` take
//! effect; a broken edit is rejected and the last good rules stay in force; SIGHUP reloads.

use crate::support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, RATIO_RULE, wait_for};

fn rules(d: &Daemon) -> Value {
    let (code, v) = d.get("/api/v1/rules");
    assert_eq!(code, 200, "{v}");
    v
}

fn wait_version_change(d: &Daemon, from: &str) -> String {
    wait_for(Duration::from_secs(10), || {
        let v = rules(d);
        let now = v["version"].as_str().unwrap_or("").to_string();
        (now != from).then_some(now)
    })
    .unwrap_or_else(|| {
        panic!(
            "rules version did not change from {from}; log:\n{}",
            d.log()
        )
    })
}

#[test]
fn edits_in_place_by_rename_and_sed_are_live_and_broken_edits_are_rejected() {
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    let file = d.dir.path().join("rules/errors.yaml");
    let v1 = rules(&d)["version"].as_str().unwrap().to_string();

    // A deployment registered now keeps the version it started with.
    let (code, dep) = d.post(
        "/api/v1/deployments",
        &json!({"id": "pinned", "analysis": "errors", "baseline": {"targets": ["http://127.0.0.1:9/metrics"]}, "canary": {"targets": ["http://127.0.0.1:9/metrics"]}, "timing": {"max_duration": "1h"}}),
    );
    assert_eq!(code, 201, "{dep}");
    let pinned_version = dep["rule_version"].as_str().unwrap().to_string();

    // 1. In place.
    std::fs::write(
        &file,
        RATIO_RULE.replace("tolerance: 1.5", "tolerance: 1.6"),
    )
    .unwrap();
    let v2 = wait_version_change(&d, &v1);

    // 2. Write a temporary file and rename it over (editors, config management).
    let tmp = d.dir.path().join("rules/.errors.yaml.tmp");
    std::fs::write(&tmp, RATIO_RULE.replace("tolerance: 1.5", "tolerance: 1.7")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let v3 = wait_version_change(&d, &v2);

    // 3. sed -i (writes a new file and renames it; a file watch would go deaf here).
    let st = Command::new("sed")
        .args(["-i", "s/tolerance: 1.7/tolerance: 1.8/"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let v4 = wait_version_change(&d, &v3);

    // 4. A broken edit is rejected with its location; the last good version stays.
    std::fs::write(
        &file,
        RATIO_RULE.replace("tolerance: 1.5", "tolerence: 1.5"),
    )
    .unwrap();
    let err = wait_for(Duration::from_secs(10), || {
        rules(&d)["last_error"].as_array().cloned()
    })
    .expect("reload error reported");
    assert!(
        err[0]
            .as_str()
            .unwrap()
            .contains("errors.yaml:15:5: unknown field `tolerence`"),
        "{err:?}"
    );
    assert_eq!(rules(&d)["version"], v4.as_str());
    // The daemon keeps serving and registering with the last good rules.
    let (code, _) = support::http("GET", &format!("{}/healthz", d.url), None, None);
    assert_eq!(code, 200);
    let v = d.register(&json!({"id": "after-bad-edit", "analysis": "errors", "baseline": {"targets": ["http://127.0.0.1:9/m"]}, "canary": {"targets": ["http://127.0.0.1:9/m"]}}));
    assert_ne!(v["rule_version"], pinned_version.as_str());

    // The running deployment still reports the version it started with.
    let (_, dep) = d.get("/api/v1/deployments/pinned");
    assert_eq!(dep["rule_version"], pinned_version.as_str());

    // 5. Fixing the file clears the error.
    std::fs::write(&file, RATIO_RULE).unwrap();
    wait_for(Duration::from_secs(10), || {
        rules(&d)["last_error"].is_null().then_some(())
    })
    .expect("error cleared");

    // 6. The rules directory deleted: rejected, last good rules kept, daemon alive.
    let moved = d.dir.path().join("rules-moved");
    std::fs::rename(d.dir.path().join("rules"), &moved).unwrap();
    let before = rules(&d)["reloads"].as_u64().unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status();
    wait_for(Duration::from_secs(10), || {
        (rules(&d)["reloads"].as_u64().unwrap() > before).then_some(())
    })
    .expect("SIGHUP reload");
    let v = rules(&d);
    assert!(
        v["last_error"][0].as_str().unwrap().contains("cannot read"),
        "{v}"
    );
    assert!(!v["analyses"].as_array().unwrap().is_empty());
}

#[test]
fn sighup_reloads() {
    let d = Daemon::start(&[("errors.yaml", RATIO_RULE)], "");
    let before = rules(&d)["reloads"].as_u64().unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for(Duration::from_secs(10), || {
        (rules(&d)["reloads"].as_u64().unwrap() > before).then_some(())
    })
    .expect("reloaded on SIGHUP");
    // Still alive (SIGHUP's default action would have killed it).
    let (code, _) = support::http("GET", &format!("{}/healthz", d.url), None, None);
    assert_eq!(code, 200);
}

/// `reload: follow`: a running analysis switches to an edited rule, but not to one that
/// cannot judge it (a written PromQL `query:` for arms that are scraped): it keeps its
/// version and the log says why.
#[test]
fn follow_switches_running_analyses_unless_the_edit_does_not_fit() {
    let follow = RATIO_RULE.replace("checks:", "reload: follow\nchecks:");
    let d = Daemon::start(&[("errors.yaml", &follow)], "");
    let file = d.dir.path().join("rules/errors.yaml");
    let (code, dep) = d.post(
        "/api/v1/deployments",
        &json!({"id": "f", "analysis": "errors", "baseline": {"targets": ["http://127.0.0.1:9/metrics"]}, "canary": {"targets": ["http://127.0.0.1:9/metrics"]}, "timing": {"max_duration": "1h"}}),
    );
    assert_eq!(code, 201, "{dep}");
    let v1 = dep["rule_version"].as_str().unwrap().to_string();
    let version = |d: &Daemon| {
        let (_, v) = d.get("/api/v1/deployments/f");
        v["rule_version"].as_str().unwrap_or("").to_string()
    };

    std::fs::write(&file, follow.replace("tolerance: 1.5", "tolerance: 1.6")).unwrap();
    let v2 = wait_for(Duration::from_secs(20), || {
        Some(version(&d)).filter(|v| *v != v1)
    })
    .unwrap_or_else(|| panic!("did not follow the edit; log:\n{}", d.log()));

    let with_query = follow.replace(
        "on_fail:",
        "  - name: ceiling\n    kind: threshold\n    query: 'sum(rate(http_requests_total{ {{arm}} }[1m]))'\n    max: 10\non_fail:",
    );
    std::fs::write(&file, with_query).unwrap();
    wait_for(Duration::from_secs(20), || {
        d.log()
            .contains("not following the edited rule")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal logged; log:\n{}", d.log()));
    support::assert_logged(&d.log(), "needs the Prometheus source");
    assert_eq!(version(&d), v2);
}

//! Issue 3: `rollguard backtest` on files written by hand in the documented format
//! (OpenMetrics with a timestamp on every sample, one file per instance), with a counter
//! reset and a missing scrape; and bad input answered with the file and line.

use crate::support;

use std::process::Command;

use support::BIN;

const RULE: &str = r#"analysis: errors
interval: 10s
warmup: 0s
min_duration: 1m
max_duration: 10m
alpha: 0.05
checks:
  - name: error-ratio
    kind: ratio
    errors: 'http_requests_total{code="500"}'
    requests: 'http_requests_total'
"#;

/// One instance: `rps` requests and `errors_per_step` errors every 10 s for `steps` steps,
/// with a restart (counter reset) at `reset_at` and a missing scrape at `gap_at`.
fn instance(
    rps: u64,
    errors_per_step: u64,
    steps: u64,
    reset_at: Option<u64>,
    gap_at: Option<u64>,
) -> String {
    let t0 = 1_767_225_600u64;
    let mut ok = 0u64;
    let mut err = 0u64;
    let mut s = String::from("# TYPE http_requests counter\n# HELP http_requests Requests.\n");
    let mut oks = Vec::new();
    let mut errs = Vec::new();
    for k in 0..steps {
        if Some(k) == reset_at {
            ok = 0;
            err = 0;
        }
        ok += rps * 10 - errors_per_step;
        err += errors_per_step;
        if Some(k) != gap_at {
            oks.push(format!(
                "http_requests_total{{code=\"200\",route=\"/api/v1/cart/{{id}}\"}} {ok} {}.000\n",
                t0 + k * 10
            ));
            errs.push(format!(
                "http_requests_total{{code=\"500\",route=\"/api/v1/cart/{{id}}\"}} {err} {}.5\n",
                t0 + k * 10
            ));
        }
    }
    s.extend(oks);
    s.extend(errs);
    s.push_str("# EOF\n");
    s
}

fn run(
    dir: &std::path::Path,
    base: &[String],
    canary: &[String],
    json: bool,
) -> (i32, String, String) {
    run_as(dir, base, canary, if json { "json" } else { "text" })
}

fn run_as(
    dir: &std::path::Path,
    base: &[String],
    canary: &[String],
    format: &str,
) -> (i32, String, String) {
    std::fs::write(dir.join("rule.yaml"), RULE).unwrap();
    let files = |prefix: &str, texts: &[String]| -> Vec<String> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = dir.join(format!("{prefix}{i}.om"));
                std::fs::write(&p, t).unwrap();
                p.display().to_string()
            })
            .collect()
    };
    let b = files("b", base);
    let c = files("c", canary);
    let mut cmd = Command::new(BIN);
    cmd.args(["backtest", "--rules"])
        .arg(dir.join("rule.yaml"))
        .args(["--analysis", "errors", "--baseline"])
        .args(&b)
        .arg("--canary")
        .args(&c);
    cmd.args(["--format", format]);
    support::daemon::run(&mut cmd)
}

#[test]
fn hand_written_files_roll_back_a_bad_canary() {
    let dir = tempfile::tempdir().unwrap();
    // Baseline: two instances at 1 % errors, one restarts; canary: one instance at 5 %, one
    // missing scrape.
    let base = vec![
        instance(10, 1, 60, Some(30), None),
        instance(10, 1, 60, None, None),
    ];
    let canary = vec![instance(10, 5, 60, None, Some(20))];
    let (code, out, err) = run(dir.path(), &base, &canary, true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "rollback", "{v:#}");
    let at = v["decided_at_s"].as_f64().unwrap();
    assert!(at > 0.0 && at <= 300.0, "{v:#}");
    let c = &v["checks"][0];
    for k in [
        "name",
        "kind",
        "outcome",
        "evidence",
        "effect",
        "explanation",
    ] {
        assert!(c.get(k).is_some(), "missing {k}: {c}");
    }
    assert_eq!(c["outcome"], "fail");
    assert!(c["effect"].as_f64().unwrap() > 3.0, "{c}");
    // The human timeline says the same thing.
    let (code, out, _) = run(dir.path(), &base, &canary, false);
    assert_eq!(code, 0);
    assert!(out.contains("verdict: ROLLBACK"), "{out}");
}

/// `--format html`: one file with the status page's charts, nothing fetched, nothing run.
#[test]
fn html_report_has_the_charts_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = vec![instance(10, 1, 60, None, None)];
    let canary = vec![instance(10, 5, 60, None, Some(20))];
    let (code, html, err) = run_as(dir.path(), &base, &canary, "html");
    assert_eq!(code, 0, "{err}");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<h1>backtest of errors</h1>"), "{html}");
    assert!(
        html.contains("b0.om") && html.contains("c0.om"),
        "names its inputs"
    );
    assert!(html.contains("class=\"state v-rollback\""), "{html}");
    assert!(html.contains("data-check=\"error-ratio\""));
    assert_eq!(html.matches("<svg class=\"chart arms\"").count(), 1);
    assert_eq!(html.matches("<svg class=\"chart evidence\"").count(), 1);
    assert!(html.contains("<line class=\"decision\""));
    assert!(html.contains("<polyline class=\"canary\""));
    // Self-contained: inline style, a CSP of its own, no script, no other file or origin.
    assert!(html.contains("<style>") && html.contains("Content-Security-Policy"));
    for banned in ["<script", " src=", "href=\"http", "stylesheet", "url("] {
        assert!(!html.contains(banned), "{banned} in the report");
    }
}

#[test]
fn equal_arms_are_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let base = vec![instance(10, 1, 60, Some(30), None)];
    let canary = vec![instance(10, 1, 60, None, Some(40))];
    let (code, out, err) = run(dir.path(), &base, &canary, true);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(v["verdict"], "rollback", "{v:#}");
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = [instance(10, 1, 10, None, None)];
    // A bad canary recording, and where the error says it is.
    for (canary, at) in [
        (
            "# TYPE x counter\nx_total{a=\"1\" 5 1767225600\n# EOF\n",
            "c0.om:2:",
        ),
        (
            "http_requests_total{code=\"500\"} 5\n",
            "c0.om:1: sample `http_requests_total` has no timestamp",
        ),
    ] {
        let (code, _, err) = run(dir.path(), &good, &[canary.to_string()], true);
        assert_eq!(code, 1);
        assert!(err.contains(at), "{err}");
    }
}

/// Recorded files hold raw series; PromQL written in a rule needs a Prometheus server to
/// evaluate it, and `backtest` says so rather than judging without that check.
#[test]
fn a_written_query_cannot_be_backtested_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "analysis: errors\nchecks:\n  - name: ceiling\n    kind: threshold\n    query: 'sum(rate(http_requests_total{ {{arm}} }[1m]))'\n    max: 10\n",
    )
    .unwrap();
    let rec = dir.path().join("a.om");
    std::fs::write(&rec, instance(10, 1, 10, None, None)).unwrap();
    let out = Command::new(BIN)
        .args(["backtest", "--rules"])
        .arg(&rule)
        .args(["--analysis", "errors", "--baseline"])
        .arg(&rec)
        .arg("--canary")
        .arg(&rec)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("check `ceiling` is a written PromQL `query:`"),
        "{err}"
    );
}

/// Replaying from a server that does not answer is a failed backtest (exit 1, the reason),
/// not a window of source errors.
#[test]
fn an_unreachable_server_fails_the_backtest_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rule.yaml"), RULE).unwrap();
    let out = Command::new(BIN)
        .args(["backtest", "--rules"])
        .arg(dir.path().join("rule.yaml"))
        .args(["--analysis", "errors", "--prometheus", "http://127.0.0.1:9"])
        .args([
            "--baseline-selector",
            r#"v="1""#,
            "--canary-selector",
            r#"v="2""#,
        ])
        .args(["--from", "2026-11-27T14:00:00Z"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not answer") && err.contains("127.0.0.1:9"),
        "{err}"
    );
}

/// A simulated recording of `scenario` (seed 7) with each sample line kept only when
/// `keep(is_canary, line)` says so, replayed under the shipped rule `analysis`: the JSON.
fn replay_altered(
    scenario: &str,
    analysis: &str,
    keep: impl Fn(bool, &str) -> bool,
) -> serde_json::Value {
    replay_seed(scenario, 7, analysis, keep, &[])
}

/// [`replay_altered`] at `seed`, with more `backtest` arguments.
fn replay_seed(
    scenario: &str,
    seed: u64,
    analysis: &str,
    keep: impl Fn(bool, &str) -> bool,
    args: &[&str],
) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = support::daemon::run(
        Command::new(BIN)
            .args([
                "simulate",
                "--only",
                scenario,
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(dir.path()),
    );
    assert_eq!(code, 0, "{err}");
    let mut arms: [Vec<String>; 2] = Default::default();
    for entry in std::fs::read_dir(dir.path().join(scenario)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".om") {
            continue;
        }
        let canary = name.starts_with("canary");
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| l.starts_with('#') || keep(canary, l))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept).unwrap();
        arms[usize::from(canary)].push(path.display().to_string());
    }
    let rules = format!("{}/rules/{analysis}.yaml", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = support::daemon::run(
        Command::new(BIN)
            .args(["backtest", "--rules", &rules, "--analysis", analysis])
            .args(args)
            .arg("--baseline")
            .args(&arms[0])
            .arg("--canary")
            .args(&arms[1])
            .args(["--format", "json"]),
    );
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// `(verdict, the check named first in the reason)` of a replay.
fn verdict_and_check(v: &serde_json::Value) -> (String, String) {
    let reason = v["reason"].as_str().unwrap_or_default();
    let check = reason.split(':').next().unwrap_or_default();
    (v["verdict"].as_str().unwrap().into(), check.into())
}

/// A leaking pool recorded by a Prometheus that scrapes every 30 s, replayed under the
/// db-pool template's `interval: 10s`: every gauge sample is the latest for three intervals.
/// Counted three times, the level check's variance (from differences between intervals)
/// collapsed and the leak was promoted at 5 minutes; counted once, it is rolled back. The
/// arms are scraped 10 s apart, so their new samples never arrive in the same interval.
#[test]
fn gauges_scraped_less_often_than_the_interval_count_once() {
    let v = replay_altered("connection-leak-1-min", "db-pool", |canary, line| {
        // One sample in three: the baseline's on the half minute, the canary's 10 s later.
        let phase = if canary { 10 } else { 0 };
        line.rsplit_once(' ').is_none_or(|(_, ts)| {
            ts.parse::<f64>()
                .is_ok_and(|t| (t.round() as i64) % 30 == phase)
        })
    });
    assert_eq!(
        verdict_and_check(&v),
        ("rollback".into(), "connections-held".into()),
        "{v:#}"
    );
}

/// A new version with coarser latency buckets (no `le="0.1"` or `le="0.5"`, the edges nearest
/// the baseline's p50 and p99) is judged on the edges both arms have, instead of having no
/// latency data for the whole analysis: a healthy one is promoted, a slow tail rolled back.
#[test]
fn a_new_version_with_other_buckets_is_judged_on_the_edges_both_have() {
    let coarser = |canary: bool, line: &str| {
        !(canary && (line.contains("le=\"0.1\"") || line.contains("le=\"0.5\"")))
    };
    let healthy = replay_altered("aa", "http-service", coarser);
    assert_eq!(healthy["verdict"], "promote", "{healthy:#}");
    let slow = replay_altered("latency-tail", "http-service", coarser);
    assert_eq!(
        verdict_and_check(&slow),
        ("rollback".into(), "latency".into()),
        "{slow:#}"
    );
}

/// The db-pool template compares connections in use at equal requests per instance. A canary
/// pod with a tenth of a baseline pod's traffic holds a tenth of its connections: compared
/// unscaled, that read as "level within the tolerance" and a pool leaking three connections a
/// minute was promoted at 5 minutes; a canary pod with four times the traffic read as a leak
/// and a healthy canary was rolled back.
#[test]
fn pool_levels_are_compared_at_the_canary_pods_load() {
    let leak = replay_altered("connection-leak-3-min-share0.1", "db-pool", |_, _| true);
    assert_held_connections_rolled_back(&leak, "at the canary's load (x0.1");
    let busy = replay_altered("pool-aa-share0.8", "db-pool", |_, _| true);
    assert_eq!(busy["verdict"], "promote", "{busy:#}");
}

/// A service whose request counter has another name than the template's `requests`
/// parameter: the pool levels are compared as they are, and the explanation says so, instead
/// of every deployment being held for want of the counter. A leak is still rolled back.
#[test]
fn pool_levels_without_a_request_counter_are_compared_as_they_are() {
    let v = replay_altered("connection-leak-3-min", "db-pool", |_, line| {
        !line.starts_with("http_requests_total")
    });
    assert_held_connections_rolled_back(&v, "as they are (the request counter matched no series");
}

/// One instance per arm restarts mid-analysis. This canary's comes back with a tooth's
/// worth of memory, above three quarters of its old floor, and its drop was read as a GC
/// cycle ten minutes long: the floor window grew so long that the growth check never had
/// its trend points, and the run ended inconclusive (3 of 40 such runs under the
/// http-service template). The new start time says it restarted.
#[test]
fn a_restart_told_by_its_start_time_leaves_the_growth_check_deciding() {
    let v = replay_seed("aa-restarts", 26, "http-service", |_, _| true, &[]);
    assert_eq!(v["verdict"], "promote", "{v:#}");
    let growth = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "memory-growth"))
        .expect("the growth check");
    // It judges a trend again after the restart has settled (no pass yet: four minutes of
    // floors are left before the limit) instead of waiting for a ten-minute window.
    let why = growth["explanation"].as_str().unwrap_or_default();
    assert!(why.contains("canary's floor grows"), "{why}");
}

/// Memory that follows load, with the canary's share raised from 10 % to 50 % at 4 minutes:
/// within a minute the canary's floor rises and the baseline's falls by about 12 MiB each.
/// Read as a trend, that rolled back this healthy canary at 550 s; with the template's
/// request counter the growth check sees the split move and starts its trend over.
#[test]
fn memory_that_follows_a_weight_step_is_not_read_as_a_leak() {
    let scenario = "aa-weight-step-load-memory";
    let v = replay_seed(scenario, 11, "memory-leak", |_, _| true, &[]);
    assert_eq!(v["verdict"], "promote", "{v:#}");
    // A counter that matches nothing leaves the trend as it is.
    let blind = replay_seed(
        scenario,
        11,
        "memory-leak",
        |_, _| true,
        &["--param", "requests=no_such_requests_total"],
    );
    assert_eq!(
        verdict_and_check(&blind),
        ("rollback".into(), "memory-growth".into()),
        "{blind:#}"
    );
}

/// A replay rolled back by the db-pool template's `connections-held`, its reason saying `says`.
fn assert_held_connections_rolled_back(v: &serde_json::Value, says: &str) {
    assert_eq!(
        verdict_and_check(v),
        ("rollback".into(), "connections-held".into()),
        "{v:#}"
    );
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains(says)),
        "{v:#}"
    );
}

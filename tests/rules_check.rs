//! Issue 4: `rollguard check` on the shipped templates and on every kind of bad input, each
//! answered with a located message and exit 78 — never a crash.

use crate::support;

use std::path::Path;
use std::process::Command;

use support::BIN;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
const EXAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml");

fn check(args: &[&Path]) -> (i32, String) {
    let (code, out, err) = support::daemon::run(Command::new(BIN).arg("check").args(args));
    (code, out + &err)
}

fn template() -> String {
    std::fs::read_to_string(Path::new(SHIPPED).join("http-service.yaml")).expect("template")
}

/// Writes `text` as a rule file and checks it together with the example config.
fn check_rule(name: &str, text: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join(name);
    std::fs::write(&f, text).expect("write");
    check(&[Path::new(EXAMPLE_CONFIG), &f])
}

fn expect_error(name: &str, text: &[u8], line_col: &str, needle: &str) {
    let (code, out) = check_rule(name, text);
    assert_eq!(code, 78, "{name}: {out}");
    let want = format!("{name}:{line_col}");
    assert!(
        out.lines().any(|l| l.contains(&want) && l.contains(needle)),
        "{name}: expected `{want}` … `{needle}` in:\n{out}"
    );
}

#[test]
fn shipped_templates_and_example_config_are_valid() {
    let (code, out) = check(&[Path::new(SHIPPED), Path::new(EXAMPLE_CONFIG)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 5 analyses"), "{out}");
}

#[test]
fn wrong_type() {
    expect_error(
        "wrongtype.yaml",
        template().replace("alpha: 0.01", "alpha: high").as_bytes(),
        "24:8",
        "invalid floating point",
    );
}

#[test]
fn unknown_field_with_hint() {
    expect_error(
        "typo.yaml",
        template()
            .replace("    tolerance: 1.1", "    tolerence: 1.1")
            .as_bytes(),
        "32:5",
        "did you mean `tolerance`?",
    );
}

#[test]
fn duplicate_check_names() {
    expect_error(
        "dup.yaml",
        template()
            .replace("name: latency", "name: error-ratio")
            .as_bytes(),
        "33:11",
        "duplicate check name `error-ratio`",
    );
}

#[test]
fn unknown_check_kind() {
    expect_error(
        "kind.yaml",
        template()
            .replace("kind: growth", "kind: growht")
            .as_bytes(),
        "40:11",
        "did you mean `growth`?",
    );
}

#[test]
fn empty_file() {
    let (code, out) = check_rule("empty.yaml", b"");
    assert_eq!(code, 78);
    assert!(out.contains("empty.yaml: file is empty"), "{out}");
}

#[test]
fn non_utf8() {
    expect_error(
        "bytes.yaml",
        b"analysis: x\ndescription: \"\xff\xfe\"\n",
        "2:15",
        "not valid UTF-8",
    );
}

#[test]
fn one_gigabyte_file_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("huge.yaml");
    std::fs::File::create(&f)
        .and_then(|h| h.set_len(1 << 30))
        .expect("sparse file");
    let (code, out) = check(&[&f]);
    assert_eq!(code, 78);
    assert!(out.contains("over the 1048576-byte limit"), "{out}");
}

#[test]
fn deep_nesting() {
    let text = format!(
        "analysis: x\nchecks: {}{}\n",
        "[".repeat(500),
        "]".repeat(500)
    );
    expect_error(
        "deep.yaml",
        text.as_bytes(),
        "2:",
        "recursion limit exceeded",
    );
}

#[test]
fn alias_bomb_in_the_config() {
    let mut s = String::from(
        "rules_dir: rules\nhooks:\n  h:\n    http:\n      url: http://x/\n      body:\n        a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for n in "bcdefghi".chars() {
        s.push_str(&format!(
            "        {n}: &{n} [{}]\n",
            vec![format!("*{prev}"); 10].join(",")
        ));
        prev = n;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("config.yaml");
    std::fs::write(&f, s).expect("write");
    let (code, out) = check(&[&f]);
    assert_eq!(code, 78);
    assert!(
        out.contains("config.yaml:") && out.contains("alias replay limit exceeded"),
        "{out}"
    );
}

#[test]
fn tab_indentation() {
    expect_error(
        "tabs.yaml",
        b"analysis: x\nchecks:\n\t- name: a\n\t  kind: ratio\n",
        "3:2",
        "tabs disallowed",
    );
}

#[test]
fn missing_hook() {
    let text = template().replace("on_fail: [rollback, chat]", "on_fail: [rollbak, chat]");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("on_fail:"))
        .expect("on_fail");
    expect_error(
        "hook.yaml",
        text.as_bytes(),
        &format!("{line}:11"),
        "did you mean `rollback`?",
    );
}

#[test]
fn invalid_label_matchers() {
    expect_error(
        "matcher.yaml",
        template()
            .replace(
                r#"{{code_label}}=~"{{error_codes}}""#,
                r#"{{code_label}}~"5..""#,
            )
            .as_bytes(),
        "30:",
        "invalid selector",
    );
    expect_error(
        "regex.yaml",
        template()
            .replace(r#"=~"{{error_codes}}""#, r#"=~"[5..""#)
            .as_bytes(),
        "30:",
        "unclosed character class",
    );
}

#[test]
fn negative_and_zero_durations() {
    let t = template()
        .replace("warmup: 1m", "warmup: -1m")
        .replace("interval: 10s", "interval: 0s");
    let (code, out) = check_rule("durations.yaml", t.as_bytes());
    assert_eq!(code, 78);
    assert!(
        out.contains("durations.yaml:20:11: `interval` must be longer than zero"),
        "{out}"
    );
    assert!(
        out.contains("durations.yaml:21:9: `warmup`: invalid duration `-1m`"),
        "{out}"
    );
}

#[test]
fn alpha_outside_unit_interval() {
    expect_error(
        "alpha.yaml",
        template().replace("alpha: 0.01", "alpha: 1.5").as_bytes(),
        "24:8",
        "`alpha` must be in (0, 0.5)",
    );
    expect_error(
        "alpha0.yaml",
        template().replace("alpha: 0.01", "alpha: 0").as_bytes(),
        "24:8",
        "`alpha` must be in (0, 0.5)",
    );
}

#[test]
fn deleted_rules_directory() {
    let (code, out) = check(&[Path::new("/nonexistent/rollguard-rules")]);
    assert_eq!(code, 78);
    assert!(
        out.contains("/nonexistent/rollguard-rules: cannot read"),
        "{out}"
    );
}

#[test]
fn all_errors_of_all_files_at_once_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each file: the template with two mistakes.
    for (file, [a, b]) in [
        (
            "a.yaml",
            [
                ("alpha: 0.01", "alpha: 2"),
                ("interval: 10s", "interval: nope"),
            ],
        ),
        (
            "b.yaml",
            [
                ("analysis: http-service", "analysis: other"),
                ("kind: growth", "kind: grow"),
            ],
        ),
    ] {
        let text = template().replace(a.0, a.1).replace(b.0, b.1);
        std::fs::write(dir.path().join(file), text).expect("w");
    }
    let out = Command::new(BIN)
        .args(["check", "--format", "json"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    let errs = v["errors"].as_array().expect("errors");
    assert_eq!(errs.len(), 3, "{v:#}");
    assert!(
        errs.iter()
            .all(|e| e["line"].as_u64().unwrap_or(0) > 0 && e["path"].as_str().is_some())
    );
}

/// Writes a daemon config over the shipped rules, with the chat notifier's URL given as
/// `chat` (YAML) and `extra` appended, and returns its path.
fn config_with(dir: &Path, chat: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("config.yaml");
    let hooks: String = ["rollback", "promote", "step", "switch"]
        .iter()
        .map(|h| format!("  {h}: {{exec: [/bin/true]}}\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "rules_dir: {SHIPPED}\nstate_dir: state\nlisten: 127.0.0.1:0\nhooks:\n{hooks}\
             notifiers:\n  chat:\n    webhook:\n      url: {chat}\n{extra}"
        ),
    )
    .expect("config");
    cfg
}

/// Issue 18: `check` builds what `run` builds short of binding — a missing token file, a
/// missing secret file and a missing CA file are errors for both, with exit 78 for both.
#[test]
fn check_and_run_reject_the_same_missing_files() {
    let url = "http://127.0.0.1:9/x";
    let cases = [
        (
            url,
            "api_token_file: nope.token\n",
            "cannot read api_token_file",
        ),
        (
            "{file: missing-secret}",
            "",
            "notifier `chat`: url: cannot read secret file",
        ),
        (
            url,
            "scrape:\n  tls:\n    ca_file: missing-ca.pem\n",
            "scrape.tls: cannot read CA file",
        ),
        (
            url,
            "  am:\n    alertmanager:\n      urls: [\"http://127.0.0.1:9\", \"http://127.0.0.1:10\"]\n      tls: {ca_file: missing-am-ca.pem}\n",
            "notifier `am`: tls: cannot read CA file",
        ),
        (
            url,
            "  am:\n    alertmanager:\n      url: http://127.0.0.1:9\n      bearer_token: {file: missing-am-token}\n",
            "notifier `am`: bearer_token: cannot read secret file",
        ),
    ];
    for (chat, extra, needle) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config_with(dir.path(), chat, extra);
        let (code, out) = check(&[&cfg]);
        assert_eq!(code, 78, "check with {extra}: {out}");
        assert!(out.contains(needle), "check with {extra}: {out}");
        let run = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(78), "run with {extra}: {err}");
        assert!(err.contains(needle), "run with {extra}: {err}");
    }
}

/// A secret that systemd hands over at start (`$CREDENTIALS_DIRECTORY`) cannot be read by
/// `check` from a shell: it is named in a note, not reported as an error.
#[test]
fn credentials_directory_secrets_are_noted_not_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_with(dir.path(), "{file: $CREDENTIALS_DIRECTORY/secret_chat}", "");
    let out = Command::new(BIN)
        .arg("check")
        .arg(&cfg)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("handed over by systemd"), "{text}");
}

#[test]
fn durations_too_short_for_a_check_are_warned_about() {
    // The shipped http-service rule at one look a minute for 5 minutes: its growth check
    // needs a floor window and its trend points after the settling time of a canary that
    // starts after its baseline (16m), so it could never decide.
    let short = template()
        .replace("max_duration: 30m", "max_duration: 5m")
        .replace("min_duration: 5m", "min_duration: 2m")
        .replace("interval: 10s", "interval: 1m");
    let (code, text) = check_rule("short.yaml", short.as_bytes());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "warning: analysis `http-service`: check `memory-growth` can first decide at"
        ),
        "{text}"
    );
    assert!(
        text.contains("at 16m") && text.contains("but max_duration is 5m"),
        "{text}"
    );
    assert!(!text.contains("check `error-ratio`"), "{text}");
    // The shipped templates as they are: no warning.
    let (code, text) = check(&[Path::new(SHIPPED)]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("warning:"), "{text}");
}

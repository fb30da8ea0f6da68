//! Issue 17: the command line's own contract with pipelines — usage errors exit 64 (never 2,
//! which `deploy --wait` reserves for an inconclusive verdict), fixed option sets are
//! validated with the valid values listed, and `--help`/`--version` exit 0.

use std::process::Command;

use crate::support::BIN;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run rollguard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_64_with_the_valid_values() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let cases: [&[&str]; 5] = [
        &["deploy", "start", "--no-such-flag"],
        &[
            "backtest",
            "--format",
            "foo",
            "--rules",
            "r",
            "--analysis",
            "a",
            "--baseline",
            "b",
            "--canary",
            "c",
        ],
        &["check", "--format", "xml", rules],
        &["no-such-command"],
        &["deploy", "wait"],
    ];
    for args in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(
            err.contains("Usage:") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
    let (_, _, err) = run(&["backtest", "--format", "foo"]);
    assert!(err.contains("[possible values: text, json"), "{err}");
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["deploy", "start", "--help"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!out.is_empty(), "{args:?} printed nothing on stdout");
    }
}

#[test]
fn check_prints_yaml_when_asked() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let (code, out, err) = run(&["check", "--format", "yaml", rules]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_saphyr::from_str(&out).expect("check's YAML parses");
    assert_eq!(doc["valid"], true, "{out}");
    assert!(
        doc["analyses"].as_array().is_some_and(|a| !a.is_empty()),
        "{out}"
    );
}

/// docs/deployments.md's exit-code table lists exactly the codes in `src/exit.rs`.
#[test]
fn exit_code_table_in_the_docs_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployments.md"))
        .expect("docs/deployments.md");
    let section = doc
        .split("## Exit codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("an Exit codes section");
    let documented: Vec<u8> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(documented, rollguard::exit::ALL);
}

#[test]
fn completions_and_man_page_are_generated() {
    let (code, out, err) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("_rollguard()") && out.contains("deploy"),
        "{out}"
    );
    let (code, out, err) = run(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(".TH rollguard 1"), "{out}");
}

/// Every option and subcommand says what it is for in `--help`.
#[test]
fn every_option_has_help_text() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} --{}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{p} (the subcommand)"));
            }
            walk(sub, &p, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&rollguard::cli::Cli::command(), "rollguard", &mut missing);
    assert!(
        missing.is_empty(),
        "no --help text:\n{}",
        missing.join("\n")
    );
}

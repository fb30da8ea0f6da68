//! PromQL written in a rule (`query:`): its placeholders, their safety, and its syntax.
//!
//! A written query goes through two fillings. When a deployment is registered, the rule's
//! parameters are filled in ([`fill_params`]); every interval, the Prometheus source fills the
//! arm placeholders ([`fill_arm`]): `{{arm}}` becomes the arm's label matchers (`app="x",
//! track="canary"`, to be written inside a selector's braces) and `{{role}}` becomes
//! `baseline` or `canary`.
//!
//! A parameter comes from the deployment, i.e. from a pipeline. Inside a quoted string it
//! cannot leave the string (quotes, backslashes and braces are refused for every parameter);
//! outside quotes it is code, so there it may only be a word or a number (`5m`,
//! `http_requests_total`, `0.99`): a value such as `1m]) or vector(0) #` would otherwise
//! rewrite what the rule measures.

use promql_parser::parser::value::ValueType;

use crate::selector::{MatchOp, Matcher};
use crate::template;

/// Replaced by the arm's label matchers.
pub const ARM: &str = "arm";
/// Replaced by `baseline` or `canary`.
pub const ROLE: &str = "role";

/// Placeholder names filled by the source rather than by parameters.
pub fn is_builtin(name: &str) -> bool {
    name == ARM || name == ROLE
}

/// One `{{name}}` in a written query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    pub name: String,
    /// Byte offset of the placeholder in the text.
    pub offset: usize,
    /// Whether it sits inside a PromQL string literal.
    pub quoted: bool,
}

/// `x{{{arm}}}` (no spaces) is read as the brace of the selector followed by `{{arm}}`.
fn split_brace(name: &str) -> (&str, &str) {
    match name.strip_prefix('{') {
        Some(rest) => ("{", rest.trim()),
        None => ("", name),
    }
}

/// Every placeholder of a written query, with whether it is inside a string literal.
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let quoted = quoted_bytes(text);
    template::placeholders(text)
        .into_iter()
        .map(|(name, offset)| {
            let (brace, name) = split_brace(&name);
            Placeholder {
                name: name.to_string(),
                offset: offset + brace.len(),
                quoted: quoted.get(offset).copied().unwrap_or(false),
            }
        })
        .collect()
}

/// For each byte: is it inside a PromQL string (`"…"` and `'…'` with backslash escapes,
/// `` `…` `` raw)? A comment (`#` to the end of the line) counts as outside.
fn quoted_bytes(text: &str) -> Vec<bool> {
    let b = text.as_bytes();
    let mut out = vec![false; b.len()];
    let mut i = 0;
    let mut open: Option<u8> = None;
    while i < b.len() {
        match open {
            Some(q) => {
                out[i] = true;
                if b[i] == b'\\' && q != b'`' {
                    if i + 1 < b.len() {
                        out[i + 1] = true;
                    }
                    i += 1;
                } else if b[i] == q {
                    open = None;
                }
            }
            None => match b[i] {
                b'"' | b'\'' | b'`' => open = Some(b[i]),
                b'#' => {
                    while i + 1 < b.len() && b[i + 1] != b'\n' {
                        i += 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    out
}

/// A value that may stand outside quotes: a word or a number, nothing that could start a new
/// expression, end a bracket or comment out the rest.
fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.'))
}

/// Fills the rule's parameters, leaving `{{arm}}` and `{{role}}` for the source. A parameter
/// outside quotes must be a word or a number; the message says which and why.
pub fn fill_params(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    for p in placeholders(text) {
        if p.quoted || is_builtin(&p.name) {
            continue;
        }
        if let Some(v) = lookup(&p.name)
            && !is_token(&v)
        {
            return Err(format!(
                "parameter `{}` stands outside quotes in `query`, so it may only hold letters, digits, `_`, `:` and `.`; got {v:?}",
                p.name
            ));
        }
    }
    template::render(text, |n| {
        let (brace, name) = split_brace(n);
        if is_builtin(name) {
            Some(format!("{brace}{{{{{name}}}}}"))
        } else {
            lookup(name).map(|v| format!("{brace}{v}"))
        }
    })
    .map_err(|u| format!("unknown parameter `{}` in `query`", u.name))
}

/// Fills the arm placeholders: the text Prometheus is sent for one arm.
pub fn fill_arm(text: &str, arm: &[Matcher], role: &str) -> String {
    let matchers = arm
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    template::render(text, |n| {
        let (brace, name) = split_brace(n);
        match name {
            ARM => Some(format!("{brace}{matchers}")),
            ROLE => Some(format!("{brace}{role}")),
            _ => None,
        }
    })
    // Parameters were filled before; nothing else is left.
    .unwrap_or_else(|_| text.to_string())
}

/// Checks the syntax of a query whose parameters are filled, with a stand-in arm, and that it
/// returns an instant vector or a scalar (one value per series).
pub fn check(text: &str) -> Result<(), String> {
    let probe = [Matcher::new("rollguard_arm", MatchOp::Eq, "probe")?];
    let promql = fill_arm(text, &probe, "canary");
    // The parser is third-party code fed with hand-edited text, and it panics on some inputs
    // (a range of 10^100 seconds overflows `Duration`). A panic here would take down the rule
    // reload, so it becomes a rejection like any other.
    let expr = std::panic::catch_unwind(|| promql_parser::parser::parse(&promql))
        .map_err(|_| {
            "invalid PromQL: the parser could not handle it (for example a number too large for a duration)".to_string()
        })?
        .map_err(|e| format!("invalid PromQL: {e}"))?;
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => {
            Ok(())
        }
        ValueType::Matrix => Err(
            "returns a range vector; wrap it in a function such as rate() or avg_over_time() so that it gives one value per series"
                .into(),
        ),
        ValueType::String => {
            Err("returns a string; a check needs numbers".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_matchers;

    #[test]
    fn arms_fill_inside_braces_with_or_without_spaces() {
        let arm = parse_matchers(r#"app="x",track="canary""#).unwrap();
        assert_eq!(
            fill_arm(
                r#"sum(rate(req{ {{arm}}, code=~"5.." }[1m]))"#,
                &arm,
                "canary"
            ),
            r#"sum(rate(req{ app="x",track="canary", code=~"5.." }[1m]))"#
        );
        assert_eq!(
            fill_arm("sum(req{{{arm}}}) # {{role}}", &arm, "canary"),
            r#"sum(req{app="x",track="canary"}) # canary"#
        );
    }

    #[test]
    fn params_fill_and_leave_the_arm_for_the_source() {
        let p = |n: &str| match n {
            "job" => Some("api|web".to_string()),
            "window" => Some("5m".to_string()),
            _ => None,
        };
        let t = r#"sum(rate(req{{{arm}},job=~"{{job}}"}[{{window}}])) by ({{role}})"#;
        assert_eq!(
            fill_params(t, p).unwrap(),
            r#"sum(rate(req{{{arm}},job=~"api|web"}[5m])) by ({{role}})"#
        );
        assert!(fill_params("x[{{nope}}]", p).unwrap_err().contains("nope"));
    }

    #[test]
    fn an_unquoted_parameter_cannot_rewrite_the_query() {
        let evil = |_: &str| Some("1m]) or vector(0) #".to_string());
        let e = fill_params("sum(rate(req{ {{arm}} }[{{w}}]))", evil).unwrap_err();
        assert!(e.contains("outside quotes"), "{e}");
        // The same value inside quotes stays a label value.
        assert!(fill_params(r#"req{ {{arm}}, x="{{w}}" }"#, evil).is_ok());
        // A placeholder after a quoted `#` or an escaped quote is still known to be outside.
        let p = placeholders(r##"a{b="#\"", c="{{q}}"} + {{u}}"##);
        assert_eq!(
            p.iter()
                .map(|p| (p.name.as_str(), p.quoted))
                .collect::<Vec<_>>(),
            vec![("q", true), ("u", false)]
        );
    }

    #[test]
    fn syntax_and_result_type_are_checked() {
        assert!(check(r#"sum(rate(req{ {{arm}} }[1m])) / sum(rate(req{ {{arm}} }[1m]))"#).is_ok());
        assert!(check("scalar(sum(req{ {{arm}} }))").is_ok());
        let e = check("rate(req{ {{arm}} })").unwrap_err();
        assert!(e.contains("invalid PromQL") && e.contains("matrix"), "{e}");
        assert!(
            check("req{ {{arm}} }[5m]")
                .unwrap_err()
                .contains("range vector")
        );
        assert!(
            check("sum(rate(req{ {{arm}} }[1m])")
                .unwrap_err()
                .contains("invalid PromQL")
        );
        // Found by fuzzing: promql-parser panics on this; it must be a rejection.
        let huge = format!("s{{ {{{{arm}}}} }}[4{}]", "1".repeat(100));
        assert!(check(&huge).unwrap_err().contains("could not handle it"));
    }
}

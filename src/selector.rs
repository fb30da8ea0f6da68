//! PromQL-style series selectors (`http_requests_total{job="api",code=~"5.."}`).
//!
//! Rule files name metrics the way SREs already write them in Prometheus. The same parsed
//! selector filters scraped samples (scrape and recorded-file sources) and is rendered back to
//! PromQL, with the deployment's arm matchers added, for the Prometheus source — so a rule
//! means the same series whichever source feeds it.

use std::fmt;

use regex::Regex;

/// How a label matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }
}

/// One `label op "value"` term. Regexes are fully anchored, as in PromQL.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.label == o.label && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let re = match op {
            MatchOp::Re | MatchOp::Nre => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    format!(
                        "invalid regex for label `{label}`: {}",
                        crate::diag::one_line(&e.to_string())
                    )
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// PromQL semantics: a missing label compares as the empty string.
    pub fn matches(&self, v: Option<&str>) -> bool {
        let v = v.unwrap_or("");
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::Nre, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}\"{}\"",
            self.label,
            self.op.as_str(),
            escape(&self.value)
        )
    }
}

fn escape(s: &str) -> String {
    crate::escape::escape_chars(s, |c| match c {
        '\\' => Some("\\\\"),
        '"' => Some("\\\""),
        '\n' => Some("\\n"),
        _ => None,
    })
}

/// A metric name plus label matchers.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

/// A selector syntax error with the 1-based character column where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Parses `name{l="v", l2=~"re"}`, `name`, or `{__name__="name", ...}`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        Parser {
            s: input,
            chars: input.char_indices().collect(),
            i: 0,
        }
        .selector()
    }

    /// Whether a series with this name and labels is selected.
    pub fn matches<'a>(&self, name: &str, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        name == self.name && self.matchers.iter().all(|m| m.matches(label(&m.label)))
    }

    /// The same matchers on another metric name (`x` → `x_bucket` for histograms).
    pub fn with_name(&self, name: &str) -> Selector {
        Selector {
            name: name.to_string(),
            matchers: self.matchers.clone(),
        }
    }

    /// Renders PromQL with extra matchers appended (the deployment's arm selector).
    pub fn to_promql(&self, extra: &[Matcher]) -> String {
        let all: Vec<String> = self
            .matchers
            .iter()
            .chain(extra.iter())
            .map(|m| m.to_string())
            .collect();
        if all.is_empty() {
            self.name.clone()
        } else {
            format!("{}{{{}}}", self.name, all.join(","))
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_promql(&[]))
    }
}

/// Parses a bare matcher list such as `version="v2", track="canary"` (the `{}` optional),
/// used for the arms of a deployment watched through Prometheus.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, SelectorError> {
    let t = input.trim();
    let wrapped = if t.starts_with('{') {
        format!("__x{t}")
    } else {
        format!("__x{{{t}}}")
    };
    Selector::parse(&wrapped)
        .map(|s| s.matchers)
        .map_err(|e| SelectorError {
            column: e
                .column
                .saturating_sub(if t.starts_with('{') { 3 } else { 4 })
                .max(1),
            message: e.message,
        })
}

struct Parser<'a> {
    s: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

impl Parser<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            column: self.i + 1,
            message: msg.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).map(|&(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn ident(&mut self, metric: bool) -> Option<String> {
        let start = self.i;
        match self.peek() {
            Some(c) if is_name_start(c) && (metric || c != ':') => self.i += 1,
            _ => return None,
        }
        while self
            .peek()
            .is_some_and(|c| is_name_char(c) && (metric || c != ':'))
        {
            self.i += 1;
        }
        let from = self.chars[start].0;
        let to = self.chars.get(self.i).map_or(self.s.len(), |&(b, _)| b);
        Some(self.s[from..to].to_string())
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        let quote = match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => return self.err("expected a quoted label value"),
        };
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated label value"),
                Some(c) if c == quote => {
                    self.i += 1;
                    return Ok(out);
                }
                Some('\\') if quote != '`' => {
                    self.i += 1;
                    match self.peek() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                        // Regexes keep their own escapes (`\.`, `\d`): pass them through.
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                        None => return self.err("unterminated label value"),
                    }
                    self.i += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        self.skip_ws();
        let mut name = self.ident(true);
        self.skip_ws();
        let mut matchers = Vec::new();
        if self.peek() == Some('{') {
            self.i += 1;
            loop {
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.i += 1;
                    break;
                }
                let Some(label) = self.ident(false) else {
                    return self.err("expected a label name");
                };
                self.skip_ws();
                let op = match (self.peek(), self.chars.get(self.i + 1).map(|c| c.1)) {
                    (Some('='), Some('~')) => {
                        self.i += 2;
                        MatchOp::Re
                    }
                    (Some('!'), Some('=')) => {
                        self.i += 2;
                        MatchOp::Ne
                    }
                    (Some('!'), Some('~')) => {
                        self.i += 2;
                        MatchOp::Nre
                    }
                    (Some('='), _) => {
                        self.i += 1;
                        MatchOp::Eq
                    }
                    _ => return self.err(format!("expected =, !=, =~ or !~ after `{label}`")),
                };
                self.skip_ws();
                let col = self.i + 1;
                let value = self.string()?;
                if label == "__name__" && op == MatchOp::Eq {
                    if name.is_some() {
                        return Err(SelectorError {
                            column: col,
                            message: "metric name given twice".into(),
                        });
                    }
                    name = Some(value);
                } else {
                    let m = Matcher::new(&label, op, &value).map_err(|message| SelectorError {
                        column: col,
                        message,
                    })?;
                    matchers.push(m);
                }
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.i += 1,
                    Some('}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return self.err("expected `,` or `}`"),
                }
            }
        }
        self.skip_ws();
        if self.peek().is_some() {
            return self.err(
                "unexpected text after the selector (write a full `query:` for PromQL expressions)",
            );
        }
        match name {
            Some(name) if !name.is_empty() => Ok(Selector { name, matchers }),
            _ => Err(SelectorError {
                column: 1,
                message: "a selector needs a metric name".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse(r#"http_requests_total{job="api", code=~"5.."}"#).unwrap();
        assert_eq!(s.name, "http_requests_total");
        assert!(s.matches(
            "http_requests_total",
            labels(&[("job", "api"), ("code", "503")])
        ));
        assert!(!s.matches(
            "http_requests_total",
            labels(&[("job", "api"), ("code", "200")])
        ));
        assert!(!s.matches(
            "http_requests_total",
            labels(&[("job", "api"), ("code", "5000")])
        ));
        assert!(!s.matches("other", labels(&[("job", "api"), ("code", "503")])));
    }

    #[test]
    fn missing_label_is_empty() {
        let s = Selector::parse(r#"m{a!="x",b=""}"#).unwrap();
        assert!(s.matches("m", labels(&[])));
    }

    #[test]
    fn special_characters_and_names() {
        let s = Selector::parse(r#"job:http:rate5m{route="/cart/{id}", x='a,b=c'}"#).unwrap();
        assert_eq!(s.name, "job:http:rate5m");
        assert_eq!(s.matchers[0].value, "/cart/{id}");
        assert_eq!(s.matchers[1].value, "a,b=c");
        let s = Selector::parse(r#"{__name__="up", job="x"}"#).unwrap();
        assert_eq!(s.name, "up");
        assert_eq!(s.to_promql(&[]), r#"up{job="x"}"#);
    }

    #[test]
    fn renders_with_extra_matchers() {
        let s = Selector::parse(r#"m{code=~"5.."}"#).unwrap();
        let extra = parse_matchers(r#"version="v2""#).unwrap();
        assert_eq!(s.to_promql(&extra), r#"m{code=~"5..",version="v2"}"#);
        assert_eq!(parse_matchers(r#"{a="1"}"#).unwrap()[0].value, "1");
    }

    #[test]
    fn errors_have_columns() {
        let e = Selector::parse(r#"m{code~"5"}"#).unwrap_err();
        assert_eq!(e.column, 7);
        assert!(
            Selector::parse(r#"m{code="5"#)
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(
            Selector::parse(r#"m{code=~"("}"#)
                .unwrap_err()
                .message
                .contains("regex")
        );
        assert!(Selector::parse("").is_err());
        assert!(Selector::parse("rate(m[5m])").is_err());
    }
}

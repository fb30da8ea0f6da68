//! Located diagnostics for files that people edit by hand (rule files, the daemon config).
//!
//! Every problem found while loading a file becomes one [`Diagnostic`] that prints as
//! `path:line:col: message` (the format editors and CI annotators understand), with an
//! optional hint. Loaders collect *all* diagnostics of all files before giving up, so an
//! SRE fixing a rule under pressure sees every mistake in one run, not one per run.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in one file, with its location when it is known (line and column are 1-based;
/// 0 means "the file as a whole").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(path: &Path, line: u64, column: u64, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    /// A problem with the file as a whole (unreadable, too large, not UTF-8).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::new(path, 0, 0, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Converts a serde-saphyr error into a located diagnostic, adding a "did you mean" hint
    /// for misspelt field names and enum variants.
    pub fn from_yaml(path: &Path, err: &serde_saphyr::Error) -> Self {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let raw = err.without_snippet().to_string();
        let message = one_line(strip_location_suffix(&raw));
        let hint = spelling_hint(&message);
        let mut d = Diagnostic::new(path, line, column, message);
        d.hint = hint;
        d
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.path.display(), self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// Collapses a multi-line message (regex errors, parser notes) into one line, so every
/// diagnostic stays `path:line:col: message`.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde-saphyr appends " at line L, column C" to its messages; we print the location in
/// front instead, so it is removed here.
fn strip_location_suffix(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    }
}

/// For "unknown field `x`, expected one of a, b" (and the same for variants) suggests the
/// closest expected name when it is a plausible typo.
fn spelling_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (got, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected one of ")?.1;
    let best = expected
        .split(", ")
        .map(|c| c.trim_matches('`').trim())
        .filter(|c| !c.is_empty())
        .map(|c| (edit_distance(got, c), c))
        .min_by_key(|(d, _)| *d)?;
    let limit = (got.chars().count() / 3).max(1);
    (best.0 <= limit).then(|| format!("did you mean `{}`?", best.1))
}

/// Edit distance counting insertions, deletions, substitutions and transpositions of
/// neighbours (optimal string alignment): `evn` is one edit from `env`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Suggests the closest of `candidates` to `got` when it is a plausible typo.
pub fn suggest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let best = candidates
        .into_iter()
        .map(|c| (edit_distance(got, c), c))
        .min_by_key(|(d, _)| *d)?;
    let limit = (got.chars().count() / 3).max(1);
    (best.0 <= limit).then(|| format!("did you mean `{}`?", best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_for_misspelt_field() {
        let m = "unknown field `treshold`, expected one of name, threshold, kind";
        assert_eq!(
            spelling_hint(m).as_deref(),
            Some("did you mean `threshold`?")
        );
        let m = "unknown variant `zzz`, expected one of ratio, histogram";
        assert_eq!(spelling_hint(m), None);
    }

    #[test]
    fn location_suffix_is_stripped() {
        assert_eq!(strip_location_suffix("bad at line 4, column 5"), "bad");
        assert_eq!(
            strip_location_suffix("look at line items"),
            "look at line items"
        );
    }

    #[test]
    fn display_is_path_line_col() {
        let d = Diagnostic::new(Path::new("r.yaml"), 3, 7, "boom").with_hint("try x");
        assert_eq!(d.to_string(), "r.yaml:3:7: boom (try x)");
        assert_eq!(
            Diagnostic::file(Path::new("r.yaml"), "empty").to_string(),
            "r.yaml: empty"
        );
    }
}

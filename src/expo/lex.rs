//! Byte-level scanning of single exposition lines.
//!
//! Everything here works on one line (already split on `\n`, `\r` stripped) and on byte offsets
//! into it. Every offset at which we slice is the position of an ASCII byte (a delimiter we just
//! found), so slicing the `&str` never lands inside a UTF-8 sequence; we still go through
//! [`slice`] (`str::get`) so that a mistake here shows up as a parse error, not as a panic on
//! bytes from the network.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

use super::{Format, Label};

/// A problem found on one line: where (byte offset into the line) and what, in plain words.
///
/// The driver turns it into a public [`super::ParseError`] with a line number and a character
/// column; keeping the offset in bytes here keeps the hot path free of character counting.
#[derive(Debug)]
pub(super) struct LexError {
    pub offset: usize,
    pub message: String,
}

impl LexError {
    pub(super) fn new(offset: usize, message: impl Into<String>) -> Self {
        LexError {
            offset,
            message: message.into(),
        }
    }
}

/// The non-label parts of a sample line, returned by [`sample_line`].
pub(super) struct SampleParts<'a> {
    pub name: &'a str,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// Character classes of name bytes, looked up in one table load per byte: name scanning is
/// the innermost loop of the parser (a range-compare chain measured ~40 % of `sample_line`).
const LABEL_START: u8 = 1;
const LABEL_CHAR: u8 = 2;
const METRIC_START: u8 = 4;
const METRIC_CHAR: u8 = 8;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let mut k = 0;
        if alpha {
            k |= LABEL_START | LABEL_CHAR | METRIC_START | METRIC_CHAR;
        }
        if b.is_ascii_digit() {
            k |= LABEL_CHAR | METRIC_CHAR;
        }
        if b == b':' {
            k |= METRIC_START | METRIC_CHAR;
        }
        #[allow(clippy::indexing_slicing)] // c < 256 by the loop condition
        {
            t[c] = k;
        }
        c += 1;
    }
    t
};

#[inline(always)]
fn class(c: u8, k: u8) -> bool {
    CLASS.get(usize::from(c)).is_some_and(|&x| x & k != 0)
}

/// Reusable buffers for the labels of the line being parsed.
///
/// Kept as parallel vectors of register-sized items on purpose: pushing whole `Label`s (five
/// words, built on the stack and copied by an out-of-line `Vec::push`) stalled on store
/// forwarding and cost ~20 % of the parse in `perf`. [`LabelScratch::take`] then builds the
/// sample's `Vec<Label>` in one exactly-sized allocation.
#[derive(Default)]
pub(super) struct LabelScratch<'a> {
    names: Vec<&'a str>,
    /// Value as `(start, end)` byte offsets into the line, or `(ESCAPED, k)` for `owned[k]`.
    values: Vec<(usize, usize)>,
    /// Decoded values of the (rare) label values that had escapes.
    owned: Vec<String>,
}

/// Marks a value in [`LabelScratch::values`] that lives in `owned`.
const ESCAPED: usize = usize::MAX;

impl<'a> LabelScratch<'a> {
    pub(super) fn clear(&mut self) {
        self.names.clear();
        self.values.clear();
        self.owned.clear();
    }

    /// Moves the collected labels out as the sample's label vector and clears the buffers.
    pub(super) fn take(&mut self, line: &'a str) -> Vec<Label<'a>> {
        let owned = &mut self.owned;
        // A zip of two slices has an exact length, so `collect` allocates once (or not at all
        // for `{}`) and writes each label in place.
        let labels = self
            .names
            .iter()
            .zip(&self.values)
            .map(|(&name, &(start, end))| Label {
                name,
                value: if start == ESCAPED {
                    Cow::Owned(owned.get_mut(end).map(std::mem::take).unwrap_or_default())
                } else {
                    Cow::Borrowed(slice(line, start, end))
                },
            })
            .collect();
        self.clear();
        labels
    }
}

/// `[a-zA-Z_:]`: first character of a metric name.
#[inline]
pub(super) fn is_metric_start(c: u8) -> bool {
    class(c, METRIC_START)
}

/// `[a-zA-Z0-9_:]`: later characters of a metric name.
#[inline]
fn is_metric_char(c: u8) -> bool {
    class(c, METRIC_CHAR)
}

/// `[a-zA-Z_]`: first character of a label name (no `:` in label names).
#[inline]
fn is_label_start(c: u8) -> bool {
    class(c, LABEL_START)
}

/// `[a-zA-Z0-9_]`: later characters of a label name.
#[inline]
fn is_label_char(c: u8) -> bool {
    class(c, LABEL_CHAR)
}

/// Slices `s` without any possibility of a panic; see the module docs for why the fallback is
/// never taken in practice.
#[inline]
pub(super) fn slice(s: &str, from: usize, to: usize) -> &str {
    s.get(from..to).unwrap_or("")
}

/// Skips spaces and tabs, the only separators the formats allow inside a line.
#[inline]
pub(super) fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// End of a whitespace-delimited token starting at `i`.
#[inline]
pub(super) fn token_end(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if c == b' ' || c == b'\t' {
            break;
        }
        i += 1;
    }
    i
}

#[inline]
fn scan_while(b: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while let Some(&c) = b.get(i) {
        if !keep(c) {
            break;
        }
        i += 1;
    }
    i
}

/// 1-based character column of byte `offset` in `line`, for error messages that people read
/// with an editor (which counts characters, not bytes).
pub(super) fn column(line: &str, offset: usize) -> usize {
    let b = line.as_bytes();
    let upto = b.get(..offset).unwrap_or(b);
    // Count the bytes that start a UTF-8 sequence (i.e. are not continuation bytes 10xxxxxx).
    upto.iter().filter(|&&c| (c & 0xC0) != 0x80).count() + 1
}

/// Shows an offending token in an error message, quoted and cut to a readable length so that a
/// hostile megabyte-long token cannot turn into a megabyte-long error message.
pub(super) fn shown(tok: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::with_capacity(tok.len().min(MAX * 4) + 4);
    out.push('\'');
    let mut chars = tok.chars();
    for c in chars.by_ref().take(MAX) {
        out.push(c);
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out.push('\'');
    out
}

/// The character at byte `i` of `line`, for messages like "invalid character '-'".
fn char_at(line: &str, i: usize) -> char {
    line.get(i..).and_then(|s| s.chars().next()).unwrap_or('?')
}

/// Parses one sample line starting at byte `start` (the first non-blank byte).
///
/// Labels are collected in `labels` (the caller's reusable scratch, so a sample costs one
/// exactly-sized allocation when they are moved out). `exemplar_labels` is a second scratch
/// used only to validate OpenMetrics exemplars, which we check but do not keep.
pub(super) fn sample_line<'a>(
    line: &'a str,
    start: usize,
    format: Format,
    labels: &mut LabelScratch<'a>,
    exemplar_labels: &mut LabelScratch<'a>,
) -> Result<SampleParts<'a>, LexError> {
    let b = line.as_bytes();
    let mut i = start;
    let mut name: Option<&'a str> = None;

    if b.get(i).is_some_and(|&c| is_metric_start(c)) {
        let end = scan_while(b, i + 1, is_metric_char);
        name = Some(slice(line, i, end));
        i = end;
        // Tokens may be separated by blanks, and a value never starts with '{', so
        // `name {a="b"} 1` is a label set too.
        let j = skip_blanks(b, i);
        if j > i && b.get(j) == Some(&b'{') {
            i = j;
        }
    }
    match b.get(i) {
        Some(b'{') => {
            let open = i;
            i = label_set(line, i, labels, Some(&mut name))?;
            if let Some(dup) = duplicate_label(&labels.names) {
                return Err(LexError::new(
                    open,
                    format!("duplicate label name {}", shown(dup)),
                ));
            }
        }
        Some(b' ' | b'\t') if name.is_some() => {}
        None if name.is_some() => {
            return Err(LexError::new(i, "expected a value after the metric name"));
        }
        Some(_) if name.is_some() => {
            return Err(LexError::new(
                i,
                format!(
                    "invalid character {:?} in metric name (allowed: a-z A-Z 0-9 _ :)",
                    char_at(line, i)
                ),
            ));
        }
        _ => {
            return Err(LexError::new(
                i,
                "expected a metric name, a '#' comment or a blank line",
            ));
        }
    }
    let name = match name {
        Some(n) => n,
        None => {
            return Err(LexError::new(
                start,
                "missing metric name (put a quoted name first inside the braces: {\"name\",...})",
            ));
        }
    };

    i = skip_blanks(b, i);
    let vend = token_end(b, i);
    if vend == i {
        return Err(LexError::new(i, "expected a sample value"));
    }
    let vtok = slice(line, i, vend);
    let value = parse_value(vtok).ok_or_else(|| {
        LexError::new(
            i,
            format!(
                "invalid sample value {}: expected a number, NaN, +Inf or -Inf",
                shown(vtok)
            ),
        )
    })?;
    let mut parts = SampleParts {
        name,
        value,
        timestamp_ms: None,
    };

    i = skip_blanks(b, vend);
    match b.get(i) {
        None => return Ok(parts),
        Some(b'#') => return exemplar(line, i, format, exemplar_labels).map(|()| parts),
        Some(_) => {}
    }
    let tend = token_end(b, i);
    let ttok = slice(line, i, tend);
    parts.timestamp_ms = Some(parse_timestamp(ttok, format).map_err(|m| LexError::new(i, m))?);

    i = skip_blanks(b, tend);
    match b.get(i) {
        None => Ok(parts),
        Some(b'#') => exemplar(line, i, format, exemplar_labels).map(|()| parts),
        Some(_) => Err(LexError::new(i, "unexpected text after the timestamp")),
    }
}

/// Checks an OpenMetrics exemplar (`# {trace_id="…"} 1.0 [ts]`) at byte `hash` and discards
/// it: rollguard judges samples, not traces, but a malformed exemplar still makes the line
/// malformed, and we say so rather than guess.
fn exemplar<'a>(
    line: &'a str,
    hash: usize,
    format: Format,
    scratch: &mut LabelScratch<'a>,
) -> Result<(), LexError> {
    if format != Format::OpenMetrics {
        return Err(LexError::new(
            hash,
            "unexpected '#' after the sample: exemplars are only valid in OpenMetrics",
        ));
    }
    let b = line.as_bytes();
    let mut i = hash + 1;
    if !matches!(b.get(i), Some(b' ' | b'\t')) {
        return Err(LexError::new(i, "expected ' ' after '#' of an exemplar"));
    }
    i = skip_blanks(b, i);
    if b.get(i) != Some(&b'{') {
        return Err(LexError::new(
            i,
            "expected '{' to start the exemplar's labels",
        ));
    }
    scratch.clear();
    let r = label_set(line, i, scratch, None);
    scratch.clear();
    i = skip_blanks(b, r?);
    let vend = token_end(b, i);
    let vtok = slice(line, i, vend);
    if parse_value(vtok).is_none() {
        return Err(LexError::new(
            i,
            format!("invalid exemplar value {}: expected a number", shown(vtok)),
        ));
    }
    i = skip_blanks(b, vend);
    if i >= b.len() {
        return Ok(());
    }
    let tend = token_end(b, i);
    if om_seconds_to_ms(slice(line, i, tend)).is_none() {
        return Err(LexError::new(
            i,
            format!(
                "invalid exemplar timestamp {}: expected seconds",
                shown(slice(line, i, tend))
            ),
        ));
    }
    i = skip_blanks(b, tend);
    if i < b.len() {
        return Err(LexError::new(i, "unexpected text after the exemplar"));
    }
    Ok(())
}

/// Parses `{…}` starting at the `{` at byte `open`; returns the offset just after the `}`.
///
/// `name_slot` is `Some` for samples, where the first item may be a quoted metric name
/// (Prometheus 3 UTF-8 syntax `{"my.metric",a="b"}`), and `None` for exemplars.
fn label_set<'a>(
    line: &'a str,
    open: usize,
    out: &mut LabelScratch<'a>,
    mut name_slot: Option<&mut Option<&'a str>>,
) -> Result<usize, LexError> {
    let b = line.as_bytes();
    let mut i = open + 1;
    let mut first = true;
    loop {
        i = skip_blanks(b, i);
        let lname = match b.get(i) {
            Some(b'}') => return Ok(i + 1),
            Some(&c) if is_label_start(c) => {
                let end = scan_while(b, i + 1, is_label_char);
                let n = slice(line, i, end);
                i = end;
                Some(n)
            }
            Some(b'"') => {
                let (q, after) = quoted_name(line, i)?;
                let j = skip_blanks(b, after);
                if b.get(j) == Some(&b'=') {
                    if q.is_empty() {
                        return Err(LexError::new(i, "empty label name"));
                    }
                    i = after;
                    Some(q)
                } else {
                    // A quoted string not followed by '=' is the metric name, allowed only as
                    // the first item of a sample's label set.
                    match name_slot.as_deref_mut() {
                        Some(slot) if first => {
                            if slot.is_some() {
                                return Err(LexError::new(
                                    i,
                                    "metric name given both before and inside the braces",
                                ));
                            }
                            if q.is_empty() {
                                return Err(LexError::new(i, "empty metric name"));
                            }
                            *slot = Some(q);
                            i = after;
                            None
                        }
                        _ => return Err(LexError::new(j, "expected '=' after label name")),
                    }
                }
            }
            None => {
                return Err(LexError::new(
                    i,
                    "expected a label name or '}' (the label set is not closed)",
                ));
            }
            Some(_) => {
                return Err(LexError::new(
                    i,
                    format!(
                        "expected a label name, found {:?} (allowed: a-z A-Z 0-9 _, or a quoted name)",
                        char_at(line, i)
                    ),
                ));
            }
        };
        first = false;

        if let Some(lname) = lname {
            i = skip_blanks(b, i);
            if b.get(i) != Some(&b'=') {
                return Err(LexError::new(i, "expected '=' after label name"));
            }
            i = skip_blanks(b, i + 1);
            if b.get(i) != Some(&b'"') {
                return Err(LexError::new(i, "expected '\"' to start the label value"));
            }
            let body = i + 1;
            let rest = b.get(body..).unwrap_or(&[]);
            match find_quote_or_backslash(rest) {
                Some(k) if rest.get(k) == Some(&b'"') => {
                    out.names.push(lname);
                    out.values.push((body, body + k));
                    i = body + k + 1;
                }
                Some(k) => {
                    let (value, after) = quoted_value_escaped(line, i, body + k)?;
                    out.names.push(lname);
                    out.values.push((ESCAPED, out.owned.len()));
                    out.owned.push(value);
                    i = after;
                }
                None => return Err(unterminated(i)),
            }
        }

        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            None => {
                return Err(LexError::new(
                    i,
                    "expected ',' or '}' after the label value (the label set is not closed)",
                ));
            }
            Some(_) => {
                return Err(LexError::new(
                    i,
                    "expected ',' or '}' after the label value",
                ));
            }
        }
    }
}

/// Returns a label name that occurs twice, if any.
///
/// Prometheus rejects such samples, and [`super::Sample::label`] would be ambiguous. Small sets
/// (the normal case) are compared pairwise; big ones are sorted so a hostile line with 100 000
/// labels costs `n log n`, not `n²`.
fn duplicate_label<'a>(names: &[&'a str]) -> Option<&'a str> {
    if names.len() <= 16 {
        names.iter().enumerate().find_map(|(k, &n)| {
            let later = names.get(k + 1..)?;
            later.contains(&n).then_some(n)
        })
    } else {
        let mut names = names.to_vec();
        names.sort_unstable();
        names.windows(2).find_map(|w| match w {
            [a, b] if a == b => Some(*a),
            _ => None,
        })
    }
}

fn unterminated(open: usize) -> LexError {
    LexError::new(
        open,
        "unterminated quoted string (missing closing '\"' on this line)",
    )
}

/// A quoted metric or label name (Prometheus 3 UTF-8 names). Returned borrowed, so escapes in
/// it cannot be represented; they are rare enough that we report them instead of allocating.
fn quoted_name(line: &str, open: usize) -> Result<(&str, usize), LexError> {
    let body = open + 1;
    let rest = line.as_bytes().get(body..).unwrap_or(&[]);
    match memchr2(b'"', b'\\', rest) {
        None => Err(unterminated(open)),
        Some(k) if rest.get(k) == Some(&b'"') => Ok((slice(line, body, body + k), body + k + 1)),
        Some(k) => Err(LexError::new(
            body + k,
            "escape sequences in quoted names are not supported",
        )),
    }
}

/// Position of the first `"` or `\` in `rest`.
///
/// Label values are mostly short (5-40 bytes), where `memchr2`'s dispatch and setup cost more
/// than the search; so the first 32 bytes are checked eight at a time with the classic SWAR
/// "has zero byte" test (safe code, no `unsafe`), and only longer values go to `memchr2`.
#[inline(always)]
fn find_quote_or_backslash(rest: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = LO * b'"' as u64;
    const BACKSLASH: u64 = LO * b'\\' as u64;
    const SWAR_BYTES: usize = 32;

    let mut off = 0;
    let mut words = rest.chunks_exact(8);
    for chunk in words.by_ref() {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(bytes);
        let (q, b) = (w ^ QUOTE, w ^ BACKSLASH);
        // High bit set in each byte of `q`/`b` that is zero, i.e. equal to the needle. Borrows
        // can only add false positives above a true match, so the lowest bit is exact.
        let hits = (q.wrapping_sub(LO) & !q & HI) | (b.wrapping_sub(LO) & !b & HI);
        if hits != 0 {
            return Some(off + (hits.trailing_zeros() / 8) as usize);
        }
        off += 8;
        if off >= SWAR_BYTES {
            let tail = rest.get(off..).unwrap_or(&[]);
            return memchr2(b'"', b'\\', tail).map(|k| off + k);
        }
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|k| off + k)
}

/// A quoted label value starting at the `"` at byte `open`; returns the value and the offset
/// after the closing quote.
///
/// Zero-copy unless the value contains a backslash. Escapes `\\`, `\"` and `\n` are decoded;
/// any other `\x` is kept as it is, which is what Prometheus itself does. (The hot path in
/// [`label_set`] inlines the same steps; this is its reference form, used by tests.)
#[cfg(test)]
fn quoted_value(line: &str, open: usize) -> Result<(Cow<'_, str>, usize), LexError> {
    let body = open + 1;
    let rest = line.as_bytes().get(body..).unwrap_or(&[]);
    match find_quote_or_backslash(rest) {
        None => Err(unterminated(open)),
        Some(k) if rest.get(k) == Some(&b'"') => {
            Ok((Cow::Borrowed(slice(line, body, body + k)), body + k + 1))
        }
        Some(k) => quoted_value_escaped(line, open, body + k).map(|(v, end)| (Cow::Owned(v), end)),
    }
}

/// Slow path of [`quoted_value`], from the first backslash at byte `bs`.
#[cold]
#[inline(never)]
fn quoted_value_escaped(line: &str, open: usize, bs: usize) -> Result<(String, usize), LexError> {
    let b = line.as_bytes();
    let mut out = String::with_capacity(bs - open + 16);
    out.push_str(slice(line, open + 1, bs));
    let mut i = bs;
    loop {
        // Invariant: `i` is at a '"' or a '\\'.
        match b.get(i) {
            Some(b'"') => return Ok((out, i + 1)),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'n') => {
                    out.push('\n');
                    i += 2;
                }
                Some(b'\\') => {
                    out.push('\\');
                    i += 2;
                }
                Some(b'"') => {
                    out.push('"');
                    i += 2;
                }
                Some(_) => {
                    // Unknown escape: keep the backslash; the next character is copied below.
                    out.push('\\');
                    i += 1;
                }
                None => return Err(unterminated(open)),
            },
            _ => return Err(unterminated(open)),
        }
        let rest = b.get(i..).unwrap_or(&[]);
        match memchr2(b'"', b'\\', rest) {
            None => return Err(unterminated(open)),
            Some(k) => {
                out.push_str(slice(line, i, i + k));
                i += k;
            }
        }
    }
}

/// Decodes the escapes of a HELP text: `\\` and `\n` in both formats, `\"` in OpenMetrics;
/// anything else after a backslash is kept as written (as Prometheus does).
pub(super) fn unescape_help(s: &str, format: Format) -> Cow<'_, str> {
    let b = s.as_bytes();
    let Some(first) = memchr(b'\\', b) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    let mut bs = first;
    loop {
        out.push_str(slice(s, from, bs));
        match b.get(bs + 1) {
            Some(b'n') => {
                out.push('\n');
                from = bs + 2;
            }
            Some(b'\\') => {
                out.push('\\');
                from = bs + 2;
            }
            Some(b'"') if format == Format::OpenMetrics => {
                out.push('"');
                from = bs + 2;
            }
            _ => {
                out.push('\\');
                from = bs + 1;
            }
        }
        match memchr(b'\\', b.get(from..).unwrap_or(&[])) {
            Some(k) => bs = from + k,
            None => {
                out.push_str(slice(s, from, s.len()));
                return Cow::Owned(out);
            }
        }
    }
}

/// A metric name in a HELP/TYPE/UNIT line (bare, or quoted for UTF-8 names) at byte `i`;
/// returns it and the offset after it, which must be the end of the line or a blank.
pub(super) fn meta_name(line: &str, i: usize) -> Result<(&str, usize), LexError> {
    let b = line.as_bytes();
    let (name, end) = match b.get(i) {
        Some(b'"') => {
            let (q, end) = quoted_name(line, i)?;
            if q.is_empty() {
                return Err(LexError::new(i, "empty metric name"));
            }
            (q, end)
        }
        Some(&c) if is_metric_start(c) => {
            let end = scan_while(b, i + 1, is_metric_char);
            (slice(line, i, end), end)
        }
        None => return Err(LexError::new(i, "expected a metric name")),
        Some(_) => {
            return Err(LexError::new(
                i,
                format!("invalid metric name starting with {:?}", char_at(line, i)),
            ));
        }
    };
    match b.get(end) {
        None | Some(b' ' | b'\t') => Ok((name, end)),
        Some(_) => Err(LexError::new(
            end,
            format!(
                "invalid character {:?} in metric name (allowed: a-z A-Z 0-9 _ :)",
                char_at(line, end)
            ),
        )),
    }
}

/// Parses a sample value as Go's `strconv.ParseFloat` would for what exporters write: decimal
/// numbers with optional exponent, `.5`, `NaN`, `+Inf`, `-Inf`, `Inf` (any case).
///
/// Short plain integers (most counters) take an exact fast path that skips the general float
/// parser.
#[inline]
pub(super) fn parse_value(tok: &str) -> Option<f64> {
    let b = tok.as_bytes();
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        // At most 15 digits < 2^53: the conversion to f64 is exact.
        let v = b
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        #[allow(clippy::cast_precision_loss)]
        return Some(v as f64);
    }
    tok.parse::<f64>().ok()
}

/// Parses a timestamp token into milliseconds: an integer number of milliseconds in the
/// Prometheus text format, a (possibly fractional) number of seconds in OpenMetrics.
fn parse_timestamp(tok: &str, format: Format) -> Result<i64, String> {
    match format {
        Format::Prometheus => tok.parse::<i64>().map_err(|_| {
            format!(
                "invalid timestamp {}: expected an integer number of milliseconds",
                shown(tok)
            )
        }),
        Format::OpenMetrics => om_seconds_to_ms(tok)
            .ok_or_else(|| format!("invalid timestamp {}: expected seconds", shown(tok))),
    }
}

/// OpenMetrics timestamp (seconds, may have a fraction or an exponent) to milliseconds,
/// rounded to the nearest millisecond.
///
/// Plain decimals are converted exactly with integer arithmetic: going through `f64` would turn
/// `1700000000.123` into `…122.99997` and lose a millisecond when truncated.
pub(super) fn om_seconds_to_ms(tok: &str) -> Option<i64> {
    if let Some(ms) = exact_decimal_ms(tok) {
        return Some(ms);
    }
    let secs: f64 = tok.parse().ok()?;
    if !secs.is_finite() {
        return None;
    }
    let ms = (secs * 1000.0).round();
    // i64::MIN as f64 is exactly -2^63; i64::MAX as f64 rounds up to 2^63, which is out of range.
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = (i64::MIN as f64, i64::MAX as f64);
    #[allow(clippy::cast_possible_truncation)]
    (ms >= lo && ms < hi).then_some(ms as i64)
}

/// `[+-]digits[.digits]` seconds to milliseconds without floating point; `None` when the token
/// has another shape (exponent, `Inf`…) or overflows, and the caller falls back to `f64`.
fn exact_decimal_ms(tok: &str) -> Option<i64> {
    let b = tok.as_bytes();
    let (neg, digits) = match b.first()? {
        b'-' => (true, b.get(1..)?),
        b'+' => (false, b.get(1..)?),
        _ => (false, b),
    };
    let (int, frac) = match memchr(b'.', digits) {
        Some(k) => (digits.get(..k)?, digits.get(k + 1..)?),
        None => (digits, &[][..]),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.iter().all(u8::is_ascii_digit)
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let mut ms: i64 = 0;
    for &d in int {
        ms = ms.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    ms = ms.checked_mul(1000)?;
    let mut f: i64 = 0;
    for k in 0..3 {
        f = f * 10 + frac.get(k).map_or(0, |&d| i64::from(d - b'0'));
    }
    if frac.get(3).is_some_and(|&d| d >= b'5') {
        f += 1; // round half away from zero
    }
    ms = ms.checked_add(f)?;
    Some(if neg { -ms } else { ms })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn om_timestamps_are_exact() {
        assert_eq!(om_seconds_to_ms("1700000000.123"), Some(1_700_000_000_123));
        assert_eq!(om_seconds_to_ms("1700000000"), Some(1_700_000_000_000));
        assert_eq!(om_seconds_to_ms("-1.5"), Some(-1_500));
        assert_eq!(om_seconds_to_ms("+2.0005"), Some(2_001));
        assert_eq!(om_seconds_to_ms(".5"), Some(500));
        assert_eq!(om_seconds_to_ms("5."), Some(5_000));
        assert_eq!(om_seconds_to_ms("1.7e9"), Some(1_700_000_000_000));
        assert_eq!(
            om_seconds_to_ms("1.7000000001234e9"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            om_seconds_to_ms("-9223372036854775.808"),
            Some(i64::MIN),
            "falls back to f64 and still fits"
        );
        assert_eq!(om_seconds_to_ms("9223372036854775.807"), Some(i64::MAX));
        assert_eq!(om_seconds_to_ms("9223372036854776"), None);
        for bad in [
            "", ".", "-", "+", "NaN", "Inf", "-Inf", "1e400", "1.2.3", "0x10", "1_000",
        ] {
            assert_eq!(om_seconds_to_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn values_parse_like_go() {
        assert_eq!(parse_value("0"), Some(0.0));
        assert_eq!(parse_value("123456789012345"), Some(123_456_789_012_345.0));
        assert_eq!(
            parse_value("1234567890123456789"),
            Some(1.234_567_890_123_456_8e18)
        );
        assert_eq!(parse_value("1.5e+06"), Some(1.5e6));
        assert_eq!(parse_value("-3E-2"), Some(-0.03));
        assert_eq!(parse_value(".5"), Some(0.5));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert!(parse_value("nan").is_some_and(f64::is_nan));
        for bad in ["", "abc", "1,5", "1 5", "--1", "0x1p3"] {
            assert_eq!(parse_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn help_unescaping_depends_on_format() {
        assert_eq!(
            unescape_help(r#"a\\b\nc\"d\t"#, Format::Prometheus),
            "a\\b\nc\\\"d\\t"
        );
        assert_eq!(
            unescape_help(r#"a\\b\nc\"d\t"#, Format::OpenMetrics),
            "a\\b\nc\"d\\t"
        );
        assert!(matches!(
            unescape_help("plain", Format::OpenMetrics),
            Cow::Borrowed("plain")
        ));
        assert_eq!(
            unescape_help("trailing\\", Format::Prometheus),
            "trailing\\"
        );
    }

    #[test]
    fn quoted_values_borrow_unless_escaped() {
        let (v, end) = quoted_value(r#""abc" x"#, 0).unwrap();
        assert!(matches!(v, Cow::Borrowed("abc")));
        assert_eq!(end, 5);
        let (v, end) = quoted_value(r#""a\"b\\c\nd\xé" x"#, 0).unwrap();
        assert_eq!(v, "a\"b\\c\nd\\xé");
        assert_eq!(end, 16);
        assert!(quoted_value(r#""abc"#, 0).is_err());
        assert!(quoted_value(r#""abc\"#, 0).is_err());
        assert!(quoted_value(r#""abc\""#, 0).is_err());
    }

    #[test]
    fn quote_search_matches_a_naive_scan() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\');
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..80 {
            for at in 0..=len {
                for needle in [b'"', b'\\'] {
                    let mut v: Vec<u8> = (0..len).map(|k| b'a' + (k % 26) as u8).collect();
                    if at < len {
                        v[at] = needle;
                    }
                    // Bytes next to the needle values, to catch borrow false positives.
                    if at + 1 < len {
                        v[at + 1] = b'#';
                    }
                    cases.push(v);
                }
            }
        }
        cases.push("é\"é".as_bytes().to_vec());
        cases.push(vec![
            0x22 + 1,
            0x22 - 1,
            0x5c + 1,
            0x5b,
            0xff,
            0x80,
            0x00,
            0x01,
            0x22,
        ]);
        for c in &cases {
            assert_eq!(find_quote_or_backslash(c), naive(c), "{c:?}");
        }
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(column("abc", 0), 1);
        assert_eq!(column("abc", 2), 3);
        assert_eq!(column("Zürich x", 7), 7);
        assert_eq!(column("ab", 99), 3);
    }

    #[test]
    fn shown_truncates() {
        assert_eq!(shown("abc"), "'abc'");
        let long = "x".repeat(100);
        assert_eq!(shown(&long).chars().count(), 40 + 3);
    }
}

//! Escaping text one character at a time, for every escaper that swaps single characters for
//! fixed replacements (HTML, PromQL label values).

/// `s` with each character that `sub` names a replacement for replaced by it.
pub fn escape_chars(s: &str, sub: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match sub(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}

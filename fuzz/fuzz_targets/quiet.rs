//! For the targets whose input reaches promql-parser (`promql_check`, `rule_load`).

/// The input as text (`None` if it is not UTF-8), with panics let to unwind.
///
/// libfuzzer-sys aborts in its panic hook, before any unwinding; `written::check` catches the
/// third-party parser's panics on purpose, so the hook must let them unwind. A panic anywhere
/// else still escapes the target and libfuzzer-sys aborts on it (its outer `catch_unwind`),
/// leaving the input in fuzz/artifacts/ (rerun it to see the message).
pub fn text(data: &[u8]) -> Option<&str> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    std::str::from_utf8(data).ok()
}

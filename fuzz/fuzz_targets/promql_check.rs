//! PromQL written in a rule (`query:`) on arbitrary text: parameter filling (with a hostile
//! value), the arm filling and the syntax check that `rollguard check`, the daemon's start,
//! every reload and every registration run. Must never panic, whatever the third-party
//! parser meets (its own panics are caught and become rejections); an accepted query must
//! still contain the arm's matchers once filled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollguard::selector::parse_matchers;
use rollguard::written;

mod quiet;

fuzz_target!(|data: &[u8]| {
    let Some(text) = quiet::text(data) else {
        return;
    };
    for value in ["5m", "x\"}) or vector(1) #"] {
        let Ok(filled) = written::fill_params(text, |_| Some(value.to_string())) else {
            continue;
        };
        if written::check(&filled).is_ok() {
            let arm = parse_matchers(r#"track="canary""#).expect("matchers");
            let sent = written::fill_arm(&filled, &arm, "canary");
            assert!(
                !written::placeholders(text)
                    .iter()
                    .any(|p| p.name == written::ARM)
                    || sent.contains(r#"track="canary""#),
                "the arm's matchers were lost: {sent}"
            );
        }
    }
});

//! The rule loader on arbitrary text: `parse_rule_file` (exactly what `rollguard check`, the
//! daemon's start and every hot reload run), then instantiating an accepted rule with its
//! defaults and with a hostile parameter. Must never panic; every rejection must carry at
//! least one located diagnostic.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rollguard::rules::parse_rule_file;

mod quiet;

fuzz_target!(|data: &[u8]| {
    // Written queries go through promql-parser, whose panics the loader catches.
    let Some(text) = quiet::text(data) else {
        return;
    };
    let actions: BTreeSet<String> = ["rollback", "promote", "chat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for known in [None, Some(&actions)] {
        match parse_rule_file(Path::new("fuzz.yaml"), text, known) {
            Ok(t) => {
                let _ = t.instantiate(&BTreeMap::new());
                let hostile: BTreeMap<String, String> = t
                    .params
                    .keys()
                    .map(|k| (k.clone(), "x\"}{{id}}$(true)".to_string()))
                    .collect();
                assert!(
                    hostile.is_empty() || t.instantiate(&hostile).is_err(),
                    "an unsafe parameter value was accepted"
                );
            }
            Err(d) => {
                assert!(!d.is_empty(), "rejected without a diagnostic");
                for x in &d {
                    let _ = x.to_string();
                }
            }
        }
    }
});

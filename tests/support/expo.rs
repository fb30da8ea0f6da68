//! The promises every result of the exposition parser keeps, whatever the input: checked by
//! the property tests (`tests/expo_proptest.rs`) and by the fuzz target `expo_parse`, which
//! includes this file (`#[path]`), so it uses nothing but `rollguard`.

use rollguard::expo::{Exposition, MAX_ERRORS, MetricType};

/// Families tile the samples in order (and grouping a histogram never panics), every sample
/// stands on a line of its own, in order, with a name, the error list is capped, and every
/// error is placed on a line of the text or the one after it (a missing `# EOF`).
pub fn check_invariants(text: &str, e: &Exposition<'_>) {
    let lines = text.split('\n').count();
    let mut next = 0;
    for f in &e.families {
        assert_eq!(f.samples.start, next, "families must tile the samples");
        assert!(f.samples.end >= f.samples.start);
        next = f.samples.end;
        if matches!(f.kind, MetricType::Histogram | MetricType::GaugeHistogram) {
            let _ = e.histogram_series(f);
        }
    }
    assert_eq!(next, e.samples.len(), "families must cover every sample");
    let mut last_line = 0;
    for s in &e.samples {
        assert!(s.line > last_line, "one sample per line, in order");
        assert!(s.line <= lines, "sample line {} of {lines}", s.line);
        assert!(!s.name.is_empty());
        last_line = s.line;
        for l in &s.labels {
            assert!(s.label(l.name).is_some());
        }
    }
    assert!(e.errors.len() <= MAX_ERRORS + 1, "error list not capped");
    for err in &e.errors {
        assert!(err.line >= 1 && err.line <= lines + 1, "{err}");
        let _ = err.to_string();
    }
}

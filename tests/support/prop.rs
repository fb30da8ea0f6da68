//! Property-test inputs shared by the judge's and the statistics' robustness tests.

use proptest::prelude::*;

/// The f64 values numeric code most often gets wrong (NaN, ±inf, zero, negative, huge), one
/// list for every property test, so a value added here is tried everywhere. Each test mixes
/// in its own ordinary values.
pub fn awkward_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-1.0),
        Just(1e300),
    ]
}

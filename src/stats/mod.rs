//! Pure numeric code for the judge: anytime-valid sequential tests, confidence sequences and the
//! classical statistics used to explain verdicts.
//!
//! Every formula here is documented in `shared/research/statistics.md` (cited as "§n" below) and
//! tested against the reference vectors of its §8. The module does no I/O, reads no clock and keeps
//! no global state; no numeric input (NaN, ±inf, zero or negative counts) makes it panic or loop
//! forever: a function either returns a documented value (often NaN, 0 or "no information") or an
//! `Option`.
//!
//! State that lives across updates (the grid accumulator, sequential p-values, CUSUM, the PRNG)
//! derives `serde` so the daemon can persist a judge and resume it after a restart.
//!
//! | submodule | what |
//! |---|---|
//! | [`grid`] | log-likelihood accumulator over a log-spaced ratio grid → one-sided e-process and confidence sequence (§7.1) |
//! | [`fnch`] | Fisher noncentral hypergeometric log-likelihood (§7.1 item 2) |
//! | [`beta_mix`] | one-sided truncated-Beta count e-value (§7.1, vectors K, S) |
//! | [`dirichlet`] | Lindon–Malek Dirichlet-multinomial Bayes factor and confidence sequence (§1.3, vectors E, Q, P) |
//! | [`mixture`] | Howard normal mixture and Johari mSPRT (§4, vectors D) |
//! | [`mann_whitney`] | Mann–Whitney U, Hodges–Lehmann, Kayenta classifier (§2.1, §6, vectors A, B) |
//! | [`trend`] | Mann–Kendall (+ Hamed–Rao) and Theil–Sen (§5, vector H) |
//! | [`cusum`] | one-sided CUSUM and Brook–Evans ARL (§5, vector I) |
//! | [`quantile`] | R-7 quantile, PromQL `histogram_quantile`, Howard–Ramdas CDF band (§1.2, vector G) |
//! | [`rng`] | small deterministic PRNG and samplers for simulations |
//! | [`special`] | shared numeric helpers (log-sum-exp, regularised incomplete beta tails, normal cdf, Brent root finder) |

#![deny(missing_docs)]
// Guards are written `!(x > 0.0)` on purpose: that form also rejects NaN, which is the point.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod beta_mix;
pub mod cusum;
pub mod dirichlet;
pub mod fnch;
pub mod grid;
pub mod mann_whitney;
pub mod mixture;
pub mod quantile;
pub mod rng;
pub mod special;
pub mod trend;

/// Whether `a` is within `rel` of reference value `b`, relative to `b` (the unit tests'
/// comparison with values computed elsewhere).
#[cfg(test)]
pub(crate) fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

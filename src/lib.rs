//! rollguard: watches canary and blue-green deployments, compares the canary against its
//! baseline with anytime-valid sequential statistics, and rolls back automatically.
//!
//! See `docs/ARCHITECTURE.md` for the map of the modules.
pub mod stats;

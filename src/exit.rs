//! The process exit codes, in one place: the command line and the deployment client both
//! end with them, and pipelines branch on them. docs/deployments.md has the same table for
//! people; a test there keeps the two in step.

/// `deploy start --wait` / `deploy wait`: the canary was promoted. Every other command: success.
pub const OK: u8 = 0;
/// `--wait`: the deployment was rolled back (or aborted by a person).
pub const ROLLED_BACK: u8 = 1;
/// `--wait`: the analysis ended inconclusive; a person decides. Never a usage error.
pub const INCONCLUSIVE: u8 = 2;
/// rollguard could not be reached within `--timeout`, or answered with an API error.
pub const UNREACHABLE: u8 = 3;
/// `deploy start`: the pre-flight gate refused the canary (it needs a migration that has not
/// run, or the schema was contracted past what it tolerates). Nothing was registered.
pub const EX_SCHEMA_PREFLIGHT: u8 = 10;
/// `deploy start --wait` / `deploy wait`: the judge decided to roll back, but rolling back is
/// unsafe on the live schema; no rollback hook ran, the deployment is held: roll forward.
pub const EX_ROLLBACK_UNSAFE: u8 = 11;
/// `migrate check`: a version still in use needs a schema below the contract target.
pub const EX_CONTRACT_BLOCKED: u8 = 12;
/// sysexits EX_USAGE: the command line is wrong.
pub const EX_USAGE: u8 = 64;
/// `run` with a PostgreSQL store: the leader lease could not be renewed in time (or was
/// taken over), so the daemon stepped down and stopped acting; the service manager restarts
/// it as a standby (sysexits EX_TEMPFAIL).
pub const EX_LEASE_LOST: u8 = 75;
/// sysexits EX_CONFIG: a rule file or the daemon config is invalid or unusable.
pub const EX_CONFIG: u8 = 78;

/// Every code, for the test that keeps docs/deployments.md's table in step.
pub const ALL: &[u8] = &[
    OK,
    ROLLED_BACK,
    INCONCLUSIVE,
    UNREACHABLE,
    EX_SCHEMA_PREFLIGHT,
    EX_ROLLBACK_UNSAFE,
    EX_CONTRACT_BLOCKED,
    EX_USAGE,
    EX_LEASE_LOST,
    EX_CONFIG,
];

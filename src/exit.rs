//! The process exit codes, in one place: the command line and the deployment client both
//! end with them, and pipelines branch on them.

/// sysexits EX_USAGE: the command line is wrong.
pub const EX_USAGE: u8 = 64;
/// sysexits EX_CONFIG: a rule file or the daemon config is invalid.
pub const EX_CONFIG: u8 = 78;

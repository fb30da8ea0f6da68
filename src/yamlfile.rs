//! Hand-edited YAML files (rules, the daemon config, drop-ins, `file_sd`): listing a
//! directory's files, reading with a size cap and a located UTF-8 check, the parser's
//! resource limits, and the content hash used as a version. Every loader uses these, so they
//! live here rather than in any one loader.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;

/// Files larger than this are refused before parsing (a 1 GB file must not take the
/// daemon's memory with it).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Lists rule files: a file as given, or a directory's `*.yaml`/`*.yml` (sorted, hidden and
/// editor temp files skipped).
pub fn rule_files(p: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let meta =
        std::fs::metadata(p).map_err(|e| Diagnostic::file(p, format!("cannot read: {e}")))?;
    if meta.is_file() {
        return Ok(vec![p.to_path_buf()]);
    }
    let rd = std::fs::read_dir(p)
        .map_err(|e| Diagnostic::file(p, format!("cannot list directory: {e}")))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_rule_file_name(p))
        .collect();
    v.sort();
    Ok(v)
}

/// Whether a path looks like a rule file rather than an editor's swap or temp file.
pub fn is_rule_file_name(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Reads a hand-edited file with a size cap and a UTF-8 check, reporting where the first
/// invalid byte is.
pub fn read_limited(path: &Path) -> Result<String, Diagnostic> {
    let meta =
        std::fs::metadata(path).map_err(|e| Diagnostic::file(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::file(
            path,
            format!(
                "file is {} bytes, over the {MAX_FILE_BYTES}-byte limit for rule and config files",
                meta.len()
            ),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Diagnostic::file(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let col = (at
            - bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)) as u64
            + 1;
        Diagnostic::new(path, line, col, "file is not valid UTF-8")
    })
}

/// YAML resource limits for hand-edited files: deep nesting and alias bombs are errors.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_aliases: 1000,
            max_events: 200_000,
            max_nodes: 200_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
        },
    }
}

/// A short, stable content hash used as a version label.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

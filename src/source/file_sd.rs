//! Prometheus file-based service discovery (`file_sd_configs`): the same JSON or YAML target
//! files Prometheus reads, so an SRE can point rollguard at them.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Reads a `file_sd` file into scrape URLs (`__scheme__` and `__metrics_path__` labels are
/// honoured; defaults `http` and `/metrics`).
pub fn read_targets(path: &Path) -> Result<Vec<String>, String> {
    let text = crate::rules::read_limited(path).map_err(|d| d.to_string())?;
    let groups: Vec<Group> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_saphyr::from_str(&text)
            .map_err(|e| crate::diag::Diagnostic::from_yaml(path, &e).to_string())?
    };
    let mut urls = Vec::new();
    for g in groups {
        let scheme = g.labels.get("__scheme__").map_or("http", String::as_str);
        let mp = g
            .labels
            .get("__metrics_path__")
            .map_or("/metrics", String::as_str);
        for t in g.targets {
            urls.push(format!("{scheme}://{t}{mp}"));
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("t.json");
        std::fs::write(
            &j,
            r#"[{"targets":["a:9100","b:9100"],"labels":{"__metrics_path__":"/m"}}]"#,
        )
        .unwrap();
        assert_eq!(
            read_targets(&j).unwrap(),
            vec!["http://a:9100/m", "http://b:9100/m"]
        );
        let y = dir.path().join("t.yaml");
        std::fs::write(&y, "- targets: ['c:1']\n  labels: {__scheme__: https}\n").unwrap();
        assert_eq!(read_targets(&y).unwrap(), vec!["https://c:1/metrics"]);
    }
}

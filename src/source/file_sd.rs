//! Prometheus file-based service discovery (`file_sd_configs`): the same JSON or YAML target
//! files Prometheus reads, so an SRE can point rollguard at them.
//!
//! The file is re-read every interval, so instances that appear or leave (autoscaling, a
//! replaced host) are followed: a target no longer listed stops contributing at once. A file
//! that cannot be read or parsed mid-analysis keeps the last good list (as Prometheus does),
//! because a half-written file during a deploy script's rewrite must not empty an arm.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Reads a `file_sd` file into scrape URLs. The labels Prometheus itself uses to build the
/// URL are honoured: `__scheme__` (default `http`), `__metrics_path__` (default `/metrics`)
/// and `__param_<name>` (URL query parameters). Other labels are not needed: rollguard tells
/// instances apart by URL.
pub fn read_targets(path: &Path) -> Result<Vec<String>, String> {
    let text = crate::yamlfile::read_limited(path).map_err(|d| d.to_string())?;
    let groups: Vec<Group> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_saphyr::from_str(&text)
            .map_err(|e| crate::diag::Diagnostic::from_yaml(path, &e).to_string())?
    };
    let mut urls = Vec::new();
    for g in groups {
        let scheme = g.labels.get("__scheme__").map_or("http", String::as_str);
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "{}: `__scheme__` must be http or https, got `{scheme}`",
                path.display()
            ));
        }
        let mp = g
            .labels
            .get("__metrics_path__")
            .map_or("/metrics", String::as_str);
        let params: Vec<(&str, &str)> = g
            .labels
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("__param_").map(|p| (p, v.as_str())))
            .collect();
        for t in g.targets {
            if t.is_empty() || t.contains('/') || t.contains('@') {
                return Err(format!(
                    "{}: target `{t}` must be host:port (the scheme and path come from labels)",
                    path.display()
                ));
            }
            let mut u = url::Url::parse(&format!("{scheme}://{t}{mp}")).map_err(|e| {
                format!("{}: target `{t}` does not make a URL: {e}", path.display())
            })?;
            if !params.is_empty() {
                u.query_pairs_mut().extend_pairs(params.iter().copied());
            }
            urls.push(u.to_string());
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_targets` of a file `name` (its ending picks JSON or YAML) holding `text`.
    fn targets_in(name: &str, text: &str) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read_targets(&path)
    }

    #[test]
    fn json_and_yaml() {
        let json = r#"[{"targets":["a:9100","b:9100"],"labels":{"__metrics_path__":"/m"}}]"#;
        assert_eq!(
            targets_in("t.json", json).unwrap(),
            vec!["http://a:9100/m", "http://b:9100/m"]
        );
        let yaml = "- targets: ['c:1']\n  labels: {__scheme__: https, __param_module: http_2xx, team: x}\n";
        assert_eq!(
            targets_in("t.yaml", yaml).unwrap(),
            vec!["https://c:1/metrics?module=http_2xx"]
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        let bad = [
            (
                r#"[{"targets":["http://a:9100/metrics"]}]"#,
                "must be host:port",
            ),
            (
                r#"[{"targets":["a:1"],"labels":{"__scheme__":"file"}}]"#,
                "__scheme__",
            ),
            (r#"[{"targets":"#, ""),
        ];
        for (text, says) in bad {
            let e = targets_in("t.json", text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}

//! Reading a service's live schema version: an exec probe (argv, no shell), an HTTP/JSON
//! probe, or a PromQL expression on the configured Prometheus. Every probe has a timeout,
//! and every failure (non-zero exit, timeout, HTTP error, no or several samples, output that
//! is not a version) becomes [`Live::Unknown`] with the reason: a `source_error` the gates
//! hold on, never a version.
//!
//! An exec probe runs in its own process group, so a `psql` stuck on a lock is killed with
//! whatever it started when the timeout fires.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::config::{ProbeKind, SchemaConfig};
use super::{Live, SchemaVersion};
use crate::source::promql::PromClient;

/// Largest probe output read (a version, or `pgroll status` JSON, is far smaller).
const MAX_OUTPUT: usize = 64 * 1024;

/// Runs probes; holds the HTTP client and the Prometheus client they share.
pub struct Prober {
    http: reqwest::Client,
    prom: Option<Arc<PromClient>>,
}

impl Prober {
    pub fn new(prom: Option<Arc<PromClient>>) -> Result<Prober, String> {
        let http = crate::net::client(&Default::default(), Duration::from_secs(3600))?;
        Ok(Prober { http, prom })
    }

    /// Reads the live schema now. Never fails: a failure is [`Live::Unknown`].
    pub async fn live(&self, cfg: &SchemaConfig) -> Live {
        // An exec probe enforces its own timeout, so that it can kill the process group
        // first; the others are bounded here.
        let limit = match cfg.probe {
            ProbeKind::Exec { .. } => cfg.timeout + Duration::from_secs(5),
            _ => cfg.timeout,
        };
        let got = tokio::time::timeout(limit, self.raw(cfg)).await;
        let text = match got {
            Err(_) => {
                return Live::Unknown(format!(
                    "probe timed out after {}",
                    crate::units::format_duration(cfg.timeout)
                ));
            }
            Ok(Err(e)) => return Live::Unknown(e),
            Ok(Ok(t)) => t,
        };
        match SchemaVersion::parse(&text, cfg.order.as_deref()) {
            Ok(v) => Live::Known(v),
            Err(e) => Live::Unknown(format!("the probe answered no usable version: {e}")),
        }
    }

    /// The probe's answer as text (before parsing).
    async fn raw(&self, cfg: &SchemaConfig) -> Result<String, String> {
        match &cfg.probe {
            ProbeKind::Exec { argv, pointer } => {
                let out = exec(argv, cfg.timeout).await?;
                match pointer {
                    Some(p) => pointed(&out, p),
                    None => Ok(out),
                }
            }
            ProbeKind::Http {
                url,
                pointer,
                headers,
            } => {
                let mut req = self.http.get(url).timeout(cfg.timeout);
                for (k, v) in headers {
                    req = req.header(k, v.resolve()?);
                }
                let resp = req.send().await.map_err(|e| {
                    format!(
                        "GET {}: {}",
                        crate::net::redact_url(url),
                        crate::net::redact_error(&e)
                    )
                })?;
                let status = resp.status();
                let body = crate::net::read_body_capped(resp, MAX_OUTPUT)
                    .await
                    .map_err(|e| format!("GET {}: {e}", crate::net::redact_url(url)))?;
                let text = String::from_utf8_lossy(&body).to_string();
                if !status.is_success() {
                    return Err(format!(
                        "GET {} answered {status}: {}",
                        crate::net::redact_url(url),
                        crate::diag::one_line(&text.chars().take(200).collect::<String>())
                    ));
                }
                match pointer {
                    Some(p) => pointed(&text, p),
                    None => Ok(text),
                }
            }
            ProbeKind::Prometheus { query } => {
                let prom = self
                    .prom
                    .as_ref()
                    .ok_or("no Prometheus source is configured")?;
                let samples = prom.instant(query).await?;
                match samples.as_slice() {
                    [s] if s.value.is_finite()
                        && s.value >= 0.0
                        && s.value.fract() == 0.0
                        && s.value < 9.0e15 =>
                    {
                        Ok(format!("{}", s.value as u64))
                    }
                    [s] => Err(format!("`{query}` gave {}, not a whole number", s.value)),
                    [] => Err(format!("`{query}` returned no sample")),
                    many => Err(format!(
                        "`{query}` returned {} samples; aggregate it to one (e.g. max(...))",
                        many.len()
                    )),
                }
            }
        }
    }
}

/// The value at `pointer` in a JSON document, as text (numbers and strings only).
fn pointed(text: &str, pointer: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("the probe's output is not JSON ({e})"))?;
    // `pgroll status` answers a list with one object per schema; its first entry is used
    // when the pointer does not start with an index.
    let v = match (&v, v.pointer(pointer)) {
        (_, Some(x)) => x.clone(),
        (serde_json::Value::Array(a), None) if a.len() == 1 => a[0]
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| format!("no `{pointer}` in the probe's JSON"))?,
        _ => return Err(format!("no `{pointer}` in the probe's JSON")),
    };
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("`{pointer}` is {other}, not a version")),
    }
}

/// Runs `argv` in its own process group; its stdout (trimmed) if it exits 0.
async fn exec(argv: &[String], timeout: Duration) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty argv")?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    let pgid = child.id();
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut o = (&mut stdout).take(MAX_OUTPUT as u64);
        let mut e = (&mut stderr).take(MAX_OUTPUT as u64);
        let (a, b) = tokio::join!(o.read_to_end(&mut out), e.read_to_end(&mut err));
        a.map_err(|e| e.to_string())?;
        b.map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, out, err))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok((status, out, err))) => {
            if status.success() {
                Ok(String::from_utf8_lossy(&out).trim().to_string())
            } else {
                let e = String::from_utf8_lossy(&err);
                Err(format!(
                    "`{prog}` exited with {status}: {}",
                    crate::diag::one_line(e.trim())
                        .chars()
                        .take(300)
                        .collect::<String>()
                ))
            }
        }
        Ok(Err(e)) => Err(format!("`{prog}`: {e}")),
        Err(_) => {
            if let Some(pg) = pgid {
                crate::action::hook::terminate_group(pg, Duration::from_millis(500), None).await;
            }
            Err(format!(
                "probe timed out after {}",
                crate::units::format_duration(timeout)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_reads_numbers_strings_and_pgroll_lists() {
        assert_eq!(pointed(r#"{"version": 42}"#, "/version").unwrap(), "42");
        assert_eq!(
            pointed(
                r#"[{"schema":"public","version":"02_add","status":"Complete"}]"#,
                "/version"
            )
            .unwrap(),
            "02_add"
        );
        assert!(pointed(r#"{"version": null}"#, "/version").is_err());
        assert!(pointed("42", "/version").is_err());
    }

    fn cfg(probe: ProbeKind, timeout: Duration) -> SchemaConfig {
        SchemaConfig {
            service: "shop".into(),
            probe,
            order: None,
            timeout,
            every: Duration::from_secs(30),
            preflight: crate::schema::Preflight::Refuse,
            roll_forward: Vec::new(),
        }
    }

    fn exec(argv: &[&str]) -> ProbeKind {
        ProbeKind::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            pointer: None,
        }
    }

    #[tokio::test]
    async fn exec_probes_answer_fail_and_time_out_as_source_errors() {
        let p = Prober::new(None).unwrap();
        let ok = p
            .live(&cfg(exec(&["/bin/echo", " 42 "]), Duration::from_secs(5)))
            .await;
        assert_eq!(ok, Live::Known(SchemaVersion::parse("42", None).unwrap()));
        let dirty = p
            .live(&cfg(exec(&["/bin/echo", "dirty"]), Duration::from_secs(5)))
            .await;
        assert!(
            matches!(&dirty, Live::Unknown(e) if e.contains("no usable version")),
            "{dirty:?}"
        );
        let failed = p
            .live(&cfg(
                exec(&["/bin/sh", "-c", "echo boom >&2; exit 3"]),
                Duration::from_secs(5),
            ))
            .await;
        assert!(
            matches!(&failed, Live::Unknown(e) if e.contains("boom")),
            "{failed:?}"
        );
        let started = std::time::Instant::now();
        let slow = p
            .live(&cfg(
                exec(&["/bin/sleep", "30"]),
                Duration::from_millis(300),
            ))
            .await;
        assert!(
            matches!(&slow, Live::Unknown(e) if e.contains("timed out")),
            "{slow:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed at the timeout"
        );
    }

    #[tokio::test]
    async fn http_probes_read_the_pointer() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for body in [r#"{"schema":{"version":"1.10"}}"#, "oops"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let status = if body == "oops" {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let p = Prober::new(None).unwrap();
        let probe = ProbeKind::Http {
            url: format!("http://{addr}/schema"),
            pointer: Some("/schema/version".into()),
            headers: Default::default(),
        };
        let c = cfg(probe, Duration::from_secs(5));
        assert_eq!(
            p.live(&c).await,
            Live::Known(SchemaVersion::parse("1.10", None).unwrap())
        );
        let err = p.live(&c).await;
        assert!(
            matches!(&err, Live::Unknown(e) if e.contains("500")),
            "{err:?}"
        );
    }
}

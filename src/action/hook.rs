//! Running one attempt of a hook: exec (argv, no shell built from data) or HTTP.
//!
//! An exec hook runs in its own process group under a tiny fixed `/bin/sh` wrapper that writes
//! the exit status to a file. Its stdin, stdout and stderr are files in the attempt's directory
//! under the state directory, never pipes to the daemon. So if the daemon is killed while a
//! rollback hook runs, the hook carries on (a pipe would have killed it with SIGPIPE), and the
//! restarted daemon finds its status (or waits for it) instead of running the rollback a
//! second time. On timeout the whole group gets SIGTERM, then SIGKILL after the hook's grace.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::Facts;
use crate::config::{HookConfig, HookKind, MAX_HOOK_BACKOFF};
use crate::template;

/// Output kept per stream in the audit history (head and tail of longer output).
pub const OUTPUT_CAP: usize = 16 * 1024;

/// A fixed script: no data is ever interpolated into it. `$1` is the status file, the rest is
/// the hook's argv. The status is written to a temporary name and renamed, so a reader never
/// sees half a number.
const WRAPPER: &str = r#"s="$1"; shift; "$@"; rc=$?; printf '%s' "$rc" > "$s.tmp" && mv -f "$s.tmp" "$s"; exit "$rc""#;

/// The wrapper's `$0`, so `ps` shows what the process is.
const WRAPPER_NAME: &str = "rollguard-hook";

/// Environment variables passed through to exec hooks; a hook's `env` list adds more. The
/// rest of the daemon's environment (tokens, credentials) never reaches a hook.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"];

/// How one attempt of a hook ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub success: bool,
    /// Exit code for exec hooks, HTTP status for HTTP hooks.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Human summary (`exit 0`, `killed after the 1m timeout`, `HTTP 503`).
    pub summary: String,
    /// Captured output (capped), stdout then stderr for exec hooks, response body for HTTP.
    pub output: String,
    /// For HTTP: the server asked us to wait this long before retrying.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// Whether another attempt can help (false for an HTTP 400: the request itself is wrong).
    #[serde(skip, default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

impl HookOutcome {
    fn failed(summary: impl Into<String>) -> Self {
        HookOutcome {
            success: false,
            code: None,
            timed_out: false,
            summary: summary.into(),
            output: String::new(),
            retry_after: None,
            retryable: true,
        }
    }

    /// A failure no retry can fix (bad configuration).
    fn broken(summary: impl Into<String>) -> Self {
        HookOutcome {
            retryable: false,
            ..Self::failed(summary)
        }
    }
}

/// Where an attempt keeps its files.
pub fn attempt_dir(state_dir: &Path, action_id: &str, attempt: u32) -> PathBuf {
    state_dir
        .join("actions")
        .join(safe_name(action_id))
        .join(format!("attempt-{attempt}"))
}

/// Action ids contain deployment ids chosen by pipelines: keep them one path component.
fn safe_name(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Removes an attempt's files once its result is in the store (hook output can be large;
/// the store keeps the capped copy).
pub fn discard(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a finished hook attempt's files");
    }
}

/// Renders a hook's argv for these facts (each element stays one argument).
pub fn render_argv(argv: &[String], facts: &Facts) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|a| {
            template::render(a, |n| facts.lookup(n))
                .map_err(|u| format!("unknown placeholder `{{{{{}}}}}` in hook argv", u.name))
        })
        .collect()
}

/// Starts an exec hook attempt and waits for it (or its timeout). `on_spawn` receives the
/// process group id as soon as the process exists, so the caller can record it durably.
pub async fn run_exec(
    hook: &HookConfig,
    facts: &Facts,
    dir: &Path,
    on_spawn: impl FnOnce(u32),
) -> HookOutcome {
    let HookKind::Exec { argv, env, workdir } = &hook.kind else {
        return HookOutcome::broken("not an exec hook");
    };
    let argv = match render_argv(argv, facts) {
        Ok(a) => a,
        Err(e) => return HookOutcome::broken(e),
    };
    let (stdin, stdout, stderr) = match prepare_files(dir, facts) {
        Ok(f) => f,
        Err(e) => {
            return HookOutcome::failed(format!(
                "cannot prepare hook files in {}: {e}",
                dir.display()
            ));
        }
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg(WRAPPER_NAME)
        .arg(dir.join("status"))
        .args(&argv);
    cmd.env_clear();
    for k in BASE_ENV
        .iter()
        .copied()
        .chain(env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.envs(facts.env());
    if let Some(w) = workdir {
        cmd.current_dir(w);
    }
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // Own process group: a timeout kills everything the hook started, and a hook that
    // signals its own group (`kill 0`) cannot reach the daemon. Not killed on drop: the
    // hook must outlive a daemon crash.
    cmd.process_group(0).kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookOutcome::failed(format!(
                "cannot start /bin/sh for hook `{}`: {e}",
                hook.name
            ));
        }
    };
    let pid = child.id().unwrap_or(0);
    on_spawn(pid);
    match tokio::time::timeout(hook.timeout, child.wait()).await {
        Ok(Ok(status)) => finish(dir, Ended::Exited(status), hook.timeout),
        Ok(Err(e)) => finish(dir, Ended::Lost(e.to_string()), hook.timeout),
        Err(_) => {
            let killed = terminate_group(pid, hook.kill_grace, Some(&mut child)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            finish(dir, Ended::TimedOut { killed }, hook.timeout)
        }
    }
}

/// Writes the facts for stdin and opens the output files.
fn prepare_files(
    dir: &Path,
    facts: &Facts,
) -> std::io::Result<(std::fs::File, std::fs::File, std::fs::File)> {
    std::fs::create_dir_all(dir)?;
    let payload = dir.join("stdin.json");
    let json = serde_json::to_vec_pretty(facts).map_err(std::io::Error::other)?;
    std::fs::write(&payload, json)?;
    // A stale status from an earlier daemon's attempt with the same number must not count.
    match std::fs::remove_file(dir.join("status")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok((
        std::fs::File::open(&payload)?,
        std::fs::File::create(dir.join("stdout"))?,
        std::fs::File::create(dir.join("stderr"))?,
    ))
}

/// Sends SIGTERM to the group, waits up to `grace` for every member to go, then SIGKILL.
/// Returns whether SIGKILL was needed. `child` (the wrapper, when it is ours) is reaped
/// while waiting, since a zombie still counts as a member of its group.
pub async fn terminate_group(pgid: u32, grace: Duration, mut child: Option<&mut Child>) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        return false;
    }
    let pg = Pid::from_raw(raw);
    let _ = killpg(pg, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if let Some(c) = child.as_mut() {
            let _ = c.try_wait();
        }
        if killpg(pg, None).is_err() {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = killpg(pg, Signal::SIGKILL);
    true
}

/// How the wrapper process ended, as far as the daemon saw it.
enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut {
        killed: bool,
    },
    /// Waiting failed, or the daemon was not there to see it (after a restart).
    Lost(String),
}

/// Builds the outcome from the files an attempt left behind.
fn finish(dir: &Path, ended: Ended, timeout: Duration) -> HookOutcome {
    let recorded = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let output = capture(dir);
    let (code, summary, timed_out) = match (&ended, recorded) {
        (Ended::TimedOut { killed }, _) => {
            let how = if *killed {
                "process group killed with SIGKILL after SIGTERM was ignored"
            } else {
                "process group stopped with SIGTERM"
            };
            (
                None,
                format!(
                    "timed out after {}; {how}",
                    crate::units::format_duration(timeout)
                ),
                true,
            )
        }
        (_, Some(c)) => (Some(c), format!("exit {c}"), false),
        (Ended::Exited(s), None) => match (s.code(), s.signal()) {
            (Some(c), _) => (Some(c), format!("exit {c}"), false),
            (None, Some(sig)) => (
                None,
                format!(
                    "terminated by signal {sig} ({}) before it finished",
                    signal_name(sig)
                ),
                false,
            ),
            (None, None) => (None, "ended without an exit status".to_string(), false),
        },
        (Ended::Lost(why), None) => (
            None,
            format!("ended without leaving an exit status ({why})"),
            false,
        ),
    };
    HookOutcome {
        success: !timed_out && code == Some(0),
        code,
        timed_out,
        summary,
        output,
        retry_after: None,
        retryable: true,
    }
}

fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}

/// stdout then stderr of an attempt, each capped.
fn capture(dir: &Path) -> String {
    let mut output = read_capped(&dir.join("stdout"));
    let err = read_capped(&dir.join("stderr"));
    if !err.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&err);
    }
    output
}

/// Reads at most [`OUTPUT_CAP`] bytes of a file: all of it when small, else the first three
/// quarters of the cap and the last quarter, with the cut marked.
pub fn read_capped(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let cap = OUTPUT_CAP as u64;
    if len <= cap {
        let mut all = Vec::new();
        let _ = (&mut f).take(cap).read_to_end(&mut all);
        return String::from_utf8_lossy(&all).into_owned();
    }
    let head_len = cap * 3 / 4;
    let tail_len = cap / 4;
    let mut head = Vec::new();
    let _ = (&mut f).take(head_len).read_to_end(&mut head);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(len - tail_len)).is_ok() {
        let _ = f.take(tail_len).read_to_end(&mut tail);
    }
    format!(
        "{}\n[… {} bytes cut …]\n{}",
        String::from_utf8_lossy(&head),
        len - head_len - tail_len,
        String::from_utf8_lossy(&tail)
    )
}

/// After a restart: an attempt that was running when the daemon died. Returns its outcome
/// once known (waiting while its wrapper is still alive, killing the group at the deadline)
/// or `None` if it vanished without a status (the caller then runs it again, with the same
/// `ROLLGUARD_ACTION_ID`). `pgid` is the recorded wrapper pid; when the daemon died before
/// recording it, the wrapper is looked up by its command line.
pub async fn recover_exec(
    dir: &Path,
    pgid: Option<u32>,
    remaining: Duration,
    hook: &HookConfig,
) -> Option<HookOutcome> {
    let status = dir.join("status");
    let pgid = pgid
        .filter(|p| wrapper_alive(*p, &status))
        .or_else(|| find_wrapper(&status));
    let deadline = tokio::time::Instant::now() + remaining;
    loop {
        if status.exists() {
            return Some(finish(
                dir,
                Ended::Lost("the daemon restarted while it ran".into()),
                hook.timeout,
            ));
        }
        let Some(pg) = pgid.filter(|p| wrapper_alive(*p, &status)) else {
            // The wrapper may have written the status just before exiting.
            return status.exists().then(|| {
                finish(
                    dir,
                    Ended::Lost("the daemon restarted while it ran".into()),
                    hook.timeout,
                )
            });
        };
        if tokio::time::Instant::now() >= deadline {
            let killed = terminate_group(pg, hook.kill_grace, None).await;
            return Some(finish(dir, Ended::TimedOut { killed }, hook.timeout));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` is still this attempt's wrapper: it exists and its command line names this
/// attempt's status file (guards against pid reuse).
fn wrapper_alive(pid: u32, status: &Path) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 1 || kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    cmdline_names(pid, status)
}

fn cmdline_names(pid: u32, status: &Path) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let needle = status.as_os_str().as_encoded_bytes();
            let mut args = cmdline.split(|&b| b == 0);
            args.any(|a| a == WRAPPER_NAME.as_bytes())
                && cmdline.split(|&b| b == 0).any(|a| a == needle)
        }
        Err(_) => false,
    }
}

/// Finds the wrapper of an attempt by its command line (the daemon may have died between
/// starting the hook and recording its pid).
fn find_wrapper(status: &Path) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|pid| cmdline_names(*pid, status))
}

/// Renders the HTTP hook body: every string inside the JSON template is a `{{...}}` template;
/// with no template the facts themselves are the body.
pub fn render_body(body: &Option<serde_json::Value>, facts: &Facts) -> serde_json::Value {
    fn walk(v: &serde_json::Value, facts: &Facts) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(
                template::render(s, |n| facts.lookup(n)).unwrap_or_else(|_| s.clone()),
            ),
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.iter().map(|x| walk(x, facts)).collect())
            }
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter().map(|(k, x)| (k.clone(), walk(x, facts))).collect(),
            ),
            other => other.clone(),
        }
    }
    match body {
        Some(b) => walk(b, facts),
        None => serde_json::to_value(facts).unwrap_or(serde_json::Value::Null),
    }
}

/// Renders an HTTP hook's URL template, percent-encoding each substituted value so a
/// deployment id cannot add path segments or query parameters.
pub fn render_url(url: &str, facts: &Facts) -> Result<String, String> {
    template::render(url, |n| facts.lookup(n).map(|v| percent_encode(&v)))
        .map_err(|u| format!("unknown placeholder `{{{{{}}}}}` in hook url", u.name))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One attempt of an HTTP hook. Sends `Idempotency-Key: <action id>` so a receiver can drop
/// a repeat sent after a daemon restart. Header values and the URL (secrets) never appear in
/// the outcome.
pub async fn run_http(hook: &HookConfig, facts: &Facts, client: &reqwest::Client) -> HookOutcome {
    let HookKind::Http {
        url,
        method,
        headers,
        body,
        success_codes,
    } = &hook.kind
    else {
        return HookOutcome::broken("not an HTTP hook");
    };
    let url = match url.resolve().and_then(|u| render_url(&u, facts)) {
        Ok(u) => u,
        Err(e) => return HookOutcome::failed(e),
    };
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return HookOutcome::broken(format!("unsupported method `{method}`"));
    };
    let mut req = client
        .request(method, &url)
        .timeout(hook.timeout)
        .header("Idempotency-Key", &facts.action_id);
    for (k, v) in headers {
        match v.resolve() {
            Ok(v) => req = req.header(k, v),
            Err(e) => return HookOutcome::failed(format!("header {k}: {e}")),
        }
    }
    req = req.json(&render_body(body, facts));
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after =
                crate::net::retry_after(resp.headers()).map(|d| d.min(MAX_HOOK_BACKOFF));
            let text = crate::net::read_text_capped(resp, OUTPUT_CAP).await;
            let success = success_codes.contains(&status);
            HookOutcome {
                success,
                code: Some(i32::from(status)),
                timed_out: false,
                summary: format!("HTTP {status}"),
                output: text,
                retry_after,
                // 4xx other than "try later" means the request itself is wrong.
                retryable: !(400..500).contains(&status)
                    || matches!(status, 408 | 409 | 423 | 425 | 429),
            }
        }
        Err(e) => {
            let timed_out = e.is_timeout();
            let summary = if timed_out {
                format!(
                    "no answer within the {} timeout",
                    crate::units::format_duration(hook.timeout)
                )
            } else {
                format!("request failed: {}", crate::net::redact_error(&e))
            };
            HookOutcome {
                timed_out,
                ..HookOutcome::failed(summary)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_values_are_encoded() {
        let f = Facts {
            deployment: "a/b?c=d e".into(),
            ..Facts::default()
        };
        assert_eq!(
            render_url("http://x/p/{{id}}?q={{id}}", &f).unwrap(),
            "http://x/p/a%2Fb%3Fc%3Dd%20e?q=a%2Fb%3Fc%3Dd%20e"
        );
    }

    #[test]
    fn action_dir_is_one_component() {
        let d = attempt_dir(Path::new("/s"), "../x/y", 1);
        assert_eq!(d, PathBuf::from("/s/actions/_.._x_y/attempt-1"));
    }

    #[test]
    fn capped_output_keeps_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let mut big = "h".repeat(OUTPUT_CAP);
        big.push_str(&"m".repeat(100_000));
        big.push_str("THE END");
        std::fs::write(&p, &big).unwrap();
        let got = read_capped(&p);
        assert!(got.len() <= OUTPUT_CAP + 100, "{}", got.len());
        assert!(got.starts_with("hhh") && got.ends_with("THE END") && got.contains("bytes cut"));
    }
}

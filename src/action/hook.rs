//! Running hooks: exec (argv, no shell built from data) and HTTP.
//!
//! An exec hook runs in its own process group under a tiny fixed `/bin/sh` wrapper that writes
//! the exit status to a file. Its stdin, stdout and stderr are files in the action's directory
//! under the state directory. So if the daemon is killed while a rollback hook runs, the hook
//! carries on, and the restarted daemon finds its status (or waits for it) instead of running
//! the rollback a second time. On timeout the whole group gets SIGTERM, then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::Facts;
use crate::config::{HookConfig, HookKind};
use crate::template;

/// Output kept per stream in the audit history.
pub const OUTPUT_CAP: usize = 16 * 1024;
/// Time between SIGTERM and SIGKILL of a hook's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// A fixed script: no data is ever interpolated into it. `$1` is the status file, the rest is
/// the hook's argv.
const WRAPPER: &str = r#"s="$1"; shift; "$@"; rc=$?; printf '%s' "$rc" > "$s.tmp" && mv -f "$s.tmp" "$s"; exit "$rc""#;

/// Environment variables passed through to exec hooks unless the hook's `env` list adds more.
const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"];

/// How one attempt of a hook ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub success: bool,
    /// Exit code for exec hooks, HTTP status for HTTP hooks.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Human summary (`exit 0`, `killed after 60s timeout`, `HTTP 503`).
    pub summary: String,
    /// Captured output (capped), stdout then stderr for exec hooks, response body for HTTP.
    pub output: String,
    /// For HTTP: the server asked us to wait this long before retrying.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl HookOutcome {
    fn failed(summary: impl Into<String>) -> Self {
        HookOutcome { success: false, code: None, timed_out: false, summary: summary.into(), output: String::new(), retry_after: None }
    }
}

/// Where an attempt keeps its files.
pub fn attempt_dir(state_dir: &Path, action_id: &str, attempt: u32) -> PathBuf {
    state_dir.join("actions").join(action_id).join(format!("attempt-{attempt}"))
}

/// Renders a hook's argv for these facts (each element stays one argument).
pub fn render_argv(argv: &[String], facts: &Facts) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|a| template::render(a, |n| facts.lookup(n)).map_err(|u| format!("unknown placeholder `{{{{{}}}}}` in hook argv", u.name)))
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
        return HookOutcome::failed("not an exec hook");
    };
    let argv = match render_argv(argv, facts) {
        Ok(a) => a,
        Err(e) => return HookOutcome::failed(e),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return HookOutcome::failed(format!("cannot create {}: {e}", dir.display()));
    }
    let payload = dir.join("stdin.json");
    let files = (|| -> std::io::Result<(std::fs::File, std::fs::File, std::fs::File)> {
        std::fs::write(&payload, serde_json::to_vec_pretty(facts).unwrap_or_default())?;
        Ok((std::fs::File::open(&payload)?, std::fs::File::create(dir.join("stdout"))?, std::fs::File::create(dir.join("stderr"))?))
    })();
    let (stdin, stdout, stderr) = match files {
        Ok(f) => f,
        Err(e) => return HookOutcome::failed(format!("cannot prepare hook files in {}: {e}", dir.display())),
    };
    let status_path = dir.join("status");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(WRAPPER).arg("rollguard-hook").arg(&status_path).args(&argv);
    cmd.env_clear();
    for k in BASE_ENV.iter().copied().chain(env.iter().map(String::as_str)) {
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
    cmd.stdin(Stdio::from(stdin)).stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
    cmd.process_group(0).kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookOutcome::failed(format!("cannot start /bin/sh for hook `{}`: {e}", hook.name)),
    };
    let pid = child.id().unwrap_or(0);
    on_spawn(pid);
    let waited = tokio::time::timeout(hook.timeout, child.wait()).await;
    let timed_out = waited.is_err();
    if timed_out {
        terminate_group(pid).await;
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    }
    let status = match &waited {
        Ok(Ok(s)) => s.code(),
        _ => None,
    };
    finish(dir, status, timed_out, hook.timeout)
}

/// Sends SIGTERM to the group, waits up to [`KILL_GRACE`] for it to go, then SIGKILL.
pub async fn terminate_group(pgid: u32) {
    if pgid == 0 {
        return;
    }
    let pg = Pid::from_raw(pgid as i32);
    let _ = killpg(pg, Signal::SIGTERM);
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < KILL_GRACE {
        if killpg(pg, None).is_err() {
            return;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    let _ = killpg(pg, Signal::SIGKILL);
}

/// Builds the outcome from the files an attempt left behind.
fn finish(dir: &Path, wait_code: Option<i32>, timed_out: bool, timeout: Duration) -> HookOutcome {
    let recorded = std::fs::read_to_string(dir.join("status")).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let code = recorded.or(wait_code);
    let out = read_capped(&dir.join("stdout"));
    let err = read_capped(&dir.join("stderr"));
    let mut output = out;
    if !err.is_empty() {
        if !output.is_empty() {
            output.push('\n');
        }
        output.push_str(&err);
    }
    let summary = if timed_out {
        format!("killed after the {} timeout", crate::units::format_duration(timeout))
    } else {
        match code {
            Some(c) => format!("exit {c}"),
            None => "terminated by a signal".to_string(),
        }
    };
    HookOutcome { success: !timed_out && code == Some(0), code, timed_out, summary, output, retry_after: None }
}

/// Reads at most [`OUTPUT_CAP`] bytes from the start and the end of a file, marking the cut.
pub fn read_capped(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let cap = OUTPUT_CAP as u64;
    let mut head = Vec::new();
    let _ = (&mut f).take(cap).read_to_end(&mut head);
    if len <= cap {
        return String::from_utf8_lossy(&head).into_owned();
    }
    let mut tail = Vec::new();
    let tail_len = (cap / 4).min(len - cap);
    if f.seek(SeekFrom::Start(len - tail_len)).is_ok() {
        let _ = f.take(tail_len).read_to_end(&mut tail);
    }
    format!(
        "{}\n[… {} bytes cut …]\n{}",
        String::from_utf8_lossy(&head[..(cap as usize * 3 / 4).min(head.len())]),
        len - (cap * 3 / 4) - tail_len,
        String::from_utf8_lossy(&tail)
    )
}

/// After a restart: an attempt that was running when the daemon died. Returns its outcome
/// once known — waiting while its process group is still alive, killing it at its timeout —
/// or `None` if it vanished without a status (the caller then runs it again).
pub async fn recover_exec(dir: &Path, pgid: u32, remaining: Duration, timeout: Duration) -> Option<HookOutcome> {
    let status = dir.join("status");
    let deadline = tokio::time::Instant::now() + remaining;
    loop {
        if status.exists() {
            return Some(finish(dir, None, false, timeout));
        }
        if !group_alive(pgid, &status) {
            // The wrapper may have written the status just before exiting.
            return status.exists().then(|| finish(dir, None, false, timeout));
        }
        if tokio::time::Instant::now() >= deadline {
            terminate_group(pgid).await;
            return Some(finish(dir, None, true, timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the wrapper process is still ours: the pid exists and its command line names this
/// attempt's status file (guards against pid reuse).
fn group_alive(pgid: u32, status: &Path) -> bool {
    if pgid == 0 || kill(Pid::from_raw(pgid as i32), None).is_err() {
        return false;
    }
    match std::fs::read(format!("/proc/{pgid}/cmdline")) {
        Ok(cmdline) => {
            let needle = status.to_string_lossy();
            cmdline.split(|&b| b == 0).any(|arg| arg == needle.as_bytes())
        }
        Err(_) => false,
    }
}

/// Renders the HTTP hook body: every string inside the JSON template is a `{{...}}` template;
/// with no template the facts themselves are the body.
pub fn render_body(body: &Option<serde_json::Value>, facts: &Facts) -> serde_json::Value {
    fn walk(v: &serde_json::Value, facts: &Facts) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => {
                serde_json::Value::String(template::render(s, |n| facts.lookup(n)).unwrap_or_else(|_| s.clone()))
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(|x| walk(x, facts)).collect()),
            serde_json::Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, x)| (k.clone(), walk(x, facts))).collect())
            }
            other => other.clone(),
        }
    }
    match body {
        Some(b) => walk(b, facts),
        None => serde_json::to_value(facts).unwrap_or(serde_json::Value::Null),
    }
}

/// One attempt of an HTTP hook. Sends `Idempotency-Key: <action id>` so a receiver can drop
/// a repeat sent after a daemon restart.
pub async fn run_http(hook: &HookConfig, facts: &Facts, client: &reqwest::Client) -> HookOutcome {
    let HookKind::Http { url, method, headers, body, success_codes } = &hook.kind else {
        return HookOutcome::failed("not an HTTP hook");
    };
    let url = match url.resolve() {
        Ok(u) => template::render(&u, |n| facts.lookup(n)).unwrap_or(u),
        Err(e) => return HookOutcome::failed(e),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut req = client.request(method, &url).timeout(hook.timeout).header("Idempotency-Key", &facts.action_id);
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
            let retry_after = crate::net::retry_after(resp.headers());
            let text = crate::net::read_text_capped(resp, OUTPUT_CAP).await;
            HookOutcome {
                success: success_codes.contains(&status),
                code: Some(i32::from(status)),
                timed_out: false,
                summary: format!("HTTP {status}"),
                output: text,
                retry_after,
            }
        }
        Err(e) => {
            let timed_out = e.is_timeout();
            HookOutcome {
                success: false,
                code: None,
                timed_out,
                summary: if timed_out {
                    format!("no answer within the {} timeout", crate::units::format_duration(hook.timeout))
                } else {
                    format!("request failed: {}", crate::net::redact_error(&e))
                },
                output: String::new(),
                retry_after: None,
            }
        }
    }
}

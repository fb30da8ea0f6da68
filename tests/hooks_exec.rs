//! Hooks run for real: exec hooks as processes (facts in the environment and on stdin,
//! allow-listed environment, retries, timeouts that kill the whole process group, capped
//! output), HTTP hooks against a local server (secrets, body template, Retry-After,
//! permanent 4xx), dry runs, and notifiers that cannot slow a rollback down. The runner,
//! the store and the notifiers are the real ones.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rollguard::action::Facts;
use rollguard::action::notify::Notifiers;
use rollguard::action::runner::ActionRunner;
use rollguard::config::{HookConfig, HookKind, NotifierConfig, NotifierKind, Secret};
use rollguard::deploy::DeploymentRequest;
use rollguard::store::{Action, Event, Purpose, SqliteStore, Store, Writes, new_record};
use rollguard::telemetry::Telemetry;
use serde_json::json;
use support::receivers::{self, Fake, Reply};
use tokio_util::sync::CancellationToken;

struct World {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    runner: Arc<ActionRunner>,
    fake: Fake,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A store with deployment `d1`, the hooks, and a webhook notifier `chat` at the fake.
async fn world(hooks: Vec<HookConfig>) -> World {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("state")).unwrap());
    let req: DeploymentRequest = serde_json::from_value(json!({
        "id": "d1", "service": "checkout", "analysis": "errors", "params": {"evil": "$(touch pwned); `touch pwned2`"},
        "baseline": {"targets": ["http://127.0.0.1:9/m"], "version": "v1"},
        "canary": {"targets": ["http://127.0.0.1:9/m"], "version": "v2"}
    }))
    .unwrap();
    store
        .register(
            &new_record(req, "r.yaml".into(), "1".into(), "analysis: errors".into()),
            "registered",
        )
        .unwrap();
    let mut chat = NotifierConfig::new(NotifierKind::Webhook {
        url: Secret::Inline(fake.url("/webhook")),
        secret: Some(Secret::Inline(receivers::WEBHOOK_SECRET.into())),
    });
    chat.pace = Duration::ZERO;
    let telemetry = Arc::new(Telemetry::new());
    let notifiers = Arc::new(
        Notifiers::new(
            store.clone(),
            BTreeMap::from([("chat".to_string(), chat)]),
            telemetry.clone(),
        )
        .unwrap(),
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(notifiers.clone().run(shutdown.clone()));
    let hooks = hooks.into_iter().map(|h| (h.name.clone(), h)).collect();
    let runner = Arc::new(
        ActionRunner::new(
            store.clone(),
            hooks,
            dir.path().join("state"),
            telemetry,
            notifiers,
            false,
        )
        .unwrap(),
    );
    World {
        dir,
        store,
        runner,
        fake,
        shutdown,
    }
}

/// The `rb` hook running `script` in `/bin/sh`, with its `$1` a path named `name` in a new
/// temporary directory (see [`scratch`]): where the script leaves what the test reads.
fn sh(script: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf, HookConfig) {
    let (dir, path) = scratch(name);
    let h = exec(
        "rb",
        &["/bin/sh", "-c", script, "x", path.to_str().unwrap()],
    );
    (dir, path, h)
}

/// A path named `name` in a new temporary directory, which lives as long as the `TempDir`.
fn scratch(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// A notice's text.
fn text(notice: &serde_json::Value) -> &str {
    notice["text"].as_str().unwrap()
}

fn exec(name: &str, argv: &[&str]) -> HookConfig {
    let mut h = HookConfig::exec(name, argv.iter().map(|s| s.to_string()).collect());
    h.timeout = Duration::from_secs(10);
    h.retries = 0;
    h.retry_backoff = Duration::from_millis(50);
    h.kill_grace = Duration::from_millis(300);
    h
}

impl World {
    /// Persists an action for `hook` (as a decision would) and runs it to the end.
    async fn run(&self, hook: &str, purpose: &str) -> Action {
        let id = format!("d1-{purpose}-0-{hook}");
        let facts = Facts {
            deployment: "d1".into(),
            service: "checkout".into(),
            analysis: "errors".into(),
            action: purpose.into(),
            action_id: id.clone(),
            verdict: purpose.into(),
            reason: "error-ratio: canary x7.9 the baseline".into(),
            version: "v2".into(),
            baseline_version: "v1".into(),
            params: BTreeMap::from([(
                "evil".to_string(),
                "$(touch pwned); `touch pwned2`".to_string(),
            )]),
            ..Facts::default()
        };
        let mut a = Action::pending(
            id.clone(),
            "d1",
            hook,
            Purpose::parse(purpose).unwrap(),
            serde_json::to_value(&facts).unwrap(),
        );
        a.notify = vec!["chat".into()];
        let rec = self.store.get("d1").unwrap().unwrap();
        self.store
            .save(
                &rec,
                Writes {
                    actions: std::slice::from_ref(&a),
                    ..Writes::default()
                },
            )
            .unwrap();
        self.runner.start(vec![a], tokio::time::Instant::now());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = self
                .store
                .actions_of("d1")
                .unwrap()
                .into_iter()
                .find(|x| x.id == id)
                .unwrap();
            if !matches!(now.status.as_str(), "pending" | "running") {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hook still {}",
                now.status
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `d1`'s audit history (its whole timeline), where every hook attempt must show.
    fn history(&self) -> Vec<Event> {
        self.store.events("d1", 0, 100).unwrap()
    }

    /// Notices the chat webhook received, waiting for at least `n`.
    async fn notices(&self, n: usize) -> Vec<serde_json::Value> {
        self.fake
            .wait_for("/webhook", n, Duration::from_secs(10))
            .await
            .iter()
            .map(|r| r.json())
            .collect()
    }
}

fn alive(pid: i32) -> bool {
    // A zombie waiting for its reaper counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_hook_gets_facts_in_env_and_stdin_an_allow_listed_environment_and_its_workdir() {
    // SAFETY: set before any hook runs; nothing else in this test binary reads it concurrently.
    unsafe {
        std::env::set_var("ROLLGUARD_TEST_SECRET", "must-not-leak");
        std::env::set_var("ROLLGUARD_TEST_ALLOWED", "passed-through");
    }
    let mut h = exec(
        "rb",
        &[
            "/bin/sh",
            "-c",
            "pwd; env; echo ---; cat; echo ---; printf '%s\\n' \"$1\"",
            "rollguard-hook-test",
            "{{param.evil}}",
        ],
    );
    let work = tempfile::tempdir().unwrap();
    if let HookKind::Exec { env, workdir, .. } = &mut h.kind {
        env.push("ROLLGUARD_TEST_ALLOWED".into());
        *workdir = Some(work.path().to_path_buf());
    }
    let w = world(vec![h]).await;
    let a = w.run("rb", "rollback").await;
    assert_eq!(a.status, "succeeded", "{a:#?}");
    let out = &a.output;
    assert!(
        out.starts_with(&work.path().display().to_string()),
        "workdir: {out}"
    );
    support::assert_says_all(
        "the hook's output",
        out,
        &[
            "ROLLGUARD_ACTION_ID=d1-rollback-0-rb",
            "ROLLGUARD_DEPLOYMENT=d1",
            "ROLLGUARD_VERSION=v2",
            "ROLLGUARD_BASELINE_VERSION=v1",
            "ROLLGUARD_ACTION=rollback",
            "ROLLGUARD_TEST_ALLOWED=passed-through",
            "ROLLGUARD_PARAM_EVIL=",
        ],
    );
    assert!(
        !out.contains("must-not-leak"),
        "the daemon's environment leaked into the hook: {out}"
    );
    let stdin: serde_json::Value =
        serde_json::from_str(out.split("---\n").nth(1).unwrap()).unwrap();
    assert_eq!(stdin["action_id"], "d1-rollback-0-rb");
    assert_eq!(stdin["reason"], "error-ratio: canary x7.9 the baseline");
    // A placeholder fills one argv element; nothing is run by a shell from data.
    assert!(
        out.trim_end().ends_with("$(touch pwned); `touch pwned2`"),
        "{out}"
    );
    assert!(!work.path().join("pwned").exists() && !work.path().join("pwned2").exists());
    // The attempt's files go right after the result is in the store (and its notice queued):
    // no event announces the removal itself, so look a few times.
    let n = w.notices(1).await;
    let attempt = w
        .dir
        .path()
        .join("state/actions/d1-rollback-0-rb/attempt-1");
    for _ in 0..100 {
        if !attempt.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!attempt.exists(), "{} is still there", attempt.display());
    assert_eq!(n[0]["kind"], "rollback_succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_retried_then_reported_failed_with_its_output() {
    let (_w0, count, mut h) = sh(
        "echo attempt >> \"$1\"; echo 'kubectl: connection refused' >&2; exit 3",
        "count",
    );
    h.retries = 2;
    let w = world(vec![h]).await;
    let start = tokio::time::Instant::now();
    let a = w.run("rb", "rollback").await;
    assert_eq!(a.status, "failed");
    assert_eq!(a.attempts, 3);
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        3,
        "one run per attempt"
    );
    assert_eq!(a.summary, "exit 3");
    assert!(
        a.output.contains("kubectl: connection refused"),
        "{}",
        a.output
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "backoff 50 ms then 100 ms"
    );
    let n = w.notices(1).await;
    assert_eq!(n[0]["kind"], "rollback_failed");
    assert!(
        text(&n[0]).contains("kubectl: connection refused"),
        "{}",
        n[0]
    );
    assert!(text(&n[0]).contains("attempt 3/3: exit 3"), "{}", n[0]);
    let attempts = w.history().iter().filter(|e| e.kind == "hook").count();
    assert_eq!(attempts, 3, "every attempt is in the audit history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hook_is_killed_at_its_timeout_with_every_process_it_started() {
    // The hook and its child ignore SIGTERM, so only SIGKILL of the whole group ends them.
    let (_w0, child, mut h) = sh(
        "trap '' TERM; sleep 300 & echo $! > \"$1\"; echo started; wait; wait",
        "child.pid",
    );
    h.timeout = Duration::from_millis(500);
    let w = world(vec![h]).await;
    let start = tokio::time::Instant::now();
    let a = w.run("rb", "rollback").await;
    let took = start.elapsed();
    assert_eq!(a.status, "failed");
    assert!(
        a.summary.contains("timed out after 500ms") && a.summary.contains("SIGKILL"),
        "{}",
        a.summary
    );
    assert!(a.output.contains("started"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let pid: i32 = std::fs::read_to_string(&child)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !alive(pid)
    });
    assert!(gone, "the hook's child {pid} survived the timeout");
    let n = w.notices(1).await;
    assert_eq!(n[0]["kind"], "rollback_failed");
    assert!(text(&n[0]).contains("timed out"), "{}", n[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_honours_sigterm_is_stopped_without_sigkill() {
    let mut h = exec("rb", &["/bin/sleep", "300"]);
    h.timeout = Duration::from_millis(300);
    h.kill_grace = Duration::from_secs(5);
    let w = world(vec![h]).await;
    let start = tokio::time::Instant::now();
    let a = w.run("rb", "rollback").await;
    assert!(a.summary.contains("stopped with SIGTERM"), "{}", a.summary);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "did not wait out the grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_hook_output_is_capped() {
    let h = exec(
        "rb",
        &[
            "/bin/sh",
            "-c",
            "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo THE-END",
        ],
    );
    let w = world(vec![h]).await;
    let a = w.run("rb", "rollback").await;
    assert_eq!(a.status, "succeeded");
    assert!(
        a.output.len() <= rollguard::action::hook::OUTPUT_CAP + 200,
        "{} bytes kept",
        a.output.len()
    );
    assert!(a.output.contains("bytes cut") && a.output.trim_end().ends_with("THE-END"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_killing_its_own_process_group_is_reported_not_fatal() {
    let h = exec(
        "rb",
        &["/bin/sh", "-c", "echo going; kill -TERM 0; sleep 5"],
    );
    let w = world(vec![h]).await;
    let a = w.run("rb", "rollback").await;
    // This test process (the daemon's stand-in) is still here, and the hook is reported.
    assert_eq!(a.status, "failed");
    assert!(a.summary.contains("signal 15 (SIGTERM)"), "{}", a.summary);
    assert!(a.output.contains("going"));
    assert_eq!(w.notices(1).await[0]["kind"], "rollback_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_notifier_never_delays_a_rollback_hook() {
    let w = world(vec![exec("rb", &["/bin/true"])]).await;
    w.fake.set_slow(Duration::from_secs(5));
    let n = rollguard::events::Notice {
        kind: rollguard::events::NoticeKind::RollbackStarted,
        at: rollguard::store::now(),
        subject: None,
        title: "t".into(),
        text: "x".into(),
        checks: vec![],
        link: None,
        key: "k".into(),
    };
    // A backlog for the slow destination, queued as `Notifiers::enqueue` queues it.
    for _ in 0..5 {
        w.store
            .enqueue(
                "chat",
                &serde_json::to_value(rollguard::action::notify::render::Queued::Notice {
                    notice: Box::new(n.clone()),
                    part: Default::default(),
                })
                .unwrap(),
            )
            .unwrap();
    }
    let start = tokio::time::Instant::now();
    let a = w.run("rb", "rollback").await;
    assert_eq!(a.status, "succeeded");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "hook waited on chat: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hook_sends_secrets_headers_and_body_and_honours_retry_after() {
    let (_w0, token) = scratch("token");
    std::fs::write(&token, "Bearer file-secret\n").unwrap();
    // SAFETY: set before the hook runs; read only by it.
    unsafe { std::env::set_var("ROLLGUARD_TEST_LB_KEY", "env-secret") };
    let fake = Fake::start().await;
    fake.script([Reply::status(429).header("Retry-After", "1")]);
    let h = HookConfig {
        kind: HookKind::Http {
            url: Secret::Inline(fake.url("/hook/pools/{{service}}/switch?deployment={{id}}")),
            method: "PUT".into(),
            headers: BTreeMap::from([
                (
                    "Authorization".to_string(),
                    Secret::File {
                        file: token.clone(),
                    },
                ),
                (
                    "X-Api-Key".to_string(),
                    Secret::Env {
                        env: "ROLLGUARD_TEST_LB_KEY".into(),
                    },
                ),
            ]),
            body: Some(
                json!({"pool": "blue", "deployment": "{{id}}", "why": "{{reason}}", "weight": 0}),
            ),
            success_codes: vec![200, 204],
        },
        ..exec("lb", &[])
    };
    let mut h = h;
    h.retries = 2;
    let w = world(vec![h]).await;
    let a = w.run("lb", "rollback").await;
    assert_eq!(a.status, "succeeded", "{a:#?}");
    let got = fake.received_at("/hook");
    assert_eq!(got.len(), 2);
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    let r = &got[1];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/hook/pools/checkout/switch");
    assert_eq!(r.query, "deployment=d1");
    assert_eq!(r.headers["authorization"], "Bearer file-secret");
    assert_eq!(r.headers["x-api-key"], "env-secret");
    assert_eq!(r.headers["idempotency-key"], "d1-rollback-0-lb");
    assert_eq!(
        r.json(),
        json!({"pool": "blue", "deployment": "d1", "why": "error-ratio: canary x7.9 the baseline", "weight": 0})
    );
    let history = serde_json::to_string(&w.history()).unwrap();
    assert!(
        !history.contains("file-secret") && !history.contains("env-secret"),
        "secrets in the audit history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hook_client_errors_are_not_retried() {
    let fake = Fake::start().await;
    fake.script([Reply::status(403).body("forbidden")]);
    let mut h = HookConfig {
        kind: HookKind::Http {
            url: Secret::Inline(fake.url("/hook/x")),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: None,
            success_codes: vec![200],
        },
        ..exec("lb", &[])
    };
    h.retries = 3;
    let w = world(vec![h]).await;
    let a = w.run("lb", "rollback").await;
    assert_eq!(
        (
            a.status.as_str(),
            a.attempts,
            a.summary.as_str(),
            a.output.as_str()
        ),
        ("failed", 1, "HTTP 403", "forbidden")
    );
    // With no body template, the facts are the body.
    assert_eq!(
        fake.received_at("/hook")[0].json()["action_id"],
        "d1-rollback-0-lb"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_hook_is_recorded_and_announced_never_run() {
    let (_w0, marker) = scratch("ran");
    let mut h = exec(
        "rb",
        &["/usr/bin/touch", marker.to_str().unwrap(), "{{id}}"],
    );
    h.dry_run = true;
    let w = world(vec![h]).await;
    let a = w.run("rb", "rollback").await;
    assert_eq!(a.status, "skipped");
    assert!(
        a.summary.contains("dry run: would run rollback hook `rb`") && a.summary.contains("\"d1\""),
        "{}",
        a.summary
    );
    assert!(!Path::new(&marker).exists(), "a dry run executed the hook");
    let n = w.notices(1).await;
    assert_eq!(n[0]["kind"], "dry_run");
    assert!(
        n[0]["title"]
            .as_str()
            .unwrap()
            .contains("would roll back d1"),
        "{}",
        n[0]
    );
}

//! Fault injection, process side: the real daemon killed with SIGKILL at different points of a
//! canary, then restarted on the same state directory. Each daemon watches two deployments, a
//! bad canary (must end `rolled_back`) and a good one (must end `promoted`); their hooks append
//! to files when they start and when their effect happens, so the test counts runs. Whatever
//! the point of the kill, every deployment ends in the right state and each hook's effect
//! happens exactly once.
//!
//! Points covered here: before any decision; between the persisted decision and the hook's
//! process (held there deterministically: the attempt's stdin file is a FIFO, so the runner
//! blocks writing it after recording the attempt and before spawning); after everything is
//! done; and pseudo-random instants across the whole canary (seeded, printed). A kill while
//! the hook runs, and a hook that finishes while no daemon is up, are in `hooks_exactly_once.rs`.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, FleetServer, RATIO_RULE, lines};

/// Hooks that record their start and, after a short sleep, their effect.
fn hooks(dir: &Path) -> String {
    let h = |name: &str| support::daemon::recording_hook(name, &dir.join(name), 0.4, "20s");
    format!("{}{}", h("rb"), h("pr"))
}

fn rule() -> String {
    RATIO_RULE
        .replace("on_fail: [rollback]", "on_fail: [rb]")
        .replace("on_pass: [promote]", "on_pass: [pr]")
}

fn uuid_version(id: &str) -> Option<usize> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.get_version_num())
}

struct World {
    bad: FleetServer,
    good: FleetServer,
    dir: PathBuf,
}

impl World {
    fn new(seed: u64) -> World {
        let bad = FleetServer::bad(seed);
        let good = FleetServer::healthy(seed + 1, 20.0);
        World {
            bad,
            good,
            dir: PathBuf::new(),
        }
    }

    fn start(&mut self, dir: tempfile::TempDir) -> Daemon {
        self.dir = dir.path().to_path_buf();
        let extra = hooks(dir.path());
        Daemon::start_in(dir, &[("errors.yaml", &rule())], &extra)
    }

    fn register(&self, d: &Daemon) {
        for (id, fleet) in [("bad", &self.bad), ("good", &self.good)] {
            d.register(&fleet.deployment(id, &fleet.canaries()));
        }
    }

    /// Both deployments finished with their actions recorded.
    fn wait_done(&self, d: &Daemon) -> [Value; 2] {
        let get = |id: &str| {
            support::wait_for(Duration::from_secs(60), || {
                let (_, v) = d.get(&format!("/api/v1/deployments/{id}"));
                let done = v["actions"].as_array().is_some_and(|a| {
                    !a.is_empty()
                        && a.iter()
                            .all(|x| matches!(x["status"].as_str(), Some("succeeded" | "failed")))
                });
                done.then_some(v)
            })
            .unwrap_or_else(|| panic!("{id} never finished; log:\n{}", d.log()))
        };
        [get("bad"), get("good")]
    }

    /// The invariant: right end states, each effect exactly once.
    fn check(&self, d: &Daemon, how: &str) {
        let [bad, good] = self.wait_done(d);
        assert_eq!(bad["state"], "rolled_back", "{how}: {bad:#}");
        assert_eq!(good["state"], "promoted", "{how}: {good:#}");
        for (v, hook, purpose) in [(&bad, "rb", "rollback"), (&good, "pr", "promote")] {
            assert_eq!(v["actions"][0]["purpose"], purpose, "{how}");
            let id = v["id"].as_str().unwrap_or_default();
            let actions = v["actions"].as_array().cloned().unwrap_or_default();
            assert_eq!(actions.len(), 1, "{how}: {id}: {actions:#?}");
            assert_eq!(actions[0]["status"], "succeeded", "{how}: {actions:#?}");
            // The action's own id (a UUIDv7 made when it was owed), the same across restarts.
            let action_id = actions[0]["facts"]["action_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_eq!(uuid_version(&action_id), Some(7), "{how}: {actions:#?}");
            let effect = self.dir.join(hook);
            assert_eq!(
                lines(&effect),
                vec![action_id.clone()],
                "{how}: the {purpose} of {id} must take effect exactly once; log:\n{}",
                d.log()
            );
            // A start without an effect would be a run the daemon lost track of.
            assert!(
                lines(&effect.with_extension("started"))
                    .iter()
                    .all(|l| *l == action_id),
                "{how}"
            );
        }
    }
}

#[test]
fn kill_9_before_any_decision() {
    let mut w = World::new(31);
    let d = w.start(tempfile::tempdir().unwrap());
    w.register(&d);
    // Some analysis steps persisted, no decision yet.
    support::wait_for(Duration::from_secs(20), || {
        let (_, v) = d.get("/api/v1/deployments/bad");
        (v["elapsed_s"].as_f64()? >= 1.0 && v["state"] == "analysing").then_some(())
    })
    .expect("analysis running");
    assert!(lines(&w.dir.join("rb.started")).is_empty());
    let dir = d.crash();
    let d = w.start(dir);
    w.check(&d, "killed before the decision");
}

#[test]
fn kill_9_between_the_persisted_decision_and_the_hook_process() {
    let mut w = World::new(41);
    let dir = tempfile::tempdir().unwrap();
    // The rollback's first attempt writes its facts to this path before spawning the hook.
    let attempt = dir.path().join("state/actions/bad-rollback-0-rb/attempt-1");
    std::fs::create_dir_all(&attempt).unwrap();
    let fifo = attempt.join("stdin.json");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let d = w.start(dir);
    w.register(&d);
    // The decision is in the store and its action is recorded as started, but no process
    // exists: the runner is blocked opening the FIFO.
    let action = support::wait_for(Duration::from_secs(30), || {
        let (_, v) = d.get("/api/v1/deployments/bad");
        let a = v["actions"].as_array()?.first()?.clone();
        (v["state"] == "rolled_back" && a["status"] == "running").then_some(a)
    })
    .unwrap_or_else(|| panic!("no decision; log:\n{}", d.log()));
    assert!(action["pid"].is_null(), "{action:#}");
    assert!(
        lines(&w.dir.join("rb.started")).is_empty(),
        "the hook must not have started yet"
    );
    let dir = d.crash();
    std::fs::remove_file(&fifo).unwrap();
    let d = w.start(dir);
    w.check(&d, "killed between decision and hook");
}

#[test]
fn kill_9_after_everything_is_done_runs_nothing_again() {
    let mut w = World::new(51);
    let d = w.start(tempfile::tempdir().unwrap());
    w.register(&d);
    w.check(&d, "first run");
    let dir = d.crash();
    let d = w.start(dir);
    // The restarted daemon has resumed whatever it found (it listens only after that).
    w.check(&d, "after a restart");
    std::thread::sleep(Duration::from_millis(500));
    w.check(&d, "a while after the restart");
    assert!(
        !d.log().contains("resuming action"),
        "a finished action was resumed:\n{}",
        d.log()
    );
}

/// splitmix64, so the kill instants are reproducible from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Two kills at pseudo-random instants in the first 12 s (the bad canary is decided after a
/// few seconds, the good one promoted after 8 s of analysis, hooks take 0.4 s), then a final
/// run to the end. `FAULTS_SEED` picks other instants.
fn random_kills(seed: u64) {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(seed, |s| s ^ seed);
    let mut rng = seed;
    let mut w = World::new(60 + seed % 1000);
    let mut d = w.start(tempfile::tempdir().unwrap());
    w.register(&d);
    let mut at = Vec::new();
    for _ in 0..2 {
        let ms = 300 + next(&mut rng) % 12_000;
        at.push(ms);
        // The instant itself is the point of the test: a plain wait, not an event.
        std::thread::sleep(Duration::from_millis(ms));
        let dir = d.crash();
        d = w.start(dir);
    }
    eprintln!("seed {seed}: killed after {at:?} ms of each daemon's life");
    w.check(&d, &format!("seed {seed}, kills at {at:?} ms"));
}

#[test]
fn kill_9_at_random_instants_seed_1() {
    random_kills(1);
}

#[test]
fn kill_9_at_random_instants_seed_2() {
    random_kills(2);
}

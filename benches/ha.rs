//! PostgreSQL against SQLite, and failover (`cargo bench --bench ha`; docs/ha.md has the
//! figures).
//!
//! 1. **Store load of 1000 deployments.** What the engine writes per analysis interval is
//!    one `save` per deployment (record with its judge state, a timeline entry). For each
//!    store, 1000 deployments are registered, then `HA_ROUNDS` (default 10) intervals of
//!    1000 saves are written from 4 threads (the engine's saves come from many tasks). Printed:
//!    saves per second at full speed, and the CPU seconds per interval of 1000 saves, of
//!    this process (the daemon's share) and of the PostgreSQL server processes, and the bytes
//!    written per interval (SQLite: this process' `write_bytes`; PostgreSQL: WAL bytes).
//! 2. **Failover.** Two real daemons on one database (lease `HA_LEASE`, default 5s), a
//!    deployment analysed every second; the leader is killed with SIGKILL `HA_RUNS` times
//!    (default 3). Printed: kill → the standby holds the lease, and kill → its first analysis
//!    step of the deployment is persisted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollguard::store::config::PgConfig;
use rollguard::store::{PgStore, SqliteStore, Store, Writes};
use serde_json::json;
use support::daemon::Daemon;
use support::measure::{median, proc_cpu_s};
use support::postgres::Postgres;

/// A setting from the environment under `cargo bench`; the quick value under `cargo test`
/// (which runs benches without `--bench`).
fn env(name: &str, default: u64, quick: u64) -> u64 {
    if !std::env::args().any(|a| a == "--bench") {
        return quick;
    }
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: usize) -> rollguard::deploy::DeploymentRecord {
    let req: rollguard::deploy::DeploymentRequest = serde_json::from_value(json!({
        "id": format!("dep-{i}"),
        "service": format!("svc-{}", i % 50),
        "analysis": "http-service",
        "baseline": { "targets": ["http://10.0.0.1:9100/metrics", "http://10.0.0.2:9100/metrics"], "version": "v1" },
        "canary": { "targets": ["http://10.0.0.3:9100/metrics", "http://10.0.0.4:9100/metrics"], "version": "v2" }
    }))
    .expect("request");
    let mut r =
        rollguard::store::new_record(req, "rules/http.yaml".into(), "v1".into(), "x".repeat(1500));
    r.state = rollguard::deploy::State::Analysing;
    r
}

/// Judge state of a typical three-check analysis some minutes in (about 8 KB of JSON).
fn judge_state(round: usize) -> String {
    let points: Vec<f64> = (0..400).map(|k| (k * round) as f64 * 0.37).collect();
    json!({"round": round, "points": points}).to_string()
}

/// Sum of CPU seconds of a process and all its descendants (the tests run PostgreSQL
/// through `runuser` when root: runuser → postmaster → backends).
fn tree_cpu_s(root: u32) -> f64 {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.into_iter().map(proc_cpu_s).sum()
}

fn write_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Load {
    saves_per_s: f64,
    own_cpu: f64,
    server_cpu: f64,
    bytes: f64,
}

fn load(store: Arc<dyn Store>, rounds: usize, server: Option<(&Postgres, u32)>) -> Load {
    const N: usize = 1000;
    for i in 0..N {
        store.register(&record(i), "registered").expect("register");
    }
    let wal = |pg: &Postgres| -> f64 {
        pg.psql("ha", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            .parse()
            .unwrap_or(0.0)
    };
    let (cpu0, bytes0) = (proc_cpu_s(std::process::id()), write_bytes());
    let server0 = server.map_or(0.0, |(_, pid)| tree_cpu_s(pid));
    let wal0 = server.map_or(0.0, |(pg, _)| wal(pg));
    let t = Instant::now();
    for round in 0..rounds {
        std::thread::scope(|s| {
            for part in 0..4 {
                let store = store.clone();
                s.spawn(move || {
                    for i in (part..N).step_by(4) {
                        let mut r = record(i);
                        r.elapsed_ms = (round as u64 + 1) * 10_000;
                        r.judge = Some(judge_state(round));
                        let ev = rollguard::store::TimelineEvent {
                            kind: rollguard::store::EventKind::Step,
                            message: "step".into(),
                            data: serde_json::Value::Null,
                        };
                        store.save(&r, Writes::events(&[ev])).expect("save");
                    }
                });
            }
        });
    }
    let secs = t.elapsed().as_secs_f64();
    let per = |x: f64| x / rounds as f64;
    Load {
        saves_per_s: (N * rounds) as f64 / secs,
        own_cpu: per(proc_cpu_s(std::process::id()) - cpu0),
        server_cpu: per(server.map_or(0.0, |(_, pid)| tree_cpu_s(pid)) - server0),
        bytes: per(match server {
            Some((pg, _)) => wal(pg) - wal0,
            None => write_bytes() - bytes0,
        }),
    }
}

fn store_load() {
    let rounds = env("HA_ROUNDS", 10, 1) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("sqlite"));
    let lite = load(sqlite, rounds, None);

    let pg = Postgres::start();
    pg.create_db("ha");
    let store = PgStore::open(&PgConfig {
        url: pg.url("ha"),
        password: None,
        tls: None,
        node: "bench".into(),
        lease: Duration::from_secs(60),
        connections: 4,
    })
    .expect("postgres store");
    store
        .acquire_or_renew(Duration::from_secs(600), "http://bench")
        .expect("lease")
        .expect("free lease");
    let pid = pg.pid().expect("postmaster pid");
    let post = load(Arc::new(store), rounds, Some((&pg, pid)));

    println!(
        "\n## Store load: 1000 deployments, one save each per interval ({rounds} intervals)\n"
    );
    println!(
        "| store | saves/s (4 writers) | CPU s per interval: rollguard | CPU s per interval: database server | written per interval |"
    );
    println!("|---|---|---|---|---|");
    for (name, l) in [("SQLite (WAL)", &lite), ("PostgreSQL", &post)] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} MB |",
            l.saves_per_s,
            l.own_cpu,
            l.server_cpu,
            l.bytes / 1e6
        );
    }
}

fn failover() {
    let runs = env("HA_RUNS", 3, 1);
    let lease = env("HA_LEASE", 5, 2);
    let pg = Postgres::start();
    pg.create_db("ha");
    let fleet = support::FleetServer::healthy(7, 5.0);
    let rule = support::daemon::ratio_rule_timed("min_duration: 1h\nmax_duration: 2h\n");
    let daemon = |node: &str| {
        let hooks =
            support::daemon::marker_hooks(&std::env::temp_dir().join("rollguard-ha-bench-marker"));
        Daemon::start_on_postgres(
            &pg.url("ha"),
            node,
            &format!("{lease}s"),
            &[("errors.yaml", &rule)],
            &hooks,
            "",
        )
    };
    let elapsed = |d: &Daemon| d.get("/api/v1/deployments/fo").1["elapsed_s"].as_f64();
    let mut leader = daemon("n0");
    support::wait_for(Duration::from_secs(20), || {
        (leader.role() == "leader").then_some(())
    })
    .expect("first leader");
    leader.register(&fleet.deployment("fo", &fleet.canaries()));
    leader.wait_state("fo", &["analysing"], Duration::from_secs(30));
    let (mut takeovers, mut steps) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let standby = daemon(&format!("n{run}"));
        support::wait_for(Duration::from_secs(20), || {
            (standby.role() == "standby").then_some(())
        })
        .expect("standby");
        std::thread::sleep(Duration::from_secs(2));
        let killed = Instant::now();
        let _ = leader.crash();
        let before = elapsed(&standby).unwrap_or(0.0);
        support::wait_for(Duration::from_secs(60), || {
            (standby.role() == "leader").then_some(())
        })
        .expect("takeover");
        takeovers.push(killed.elapsed().as_secs_f64());
        support::wait_for(Duration::from_secs(60), || {
            elapsed(&standby).filter(|e| *e > before).map(|_| ())
        })
        .expect("first step");
        steps.push(killed.elapsed().as_secs_f64());
        leader = standby;
    }
    println!("\n## Failover: kill -9 of the leader (lease {lease}s, interval 1s, {runs} runs)\n");
    println!("| measure | median | max |");
    println!("|---|---|---|");
    for (name, v) in [
        ("kill → standby holds the lease", &mut takeovers),
        ("kill → its first persisted analysis step", &mut steps),
    ] {
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!("| {name} | {:.2} s | {max:.2} s |", median(v));
    }
}

fn main() {
    store_load();
    failover();
}

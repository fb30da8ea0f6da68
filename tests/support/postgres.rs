//! A real PostgreSQL server for tests: its own cluster in a temporary directory, on a free
//! loopback port, started and stopped by the test (Debian's `postgresql` package; `.ci/run`
//! installs it).
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI does) the server's
//! programs run as the package's `postgres` user through `runuser`, and its directory is
//! handed to that user. Each test that needs a server starts its own: clusters are cheap
//! (`initdb --no-sync` with `fsync=off` takes about a second), and a test that restarts or
//! kills its server then disturbs nobody else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The superuser the clusters are created with (trust authentication on loopback).
pub const USER: &str = "rollguard";

/// The newest installed server's program directory (`/usr/lib/postgresql/<major>/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p)
}

/// `/proc/self` belongs to the process' effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command for one of the server's programs, run as `postgres` when we are root.
fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` (recursively) to the server's user when the server runs as `postgres`.
fn hand_to_server(path: &Path) {
    if running_as_root() {
        check(
            "chown to postgres",
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .output(),
        );
    }
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One PostgreSQL cluster and its running server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// Creates a cluster and starts its server; panics with the server's log if it cannot.
    pub fn start() -> Postgres {
        let bin = bin_dir().expect("PostgreSQL is not installed (apt-get install postgresql)");
        let dir = tempfile::Builder::new()
            .prefix("rollguard-pg-")
            .tempdir()
            .expect("tempdir");
        hand_to_server(dir.path());
        check(
            "initdb",
            server_command(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8"])
                .output(),
        );
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            child: None,
        };
        pg.launch(free_port());
        pg
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self, port: u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let child = server_command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        self.port = port;
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection URL for database `db` (see [`Postgres::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` (owned by [`USER`]).
    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// Runs `sql` in database `db` with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = check(
            "psql",
            Command::new("psql")
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .args(["-d", db, "-c", sql])
                .output(),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server cleanly (smart shutdown would wait for clients: this is `fast`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = server_command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["stop", "-m", "fast", "-w"])
                .output();
            let _ = child.wait();
        }
    }

    /// Kills the server at once (SIGKILL to the postmaster; the backends notice and exit).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // Orphaned backends still hold the shared memory; the next start waits for them.
            let _ = server_command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["stop", "-m", "immediate"])
                .output();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.launch(port);
    }

    /// Makes role `role` (password `password`, owner of database `db`) log in only over TLS
    /// with that password and a client certificate signed by the test CA: the server uses
    /// `tests/data/tls/server.pem` (127.0.0.1), and the server restarts to take it.
    pub fn require_tls_for(&mut self, role: &str, password: &str, db: &str) {
        let data = self.dir.path().join("data");
        let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        for f in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(tls.join(f), data.join(f)).expect("copy TLS file");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key mode");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.pem'\npassword_encryption = 'scram-sha-256'"
        )
        .expect("write postgresql.conf");
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "hostssl all {role} 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\nhost all {role} 127.0.0.1/32 reject\n{old}"
            ),
        )
        .expect("write pg_hba.conf");
        hand_to_server(&data);
        self.psql(
            "postgres",
            &format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
        );
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" OWNER \"{role}\""),
        );
        self.restart();
    }

    /// The postmaster's process id (its backends are its children), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The cluster's directory (data under `data/`, the log in `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = server_command(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["stop", "-m", "immediate"])
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_cluster_starts_answers_and_restarts() {
    let mut pg = Postgres::start();
    pg.create_db("t");
    pg.psql(
        "t",
        "CREATE TABLE x (v int); INSERT INTO x VALUES (41), (42)",
    );
    assert_eq!(pg.psql("t", "SELECT max(v) FROM x"), "42");
    pg.restart();
    assert_eq!(pg.psql("t", "SELECT count(*) FROM x"), "2");
}

//! Test harness: real PostgreSQL clusters on free loopback ports.
//!
//! Clusters come from Debian's `postgresql` package (the newest
//! `/usr/lib/postgresql/*/bin`). As root, every PostgreSQL program runs as the
//! `postgres` user, as initdb demands. No mock database anywhere.
//!
//! `Cluster::shared(name)` gives one cluster per name per test process; it is
//! stopped when the process exits, however it exits, by a watchdog that waits
//! for its stdin (held by this process) to close. `Cluster::start_owned` gives
//! a cluster a test may stop and restart; it is stopped on Drop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Password of every password-authenticated test role.
pub const PASSWORD: &str = "secret";

/// A running PostgreSQL cluster.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Keeps the watchdog's stdin open; the watchdog stops the cluster when it closes.
    _watchdog: Option<Child>,
}

static SHARED: OnceLock<Mutex<HashMap<String, &'static Cluster>>> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// The cluster named `name`, started on first use and shared by every test
    /// of this process. Tests isolate themselves with [`Cluster::create_db`].
    pub fn shared(name: &str) -> &'static Cluster {
        let map = SHARED.get_or_init(Default::default);
        // Held while starting so that two tests never start the same cluster twice.
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(name) {
            return c;
        }
        let mut c = Cluster::init(name);
        c.start();
        c._watchdog = Some(c.spawn_watchdog());
        let c: &'static Cluster = Box::leak(Box::new(c));
        map.insert(name.to_string(), c);
        c
    }

    /// A cluster of the test's own, stopped and removed on Drop.
    pub fn start_owned(name: &str) -> Cluster {
        let mut c = Cluster::init(name);
        c.start();
        c._watchdog = Some(c.spawn_watchdog());
        c
    }

    /// A cluster initialised but not started, so a test can add settings
    /// (`append_conf`, `append_hba_first`) first; call [`Cluster::start`].
    pub fn init_owned(name: &str) -> Cluster {
        Cluster::init(name)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// A `postgres://` URL for `user` (with `password` if given) and `db`.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        match password {
            Some(p) => format!("postgres://{user}:{p}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A fresh database named `<prefix>_<n>`, so tests sharing a cluster do not meet.
    pub fn create_db(&self, prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let db = format!("{prefix}_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
        db
    }

    /// Runs SQL as the superuser over TCP; returns tuples-only, unaligned
    /// output (`|`-separated). Panics with psql's stderr when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(
            out.status.success(),
            "psql on {} failed: {}\nSQL: {sql}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Like [`Cluster::psql`] but returns the raw output, for expected failures.
    pub fn psql_output(&self, db: &str, sql: &str) -> Output {
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .output()
            .expect("run psql")
    }

    /// Appends lines to postgresql.conf (takes effect at the next start).
    pub fn append_conf(&self, lines: &str) {
        append(&self.dir.join("postgresql.conf"), lines);
    }

    /// Puts lines at the top of pg_hba.conf (takes effect at the next start).
    pub fn prepend_hba(&self, lines: &str) {
        let path = self.dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{lines}\n{old}")).expect("write pg_hba.conf");
    }

    /// Starts (or restarts after [`Cluster::stop`]) the server and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.dir.join("server.log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let out = self
            .pg_cmd("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.dir)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts])
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "cluster {} did not start: {}\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                log
            );
        }
        self.wait_ready();
        self.bootstrap_roles();
    }

    /// Stops the server at once (`immediate`: as a crash would), keeping its data.
    pub fn stop(&self) {
        let _ = self
            .pg_cmd("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn init(name: &str) -> Cluster {
        let bin = pg_bindir();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("geogate-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown {} to postgres failed", dir.display());
        }
        let c = Cluster {
            name: name.to_string(),
            dir,
            port: super::free_port(),
            bin,
            _watchdog: None,
        };
        let out = c
            .pg_cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&c.dir)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.append_conf(
            "fsync = off\nfull_page_writes = off\n\
             max_connections = 300\nshared_buffers = 32MB\nlog_min_messages = warning\n",
        );
        std::fs::write(
            c.dir.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all trust_user 127.0.0.1/32 trust\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all clear_user 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        c
    }

    fn bootstrap_roles(&self) {
        // Idempotent: start() runs it again after a restart.
        self.psql(
            "postgres",
            &format!(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'geogate') THEN
                     SET password_encryption = 'scram-sha-256';
                     CREATE ROLE geogate LOGIN SUPERUSER PASSWORD '{PASSWORD}';
                     SET password_encryption = 'md5';
                     CREATE ROLE md5_user LOGIN PASSWORD '{PASSWORD}';
                     SET password_encryption = 'scram-sha-256';
                     CREATE ROLE clear_user LOGIN PASSWORD '{PASSWORD}';
                     CREATE ROLE trust_user LOGIN;
                   END IF;
                 END $$"
            ),
        );
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster {} not ready in 60s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A shell that blocks on its stdin; when this process exits the pipe
    /// closes and the shell stops and removes the cluster.
    fn spawn_watchdog(&self) -> Child {
        let stop = format!(
            "cat >/dev/null; {} stop -m immediate -D '{}' >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.dir.display(),
            self.dir.display()
        );
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &stop]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &stop]);
            c
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog")
    }

    fn pg_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut w) = self._watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, lines: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    writeln!(f, "{lines}").expect("append");
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// The newest `/usr/lib/postgresql/<v>/bin`, or the directory of `pg_ctl` on PATH.
pub fn pg_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .expect("sh");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.parent()
        .map(Path::to_path_buf)
        .filter(|d| d.join("initdb").exists())
        .expect("PostgreSQL server binaries not found: apt-get install postgresql")
}

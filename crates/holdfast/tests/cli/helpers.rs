//! Test helpers: a throwaway repository, and throwaway databases on the machine's real
//! PostgreSQL, MariaDB and Redis servers (started by `scripts/services`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test run, usable as a database name.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const PASSWORD: &str = "correct horse battery staple";

/// A temporary directory with a repository location inside (not yet initialised).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: String,
    pub extra_env: Vec<(String, String)>,
    /// How the stock restic names this repository, when not as Holdfast does, and the extra
    /// arguments it needs (e.g. `-o sftp.command=...`).
    pub restic_repo: Option<String>,
    pub restic_args: Vec<String>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo").display().to_string();
        Self {
            dir,
            repo,
            extra_env: Vec::new(),
            restic_repo: None,
            restic_args: Vec::new(),
        }
    }

    pub fn with_repo(repo: String) -> Self {
        Self {
            repo,
            ..Self::new()
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.args(args)
            .arg("--repo")
            .arg(&self.repo)
            .env("HOLDFAST_REPO_PASSWORD", PASSWORD)
            .env_remove("HOLDFAST_REPO")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs holdfast and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "holdfast {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs holdfast expecting failure with the given exit code; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "holdfast {args:?}: expected exit {code}; stdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// Backs up and returns the new snapshot's full id.
    pub fn backup(&self, source: &str, extra: &[&str]) -> String {
        let mut args = vec!["backup", source, "--json"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["snapshot"]["id"].as_str().unwrap().to_string()
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["snapshots", "--json"])).unwrap()
    }

    /// The stock restic binary on this repository.
    pub fn restic(&self, args: &[&str]) -> Output {
        let out = Command::new("restic")
            .args(["--no-cache", "-r", &self.restic_repo()])
            .args(&self.restic_args)
            .args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("restic is installed by scripts/services");
        assert!(
            out.status.success(),
            "restic {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn restic_repo(&self) -> String {
        if let Some(r) = &self.restic_repo {
            return r.clone();
        }
        match self.repo.strip_prefix("s3://") {
            Some(rest) => {
                // s3://bucket/prefix?endpoint=http://host:port&... -> s3:http://host:port/bucket/prefix
                let (path, query) = rest.split_once('?').unwrap();
                let endpoint = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("endpoint="))
                    .unwrap();
                format!("s3:{endpoint}/{path}")
            }
            None => self.repo.clone(),
        }
    }

    /// `restic check --read-data` passes.
    pub fn restic_check(&self) {
        self.restic(&["check", "--read-data"]);
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command with `input` on stdin; asserts success.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh database on the local PostgreSQL, dropped at the end of the test.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn new() -> Self {
        let name = unique("hf_pg");
        Self::psql_on("postgres", &format!("CREATE DATABASE {name}"));
        Self { name }
    }

    /// A name for a database the test expects Holdfast to create.
    pub fn not_created() -> Self {
        Self {
            name: unique("hf_pg"),
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn psql_cmd(db: &str) -> Command {
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db]);
        c
    }

    fn psql_on(db: &str, sql: &str) -> String {
        pipe(&mut Self::psql_cmd(db), sql.as_bytes())
    }

    pub fn psql(&self, sql: &str) -> String {
        Self::psql_on(&self.name, sql)
    }

    /// `pgbench -i` data at the given scale (100,000 accounts per unit).
    pub fn pgbench(&self, scale: u32) {
        let pgbench = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("bin/pgbench"))
            .find(|p| p.is_file())
            .expect("pgbench from the PostgreSQL server package");
        let out = Command::new(pgbench)
            .args([
                "-i",
                "-q",
                "-s",
                &scale.to_string(),
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg(&self.name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A checksum of every table's rows (and the row count), by qualified table name, plus
    /// every sequence's value and the large objects' content.
    pub fn checksums(&self) -> BTreeMap<String, String> {
        let tables = self.psql(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for t in tables.lines().filter(|l| !l.is_empty()) {
            let sum = self.psql(&format!(
                "SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM {t} x"
            ));
            out.insert(t.to_string(), sum.trim().to_string());
        }
        let seqs = self
            .psql("SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1");
        for s in seqs.lines().filter(|l| !l.is_empty()) {
            let v = self.psql(&format!("SELECT last_value || ':' || is_called FROM {s}"));
            out.insert(format!("sequence {s}"), v.trim().to_string());
        }
        let lo = self.psql(
            "SELECT coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), '') FROM pg_largeobject_metadata",
        );
        out.insert("large objects".into(), lo.trim().to_string());
        out
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// A fresh database on the local MariaDB, dropped at the end of the test.
pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub fn new() -> Self {
        let db = Self::not_created();
        Self::sql_on(None, &format!("CREATE DATABASE {}", db.name));
        db
    }

    pub fn not_created() -> Self {
        Self {
            name: unique("hf_my"),
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    fn sql_on(db: Option<&str>, sql: &str) -> String {
        let mut c = Command::new("mariadb");
        c.args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "--protocol=TCP",
            "-N",
            "-B",
        ])
        .arg("--default-character-set=utf8mb4");
        if let Some(db) = db {
            c.arg(db);
        }
        pipe(&mut c, sql.as_bytes())
    }

    pub fn sql(&self, sql: &str) -> String {
        Self::sql_on(Some(&self.name), sql)
    }

    /// Checksums of every table (`CHECKSUM TABLE` plus row counts), and the routines and
    /// triggers by name and body.
    pub fn checksums(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let tables = self.sql("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'");
        for line in tables.lines() {
            let t = line.split('\t').next().unwrap();
            let count = self.sql(&format!("SELECT COUNT(*) FROM `{t}`"));
            let sum = self.sql(&format!("CHECKSUM TABLE `{t}` EXTENDED"));
            let sum = sum.split('\t').nth(1).unwrap_or("").trim().to_string();
            out.insert(t.to_string(), format!("{}:{sum}", count.trim()));
        }
        let routines = self.sql(&format!(
            "SELECT ROUTINE_NAME, MD5(ROUTINE_DEFINITION) FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = '{}' ORDER BY 1",
            self.name
        ));
        out.insert("routines".into(), routines);
        let triggers = self.sql(&format!(
            "SELECT TRIGGER_NAME, MD5(ACTION_STATEMENT) FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = '{}' ORDER BY 1",
            self.name
        ));
        out.insert("triggers".into(), triggers);
        out
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "--protocol=TCP", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
    }
}

/// Lists files under `root` with their content hash, mode and (for links) target.
pub fn tree_listing(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {}", m.mode(), m.mtime())
            } else {
                let data = std::fs::read(&p).unwrap();
                format!("file {:o} {} {}", m.mode(), m.mtime(), md5ish(&data))
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// A cheap content fingerprint (length + FNV-1a); enough to tell files apart in tests.
pub fn md5ish(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{}:{h:016x}", data.len())
}

/// A PostgreSQL cluster of its own (initdb in a temp directory, on a free port), for tests that
/// need a whole server: an all-databases backup, a restore into an empty server.
pub struct TempCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl TempCluster {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .max()
            .expect("PostgreSQL server binaries");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        sh(&format!(
            "chown postgres {0} && chmod 700 {0}",
            dir.path().display()
        ));
        let as_postgres = |cmd: String| sh(&format!("su postgres -s /bin/sh -c \"{cmd}\""));
        as_postgres(format!(
            "{}/initdb -D {} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null",
            bin.display(),
            data.display()
        ));
        // -w waits until the server accepts connections.
        as_postgres(format!(
            "{}/pg_ctl -D {} -w -l {}/log -o '-p {port} -k {} -c listen_addresses=127.0.0.1' start >/dev/null",
            bin.display(),
            data.display(),
            dir.path().display(),
            dir.path().display()
        ));
        Self { dir, port, bin }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &self.port.to_string(), "-d", db]);
        pipe(&mut c, sql.as_bytes())
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!(
                "{}/pg_ctl -D {}/data -m immediate stop",
                self.bin.display(),
                self.dir.path().display()
            ))
            .output();
    }
}

/// A `cmd:` source's command that dumps `payload`, then waits for `go` to exist before its
/// last line (`tail`): a backup held mid-stream, its first packs uploaded, for as long as a
/// test needs.
pub fn held_dump(payload: &Path, go: &Path) -> String {
    format!(
        "cat {p}; while [ ! -e {g} ]; do sleep 0.05; done; echo tail",
        p = payload.display(),
        g = go.display()
    )
}

/// Deterministic pseudo-random bytes (xorshift): incompressible, never deduplicated.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A redis-server of the test's own on a free loopback port (with `extra` arguments, e.g.
/// `--requirepass`), stopped at the end of the test.
pub struct TempRedis {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl TempRedis {
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/services");
        // Up when it answers at all (NOAUTH counts: it is listening).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| {
                let out = String::from_utf8_lossy(&o.stdout);
                out.contains("PONG") || out.contains("NOAUTH")
            })
        {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {port} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to a minute for `child` to exit by itself; `why` says what it is (shown when it
/// does not, with whatever it logged).
pub fn wait_exit(child: &mut Child, why: impl Fn() -> String) -> ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

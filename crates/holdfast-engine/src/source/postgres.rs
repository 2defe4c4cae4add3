//! PostgreSQL: `pg_dump` in plain SQL, by default one file per table, all from one exported
//! snapshot so the files together are one consistent dump.
//!
//! Snapshot layout (inside the database's directory), in restore order:
//! `0-pre-data.sql`, `1-data/<schema>.<table>.sql` (one per table), `2-sequences.sql` (sequences
//! no table owns), `3-large-objects.sql`, `9-post-data.sql`. Concatenated in name order they
//! are a plain SQL dump that `psql` restores.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Mutex;

use holdfast_core::SourceKind;
use holdfast_core::location::DbAddr;

use super::{
    BackupOptions, BackupSet, RestoreOptions, SourceDriver, Stream, base_meta, decode_file_name,
    feed, file_name, overwrite_names, target_not_empty,
};
use crate::error::{Error, Result};
use crate::process::{Cmd, Failure, describe, tool_version, which};
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct Postgres {
    addr: DbAddr,
}

/// Query parameters that map to libpq environment variables.
const PARAM_ENV: [(&str, &str); 7] = [
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
];

impl Postgres {
    pub fn new(addr: DbAddr) -> Self {
        Self { addr }
    }

    fn name(&self) -> String {
        holdfast_core::SourceSpec::Postgres(self.addr.clone()).to_string()
    }

    fn host_port(&self) -> String {
        if self.addr.host.is_empty() {
            return format!("the local socket (port {})", self.addr.port.unwrap_or(5432));
        }
        format!("{}:{}", self.addr.host, self.addr.port.unwrap_or(5432))
    }

    /// A libpq tool with the connection in its environment (never on its command line).
    fn tool(&self, program: PathBuf, step: &str, database: &str) -> Cmd {
        // libpq's own settings (PGSSLMODE, PGPASSFILE, ...) pass; the connection is ours.
        let mut c = Cmd::new(program, step).inherit("PG");
        if !self.addr.host.is_empty() {
            c = c.env("PGHOST", &self.addr.host);
        }
        if let Some(port) = self.addr.port {
            c = c.env("PGPORT", port.to_string());
        }
        c = c
            .env("PGDATABASE", database)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "holdfast")
            .secret_env("PGPASSWORD", self.addr.password.as_ref());
        if let Some(u) = &self.addr.user {
            c = c.env("PGUSER", u);
        }
        for (k, v) in &self.addr.params {
            if let Some((_, env)) = PARAM_ENV.iter().find(|(p, _)| p == k) {
                c = c.env(env, v);
            }
        }
        c
    }

    fn psql(&self, bins: &Bins, database: &str) -> Cmd {
        self.tool(bins.psql.clone(), "psql", database).args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
        ])
    }

    fn database(&self) -> Result<&str> {
        self.addr.database.as_deref().ok_or_else(|| {
            Error::Input(holdfast_core::InputError::new(
                format!("source `{}`", self.name()),
                "no database in the URL; write postgres://user@host:port/DATABASE \
                 (or pass --all-databases to back up every database)",
            ))
        })
    }

    /// Runs a query; failures are classified into unreachable / login / missing database.
    fn query(&self, bins: &Bins, database: &str, sql: &str) -> Result<String> {
        self.psql(bins, database)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|f| self.classify(f, database))
    }

    fn classify(&self, f: Failure, database: &str) -> Error {
        let name = self.name();
        let e = &f.stderr;
        if f.not_found {
            return Error::ToolMissing {
                tool: "psql".into(),
                hint: "install the PostgreSQL client (Debian: postgresql-client)".into(),
            };
        }
        if e.contains("password authentication failed")
            || e.contains("no password supplied")
            || (e.contains("role ") && e.contains("does not exist"))
            || e.contains("authentication failed")
            || e.contains("pg_hba.conf")
        {
            Error::SourceAuth {
                source_name: name,
                detail: last_line(e),
            }
        } else if e.contains("database \"") && e.contains("does not exist") {
            Error::SourceMissing {
                source_name: name,
                detail: format!(
                    "database \"{database}\" does not exist on {}; create it, check the name, \
                     or (for a restore) let Holdfast create it (API: `create: true`; UI: Create; CLI: --create)",
                    self.host_port()
                ),
            }
        } else if e.contains("could not connect")
            || e.contains("Connection refused")
            || e.contains("could not translate host name")
            || e.contains("timeout expired")
            || e.contains("No route to host")
            || e.contains("server closed the connection")
        {
            Error::SourceUnreachable {
                source_name: name,
                detail: format!(
                    "{}; is PostgreSQL running and listening on {}?",
                    last_line(e),
                    self.host_port()
                ),
            }
        } else {
            Error::DumpFailed {
                source_name: name,
                step: "psql".into(),
                status: f.status,
                stderr: f.stderr,
            }
        }
    }

    /// Server version as (`15.19`, major 15).
    fn server_version(&self, database: &str) -> Result<(String, u32)> {
        // Any psql can ask; the one matching the server is picked afterwards.
        let any = Bins::any()?;
        let out = self.query(&any, database, "SHOW server_version_num")?;
        let num: u32 = out.trim().parse().map_err(|_| {
            Error::Other(format!(
                "{}: unexpected server_version_num `{out}`",
                self.name()
            ))
        })?;
        let major = if num >= 100_000 {
            num / 10_000
        } else {
            num / 100
        };
        let minor = if num >= 100_000 {
            num % 10_000
        } else {
            num % 100
        };
        Ok((format!("{major}.{minor}"), major))
    }

    fn dump_set(
        &self,
        bins: &Bins,
        database: &str,
        opts: &BackupOptions,
    ) -> Result<(Vec<Stream>, Option<SnapshotHolder>)> {
        let dump = |step: &str| {
            let c = self.tool(bins.pg_dump.clone(), step, database).args([
                "-w",
                "--format=plain",
                "--no-sync",
            ]);
            match (&opts.restrict_key, bins.restrict_key) {
                (Some(k), true) => c.arg(format!("--restrict-key={k}")),
                _ => c,
            }
        };
        if opts.single_stream {
            let cmd = dump(&format!("pg_dump of database {database}"));
            return Ok((
                vec![Stream {
                    name: format!("{}.sql", file_name(database)),
                    cmd,
                }],
                None,
            ));
        }
        let holder = SnapshotHolder::start(self.psql(bins, database))
            .map_err(|f| self.classify(f, database))?;
        let snapshot = holder.snapshot.clone();
        let rows = holder
            .query(CATALOG_QUERY)
            .map_err(|f| self.classify(f, database))?;
        let mut streams = vec![Stream {
            name: "0-pre-data.sql".into(),
            cmd: dump("pg_dump of the schema (pre-data)")
                .arg(format!("--snapshot={snapshot}"))
                .arg("--section=pre-data"),
        }];
        let mut free_sequences = Vec::new();
        let mut large_objects = false;
        let mut tables = Vec::new();
        for row in rows.lines() {
            let mut parts = row.split(' ');
            let kind = parts.next().unwrap_or_default();
            let schema = parts.next().map(unhex).unwrap_or_default();
            let name = parts.next().map(unhex).unwrap_or_default();
            let size: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            match kind {
                "r" => tables.push((
                    size,
                    Stream {
                        // Dots inside names are encoded, so `a.b`.`c` and `a`.`b.c` stay apart.
                        name: format!("1-data/{}.{}.sql", name_part(&schema), name_part(&name)),
                        cmd: dump(&format!("pg_dump of table {schema}.{name}"))
                            .arg(format!("--snapshot={snapshot}"))
                            .arg("--section=data")
                            .arg(format!("--table={}", pattern(&schema, &name))),
                    },
                )),
                "S" => free_sequences.push(pattern(&schema, &name)),
                "L" => large_objects = true,
                _ => {}
            }
        }
        // Largest tables first: streams run a few at a time, and the largest is the longest.
        tables.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        streams.extend(tables.into_iter().map(|(_, s)| s));
        if !free_sequences.is_empty() {
            let mut cmd = dump("pg_dump of sequences")
                .arg(format!("--snapshot={snapshot}"))
                .arg("--section=data");
            for s in &free_sequences {
                cmd = cmd.arg(format!("--table={s}"));
            }
            streams.push(Stream {
                name: "2-sequences.sql".into(),
                cmd,
            });
        }
        if large_objects {
            streams.push(Stream {
                name: "3-large-objects.sql".into(),
                cmd: dump("pg_dump of large objects")
                    .arg(format!("--snapshot={snapshot}"))
                    .args(["--section=data", "--blobs", "--exclude-schema=*"]),
            });
        }
        streams.push(Stream {
            name: "9-post-data.sql".into(),
            cmd: dump("pg_dump of indexes and constraints (post-data)")
                .arg(format!("--snapshot={snapshot}"))
                .arg("--section=post-data"),
        });
        Ok((streams, Some(holder)))
    }
}

/// Tables (`r`), sequences no table owns (`S`) and whether large objects exist (`L`), names hex
/// encoded so no character in them can break the parsing, then each table's size in pages as
/// the statistics know it (with its TOAST table; `pg_table_size` would wait on table locks).
const CATALOG_QUERY: &str = "\
SELECT c.relkind::text || ' ' || encode(convert_to(n.nspname, 'UTF8'), 'hex') || ' ' \
       || encode(convert_to(c.relname, 'UTF8'), 'hex') || ' ' \
       || (greatest(c.relpages, 0)::bigint + coalesce(greatest(t.relpages, 0), 0))::text \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
WHERE c.relkind IN ('r', 'S') AND c.relpersistence <> 't' \
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
  AND (NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                   AND d.objid = c.oid AND d.deptype = 'e') \
       OR c.oid IN (SELECT unnest(extconfig) FROM pg_extension)) \
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass)) \
UNION ALL SELECT 'L' WHERE EXISTS (SELECT 1 FROM pg_largeobject_metadata) \
ORDER BY 1";

/// A pg_dump `--table` pattern matching exactly this table: inside double quotes every
/// character is literal, and `"` is doubled.
fn pattern(schema: &str, name: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        name.replace('"', "\"\"")
    )
}

/// [`file_name`], with `.` encoded too: for the parts of `schema.table.sql`.
fn name_part(s: &str) -> String {
    file_name(s).replace('.', "%2E")
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// An open `REPEATABLE READ` transaction whose snapshot was exported for the `pg_dump`s to share.
/// Dropping it commits and disconnects.
struct SnapshotHolder {
    inner: Mutex<HolderInner>,
    snapshot: String,
}

struct HolderInner {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

const END_MARK: &str = "holdfast-end-of-result";

impl SnapshotHolder {
    fn start(psql: Cmd) -> Result<Self, Failure> {
        let mut child = psql
            .to_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure {
                status: format!("could not start psql: {e}"),
                stderr: String::new(),
                not_found: e.kind() == std::io::ErrorKind::NotFound,
            })?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut h = Self {
            inner: Mutex::new(HolderInner {
                child,
                stdin,
                stdout,
            }),
            snapshot: String::new(),
        };
        let out = h.query(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL idle_in_transaction_session_timeout = 0; SELECT pg_export_snapshot();",
        )?;
        h.snapshot = out.trim().to_string();
        Ok(h)
    }

    /// Runs SQL inside the transaction and returns its output.
    fn query(&self, sql: &str) -> Result<String, Failure> {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        let stdin = inner.stdin.as_mut().expect("open until drop");
        let sent = writeln!(stdin, "{sql};\nSELECT '{END_MARK}';").and_then(|()| stdin.flush());
        let mut out = String::new();
        let ok = sent.is_ok()
            && loop {
                let mut line = String::new();
                match inner.stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break false,
                    Ok(_) if line.trim_end() == END_MARK => break true,
                    Ok(_) => out.push_str(&line),
                }
            };
        if ok {
            return Ok(out);
        }
        // psql stopped (ON_ERROR_STOP): its stderr says why.
        drop(inner.stdin.take());
        let status = inner.child.wait().map(describe).unwrap_or_default();
        let mut stderr = String::new();
        if let Some(mut e) = inner.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        Err(Failure {
            status,
            stderr,
            not_found: false,
        })
    }
}

impl Drop for SnapshotHolder {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap();
        if let Some(mut stdin) = inner.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        let _ = inner.child.wait();
    }
}

/// The client tools to use for one server.
struct Bins {
    psql: PathBuf,
    pg_dump: PathBuf,
    pg_dumpall: PathBuf,
    version: Option<String>,
    /// pg_dump knows `--restrict-key` (15.14, 16.10, 17.6 and later).
    restrict_key: bool,
}

impl Bins {
    /// Whatever psql is around, to ask the server its version.
    fn any() -> Result<Self> {
        let dirs = pg_bin_dirs();
        let psql = dirs
            .iter()
            .rev()
            .map(|(_, d)| d.join("psql"))
            .find(|p| p.is_file())
            .or_else(|| which("psql"))
            .ok_or_else(|| Error::ToolMissing {
                tool: "psql".into(),
                hint: "install the PostgreSQL client (Debian: postgresql-client)".into(),
            })?;
        Ok(Self {
            pg_dump: psql.with_file_name("pg_dump"),
            pg_dumpall: psql.with_file_name("pg_dumpall"),
            psql,
            version: None,
            restrict_key: false,
        })
    }

    /// The tools of the server's major version if installed, else the oldest newer one; a
    /// client older than the server is refused (its dump could be wrong or fail midway).
    fn for_server(major: u32) -> Result<Self> {
        let dirs = pg_bin_dirs();
        let chosen = dirs
            .iter()
            .filter(|(v, d)| *v >= major && d.join("pg_dump").is_file())
            .min_by_key(|(v, _)| *v)
            .map(|(_, d)| d.clone());
        let dir = match chosen {
            Some(d) => d,
            None => {
                let on_path = which("pg_dump").ok_or_else(|| Error::ToolMissing {
                    tool: "pg_dump".into(),
                    hint: format!(
                        "install the PostgreSQL {major} client tools (Debian: postgresql-client-{major})"
                    ),
                })?;
                let v = tool_version(&on_path).unwrap_or_default();
                let found = v
                    .split_whitespace()
                    .last()
                    .and_then(|s| s.split('.').next())
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(0);
                if found < major {
                    return Err(Error::ToolMissing {
                        tool: format!("pg_dump {major} or newer"),
                        hint: format!(
                            "the installed `{v}` is older than the server ({major}); install \
                             postgresql-client-{major}"
                        ),
                    });
                }
                on_path.parent().map(PathBuf::from).unwrap_or_default()
            }
        };
        let pg_dump = dir.join("pg_dump");
        let restrict_key = Cmd::new(&pg_dump, "pg_dump --help")
            .arg("--help")
            .output()
            .is_ok_and(|h| h.contains("--restrict-key"));
        Ok(Self {
            restrict_key,
            version: tool_version(&pg_dump),
            psql: dir.join("psql"),
            pg_dumpall: dir.join("pg_dumpall"),
            pg_dump,
        })
    }
}

/// Installed versioned client directories (Debian and RHEL layouts), sorted by version.
pub(crate) fn pg_bin_dirs() -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for (root, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok())
            {
                out.push((v, e.path().join(suffix)));
            }
        }
    }
    out.sort();
    out
}

impl SourceDriver for Postgres {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        let maintenance = self
            .addr
            .database
            .clone()
            .unwrap_or_else(|| "postgres".into());
        let database = if opts.all_databases {
            maintenance.as_str()
        } else {
            self.database()?
        };
        let (server_version, major) = self.server_version(database)?;
        let bins = Bins::for_server(major)?;
        let mut meta = base_meta(
            SourceKind::Postgres,
            if opts.single_stream {
                "single"
            } else {
                "per-table"
            },
            opts,
        );
        meta.db_host = Some(self.host_port());
        meta.server_version = Some(server_version);
        meta.tool = bins.version.clone();
        let (dir, streams, keepalive): (String, Vec<Stream>, Option<Box<dyn Send>>) =
            if opts.all_databases {
                meta.database = Some("*".into());
                let list = self.query(
                    &bins,
                    database,
                    "SELECT encode(convert_to(datname, 'UTF8'), 'hex') FROM pg_database \
                 WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                )?;
                let mut streams = vec![Stream {
                    name: "0-globals.sql".into(),
                    cmd: self
                        .tool(
                            bins.pg_dumpall.clone(),
                            "pg_dumpall --globals-only",
                            database,
                        )
                        .args(["-w", "--globals-only"]),
                }];
                let mut holders = Vec::new();
                for db in list.lines().map(unhex) {
                    let (s, h) = self.dump_set(&bins, &db, opts)?;
                    streams.extend(s.into_iter().map(|mut s| {
                        s.name = format!("{}/{}", file_name(&db), s.name);
                        s
                    }));
                    holders.extend(h);
                }
                streams.sort_by(|a, b| Path::new(&a.name).cmp(Path::new(&b.name)));
                ("all-databases".into(), streams, Some(Box::new(holders)))
            } else {
                meta.database = Some(database.to_string());
                let (s, h) = self.dump_set(&bins, database, opts)?;
                (
                    file_name(database),
                    s,
                    h.map(|h| Box::new(h) as Box<dyn Send>),
                )
            };
        Ok(BackupSet {
            source_name: self.name(),
            label: format!(
                "postgres:{}/{}",
                self.host_port(),
                meta.database.as_deref().unwrap_or("")
            ),
            dir,
            hostname: None,
            streams,
            meta,
            keepalive,
        })
    }

    fn restore(
        &self,
        snap: &SnapshotInfo,
        files: &SnapshotReader,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let all = snap.meta.as_ref().and_then(|m| m.database.as_deref()) == Some("*");
        let target_db = if all {
            self.addr
                .database
                .clone()
                .unwrap_or_else(|| "postgres".into())
        } else {
            self.database()?.to_string()
        };
        let (_, major) = match self.server_version(&target_db) {
            Err(Error::SourceMissing { .. }) if opts.create && !all => {
                self.create_database(&target_db)?;
                self.server_version(&target_db)?
            }
            other => other?,
        };
        let bins = Bins::for_server(major)?;
        let names: Vec<String> = files.files().map(|(p, _)| p.to_string()).collect();
        let target = self.name();
        if all {
            // Globals first, then each database into a database of the same name.
            let mut dbs: Vec<String> = Vec::new();
            for n in &names {
                if n.ends_with("/0-globals.sql") {
                    // pg_dumpall's globals create every role, including the one we connect as:
                    // "already exists" errors are expected there, so no ON_ERROR_STOP.
                    let psql = self
                        .tool(bins.psql.clone(), "psql (globals)", &target_db)
                        .args(["-X", "-q", "-w"]);
                    feed(files, n, &psql, &target)?;
                } else if let Some(db) = n.split('/').nth(1)
                    && !dbs.iter().any(|d| d == db)
                {
                    dbs.push(db.to_string());
                }
            }
            for db in dbs {
                let name = decode_file_name(&db);
                match self.query(&bins, &name, "SELECT 1") {
                    Err(Error::SourceMissing { .. }) => self.create_database(&name)?,
                    other => {
                        other?;
                    }
                }
                let prefix = format!("{}/{db}/", names[0].split('/').next().unwrap_or(""));
                let mine: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
                self.restore_db(&bins, &name, files, &mine, opts)?;
            }
            return Ok(());
        }
        let refs: Vec<&String> = names.iter().collect();
        if self.user_relations(&bins, &target_db)? == 0 {
            return self.restore_db(&bins, &target_db, files, &refs, opts);
        }
        if !opts.force {
            return Err(target_not_empty(self.name()));
        }
        self.overwrite(&bins, &target_db, files, &refs, opts)
    }
}

/// Records a restore phase's seconds when it ends (also when it failed).
struct PhaseTimer<'a> {
    phases: Option<&'a super::Phases>,
    name: &'static str,
    started: std::time::Instant,
}

impl Drop for PhaseTimer<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.phases {
            let secs = self.started.elapsed().as_secs_f64();
            p.lock().unwrap().push((self.name.to_string(), secs));
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Postgres {
    /// Tables, views, sequences and the like outside the system schemas.
    fn user_relations(&self, bins: &Bins, db: &str) -> Result<u64> {
        let out = self.query(
            bins,
            db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
        )?;
        Ok(out.trim().parse().unwrap_or(1))
    }

    /// Overwrites `db` safely: the restore goes into a new database under a temporary name;
    /// only when it succeeded are connections to `db` ended and the two swapped by renaming
    /// (the old one is kept under a side name until the swap is done, then dropped). A failed
    /// restore drops the temporary database and leaves `db` as it was.
    fn overwrite(
        &self,
        bins: &Bins,
        db: &str,
        files: &SnapshotReader,
        names: &[&String],
        opts: &RestoreOptions,
    ) -> Result<()> {
        let (fresh, old) = overwrite_names(db, 63);
        let admin = |sql: &str| self.query(bins, "postgres", sql).map(|_| ());
        self.create_database(&fresh)?;
        if let Err(e) = self.restore_db(bins, &fresh, files, names, opts) {
            let _ = admin(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&fresh)));
            return Err(e);
        }
        // The restored database belongs to the old one's owner where we may say so.
        let owner = self.query(
            bins,
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}",
                quote_literal(db)
            ),
        )?;
        if !owner.trim().is_empty() {
            let _ = admin(&format!(
                "ALTER DATABASE {} OWNER TO {}",
                quote_ident(&fresh),
                quote_ident(owner.trim())
            ));
        }
        // No new connections to the old one, the open ones ended, then the swap.
        let swap = || -> Result<()> {
            admin(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                quote_ident(db)
            ))?;
            admin(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_backend_pid()",
                quote_literal(db)
            ))?;
            admin(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(db),
                quote_ident(&old)
            ))?;
            if let Err(e) = admin(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&fresh),
                quote_ident(db)
            )) {
                let _ = admin(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(&old),
                    quote_ident(db)
                ));
                return Err(e);
            }
            Ok(())
        };
        if let Err(e) = swap() {
            let _ = admin(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                quote_ident(db)
            ));
            let _ = admin(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&fresh)));
            return Err(e);
        }
        // The swap is done: the restore succeeded. An old copy that cannot be dropped is
        // left under its side name, and said so.
        if let Err(e) = admin(&format!("DROP DATABASE {}", quote_ident(&old))) {
            tracing::warn!("the replaced database is kept as {old}: {e}");
        }
        Ok(())
    }

    fn create_database(&self, db: &str) -> Result<()> {
        let bins = Bins::any()?;
        let sql = format!("CREATE DATABASE \"{}\"", db.replace('"', "\"\""));
        self.query(&bins, "postgres", &sql).map(|_| ())
    }

    /// Restores one database's files: schema, then tables `jobs` at a time, then indexes and
    /// constraints. A single-stream snapshot is one file, loaded in one transaction. Each
    /// phase's seconds go to `opts.phases`.
    fn restore_db(
        &self,
        bins: &Bins,
        db: &str,
        files: &SnapshotReader,
        names: &[&String],
        opts: &RestoreOptions,
    ) -> Result<()> {
        let jobs = opts.jobs;
        let target = format!(
            "{}",
            holdfast_core::SourceSpec::Postgres(DbAddr {
                database: Some(db.to_string()),
                ..self.addr.clone()
            })
        );
        let psql = |step: &str| {
            self.psql(bins, db)
                .with_step(step.to_string())
                .arg("--single-transaction")
        };
        let phase = |n: &str| {
            let base = n.rsplit_once('/').map_or(n, |(_, b)| b);
            if n.contains("/1-data/") || base.starts_with("2-") || base.starts_with("3-") {
                1
            } else if base.starts_with("9-") {
                2
            } else {
                0
            }
        };
        for p in 0..3 {
            let batch: Vec<&String> = names.iter().copied().filter(|n| phase(n) == p).collect();
            if batch.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            let _timed = PhaseTimer {
                phases: opts.phases.as_ref(),
                name: if names.len() == 1 {
                    "the whole dump (one stream)"
                } else {
                    ["schema", "data", "indexes and constraints"][p]
                },
                started,
            };
            if p == 1 && jobs > 1 {
                let queue = Mutex::new(batch.into_iter());
                let first_err: Mutex<Option<Error>> = Mutex::new(None);
                std::thread::scope(|s| {
                    for _ in 0..jobs {
                        s.spawn(|| {
                            loop {
                                if first_err.lock().unwrap().is_some() {
                                    break;
                                }
                                let Some(n) = queue.lock().unwrap().next() else {
                                    break;
                                };
                                let step =
                                    format!("psql loading {}", n.rsplit('/').next().unwrap_or(n));
                                if let Err(e) = feed(files, n, &psql(&step), &target) {
                                    first_err.lock().unwrap().get_or_insert(e);
                                }
                            }
                        });
                    }
                });
                if let Some(e) = first_err.into_inner().unwrap() {
                    return Err(e);
                }
            } else {
                for n in batch {
                    let step = format!("psql loading {}", n.rsplit('/').next().unwrap_or(n));
                    feed(files, n, &psql(&step), &target)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_goes_to_the_environment_never_the_command_line() {
        let spec =
            holdfast_core::SourceSpec::parse("postgres://app:Sup3r-secret@db:5433/shop", None)
                .unwrap();
        let holdfast_core::SourceSpec::Postgres(addr) = spec else {
            panic!()
        };
        let pg = Postgres::new(addr);
        let cmd = pg.tool(PathBuf::from("pg_dump"), "pg_dump", "shop");
        let shown = format!("{cmd:?} {:?}", cmd.args);
        assert!(!shown.contains("Sup3r-secret"), "{shown}");
        let env: Vec<(String, String)> = cmd
            .to_command()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert!(env.contains(&("PGPASSWORD".into(), "Sup3r-secret".into())));
        assert!(env.contains(&("PGPORT".into(), "5433".into())));
    }

    #[test]
    fn table_patterns_match_exactly_one_table() {
        assert_eq!(pattern("we/ird", "ta\"ble"), "\"we/ird\".\"ta\"\"ble\"");
        assert_eq!(pattern("public", "a*b?"), "\"public\".\"a*b?\"");
        assert_eq!(unhex("5765"), "We");
    }
}

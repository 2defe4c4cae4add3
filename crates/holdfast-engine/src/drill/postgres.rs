//! A PostgreSQL drill: `initdb` of a private cluster with the binaries of the restore point's
//! server major version (or the nearest newer one installed), started on a Unix socket only;
//! the roles the dump names created; the restore point restored by Holdfast's own restore (so
//! the drill measures what a real recovery costs); then rows per table, schema objects (from a
//! schema-only `pg_dump` of the copy, counted the way the backup's were) and the user's SQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use holdfast_core::SourceSpec;
use holdfast_core::drill::CheckKind;
use holdfast_core::location::DbAddr;

use super::Drill;
use super::scratch::{self, Scratch};
use crate::error::{Error, Result};
use crate::process::Cmd;

const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";

pub(super) fn drill(d: &mut Drill) {
    // Data, indexes and the server's own files: about twice the plain dump.
    if !d.room_for(2) {
        return;
    }
    let meta = d.snap.meta.clone().unwrap_or_default();
    let major = meta
        .server_version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    let all = meta.database.as_deref() == Some("*");
    let source_db = meta.database.clone().unwrap_or_else(|| "drill".into());
    let started = Instant::now();
    let target = match &d.opts.into {
        Some(SourceSpec::Postgres(addr)) if all => {
            Err(Error::Input(holdfast_core::InputError::new(
                format!("drill target postgres://{}", addr.host),
                "a restore point of every database (with its roles) is drilled in a throwaway \
             cluster only; leave the target out",
            )))
        }
        Some(SourceSpec::Postgres(addr)) => named(addr, &meta, &source_db),
        _ => start(&d.opts.root, major),
    };
    let what = if d.opts.into.is_some() {
        "scratch PostgreSQL"
    } else {
        "throwaway PostgreSQL"
    };
    let server = match target {
        Ok(s) => s,
        Err(e) => {
            d.failed(CheckKind::Scratch, what, "it answers", e);
            return;
        }
    };
    d.timings.scratch_start_secs = started.elapsed().as_secs_f64();
    let database = match (&server.drop_after, all) {
        (Some(db), _) => db.clone(),
        (None, true) => SUPERUSER.to_string(),
        (None, false) => source_db,
    };
    d.scratch = match &server.scratch {
        Some(s) => format!(
            "a throwaway PostgreSQL {} in {} (Unix socket only), removed afterwards",
            server.major,
            s.dir.display()
        ),
        None => format!(
            "database {database} on the scratch PostgreSQL {} at {}:{}, dropped afterwards",
            server.major,
            server.conn.host,
            server.conn.port.unwrap_or(5432)
        ),
    };
    if server.major != 0 && server.major < major {
        d.notes.push(format!(
            "the restore point was made on PostgreSQL {major}; the copy runs {}, which may not \
             load everything a newer server dumps",
            server.major
        ));
    }
    d.check(
        CheckKind::Scratch,
        what,
        true,
        "it answers",
        format!(
            "PostgreSQL {} ready in {:.1} s",
            server.major, d.timings.scratch_start_secs
        ),
        "",
    );

    if let Some(m) = d.manifest {
        let roles = m.roles("");
        match server.create_roles(&roles) {
            Ok(made) if !made.is_empty() && server.scratch.is_none() => d.notes.push(format!(
                "roles created on the scratch server for the restore (they stay): {}",
                made.join(", ")
            )),
            Ok(_) => {}
            Err(e) => {
                d.failed(CheckKind::Restore, "roles", "the dump's roles exist", e);
                return;
            }
        }
    }
    let spec = SourceSpec::Postgres(server.addr(if all { None } else { Some(&database) }));
    let phases = crate::source::Phases::default();
    let opts = crate::RestoreOptions {
        create: true,
        jobs: d.opts.jobs.max(1),
        force: false,
        phases: Some(phases.clone()),
    };
    let (snap, reader) = (d.snap, d.reader);
    let restored = d.timed_restore(|| crate::source::restore(&spec, snap, reader, &opts));
    d.timings.phases = phases.lock().unwrap().clone();
    if restored.is_none() {
        return;
    }

    // Each database of the restore point, with the files it came from.
    let dbs: Vec<(String, String)> = if all {
        let mut v: Vec<(String, String)> = d
            .reader
            .files()
            .filter_map(|(p, _)| {
                let mut parts = p.split('/');
                let (top, db) = (parts.next()?, parts.next()?);
                parts.next()?;
                Some((crate::source::decode_file_name(db), format!("{top}/{db}/")))
            })
            .collect();
        v.dedup();
        v
    } else {
        vec![(database.clone(), String::new())]
    };
    if let Some(m) = d.manifest {
        for (db, prefix) in &dbs {
            let label = |name: &str| {
                if all {
                    format!("{db}: {name}")
                } else {
                    name.to_string()
                }
            };
            let expected = m.rows(prefix);
            // The backup's tables and the copy's: a table the backup did not count is
            // compared too (with none of its rows expected).
            let mut tables: std::collections::BTreeSet<String> = expected.keys().cloned().collect();
            match server.tables(db) {
                Ok(t) => tables.extend(t),
                Err(e) => d.failed(
                    CheckKind::Rows,
                    label("tables"),
                    "the copy's tables list",
                    e,
                ),
            }
            let tables: Vec<String> = tables.into_iter().collect();
            let counts: BTreeMap<String, std::result::Result<u64, String>> = server
                .count_rows(db, &tables)
                .into_iter()
                .map(|(t, c)| (label(&t), c))
                .collect();
            let expected_l = expected.into_iter().map(|(t, n)| (label(&t), n)).collect();
            d.compare(CheckKind::Rows, "rows", &expected_l, &counts);

            let want = m.objects(prefix);
            match server.objects(db) {
                Ok(got) => {
                    let got = got.into_iter().map(|(k, v)| (label(&k), Ok(v))).collect();
                    let want = want.into_iter().map(|(k, v)| (label(&k), v)).collect();
                    d.compare(CheckKind::Objects, "objects", &want, &got);
                }
                Err(e) => d.failed(CheckKind::Objects, label("schema"), "the schema dumps", e),
            }
        }
    }
    let check_db = dbs.first().map(|(db, _)| db.clone()).unwrap_or(database);
    d.sql_checks(|sql| {
        server
            .query(&check_db, sql)
            .map(|out| super::first_value(&out, '|'))
            .map_err(|e| e.to_string())
    });
}

/// The server a drill restores into: a throwaway cluster, or a named scratch server where
/// the drill makes a database of its own and drops it afterwards.
struct Server {
    /// The throwaway cluster's directory (`None` for a named server).
    scratch: Option<Scratch>,
    conn: DbAddr,
    /// The database to connect to for the drill's own statements.
    admin_db: String,
    major: u32,
    bin: PathBuf,
    /// On a named server: the drill's database, dropped when the drill ends.
    drop_after: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(db) = self.drop_after.take() {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&db));
            if let Err(e) = self.query(&self.admin_db.clone(), &sql) {
                tracing::warn!("the drill's database {db} could not be dropped: {e}");
            }
        }
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A named scratch server: refused when it is the source's own server and database.
fn named(target: &DbAddr, meta: &holdfast_core::SnapshotMeta, database: &str) -> Result<Server> {
    let host_port = format!("{}:{}", target.host, target.port.unwrap_or(5432));
    let admin_db = target.database.clone().unwrap_or_else(|| SUPERUSER.into());
    if super::is_own_source(&SourceSpec::Postgres(target.clone()), meta) {
        return Err(Error::Input(holdfast_core::InputError::new(
            format!("drill target postgres://{host_port}/{admin_db}"),
            "is the backup's own server and database; a drill never restores into its source: \
             name a scratch server (or leave it out for a throwaway one next to the agent)",
        )));
    }
    let any = crate::source::postgres::pg_bin_dirs()
        .into_iter()
        .rev()
        .find(|(_, d)| d.join("psql").is_file())
        .ok_or_else(|| Error::ToolMissing {
            tool: "psql".into(),
            hint: "install the PostgreSQL client (Debian: postgresql-client)".into(),
        })?;
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("{:x}", d.as_millis() % 0xff_ffff))
        .unwrap_or_default();
    let mut name = format!("{database}_drill_{tag}");
    while name.len() > 63 {
        name.remove(database.len().min(name.len()) - 1);
    }
    let mut s = Server {
        scratch: None,
        conn: target.clone(),
        admin_db,
        major: any.0,
        bin: any.1,
        drop_after: None,
    };
    // Reachable, with its version; the drill's database does not exist yet.
    let v = s.query(&s.admin_db, "SHOW server_version_num")?;
    let major = v.trim().parse::<u32>().map(|n| n / 10_000).unwrap_or(0);
    s.major = major;
    s.drop_after = Some(name);
    Ok(s)
}

fn start(root: &Path, major: u32) -> Result<Server> {
    let (found, bin) = crate::source::postgres::pg_bin_dirs()
        .into_iter()
        .filter(|(v, d)| *v >= major && d.join("initdb").is_file() && d.join("postgres").is_file())
        .min_by_key(|(v, _)| *v)
        .ok_or_else(|| Error::ToolMissing {
            tool: format!("the PostgreSQL {major} server (initdb, postgres) or a newer one"),
            hint: format!(
                "a drill restores into a throwaway server of the backup's major version; install \
                 it (Debian: postgresql-{major}), or drill on an agent that has it"
            ),
        })?;
    let run_as = scratch::run_as(&[SUPERUSER], "PostgreSQL")?;
    let mut scratch = Scratch::new(root, run_as)?;
    let data = scratch.path("data");
    let mut initdb = scratch.command(&bin.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    scratch.run(initdb, &format!("initdb (PostgreSQL {found})"))?;
    let mut server = scratch.server_command(&bin.join("postgres"));
    server
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&scratch.dir)
        .args([
            "-p",
            &PORT.to_string(),
            "-c",
            "listen_addresses=",
            "-c",
            "max_connections=20",
        ]);
    if found >= 12 {
        // A new cluster writes each WAL segment full of zeros before using it; a server that
        // has run for a while reuses old ones. Without the zeros the throwaway copy loads at
        // the pace of the warm server the recovery time stands for (durability is unchanged).
        server.args(["-c", "wal_init_zero=off"]);
    }
    scratch.start(server, format!("the throwaway PostgreSQL {found}"))?;
    let conn = DbAddr {
        host: scratch.dir.display().to_string(),
        port: Some(PORT),
        user: Some(SUPERUSER.into()),
        password: None,
        database: None,
        params: BTreeMap::new(),
    };
    let mut s = Server {
        scratch: None,
        conn,
        admin_db: SUPERUSER.into(),
        major: found,
        bin,
        drop_after: None,
    };
    let probe = s.psql(SUPERUSER).arg("-c").arg("SELECT 1");
    scratch.wait_ready(|| probe.output().is_ok())?;
    s.scratch = Some(scratch);
    Ok(s)
}

impl Server {
    fn addr(&self, database: Option<&str>) -> DbAddr {
        DbAddr {
            database: database.map(str::to_string),
            ..self.conn.clone()
        }
    }

    /// A libpq tool connected to `db`, the connection in its environment.
    fn tool(&self, program: &str, step: &str, db: &str) -> Cmd {
        let c = &self.conn;
        let mut cmd = Cmd::new(self.bin.join(program), step)
            .env("PGDATABASE", db)
            .env("PGAPPNAME", "holdfast-drill")
            .env("PGCONNECT_TIMEOUT", "10")
            .secret_env("PGPASSWORD", c.password.as_ref());
        if !c.host.is_empty() {
            cmd = cmd.env("PGHOST", &c.host);
        }
        if let Some(p) = c.port {
            cmd = cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &c.user {
            cmd = cmd.env("PGUSER", u);
        }
        cmd
    }

    fn psql(&self, db: &str) -> Cmd {
        self.tool("psql", "psql (drill)", db).args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
        ])
    }

    fn query(&self, db: &str, sql: &str) -> Result<String> {
        self.psql(db)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|f| Error::Other(last_error(&f.stderr, &f.status)))
    }

    /// Creates the roles the dump names that the server lacks (without login); returns them.
    fn create_roles(&self, roles: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
        let mut made = Vec::new();
        let have = self.query(&self.admin_db, "SELECT rolname FROM pg_roles")?;
        let have: std::collections::BTreeSet<&str> = have.lines().collect();
        for r in roles {
            if !have.contains(r.as_str()) {
                self.query(&self.admin_db, &format!("CREATE ROLE {} NOLOGIN", quote(r)))?;
                made.push(r.clone());
            }
        }
        Ok(made)
    }

    /// `count(*)` of each table, named as the dump names it.
    fn count_rows(
        &self,
        db: &str,
        tables: &[String],
    ) -> BTreeMap<String, std::result::Result<u64, String>> {
        super::count_rows(
            tables,
            |t| format!("FROM ONLY {t}"),
            |sql| self.query(db, sql),
            '|',
        )
    }

    /// The copy's tables (not an extension's), named the way pg_dump names them.
    fn tables(&self, db: &str) -> Result<Vec<String>> {
        let out = self.query(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d \
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')",
        )?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The schema's objects, counted in a schema-only dump of the copy as the backup's were.
    fn objects(&self, db: &str) -> Result<BTreeMap<String, u64>> {
        let schema = self
            .tool("pg_dump", "pg_dump --schema-only (drill)", db)
            .args(["-w", "--schema-only"])
            .output()
            .map_err(|f| Error::Other(last_error(&f.stderr, &f.status)))?;
        let mut t = crate::manifest::tally_for(holdfast_core::SourceKind::Postgres);
        t.feed(schema.as_bytes());
        t.feed(b"\n");
        Ok(t.finish().objects)
    }
}

fn last_error(stderr: &str, status: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or_else(|| status.to_string(), |l| l.trim().to_string())
}

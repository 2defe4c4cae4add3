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
    let started = Instant::now();
    let server = match start(&d.opts.root, major) {
        Ok(s) => s,
        Err(e) => {
            d.failed(CheckKind::Scratch, "throwaway PostgreSQL", "it starts", e);
            return;
        }
    };
    d.timings.scratch_start_secs = started.elapsed().as_secs_f64();
    d.scratch = format!(
        "a throwaway PostgreSQL {} in {} (Unix socket only), removed afterwards",
        server.major,
        server.scratch.dir.display()
    );
    d.check(
        CheckKind::Scratch,
        "throwaway PostgreSQL",
        true,
        "it starts",
        format!(
            "PostgreSQL {} started in {:.1} s",
            server.major, d.timings.scratch_start_secs
        ),
        "",
    );

    let all = meta.database.as_deref() == Some("*");
    let database = if all {
        SUPERUSER.to_string()
    } else {
        meta.database.clone().unwrap_or_else(|| "drill".into())
    };
    if let Some(m) = d.manifest {
        let roles = m.roles("");
        if let Err(e) = server.create_roles(&roles) {
            d.failed(CheckKind::Restore, "roles", "the dump's roles exist", e);
            return;
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
            .map(|out| first_value(&out))
            .map_err(|e| e.to_string())
    });
}

/// The first value of psql's unaligned output.
fn first_value(out: &str) -> String {
    out.lines()
        .next()
        .unwrap_or("")
        .split('|')
        .next()
        .unwrap_or("")
        .to_string()
}

/// A throwaway cluster.
struct Server {
    scratch: Scratch,
    major: u32,
    bin: PathBuf,
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
    scratch.start(server, format!("the throwaway PostgreSQL {found}"))?;
    let mut s = Server {
        scratch,
        major: found,
        bin,
    };
    let probe = s.psql(SUPERUSER).arg("-c").arg("SELECT 1");
    s.scratch.wait_ready(|| probe.output().is_ok())?;
    Ok(s)
}

impl Server {
    fn addr(&self, database: Option<&str>) -> DbAddr {
        DbAddr {
            host: self.scratch.dir.display().to_string(),
            port: Some(PORT),
            user: Some(SUPERUSER.into()),
            password: None,
            database: database.map(str::to_string),
            params: BTreeMap::new(),
        }
    }

    fn psql(&self, db: &str) -> Cmd {
        Cmd::new(self.bin.join("psql"), "psql (drill)")
            .env("PGHOST", &self.scratch.dir)
            .env("PGPORT", PORT.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", db)
            .env("PGAPPNAME", "holdfast-drill")
            .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
    }

    fn query(&self, db: &str, sql: &str) -> Result<String> {
        self.psql(db)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|f| Error::Other(last_error(&f.stderr, &f.status)))
    }

    /// Creates the roles the dump names that the fresh cluster lacks (without login).
    fn create_roles(&self, roles: &std::collections::BTreeSet<String>) -> Result<()> {
        let have = self.query(SUPERUSER, "SELECT rolname FROM pg_roles")?;
        let have: std::collections::BTreeSet<&str> = have.lines().collect();
        for r in roles {
            if !have.contains(r.as_str()) {
                self.query(
                    SUPERUSER,
                    &format!("CREATE ROLE \"{}\" NOLOGIN", r.replace('"', "\"\"")),
                )?;
            }
        }
        Ok(())
    }

    /// `count(*)` of each table (named as the dump names it): one query for all, or one per
    /// table when that fails, so that a missing table is named.
    fn count_rows(
        &self,
        db: &str,
        tables: &[String],
    ) -> BTreeMap<String, std::result::Result<u64, String>> {
        let mut out = BTreeMap::new();
        if tables.is_empty() {
            return out;
        }
        let sql: Vec<String> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!("SELECT {i}, count(*) FROM ONLY {t}"))
            .collect();
        if let Ok(res) = self.query(db, &sql.join(" UNION ALL ")) {
            for line in res.lines() {
                if let Some((i, n)) = line.split_once('|')
                    && let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.parse::<u64>())
                    && let Some(t) = tables.get(i)
                {
                    out.insert(t.clone(), Ok(n));
                }
            }
            return out;
        }
        for t in tables {
            let r = self
                .query(db, &format!("SELECT count(*) FROM ONLY {t}"))
                .map_err(|e| e.to_string())
                .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()));
            out.insert(t.clone(), r);
        }
        out
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
        let schema = Cmd::new(self.bin.join("pg_dump"), "pg_dump --schema-only (drill)")
            .env("PGHOST", &self.scratch.dir)
            .env("PGPORT", PORT.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", db)
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

//! A MariaDB/MySQL drill: `mariadb-install-db` of a private data directory, `mariadbd` on a
//! Unix socket there (networking off), the restore point restored by Holdfast's own restore,
//! then rows per table, schema objects (from a `--no-data` dump of the copy, counted the way
//! the backup's were) and the user's SQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use holdfast_core::SourceSpec;
use holdfast_core::drill::CheckKind;
use holdfast_core::location::DbAddr;

use super::Drill;
use super::scratch::{self, Scratch};
use crate::error::{Error, Result};
use crate::process::{Cmd, which};

pub(super) fn drill(d: &mut Drill) {
    if !d.room_for(2) {
        return;
    }
    let database = d
        .snap
        .meta
        .as_ref()
        .and_then(|m| m.database.clone())
        .unwrap_or_else(|| "drill".into());
    let started = Instant::now();
    let named = match &d.opts.into {
        Some(SourceSpec::Mysql(addr)) => Some(addr.clone()),
        _ => None,
    };
    let what = if named.is_some() {
        "scratch MariaDB"
    } else {
        "throwaway MariaDB"
    };
    let meta = d.snap.meta.clone().unwrap_or_default();
    let server = match &named {
        Some(addr) => named_server(addr, &meta, &database),
        None => start(&d.opts.root),
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            d.failed(CheckKind::Scratch, what, "it answers", e);
            return;
        }
    };
    d.timings.scratch_start_secs = started.elapsed().as_secs_f64();
    let database = server.drop_after.clone().unwrap_or(database);
    d.scratch = match (&server.scratch, &named) {
        (Some(s), _) => format!(
            "a throwaway MariaDB in {} (Unix socket only), removed afterwards",
            s.dir.display()
        ),
        (None, Some(a)) => format!(
            "database {database} on the scratch server {}:{}, dropped afterwards",
            a.host,
            a.port.unwrap_or(3306)
        ),
        (None, None) => String::new(),
    };
    d.check(
        CheckKind::Scratch,
        what,
        true,
        "it answers",
        format!("ready in {:.1} s", d.timings.scratch_start_secs),
        "",
    );
    let spec = SourceSpec::Mysql(server.addr(&database));
    let opts = crate::RestoreOptions {
        create: true,
        ..Default::default()
    };
    let (snap, reader) = (d.snap, d.reader);
    if d.timed_restore(|| crate::source::restore(&spec, snap, reader, &opts))
        .is_none()
    {
        return;
    }
    if let Some(m) = d.manifest {
        let want = m.rows("");
        // The backup's tables and the copy's (a table the backup did not count expects none).
        let mut tables: std::collections::BTreeSet<String> = want.keys().cloned().collect();
        match server.query(
            &database,
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'",
        ) {
            Ok(out) => tables.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_string)),
            Err(e) => d.failed(CheckKind::Rows, "tables", "the copy's tables list", e),
        }
        let tables: Vec<String> = tables.into_iter().collect();
        let got = server.count_rows(&database, &tables);
        d.compare(CheckKind::Rows, "rows", &want, &got);
        match server.objects(&database) {
            Ok(got) => {
                let got = got.into_iter().map(|(k, v)| (k, Ok(v))).collect();
                d.compare(CheckKind::Objects, "objects", &m.objects(""), &got);
            }
            Err(e) => d.failed(CheckKind::Objects, "schema", "the schema dumps", e),
        }
    }
    d.sql_checks(|sql| {
        server
            .query(&database, sql)
            .map(|out| super::first_value(&out, '\t'))
            .map_err(|e| e.to_string())
    });
}

/// The server a drill restores into: a throwaway one, or a named scratch server where the
/// drill makes a database of its own and drops it afterwards.
struct Server {
    scratch: Option<Scratch>,
    /// How to reach it: the throwaway one's socket, or the named server.
    conn: DbAddr,
    client: PathBuf,
    dump: PathBuf,
    drop_after: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(db) = self.drop_after.take() {
            let sql = format!("DROP DATABASE IF EXISTS `{}`", db.replace('`', "``"));
            if let Err(e) = self.query("information_schema", &sql) {
                tracing::warn!("the drill's database {db} could not be dropped: {e}");
            }
        }
    }
}

/// A named scratch server: refused when it is the source's own server and database.
fn named_server(
    target: &DbAddr,
    meta: &holdfast_core::SnapshotMeta,
    database: &str,
) -> Result<Server> {
    let host_port = format!("{}:{}", target.host, target.port.unwrap_or(3306));
    if super::is_own_source(&SourceSpec::Mysql(target.clone()), meta) {
        return Err(Error::Input(holdfast_core::InputError::new(
            format!("drill target mysql://{host_port}"),
            "is the backup's own server and database; a drill never restores into its source: \
             name a scratch server (or leave it out for a throwaway one next to the agent)",
        )));
    }
    let missing = |tool: &str| Error::ToolMissing {
        tool: tool.into(),
        hint: "install the MariaDB client (Debian: mariadb-client)".into(),
    };
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("{:x}", d.as_millis() % 0xff_ffff))
        .unwrap_or_default();
    let mut name = format!("{database}_drill_{tag}");
    while name.len() > 64 {
        name.remove(database.len().min(name.len()) - 1);
    }
    let mut s = Server {
        scratch: None,
        conn: DbAddr {
            database: None,
            ..target.clone()
        },
        client: find(&["mariadb", "mysql"]).ok_or_else(|| missing("mariadb"))?,
        dump: find(&["mariadb-dump", "mysqldump"]).ok_or_else(|| missing("mariadb-dump"))?,
        drop_after: None,
    };
    s.query("information_schema", "SELECT 1")?;
    s.drop_after = Some(name);
    Ok(s)
}

/// The first of `names` on the PATH or in the server's usual directories.
fn find(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| {
        which(n).or_else(|| {
            ["/usr/sbin", "/usr/libexec", "/usr/local/sbin"]
                .iter()
                .map(|d| Path::new(d).join(n))
                .find(|p| p.is_file())
        })
    })
}

fn start(root: &Path) -> Result<Server> {
    let missing = |tool: &str| Error::ToolMissing {
        tool: tool.into(),
        hint: "a drill restores into a throwaway MariaDB; install the server \
               (Debian: mariadb-server), or drill on an agent that has it"
            .into(),
    };
    let install = find(&["mariadb-install-db", "mysql_install_db"])
        .ok_or_else(|| missing("mariadb-install-db"))?;
    let mariadbd = find(&["mariadbd", "mysqld"]).ok_or_else(|| missing("mariadbd"))?;
    let client = find(&["mariadb", "mysql"]).ok_or_else(|| missing("mariadb"))?;
    let dump = find(&["mariadb-dump", "mysqldump"]).ok_or_else(|| missing("mariadb-dump"))?;
    let run_as = scratch::run_as(&["mysql"], "MariaDB")?;
    let user = run_as.as_ref().map(|u| u.name.clone());
    let mut scratch = Scratch::new(root, run_as)?;
    let data = scratch.path("data");
    let mut cmd = scratch.command(&install);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if let Some(u) = &user {
        cmd.arg(format!("--user={u}"));
    }
    scratch.run(cmd, "mariadb-install-db")?;
    let socket = scratch.path("mysql.sock");
    let mut server = scratch.server_command(&mariadbd);
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            scratch.path("mariadbd.pid").display()
        ))
        .args([
            "--skip-networking",
            "--innodb-buffer-pool-size=128M",
            "--skip-log-bin",
        ]);
    if let Some(u) = &user {
        server.arg(format!("--user={u}"));
    }
    scratch.start(server, "the throwaway MariaDB".into())?;
    let socket = scratch.path("mysql.sock");
    let mut s = Server {
        scratch: None,
        conn: DbAddr {
            host: String::new(),
            port: None,
            user: Some("root".into()),
            password: None,
            database: None,
            params: BTreeMap::from([("socket".to_string(), socket.display().to_string())]),
        },
        client,
        dump,
        drop_after: None,
    };
    let probe = s.client_cmd().arg("--execute=SELECT 1");
    scratch.wait_ready(|| probe.output().is_ok())?;
    s.scratch = Some(scratch);
    Ok(s)
}

impl Server {
    fn addr(&self, database: &str) -> DbAddr {
        DbAddr {
            database: Some(database.to_string()),
            ..self.conn.clone()
        }
    }

    /// A client tool with the connection's options; the password in its environment.
    fn connect(&self, program: &Path, step: &str) -> Cmd {
        let c = &self.conn;
        let mut cmd = Cmd::new(program, step).secret_env("MYSQL_PWD", c.password.as_ref());
        if let Some(sock) = c.params.get("socket") {
            cmd = cmd.arg(format!("--socket={sock}"));
        }
        if !c.host.is_empty() {
            cmd = cmd
                .arg(format!("--host={}", c.host))
                .arg(format!("--port={}", c.port.unwrap_or(3306)));
            if c.host != "localhost" {
                cmd = cmd.arg("--protocol=TCP");
            }
        }
        if let Some(u) = &c.user {
            cmd = cmd.arg(format!("--user={u}"));
        }
        cmd
    }

    fn client_cmd(&self) -> Cmd {
        self.connect(&self.client, "mariadb (drill)")
            .args(["--batch", "--skip-column-names"])
            .arg("--default-character-set=utf8mb4")
    }

    fn query(&self, db: &str, sql: &str) -> Result<String> {
        self.client_cmd()
            .arg(format!("--database={db}"))
            .arg(format!("--execute={sql}"))
            .output()
            .map_err(|f| Error::Other(format!("{}: {}", f.status, f.stderr.trim())))
    }

    fn count_rows(
        &self,
        db: &str,
        tables: &[String],
    ) -> BTreeMap<String, std::result::Result<u64, String>> {
        let from = |t: &str| format!("FROM `{}`", t.replace('`', "``"));
        super::count_rows(tables, from, |sql| self.query(db, sql), '\t')
    }

    /// The schema's objects, counted in a `--no-data` dump of the copy as the backup's were.
    fn objects(&self, db: &str) -> Result<BTreeMap<String, u64>> {
        let schema = self
            .connect(&self.dump, "mariadb-dump --no-data (drill)")
            .args([
                "--no-data",
                "--routines",
                "--triggers",
                "--events",
                "--skip-dump-date",
                "--no-tablespaces",
                "--default-character-set=utf8mb4",
                "--",
            ])
            .arg(db)
            .output()
            .map_err(|f| Error::Other(format!("{}: {}", f.status, f.stderr.trim())))?;
        let mut t = crate::manifest::tally_for(holdfast_core::SourceKind::Mysql);
        t.feed(schema.as_bytes());
        t.feed(b"\n");
        Ok(t.finish().objects)
    }
}

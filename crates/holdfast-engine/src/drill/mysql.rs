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
    let server = match start(&d.opts.root) {
        Ok(s) => s,
        Err(e) => {
            d.failed(CheckKind::Scratch, "throwaway MariaDB", "it starts", e);
            return;
        }
    };
    d.timings.scratch_start_secs = started.elapsed().as_secs_f64();
    d.scratch = format!(
        "a throwaway MariaDB in {} (Unix socket only), removed afterwards",
        server.scratch.dir.display()
    );
    d.check(
        CheckKind::Scratch,
        "throwaway MariaDB",
        true,
        "it starts",
        format!("started in {:.1} s", d.timings.scratch_start_secs),
        "",
    );
    let spec = SourceSpec::Mysql(DbAddr {
        host: String::new(),
        port: None,
        user: Some("root".into()),
        password: None,
        database: Some(database.clone()),
        params: BTreeMap::from([("socket".to_string(), server.socket().display().to_string())]),
    });
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
            .map(|out| {
                out.lines()
                    .next()
                    .unwrap_or("")
                    .split('\t')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .map_err(|e| e.to_string())
    });
}

struct Server {
    scratch: Scratch,
    client: PathBuf,
    dump: PathBuf,
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
    let mut s = Server {
        scratch,
        client,
        dump,
    };
    let probe = s.client_cmd().arg("--execute=SELECT 1");
    s.scratch.wait_ready(|| probe.output().is_ok())?;
    Ok(s)
}

impl Server {
    fn socket(&self) -> PathBuf {
        self.scratch.path("mysql.sock")
    }

    fn client_cmd(&self) -> Cmd {
        Cmd::new(&self.client, "mariadb (drill)")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
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
        let quote = |t: &str| format!("`{}`", t.replace('`', "``"));
        let mut out = BTreeMap::new();
        if tables.is_empty() {
            return out;
        }
        let sql: Vec<String> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!("SELECT {i}, COUNT(*) FROM {}", quote(t)))
            .collect();
        if let Ok(res) = self.query(db, &sql.join(" UNION ALL ")) {
            for line in res.lines() {
                if let Some((i, n)) = line.split_once('\t')
                    && let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.trim().parse::<u64>())
                    && let Some(t) = tables.get(i)
                {
                    out.insert(t.clone(), Ok(n));
                }
            }
            return out;
        }
        for t in tables {
            let r = self
                .query(db, &format!("SELECT COUNT(*) FROM {}", quote(t)))
                .map_err(|e| e.to_string())
                .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()));
            out.insert(t.clone(), r);
        }
        out
    }

    /// The schema's objects, counted in a `--no-data` dump of the copy as the backup's were.
    fn objects(&self, db: &str) -> Result<BTreeMap<String, u64>> {
        let schema = Cmd::new(&self.dump, "mariadb-dump --no-data (drill)")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
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

//! MySQL and MariaDB: one `mariadb-dump`/`mysqldump --single-transaction` stream per database.

use std::path::PathBuf;

use holdfast_core::SourceKind;
use holdfast_core::location::DbAddr;

use super::{
    BackupOptions, BackupSet, RestoreOptions, SourceDriver, base_meta, feed_each, file_name,
    overwrite_names, target_not_empty,
};
use crate::error::{Error, Result};
use crate::process::{Cmd, Failure, tool_version, which};
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct Mysql {
    addr: DbAddr,
}

impl Mysql {
    pub fn new(addr: DbAddr) -> Self {
        Self { addr }
    }

    fn name(&self) -> String {
        holdfast_core::SourceSpec::Mysql(self.addr.clone()).to_string()
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.addr.host, self.addr.port.unwrap_or(3306))
    }

    fn database(&self) -> Result<&str> {
        self.addr.database.as_deref().ok_or_else(|| {
            Error::Input(holdfast_core::InputError::new(
                format!("source `{}`", self.name()),
                "no database in the URL; write mysql://user@host:port/DATABASE",
            ))
        })
    }

    /// The first of the MariaDB or MySQL names of a client tool that is installed.
    fn find(names: &[&str]) -> Result<PathBuf> {
        names
            .iter()
            .find_map(|n| which(n))
            .ok_or_else(|| Error::ToolMissing {
                tool: names.join(" or "),
                hint: "install the MariaDB or MySQL client (Debian: mariadb-client)".into(),
            })
    }

    /// A client tool with the connection options; the password goes in `MYSQL_PWD`.
    fn tool(&self, program: PathBuf, step: &str) -> Cmd {
        let mut c = Cmd::new(program, step)
            .inherit("MYSQL_")
            .secret_env("MYSQL_PWD", self.addr.password.as_ref());
        if !self.addr.host.is_empty() {
            c = c
                .arg(format!("--host={}", self.addr.host))
                .arg(format!("--port={}", self.addr.port.unwrap_or(3306)));
            if self.addr.host != "localhost" {
                c = c.arg("--protocol=TCP");
            }
        }
        if let Some(u) = &self.addr.user {
            c = c.arg(format!("--user={u}"));
        }
        // `?socket=/path` picks the local server's Unix socket.
        if let Some(socket) = self.addr.params.get("socket") {
            c = c.arg(format!("--socket={socket}"));
        }
        c
    }

    fn client(&self, step: &str) -> Result<Cmd> {
        Ok(self.tool(Self::find(&["mariadb", "mysql"])?, step).args([
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ]))
    }

    fn query(&self, database: Option<&str>, sql: &str) -> Result<String> {
        let mut c = self
            .client("mariadb client")?
            .arg(format!("--execute={sql}"));
        if let Some(db) = database {
            c = c.arg(format!("--database={db}"));
        }
        c.output()
            .map_err(|f| self.classify(f, database.unwrap_or("")))
    }

    fn classify(&self, f: Failure, database: &str) -> Error {
        let name = self.name();
        let e = &f.stderr;
        if e.contains("ERROR 1045") || e.contains("Access denied") {
            Error::SourceAuth {
                source_name: name,
                detail: e.lines().last().unwrap_or("").to_string(),
            }
        } else if e.contains("ERROR 1049") || e.contains("Unknown database") {
            Error::SourceMissing {
                source_name: name,
                detail: format!(
                    "database `{database}` does not exist on {}; create it, check the name, or \
                     (for a restore) let Holdfast create it (API: `create: true`; UI: Create; CLI: --create)",
                    self.host_port()
                ),
            }
        } else if e.contains("ERROR 2002")
            || e.contains("ERROR 2003")
            || e.contains("ERROR 2005")
            || e.contains("Can't connect")
        {
            Error::SourceUnreachable {
                source_name: name,
                detail: format!(
                    "{}; is the server running and listening on {}?",
                    e.lines().last().unwrap_or(""),
                    self.host_port()
                ),
            }
        } else {
            Error::DumpFailed {
                source_name: name,
                step: "mariadb client".into(),
                status: f.status,
                stderr: f.stderr,
            }
        }
    }
}

impl SourceDriver for Mysql {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        let db = self.database()?;
        let version = self.query(Some(db), "SELECT VERSION()")?;
        let dump = Self::find(&["mariadb-dump", "mysqldump"])?;
        let mut meta = base_meta(SourceKind::Mysql, "single", opts);
        meta.database = Some(db.to_string());
        meta.db_host = Some(self.host_port());
        meta.server_version = Some(version.trim().to_string());
        meta.tool = tool_version(&dump);
        let cmd = self
            .tool(dump, &format!("mariadb-dump of database {db}"))
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--default-character-set=utf8mb4",
                "--skip-dump-date",
                "--no-tablespaces",
            ])
            .arg("--")
            .arg(db);
        Ok(BackupSet::one_stream(
            self.name(),
            format!("mysql:{}/{db}", self.host_port()),
            file_name(db),
            format!("{}.sql", file_name(db)),
            cmd,
            meta,
        ))
    }

    fn restore(
        &self,
        _snap: &SnapshotInfo,
        files: &SnapshotReader,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let db = self.database()?;
        match self.query(Some(db), "SELECT 1") {
            Err(Error::SourceMissing { .. }) if opts.create => {
                self.query(
                    None,
                    &format!("CREATE DATABASE `{}`", db.replace('`', "``")),
                )?;
            }
            other => {
                other?;
            }
        }
        if self.count(&format!(
            "information_schema.tables WHERE table_schema = {}",
            lit(db)
        ))? == 0
        {
            return self.load(db, files);
        }
        if !opts.force {
            return Err(target_not_empty(self.name()));
        }
        self.overwrite(db, files)
    }
}

/// A MariaDB string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MariaDB identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl Mysql {
    /// `SELECT COUNT(*) FROM {from}`.
    fn count(&self, from: &str) -> Result<u64> {
        let out = self.query(None, &format!("SELECT COUNT(*) FROM {from}"))?;
        Ok(out.trim().parse().unwrap_or(1))
    }

    /// Loads every file of the snapshot into `db`.
    fn load(&self, db: &str, files: &SnapshotReader) -> Result<()> {
        let cmd = self
            .tool(
                Self::find(&["mariadb", "mysql"])?,
                "mariadb (loading the dump)",
            )
            .args(["--batch", "--default-character-set=utf8mb4"])
            .arg(format!("--database={db}"));
        feed_each(files, &cmd, &self.name())
    }

    /// Overwrites `db` safely: the dump loads into a new schema under a temporary name; only
    /// when it loaded completely are the tables swapped in one `RENAME TABLE` (atomic: all or
    /// none), the old ones into a side schema that is dropped afterwards. A failed load drops
    /// the temporary schema and leaves `db` as it was. Views, triggers and routines cannot move
    /// between schemas: with any, the overwrite is refused and `db` is left as it was.
    fn overwrite(&self, db: &str, files: &SnapshotReader) -> Result<()> {
        let (fresh, old) = overwrite_names(db, 64);
        let run = |sql: &str| self.query(None, sql).map(|_| ());
        let drop_fresh = || run(&format!("DROP DATABASE IF EXISTS {}", ident(&fresh)));
        let movable = |schema: &str| -> Result<bool> {
            Ok(self.count(&format!(
                "information_schema.views WHERE table_schema = {}",
                lit(schema)
            ))? == 0
                && self.count(&format!(
                    "information_schema.triggers WHERE trigger_schema = {}",
                    lit(schema)
                ))? == 0
                && self.count(&format!(
                    "information_schema.routines WHERE routine_schema = {}",
                    lit(schema)
                ))? == 0)
        };
        let refuse = || {
            Err(Error::Input(holdfast_core::InputError::new(
                format!("restore target {}", self.name()),
                "holds (or the restore point holds) views, triggers or routines, which \
                 MariaDB cannot move between databases, so it cannot be swapped safely; \
                 restore into a new database and point the application at it",
            )))
        };
        if !movable(db)? {
            return refuse();
        }
        run(&format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4",
            ident(&fresh)
        ))?;
        let loaded = self.load(&fresh, files).and_then(|()| movable(&fresh));
        match loaded {
            Ok(true) => {}
            Ok(false) => {
                let _ = drop_fresh();
                return refuse();
            }
            Err(e) => {
                let _ = drop_fresh();
                return Err(e);
            }
        }
        let tables = |schema: &str| -> Result<Vec<String>> {
            Ok(self
                .query(
                    None,
                    &format!(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = {}",
                        lit(schema)
                    ),
                )?
                .lines()
                .map(str::to_string)
                .filter(|t| !t.is_empty())
                .collect())
        };
        let mut moves: Vec<String> = tables(db)?
            .iter()
            .map(|t| format!("{}.{} TO {}.{}", ident(db), ident(t), ident(&old), ident(t)))
            .collect();
        moves.extend(tables(&fresh)?.iter().map(|t| {
            format!(
                "{}.{} TO {}.{}",
                ident(&fresh),
                ident(t),
                ident(db),
                ident(t)
            )
        }));
        let swapped = run(&format!("CREATE DATABASE {}", ident(&old)))
            .and_then(|()| run(&format!("RENAME TABLE {}", moves.join(", "))));
        if let Err(e) = swapped {
            let _ = drop_fresh();
            let _ = run(&format!("DROP DATABASE IF EXISTS {}", ident(&old)));
            return Err(e);
        }
        for schema in [&old, &fresh] {
            if let Err(e) = run(&format!("DROP DATABASE {}", ident(schema))) {
                tracing::warn!("the schema {schema} is left behind: {e}");
            }
        }
        Ok(())
    }
}

//! MySQL and MariaDB: one `mariadb-dump`/`mysqldump --single-transaction` stream per database.

use std::path::PathBuf;

use holdfast_core::SourceKind;
use holdfast_core::location::DbAddr;

use super::{
    BackupOptions, BackupSet, RestoreOptions, SourceDriver, base_meta, feed_each, file_name,
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
                     (for a restore) pass --create",
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
        let cmd = self
            .tool(
                Self::find(&["mariadb", "mysql"])?,
                "mariadb (loading the dump)",
            )
            .args(["--batch", "--default-character-set=utf8mb4"])
            .arg(format!("--database={db}"));
        feed_each(files, &cmd, &self.name())
    }
}

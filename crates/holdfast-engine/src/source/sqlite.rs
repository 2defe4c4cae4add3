//! SQLite: `sqlite3 .dump`, which reads inside one transaction, so the dump is consistent even
//! while another process writes (in WAL mode writers are not even blocked).

use std::path::PathBuf;

use holdfast_core::SourceKind;

use super::{
    BackupOptions, BackupSet, RestoreOptions, SourceDriver, base_meta, feed_each, file_name,
};
use crate::error::{Error, Result};
use crate::process::{Cmd, tool_version, which};
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn name(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    fn sqlite3() -> Result<PathBuf> {
        which("sqlite3").ok_or_else(|| Error::ToolMissing {
            tool: "sqlite3".into(),
            hint: "install the SQLite shell (Debian: sqlite3)".into(),
        })
    }
}

impl SourceDriver for Sqlite {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        // sqlite3 would silently create a missing database: check first.
        if !self.path.is_file() {
            return Err(Error::SourceMissing {
                source_name: self.name(),
                detail: format!("no database file at {}", self.path.display()),
            });
        }
        let sqlite3 = Self::sqlite3()?;
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sqlite".into());
        let version = Cmd::new(&sqlite3, "sqlite3")
            .arg(&self.path)
            .arg("SELECT sqlite_version()")
            .output()
            .map_err(|f| Error::SourceUnreachable {
                source_name: self.name(),
                detail: format!("{}: {}", f.status, f.stderr),
            })?;
        let mut meta = base_meta(SourceKind::Sqlite, "single", opts);
        meta.database = Some(self.path.display().to_string());
        meta.server_version = Some(version);
        meta.tool = tool_version(&sqlite3).map(|v| format!("sqlite3 {v}"));
        let cmd = Cmd::new(
            &sqlite3,
            format!("sqlite3 .dump of {}", self.path.display()),
        )
        .arg("-bail")
        .arg(&self.path)
        .arg(".dump")
        // sqlite3 exits 0 on a damaged database and only says so at the end of the dump.
        .fail_on_ending(
            "ROLLBACK; -- due to errors\n",
            "the database file is damaged and could not be read completely; \
             check it with `sqlite3 FILE 'PRAGMA integrity_check'`",
        );
        Ok(BackupSet::one_stream(
            self.name(),
            format!("sqlite:{}", self.path.display()),
            file_name(&stem),
            format!("{}.sql", file_name(&stem)),
            cmd,
            meta,
        ))
    }

    /// Loads the dump into a new file next to the target and renames it into place only when
    /// it loaded completely, so a failed restore never leaves a half-made database.
    fn restore(
        &self,
        _snap: &SnapshotInfo,
        files: &SnapshotReader,
        opts: &RestoreOptions,
    ) -> Result<()> {
        if self.path.exists() && !opts.force {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("restore target {}", self.path.display()),
                "already exists; choose a new path, or overwrite it (API: `force: true`; UI: Overwrite; CLI: --force)",
            )));
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".holdfast-restore");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let cmd = Cmd::new(Self::sqlite3()?, "sqlite3 (loading the dump)")
            .arg("-bail")
            .arg(&tmp);
        if let Err(e) = feed_each(files, &cmd, &self.name()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // A replaced database's write-ahead log must not be replayed onto the new file.
        for suffix in ["-wal", "-shm"] {
            let mut side = self.path.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::Other(format!("{}: {e}", self.path.display())))
    }
}

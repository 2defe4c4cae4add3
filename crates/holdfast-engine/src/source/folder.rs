//! Folders: a tar stream (GNU tar, sorted by name so unchanged files dedup), keeping modes,
//! owners, symlinks and modification times.

use std::path::PathBuf;

use holdfast_core::SourceKind;

use super::{
    BackupOptions, BackupSet, RestoreOptions, SourceDriver, base_meta, ensure_empty_dir, feed_each,
    file_name,
};
use crate::error::{Error, Result};
use crate::process::{Cmd, tool_version, which};
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct Folder {
    path: PathBuf,
}

impl Folder {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn tar() -> Result<PathBuf> {
        which("tar").ok_or_else(|| Error::ToolMissing {
            tool: "tar".into(),
            hint: "install GNU tar".into(),
        })
    }
}

impl SourceDriver for Folder {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        if !self.path.is_dir() {
            return Err(Error::SourceMissing {
                source_name: format!("file://{}", self.path.display()),
                detail: format!("no directory at {}", self.path.display()),
            });
        }
        let tar = Self::tar()?;
        let base = self
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let mut meta = base_meta(SourceKind::Folder, "single", opts);
        meta.database = Some(self.path.display().to_string());
        meta.tool = tool_version(&tar);
        let cmd = Cmd::new(tar, format!("tar of {}", self.path.display()))
            .args(["--create", "--file=-", "--sort=name", "--sparse"])
            .arg("--directory")
            .arg(&self.path)
            .arg(".");
        Ok(BackupSet::one_stream(
            format!("file://{}", self.path.display()),
            format!("folder:{}", self.path.display()),
            file_name(&base),
            format!("{}.tar", file_name(&base)),
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
        ensure_empty_dir(&self.path, opts.force)?;
        let cmd = Cmd::new(Self::tar()?, "tar (extracting)")
            .args([
                "--extract",
                "--file=-",
                "--same-permissions",
                "--numeric-owner",
            ])
            .arg("--directory")
            .arg(&self.path);
        feed_each(files, &cmd, &format!("file://{}", self.path.display()))
    }
}

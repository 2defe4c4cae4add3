//! Any command: its stdout is the backup, and a restore feeds the snapshot to a command's
//! stdin. The escape hatch for every other engine (`mongodump --archive`, `etcdctl snapshot
//! save /dev/stdout`, ...). Commands run with `sh -c`.

use holdfast_core::SourceKind;

use super::{BackupOptions, BackupSet, RestoreOptions, SourceDriver, base_meta, file_name};
use crate::error::Result;
use crate::process::Cmd;
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct CommandSource {
    name: String,
    command: String,
}

impl CommandSource {
    pub fn new(name: String, command: String) -> Self {
        Self { name, command }
    }

    fn cmd(&self, step: String) -> Cmd {
        Cmd::new("/bin/sh", step).arg("-c").arg(&self.command)
    }
}

impl SourceDriver for CommandSource {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        let mut meta = base_meta(SourceKind::Command, "single", opts);
        meta.database = Some(self.name.clone());
        meta.tool = Some(
            self.command
                .split_whitespace()
                .next()
                .unwrap_or("sh")
                .to_string(),
        );
        Ok(BackupSet::one_stream(
            format!("cmd:{}", self.name),
            format!("command:{}", self.name),
            "command".into(),
            file_name(&self.name),
            self.cmd(format!("command `{}`", self.command)),
            meta,
        ))
    }

    fn restore(
        &self,
        _snap: &SnapshotInfo,
        files: &SnapshotReader,
        _opts: &RestoreOptions,
    ) -> Result<()> {
        let target = format!("cmd:{}", self.name);
        // All files, in order, into one command: that is how a multi-file snapshot concatenates.
        let cmd = self.cmd(format!("restore command `{}`", self.command));
        let mut w = cmd.spawn_writer(&target)?;
        let mut res = Ok(());
        for (path, _) in files.files() {
            res = files.dump(path, &mut w);
            if res.is_err() {
                break;
            }
        }
        w.finish_after(res)
    }
}

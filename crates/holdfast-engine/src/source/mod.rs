//! Source drivers: one per kind of thing Holdfast backs up.
//!
//! A driver turns a [`SourceSpec`] into a [`BackupSet`] (the dump commands whose outputs become
//! the files of one snapshot) and knows how to feed a snapshot back into a restore tool.

mod command;
mod folder;
mod mysql;
pub(crate) mod postgres;
mod redis;
mod sqlite;

use std::path::Path;

use holdfast_core::{SnapshotMeta, SourceKind, SourceSpec};

use crate::error::{Error, Result};
use crate::process::Cmd;
use crate::repo::{SnapshotInfo, SnapshotReader};

/// One file of a snapshot and the command whose stdout fills it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// File name inside the snapshot's directory (may contain `/`).
    pub name: String,
    pub cmd: Cmd,
}

/// Everything one backup consists of.
pub struct BackupSet {
    /// The source, for messages (no password).
    pub source_name: String,
    /// Top-level directory of the snapshot's files, e.g. the database name.
    pub dir: String,
    /// Snapshot label: identifies the source; retention groups snapshots by it.
    pub label: String,
    /// Hostname recorded in the snapshot; `None` is this machine's.
    pub hostname: Option<String>,
    /// In the order they should start (a few run at once; PostgreSQL puts the largest tables
    /// first). The snapshot lists them by name whatever the order.
    pub streams: Vec<Stream>,
    pub meta: SnapshotMeta,
    /// Held until every stream has finished (e.g. the transaction that exported a snapshot).
    pub keepalive: Option<Box<dyn Send>>,
}

impl BackupSet {
    /// A snapshot of one stream: the file `file` in the directory `dir`, dumped by `cmd`.
    pub(crate) fn one_stream(
        source_name: String,
        label: String,
        dir: String,
        file: String,
        cmd: Cmd,
        meta: SnapshotMeta,
    ) -> Self {
        Self {
            source_name,
            dir,
            label,
            hostname: None,
            streams: vec![Stream { name: file, cmd }],
            meta,
            keepalive: None,
        }
    }
}

/// Options for a backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// PostgreSQL: one `pg_dump` stream instead of one file per table.
    pub single_stream: bool,
    /// PostgreSQL: every database plus the globals (roles, tablespaces).
    pub all_databases: bool,
    /// The plan making this backup, recorded in the snapshot.
    pub plan: Option<String>,
    /// Extra `key=value` tags.
    pub tags: Vec<(String, String)>,
    /// PostgreSQL: the `\\restrict` key pg_dump writes into the dump. pg_dump picks a random
    /// one per run otherwise, which changes the first and last chunk of every file and defeats
    /// deduplication. Make it with [`crate::Repo::derive_secret`]: stable per source, unknown to
    /// the server, and not derived from anything a user could guess.
    pub restrict_key: Option<String>,
}

/// Options for a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Create the target database when it does not exist.
    pub create: bool,
    /// How many tables to load at once (PostgreSQL per-table snapshots).
    pub jobs: usize,
    /// Restore into a non-empty directory / over an existing file.
    pub force: bool,
    /// Where the restore's phases and their seconds are recorded, in order, for the engines
    /// that have phases (PostgreSQL: schema, data, indexes and constraints).
    pub phases: Option<Phases>,
}

/// The phases of a restore and the seconds each took.
pub type Phases = std::sync::Arc<std::sync::Mutex<Vec<(String, f64)>>>;

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            create: false,
            jobs: 2,
            force: false,
            phases: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    pub bytes: u64,
    pub files: usize,
    pub duration_secs: f64,
}

/// A kind of source.
pub trait SourceDriver: Send + Sync {
    /// Asks the source what it is and builds the dump commands. Fails with a clear error when
    /// the source is unreachable, refuses the login, does not exist, or the tool is missing.
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet>;

    /// Restores the snapshot into this source (the restore target).
    fn restore(
        &self,
        snap: &SnapshotInfo,
        files: &SnapshotReader,
        opts: &RestoreOptions,
    ) -> Result<()>;
}

/// The driver for a source or restore target.
pub fn driver_for(spec: &SourceSpec) -> Box<dyn SourceDriver> {
    match spec {
        SourceSpec::Postgres(a) => Box::new(postgres::Postgres::new(a.clone())),
        SourceSpec::Mysql(a) => Box::new(mysql::Mysql::new(a.clone())),
        SourceSpec::Sqlite { path } => Box::new(sqlite::Sqlite::new(path.clone())),
        SourceSpec::Redis {
            host,
            port,
            password,
        } => Box::new(redis::Redis::new(host.clone(), *port, password.clone())),
        SourceSpec::Folder { path } => Box::new(folder::Folder::new(path.clone())),
        SourceSpec::Command { name, command } => {
            Box::new(command::CommandSource::new(name.clone(), command.clone()))
        }
    }
}

/// Restores `snap` into `spec`, timing it.
pub fn restore(
    spec: &SourceSpec,
    snap: &SnapshotInfo,
    files: &SnapshotReader,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let start = std::time::Instant::now();
    let snap_kind = snap
        .meta
        .as_ref()
        .and_then(|m| SourceKind::parse(&m.source));
    match (snap_kind, spec) {
        // Any snapshot can be written out as plain files into a directory.
        (Some(k), SourceSpec::Folder { path }) if k != SourceKind::Folder => {
            extract_files(files, path, opts.force)?
        }
        (None, SourceSpec::Folder { path }) => extract_files(files, path, opts.force)?,
        (Some(k), _) if k == spec.kind() || spec.kind() == SourceKind::Command => {
            driver_for(spec).restore(snap, files, opts)?
        }
        (Some(k), _) => {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("restore target `{spec}`"),
                format!(
                    "snapshot {} holds a {k} backup; restore it into a {k} target, into `cmd:` \
                     with --command, or write its files out with file:///directory",
                    snap.short_id
                ),
            )));
        }
        (None, _) => {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("snapshot {}", snap.short_id),
                "was not written by Holdfast; restore it into file:///directory",
            )));
        }
    }
    let bytes = files.files().map(|(_, s)| s).sum();
    Ok(RestoreStats {
        bytes,
        files: files.files().count(),
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

/// Writes every file of the snapshot under `dir`, without the snapshot's top directory.
fn extract_files(files: &SnapshotReader, dir: &Path, force: bool) -> Result<()> {
    ensure_empty_dir(dir, force)?;
    for (path, _) in files.files() {
        let rel = path.split_once('/').map_or(path, |(_, r)| r);
        // A name from the repository is data, not a path to follow: only plain parts, so
        // nothing lands outside `dir` (a crafted snapshot with `..` or `/etc/...`).
        let plain = !rel.is_empty()
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("restore point file `{path}`"),
                "its name leaves the target folder (`..`, an absolute path); nothing was written for it \
                 and the restore stops",
            )));
        }
        let out = dir.join(rel);
        if std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("{}", out.display()),
                "is a symbolic link in the target folder; a restore never writes through one",
            )));
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| io_err(&out, e))?;
        files.dump(path, &mut f)?;
        f.sync_all().map_err(|e| io_err(&out, e))?;
    }
    Ok(())
}

fn ensure_empty_dir(dir: &Path, force: bool) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => {
            if !force && it.next().is_some() {
                return Err(Error::Input(holdfast_core::InputError::new(
                    format!("restore target {}", dir.display()),
                    "is not empty; choose an empty directory, or write into it anyway (API: `force: true`; UI: Overwrite; CLI: --force)",
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
        }
        Err(e) => Err(io_err(dir, e)),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Other(format!("{}: {e}", path.display()))
}

/// Makes a name safe as one path component inside a snapshot: anything but letters, digits,
/// `_`, `-` and `.` is percent-encoded, so names stay unique and readable.
pub(crate) fn file_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// The inverse of [`file_name`].
pub(crate) fn decode_file_name(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Streams one snapshot file into a restore tool and waits for it.
pub(crate) fn feed(files: &SnapshotReader, path: &str, cmd: &Cmd, target: &str) -> Result<()> {
    let mut w = cmd.spawn_writer(target)?;
    let res = files.dump(path, &mut w);
    w.finish_after(res)
}

/// A restore without overwrite into a database that already holds tables.
pub(crate) fn target_not_empty(target: String) -> Error {
    Error::Input(holdfast_core::InputError::new(
        format!("restore target {target}"),
        "already holds tables; restore into a new database, or overwrite this one \
         (API: `force: true`; UI: Overwrite; CLI: --force), which restores into a \
         temporary database and swaps it in only when the restore succeeded",
    ))
}

/// The names an overwrite of database `db` works under: (the restore's, the replaced one's),
/// each at most `max` characters (`db` cut short), unique to this moment.
pub(crate) fn overwrite_names(db: &str, max: usize) -> (String, String) {
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| format!("{:x}", d.as_millis() % 0xff_ffff))
        .unwrap_or_default();
    let side = |suffix: String| {
        let mut base = db.to_string();
        while base.chars().count() + suffix.len() > max {
            base.pop();
        }
        format!("{base}{suffix}")
    };
    (
        side(format!("__restore_{tag}")),
        side(format!("__replaced_{tag}")),
    )
}

/// Feeds each file of the snapshot, in order, into a run of its own of `cmd`.
pub(crate) fn feed_each(files: &SnapshotReader, cmd: &Cmd, target: &str) -> Result<()> {
    for (path, _) in files.files() {
        feed(files, path, cmd, target)?;
    }
    Ok(())
}

pub(crate) fn base_meta(kind: SourceKind, layout: &str, opts: &BackupOptions) -> SnapshotMeta {
    SnapshotMeta {
        source: kind.as_str().into(),
        layout: layout.into(),
        holdfast_version: crate::VERSION.into(),
        plan: opts.plan.clone(),
        user_tags: opts.tags.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("public.orders"), "public.orders");
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name("a%2Fb"), "a%252Fb");
        assert_eq!(file_name(".."), "%2E.");
        assert_eq!(file_name("Grüße"), "Gr%C3%BC%C3%9Fe");
        for s in ["we ird", "a/b%2F", "..", "Grüße", "100%"] {
            assert_eq!(super::decode_file_name(&file_name(s)), s);
        }
    }
}

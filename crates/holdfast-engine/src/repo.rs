//! The restic-format repository, through rustic_core and rustic_backend.
//!
//! Every repository Holdfast makes is version 2 (zstd-compressed), encrypted with the user's
//! password, and readable by the stock `restic` binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_core::{KeepPolicy, RepoLocation, SnapshotMeta};
use rustic_core::jiff::{Span, Zoned};
use rustic_core::repofile::{FileType, MasterKey, Node, SnapshotFile, StringList};
use rustic_core::{
    BytesList, CheckOptions, ConfigOptions, Credentials, ErrorKind, ForgetGroups, Grouped, Id,
    IndexedFullStatus, KeepOptions, KeyOptions, OpenStatus, PruneOptions, ReadBackend, Repository,
    RepositoryBackends, RepositoryOptions, RusticError, RusticResult, SnapshotGroupCriterion,
    SnapshotOptions, WriteBackend,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::source::BackupSet;

/// How to reach and unlock a repository.
#[derive(Clone)]
pub struct RepoConfig {
    pub location: RepoLocation,
    pub password: SecretString,
    /// The storage login; empty parts let the backend find them (e.g. S3's environment).
    pub creds: StorageCreds,
    /// Storage-layer retries on transient errors (rustic_backend's `retry`); `None` is the default.
    pub retries: Option<u32>,
    /// zstd level for new data; `None` is restic's default (3).
    pub compression: Option<i32>,
    /// The endpoint's name, for messages.
    pub endpoint: Option<String>,
}

impl RepoConfig {
    /// How to reach the repository a job's ticket names.
    pub fn from_ticket(t: &holdfast_core::agent::RepoTicket) -> Result<Self> {
        let location = RepoLocation::parse(&t.url).map_err(|e| {
            holdfast_core::InputError::new(format!("endpoint `{}`", t.endpoint), e.to_string())
        })?;
        let mut cfg = Self::new(location, SecretString::from(t.password.0.clone()));
        let secret = |s: &holdfast_core::agent::Secret| SecretString::from(s.0.clone());
        cfg.creds = StorageCreds {
            user: t.access_key_id.clone().or_else(|| t.user.clone()),
            secret: t
                .secret_access_key
                .as_ref()
                .or(t.storage_password.as_ref())
                .map(secret),
            ssh_key: t.ssh_key.as_ref().map(secret),
        };
        cfg.compression = t.compression;
        cfg.endpoint = Some(t.endpoint.clone());
        Ok(cfg)
    }

    pub fn new(location: RepoLocation, password: SecretString) -> Self {
        Self {
            location,
            password,
            creds: StorageCreds::default(),
            retries: None,
            compression: None,
            endpoint: None,
        }
    }

    /// How messages name the repository: the endpoint and its location.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("endpoint `{e}` ({})", self.location),
            None => self.location.to_string(),
        }
    }
}

/// The login to a repository's storage. What each part means depends on the kind.
#[derive(Clone, Default)]
pub struct StorageCreds {
    /// S3's access key id; the login for Swift, and for SFTP and WebDAV when the URL names no
    /// user.
    pub user: Option<String>,
    /// S3's secret access key; Swift's key (TempAuth) or password (Keystone); the WebDAV
    /// password.
    pub secret: Option<SecretString>,
    /// An SFTP private key (OpenSSH format); without one, ssh uses the agent's own keys.
    pub ssh_key: Option<SecretString>,
}

/// Shared state of one backup run: the first failure of any stream, the bytes read so far, and
/// how many streams ended cleanly. The storage layer consults it before writing a snapshot.
#[derive(Debug, Default)]
pub struct Gate {
    failure: Mutex<Option<Error>>,
    /// Bytes read from the dump tools so far (for progress).
    pub bytes: AtomicU64,
    /// Streams that reached their end with exit status 0.
    pub completed: AtomicUsize,
    /// Streams this backup consists of; a snapshot is written only when all completed.
    pub expected: AtomicUsize,
}

impl Gate {
    /// Records a failure; the first one wins.
    pub fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            tracing::debug!("backup failing: {e}");
            *f = Some(e);
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failure.lock().unwrap().is_some()
    }

    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.failure.lock().unwrap().take()
    }

    fn may_write_snapshot(&self) -> bool {
        !self.is_failed()
            && self.completed.load(Ordering::SeqCst) == self.expected.load(Ordering::SeqCst)
    }
}

/// The gate of the backup in progress, swapped in by [`Repo::backup`].
type SharedGate = Arc<Mutex<Arc<Gate>>>;

/// Wraps the storage backend so that a snapshot file cannot be written while the gate reports a
/// failed or incomplete stream, and storage errors are remembered even if rustic_core logs and
/// skips them.
#[derive(Debug)]
struct GuardedBackend {
    inner: Arc<dyn WriteBackend>,
    gate: SharedGate,
    /// For errors: the repository as messages name it, and its kind.
    repo: String,
    kind: holdfast_core::StorageKind,
}

impl GuardedBackend {
    fn gate(&self) -> Arc<Gate> {
        self.gate.lock().unwrap().clone()
    }
}

impl ReadBackend for GuardedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<bytes::Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<bytes::Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for GuardedBackend {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let gate = self.gate();
        if tpe == FileType::Snapshot && !gate.may_write_snapshot() {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "backup incomplete: a stream failed or ended early, so no snapshot is written",
            ));
        }
        let res = self.inner.write_bytes(tpe, id, cacheable, content);
        if let Err(e) = &res {
            gate.fail(Error::storage(self.repo.clone(), self.kind, detail(e)));
        }
        res
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

/// One snapshot, as Holdfast shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub hostname: String,
    pub label: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// Holdfast's metadata, when Holdfast wrote the snapshot.
    pub meta: Option<SnapshotMeta>,
    /// Bytes of dump data in the snapshot.
    pub bytes: u64,
    /// Bytes this snapshot added to the repository (after dedup and compression).
    pub added_bytes: u64,
    /// Seconds the backup took.
    pub duration_secs: f64,
    #[serde(skip)]
    pub(crate) tree: rustic_core::TreeId,
}

impl SnapshotInfo {
    fn from_file(s: &SnapshotFile) -> Self {
        let id = s.id.to_hex().to_string();
        let (bytes, added_bytes, duration_secs) = s.summary.as_ref().map_or((0, 0, 0.0), |m| {
            let d = m
                .backup_end
                .duration_since(&m.backup_start)
                .as_secs_f64()
                .max(0.0);
            (m.total_bytes_processed, m.data_added_packed, d)
        });
        let tags: Vec<String> = s.tags.iter().cloned().collect();
        Self {
            short_id: id[..8].to_string(),
            id,
            time: s.time.timestamp().to_string(),
            hostname: s.hostname.clone(),
            label: s.label.clone(),
            paths: s.paths.iter().cloned().collect(),
            meta: SnapshotMeta::from_tags(tags.iter().map(String::as_str)),
            tags,
            bytes,
            added_bytes,
            duration_secs,
            tree: s.tree,
        }
    }
}

/// The result of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    pub snapshot: SnapshotInfo,
}

/// What a copy to another repository did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// (the snapshot here, its copy there) for each snapshot copied now.
    pub copied: Vec<(String, String)>,
    /// Copies of this plan's snapshots the other repository held before.
    pub present: usize,
}

/// What `forget` decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

/// An open repository.
pub struct Repo {
    cfg: RepoConfig,
    name: String,
    gate: SharedGate,
    backends: RepositoryBackends,
    key: MasterKey,
    repo: Repository<OpenStatus>,
    /// The SFTP key, in a private file ssh reads, for as long as connections may be made.
    _keyfile: Option<tempfile::NamedTempFile>,
}

struct Unopened {
    repo: Repository<()>,
    backends: RepositoryBackends,
    gate: SharedGate,
    keyfile: Option<tempfile::NamedTempFile>,
}

impl Repo {
    /// The `rustic_backend` repository string and options, credentials included (after a
    /// login, for Swift), and the private file holding an SSH key while it is needed.
    pub(crate) fn backend_options(
        cfg: &RepoConfig,
    ) -> Result<(
        String,
        BTreeMap<String, String>,
        Option<tempfile::NamedTempFile>,
    )> {
        let (repository, mut options) = cfg.location.backend();
        let c = &cfg.creds;
        let secret = || c.secret.as_ref().map(|s| s.expose_secret().to_string());
        let mut keyfile = None;
        match &cfg.location {
            RepoLocation::Local(_) => {}
            RepoLocation::S3 { .. } => {
                if let (Some(id), Some(key)) = (&c.user, secret()) {
                    options.insert("access_key_id".into(), id.clone());
                    options.insert("secret_access_key".into(), key);
                }
            }
            RepoLocation::Swift { .. } => {
                let login = crate::swift::login(cfg)?;
                options.insert("endpoint".into(), login.storage_url);
                options.insert("token".into(), login.token);
            }
            RepoLocation::Sftp { .. } => {
                if !options.contains_key("user")
                    && let Some(u) = &c.user
                {
                    options.insert("user".into(), u.clone());
                }
                if let Some(key) = &c.ssh_key {
                    let mut f = tempfile::NamedTempFile::new().map_err(|e| {
                        Error::Other(format!("writing the SSH key to a private file: {e}"))
                    })?;
                    let mut text = key.expose_secret().trim_end().to_string();
                    text.push('\n');
                    f.write_all(text.as_bytes()).map_err(|e| {
                        Error::Other(format!("writing the SSH key to a private file: {e}"))
                    })?;
                    options.insert("key".into(), f.path().display().to_string());
                    keyfile = Some(f);
                }
            }
            // Not through rustic_backend: see `Repo::ftp`.
            RepoLocation::Ftp { .. } => {}
            RepoLocation::Webdav { .. } => {
                if !options.contains_key("username")
                    && let Some(u) = &c.user
                {
                    options.insert("username".into(), u.clone());
                }
                if let Some(p) = secret() {
                    options.insert("password".into(), p);
                }
            }
        }
        Ok((repository, options, keyfile))
    }

    fn backends(
        cfg: &RepoConfig,
        gate: SharedGate,
    ) -> Result<(RepositoryBackends, Option<tempfile::NamedTempFile>)> {
        let (inner, keyfile): (Arc<dyn WriteBackend>, _) = match Self::ftp(cfg) {
            Some(ftp) => (Arc::new(ftp), None),
            None => {
                let (repository, mut options, keyfile) = Self::backend_options(cfg)?;
                if let Some(r) = cfg.retries {
                    options.insert("retry".into(), r.to_string());
                }
                let be = rustic_backend::BackendOptions::default()
                    .repository(repository)
                    .options(options.into_iter().collect::<BTreeMap<_, _>>())
                    .to_backends()
                    .map_err(|e| storage(cfg, &e))?;
                (be.repository(), keyfile)
            }
        };
        let guarded: Arc<dyn WriteBackend> = Arc::new(GuardedBackend {
            inner,
            gate,
            repo: cfg.describe(),
            kind: cfg.location.kind(),
        });
        Ok((RepositoryBackends::new(guarded, None), keyfile))
    }

    /// Holdfast's own FTP backend, for an FTP location.
    pub(crate) fn ftp(cfg: &RepoConfig) -> Option<crate::ftp::FtpBackend> {
        let RepoLocation::Ftp {
            user,
            host,
            port,
            path,
        } = &cfg.location
        else {
            return None;
        };
        let user = user
            .clone()
            .or_else(|| cfg.creds.user.clone())
            .unwrap_or_else(|| "anonymous".into());
        Some(crate::ftp::FtpBackend::new(crate::ftp::FtpTarget {
            host: host.clone(),
            port: *port,
            user,
            password: cfg
                .creds
                .secret
                .clone()
                .unwrap_or_else(|| SecretString::from(String::new())),
            root: format!("/{}", path.trim_matches('/')),
        }))
    }

    fn unopened(cfg: &RepoConfig) -> Result<Unopened> {
        let gate = Arc::new(Mutex::new(Arc::new(Gate::default())));
        let (backends, keyfile) = Self::backends(cfg, gate.clone())?;
        let repo = Repository::new(&RepositoryOptions::default(), &backends)
            .map_err(|e| storage(cfg, &e))?;
        Ok(Unopened {
            repo,
            backends,
            gate,
            keyfile,
        })
    }

    /// Another handle on the open repository (rustic_core's state changes consume handles);
    /// opening with the master key skips the password's key derivation.
    pub(crate) fn clone_open(&self) -> Result<Repository<OpenStatus>> {
        Repository::new(&RepositoryOptions::default(), &self.backends)
            .and_then(|r| r.open(&Credentials::Masterkey(self.key.clone())))
            .map_err(|e| self.err(&e))
    }

    /// Creates a new repository; fails if one exists there already.
    pub fn init(cfg: &RepoConfig) -> Result<()> {
        // Keeps the SSH key file while the repository is created.
        let Unopened {
            repo, keyfile: _k, ..
        } = Self::unopened(cfg)?;
        if repo.config_id().map_err(|e| storage(cfg, &e))?.is_some() {
            return Err(Error::RepoExists {
                repo: cfg.describe(),
            });
        }
        let mut config = ConfigOptions::default().set_version(2);
        if let Some(level) = cfg.compression {
            config = config.set_compression(level);
        }
        repo.init(
            &Credentials::password(cfg.password.expose_secret()),
            &KeyOptions::default(),
            &config,
        )
        .map_err(|e| storage(cfg, &e))?;
        Ok(())
    }

    /// Opens an existing repository with its password.
    pub fn open(cfg: &RepoConfig) -> Result<Self> {
        let Unopened {
            repo,
            backends,
            gate,
            keyfile,
        } = Self::unopened(cfg)?;
        let name = cfg.describe();
        if repo.config_id().map_err(|e| storage(cfg, &e))?.is_none() {
            return Err(Error::RepoNotFound { repo: name });
        }
        let repo = repo
            .open(&Credentials::password(cfg.password.expose_secret()))
            .map_err(|e| {
                if e.is_incorrect_password() {
                    Error::WrongPassword { repo: name.clone() }
                } else {
                    storage(cfg, &e)
                }
            })?;
        Ok(Self {
            cfg: cfg.clone(),
            name,
            gate,
            backends,
            key: repo.key(),
            repo,
            _keyfile: keyfile,
        })
    }

    /// A secret stable for this repository and `context`, derived from the repository's random
    /// master key (so seeing it, e.g. in a process list, reveals nothing to guess the password
    /// with). Used for pg_dump's `\\restrict` key.
    pub fn derive_secret(&self, context: &str) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"holdfast derived secret\0");
        h.update(serde_json::to_vec(&self.key).unwrap_or_default());
        h.update(b"\0");
        h.update(context.as_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// rustic_core's handle on the open repository.
    pub(crate) fn rustic(&self) -> &Repository<OpenStatus> {
        &self.repo
    }

    /// The storage, as the writer writes to it (through the gate).
    pub(crate) fn write_backend(&self) -> Arc<dyn WriteBackend> {
        self.backends.repository()
    }

    pub fn location(&self) -> &RepoLocation {
        &self.cfg.location
    }

    fn err(&self, e: &RusticError) -> Error {
        storage(&self.cfg, e)
    }

    /// Streams every stream of `set` into one new snapshot. `gate` lets the caller watch the
    /// bytes read; a fresh one is fine. No snapshot is written unless every stream succeeded.
    pub fn backup(&self, set: BackupSet, gate: Arc<Gate>) -> Result<BackupOutcome> {
        gate.expected.store(set.streams.len(), Ordering::SeqCst);
        *self.gate.lock().unwrap() = gate.clone();

        let mut snap_opts = SnapshotOptions::default()
            .label(set.label.clone())
            .description(serde_json::to_string_pretty(&set.meta).unwrap_or_default());
        if let Some(host) = &set.hostname {
            snap_opts = snap_opts.host(host.clone());
        }
        let mut snap = SnapshotFile::from_options(&snap_opts).map_err(|e| self.err(&e))?;
        let tags: StringList = set
            .meta
            .tags()
            .join(",")
            .parse()
            .map_err(|e| Error::Other(format!("snapshot tags: {e}")))?;
        snap.add_tags(vec![tags]);

        let inputs = set
            .streams
            .iter()
            .map(|s| {
                let (cmd, source_name, gate) =
                    (s.cmd.clone(), set.source_name.clone(), gate.clone());
                crate::writer::Input {
                    name: s.name.clone(),
                    open: Box::new(move || {
                        cmd.spawn_reader(&source_name, gate)
                            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
                    }),
                }
            })
            .collect();
        let settings = crate::writer::Settings::for_config(self.repo.config());
        let result = crate::writer::write_snapshot(
            self.rustic(),
            &self.write_backend(),
            inputs,
            &set.dir,
            snap,
            &gate,
            settings,
        );
        drop(set.keepalive);
        // Reset the shared gate so that later writes through this handle are not refused.
        *self.gate.lock().unwrap() = Arc::new(Gate::default());
        match result {
            Ok(snap) if gate.may_write_snapshot() => Ok(BackupOutcome {
                snapshot: SnapshotInfo::from_file(&snap),
            }),
            Ok(snap) => {
                // Cannot happen while the gate guards snapshot writes; if it does, remove it.
                let _ = self.repo.delete_snapshots(&[snap.id]);
                Err(gate
                    .take_failure()
                    .unwrap_or_else(|| Error::Other("a stream ended early".into())))
            }
            // A stream that only "stopped early" was stopped because of `e`: report `e`.
            Err(e) => Err(match gate.take_failure() {
                Some(f) if !crate::process::is_early_stop(&f) => f,
                _ => e,
            }),
        }
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut snaps = self.repo.get_all_snapshots().map_err(|e| self.err(&e))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps.iter().map(SnapshotInfo::from_file).collect())
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest`.
    pub fn find(&self, query: &str) -> Result<SnapshotInfo> {
        let snaps = self.snapshots()?;
        let not_found = || Error::SnapshotNotFound {
            query: query.to_string(),
            repo: self.name.clone(),
        };
        if query == "latest" {
            return snaps.into_iter().last().ok_or_else(not_found);
        }
        let mut matches = snaps.into_iter().filter(|s| s.id.starts_with(query));
        let first = matches.next().ok_or_else(not_found)?;
        if matches.next().is_some() {
            return Err(Error::Input(holdfast_core::InputError::new(
                format!("snapshot `{query}`"),
                "matches more than one snapshot; give more characters of the id",
            )));
        }
        Ok(first)
    }

    /// Opens a snapshot's files for reading.
    pub fn reader(&self, snap: &SnapshotInfo) -> Result<SnapshotReader> {
        let repo = self.clone_open()?.to_indexed().map_err(|e| self.err(&e))?;
        let mut files = Vec::new();
        let mut stack = vec![(String::new(), snap.tree)];
        while let Some((prefix, tree)) = stack.pop() {
            let tree = repo.get_tree(&tree).map_err(|e| self.err(&e))?;
            for node in tree.nodes {
                let path = format!("{prefix}{}", node.name().to_string_lossy());
                if let Some(sub) = node.subtree {
                    stack.push((format!("{path}/"), sub));
                } else if node.is_file() {
                    files.push((path, node));
                }
            }
        }
        files.sort_by(|a, b| std::path::Path::new(&a.0).cmp(std::path::Path::new(&b.0)));
        Ok(SnapshotReader {
            repo,
            files,
            repo_name: self.name.clone(),
        })
    }

    /// Applies a keep policy to each group of snapshots (one group per label, i.e. per source)
    /// and removes the rest. With `only_tag`, only snapshots carrying that tag (e.g.
    /// `plan=shop-nightly`) are considered: other plans' backups are never touched. An empty
    /// policy is refused: it would mean "keep nothing".
    pub fn forget(
        &self,
        policy: &KeepPolicy,
        dry_run: bool,
        only_tag: Option<&str>,
    ) -> Result<ForgetReport> {
        policy.validate()?;
        if policy.is_empty() {
            return Err(Error::Input(holdfast_core::InputError::new(
                "forget",
                "no keep rule given; pass at least one of --keep-last, --keep-hourly, \
                 --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within",
            )));
        }
        let keep = keep_options(policy)?;
        let mut snaps = self.repo.get_all_snapshots().map_err(|e| self.err(&e))?;
        if let Some(tag) = only_tag {
            snaps.retain(|s| s.tags.iter().any(|t| t == tag));
        }
        let grouped = Grouped::from_items(
            snaps,
            SnapshotGroupCriterion::new()
                .label(true)
                .hostname(false)
                .paths(false)
                .tags(false),
        );
        let groups =
            ForgetGroups::from_grouped_snapshots_with_retention(grouped, &keep, &Zoned::now())
                .map_err(|e| self.err(&e))?;
        let mut report = ForgetReport::default();
        for g in &groups.0 {
            for s in &g.items {
                let id = s.snapshot.id.to_hex().to_string();
                if s.keep {
                    report.kept.push(id);
                } else {
                    report.removed.push(id);
                }
            }
        }
        let ids = groups.into_forget_ids();
        if !dry_run && !ids.is_empty() {
            self.repo.delete_snapshots(&ids).map_err(|e| self.err(&e))?;
        }
        Ok(report)
    }

    /// Copies each snapshot tagged `tag` that is newer than the newest copy in `dest` (older
    /// ones are there already, or were removed by `dest`'s own retention); only blobs `dest`
    /// lacks are sent. Copies keep their time, tags and metadata, under new ids.
    pub fn copy_to(&self, dest: &Repo, tag: &str) -> Result<CopyReport> {
        let tagged = |s: &SnapshotFile| s.tags.iter().any(|t| t == tag);
        let there = |r: &Repo| -> Result<Vec<SnapshotFile>> {
            let mut v = r.repo.get_all_snapshots().map_err(|e| r.err(&e))?;
            v.retain(tagged);
            Ok(v)
        };
        let before = there(dest)?;
        let newest = before.iter().map(|s| s.time.clone()).max();
        let mut todo = there(self)?;
        todo.retain(|s| newest.as_ref().is_none_or(|n| s.time > *n));
        if todo.is_empty() {
            return Ok(CopyReport {
                copied: vec![],
                present: before.len(),
            });
        }
        let src = self.clone_open()?.to_indexed().map_err(|e| self.err(&e))?;
        let dst = dest
            .clone_open()?
            .to_indexed_ids()
            .map_err(|e| dest.err(&e))?;
        src.copy(&dst, todo.iter()).map_err(|e| dest.err(&e))?;
        let after = there(dest)?;
        let copied = todo
            .iter()
            .map(|s| {
                let copy = after
                    .iter()
                    .find(|d| d.time == s.time && d.tree == s.tree)
                    .map(|d| d.id.to_hex().to_string())
                    .unwrap_or_default();
                (s.id.to_hex().to_string(), copy)
            })
            .collect();
        Ok(CopyReport {
            copied,
            present: before.len(),
        })
    }

    /// Removes data no snapshot uses. With `instant`, unused packs go at once; otherwise they
    /// are marked and removed by a later prune (safe while other backups run).
    pub fn prune(&self, instant: bool) -> Result<()> {
        let opts = PruneOptions::default().instant_delete(instant);
        let plan = self.repo.prune_plan(&opts).map_err(|e| self.err(&e))?;
        self.repo.prune(&opts, plan).map_err(|e| self.err(&e))
    }

    /// Checks the repository's structure, and with `read_data` every pack's content.
    pub fn check(&self, read_data: bool) -> Result<()> {
        let results = self
            .repo
            .check(CheckOptions::default().read_data(read_data))
            .map_err(|e| self.err(&e))?;
        if results.is_ok().is_ok() {
            Ok(())
        } else {
            let errors: Vec<String> = results
                .0
                .iter()
                .filter(|(level, _)| format!("{level:?}") == "Error")
                .map(|(_, e)| e.to_string())
                .collect();
            Err(Error::CheckFailed {
                repo: self.name.clone(),
                detail: errors.join("; "),
            })
        }
    }
}

fn keep_options(p: &KeepPolicy) -> Result<KeepOptions> {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let mut k = KeepOptions::default()
        .keep_last(n(p.last))
        .keep_hourly(n(p.hourly))
        .keep_daily(n(p.daily))
        .keep_weekly(n(p.weekly))
        .keep_monthly(n(p.monthly))
        .keep_yearly(n(p.yearly));
    if let Some(w) = &p.within {
        let (y, mo, d, h) = holdfast_core::retention::parse_within(w)?;
        let span = Span::new()
            .years(i64::from(y))
            .months(i64::from(mo))
            .days(i64::from(d))
            .hours(i64::from(h));
        k = k.keep_within(Some(span));
    }
    Ok(k)
}

fn storage(cfg: &RepoConfig, e: &RusticError) -> Error {
    Error::storage(cfg.describe(), cfg.location.kind(), detail(e))
}

/// rustic's own text of an error, plus the deeper causes it leaves out (where, e.g., ssh's
/// "Permission denied (publickey)" is). Without backtraces: a rustic error among the causes
/// prints one with itself when RUST_BACKTRACE is set.
pub(crate) fn detail(e: &RusticError) -> String {
    let mut out = crate::error::without_backtrace(&e.display_log());
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = match c.downcast_ref::<RusticError>() {
            Some(r) => r.display_log(),
            None => c.to_string(),
        };
        let text = crate::error::without_backtrace(&text);
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A snapshot opened for reading: its files (path inside the snapshot, sorted) and a way to
/// stream each one out.
pub struct SnapshotReader {
    repo: Repository<IndexedFullStatus>,
    files: Vec<(String, Node)>,
    repo_name: String,
}

impl SnapshotReader {
    /// Paths of the files in the snapshot, sorted, with their sizes.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64)> {
        self.files.iter().map(|(p, n)| (p.as_str(), n.meta.size))
    }

    /// A file's node (its content's blob ids, size).
    #[cfg(test)]
    pub(crate) fn node(&self, path: &str) -> Option<&Node> {
        self.files.iter().find(|(p, _)| p == path).map(|(_, n)| n)
    }

    /// Writes one file's content to `w`.
    pub fn dump(&self, path: &str, w: &mut impl Write) -> Result<()> {
        let node = self
            .files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, n)| n)
            .ok_or_else(|| Error::Other(format!("no file {path} in the snapshot")))?;
        self.repo.dump(node, w).map_err(|e| Error::Storage {
            repo: self.repo_name.clone(),
            detail: detail(&e),
        })
    }
}

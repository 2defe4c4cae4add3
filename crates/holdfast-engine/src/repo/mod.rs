//! The restic-format repository, through rustic_core and rustic_backend.
//!
//! Every repository Holdfast makes is version 2 (zstd-compressed), encrypted with the user's
//! password, and readable by the stock `restic` binary.

//!
//! The module along its seams: [`config`] says how to reach and unlock a repository (and maps
//! a location onto rustic_backend's options); [`gate`] keeps a failed backup from writing its
//! snapshot; [`snapshot`] reads snapshots back; [`select`] picks the
//! snapshot a command means (filters, `latest`); [`ops`] is what Holdfast does with an open
//! repository (backup, forget, copy, prune, check). This file opens and creates repositories.

mod config;
mod gate;
pub mod key;
mod ops;
pub mod raw;
mod select;
mod snapshot;

pub use config::{ProxyAccess, RepoConfig, StorageCreds};
pub use gate::Gate;
pub(crate) use gate::{GuardedBackend, SharedGate};
pub use ops::{BackupOutcome, CopyReport, ForgetReport, ReadData};
pub use select::SnapshotFilter;
pub use snapshot::{SnapshotInfo, SnapshotReader};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use holdfast_core::RepoLocation;
use rustic_core::repofile::MasterKey;
use rustic_core::{
    ConfigOptions, Credentials, KeyOptions, OpenStatus, Repository, RepositoryBackends,
    RepositoryOptions, RusticError, WriteBackend,
};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// An open repository.
pub struct Repo {
    cfg: RepoConfig,
    name: String,
    gate: SharedGate,
    backends: RepositoryBackends,
    /// The storage itself, without the backup gate (the server's proxy).
    raw: Arc<dyn WriteBackend>,
    key: MasterKey,
    repo: Repository<OpenStatus>,
    /// The SFTP key, in a private file ssh reads, for as long as connections may be made.
    _keyfile: Option<tempfile::NamedTempFile>,
}

struct Unopened {
    repo: Repository<()>,
    backends: RepositoryBackends,
    raw: Arc<dyn WriteBackend>,
    gate: SharedGate,
    keyfile: Option<tempfile::NamedTempFile>,
}

impl Repo {
    fn backends(
        cfg: &RepoConfig,
        gate: SharedGate,
    ) -> Result<(
        RepositoryBackends,
        Arc<dyn WriteBackend>,
        Option<tempfile::NamedTempFile>,
    )> {
        let (inner, keyfile): (Arc<dyn WriteBackend>, _) = match Self::ftp(cfg) {
            Some(ftp) => (Arc::new(ftp), None),
            None => {
                let (repository, mut options, keyfile) = cfg.backend_options()?;
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
            inner: inner.clone(),
            gate,
            repo: cfg.describe(),
            kind: cfg.location.kind(),
        });
        Ok((RepositoryBackends::new(guarded, None), inner, keyfile))
    }

    /// Holdfast's own FTP backend, for an FTP location.
    pub(crate) fn ftp(cfg: &RepoConfig) -> Option<crate::ftp::FtpBackend> {
        if cfg.proxy.is_some() {
            return None;
        }
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
        let (backends, raw, keyfile) = Self::backends(cfg, gate.clone())?;
        let repo = Repository::new(&RepositoryOptions::default(), &backends)
            .map_err(|e| storage(cfg, &e))?;
        Ok(Unopened {
            repo,
            backends,
            raw,
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
            repo,
            raw,
            keyfile: _k,
            ..
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
        // The key file first, made as restic makes them (`key`), then the config: rustic_core
        // given the master key itself writes no key file of its own.
        let master = MasterKey::new();
        let (id, bytes) = key::encode(&key::generate(&master, cfg.password.expose_secret())?)?;
        raw.create().map_err(|e| storage(cfg, &e))?;
        raw.write_bytes(rustic_core::FileType::Key, &id, false, bytes.into())
            .map_err(|e| storage(cfg, &e))?;
        repo.init(
            &Credentials::Masterkey(master),
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
            raw,
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
            raw,
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

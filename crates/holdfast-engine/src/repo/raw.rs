//! The repository's files as stored, by type and name (restic's REST protocol's view of a
//! repository), for the server's repository proxy: list, read, add, remove; and what an
//! uploaded snapshot file says of itself, decrypted with the repository's master key.

use std::sync::Arc;

use bytes::Bytes;
use rustic_core::WriteBackend;
pub use rustic_core::jiff::Timestamp;
pub use rustic_core::{FileType, Id};
use serde::Deserialize;

use super::Repo;
use crate::error::{Error, Result};
use crate::writer::pack::Crypto;

/// A repository file type by its directory name in the REST protocol (`data`, `keys`,
/// `snapshots`, `index`, `config`). `locks` is not one: Holdfast and rustic never lock.
pub fn file_type(dir: &str) -> Option<FileType> {
    Some(match dir {
        "config" => FileType::Config,
        "data" => FileType::Pack,
        "keys" => FileType::Key,
        "snapshots" => FileType::Snapshot,
        "index" => FileType::Index,
        _ => return None,
    })
}

/// A file name: 64 lowercase hex digits (restic names files by the SHA-256 of their bytes).
pub fn file_id(name: &str) -> Option<Id> {
    (name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| name.parse::<Id>().ok())
        .flatten()
}

/// What a snapshot file says of itself.
#[derive(Debug, Clone)]
pub struct SnapshotFacts {
    pub time: Timestamp,
    /// The id of its root tree: a copy of a snapshot has the same tree and time.
    pub tree: String,
    pub tags: Vec<String>,
    pub hostname: String,
}

/// The stored files of an open repository, without the backup gate: the proxy decides itself
/// what may be written.
pub struct StoredFiles {
    be: Arc<dyn WriteBackend>,
    crypto: Crypto,
    repo: String,
    kind: holdfast_core::StorageKind,
}

impl Repo {
    /// The repository's stored files, for the server's proxy.
    pub fn files(&self) -> StoredFiles {
        StoredFiles {
            be: self.raw.clone(),
            crypto: Crypto::new(&self.key),
            repo: self.name.clone(),
            kind: self.cfg.location.kind(),
        }
    }
}

impl StoredFiles {
    fn err(&self, what: &str, e: &rustic_core::RusticError) -> Error {
        Error::storage(
            self.repo.clone(),
            self.kind,
            format!("{what}: {}", super::detail(e)),
        )
    }

    /// Every file of type `t` with its size (for `config`: one entry when it exists).
    pub fn list(&self, t: FileType) -> Result<Vec<(String, u32)>> {
        let files = self
            .be
            .list_with_size(t)
            .map_err(|e| self.err("listing", &e))?;
        Ok(files
            .into_iter()
            .map(|(id, size)| (id.to_hex().to_string(), size))
            .collect())
    }

    /// File `id` of type `t`, whole or `(offset, length)` of it.
    pub fn read(&self, t: FileType, id: &Id, range: Option<(u32, u32)>) -> Result<Bytes> {
        match range {
            Some((offset, length)) => self.be.read_partial(t, id, false, offset, length),
            None => self.be.read_full(t, id),
        }
        .map_err(|e| self.err("reading", &e))
    }

    /// Whether file `id` of type `t` exists. A read that fails counts as "does not exist":
    /// the caller only uses this to refuse overwrites of files whose content it has already
    /// checked against their name.
    pub fn exists(&self, t: FileType, id: &Id) -> Result<bool> {
        if t == FileType::Config {
            return Ok(!self.list(t)?.is_empty());
        }
        Ok(self.be.read_partial(t, id, false, 0, 1).is_ok())
    }

    pub fn write(&self, t: FileType, id: &Id, data: Bytes) -> Result<()> {
        self.be
            .write_bytes(t, id, false, data.into())
            .map_err(|e| self.err("writing", &e))
    }

    pub fn remove(&self, t: FileType, id: &Id) -> Result<()> {
        self.be
            .remove(t, id, false)
            .map_err(|e| self.err("removing", &e))
    }

    /// What every snapshot of the repository says of itself, by id.
    pub fn all_snapshot_facts(&self) -> Result<Vec<(String, SnapshotFacts)>> {
        self.list(FileType::Snapshot)?
            .into_iter()
            .filter_map(|(name, _)| file_id(&name).map(|id| (name, id)))
            .map(|(name, id)| {
                let facts = self.snapshot_facts(&self.read(FileType::Snapshot, &id, None)?)?;
                Ok((name, facts))
            })
            .collect()
    }

    /// Decrypts an uploaded snapshot file (checking its MAC with the master key) and reads
    /// its time and tags. An error when it is not a snapshot of this repository.
    pub fn snapshot_facts(&self, data: &[u8]) -> Result<SnapshotFacts> {
        #[derive(Deserialize)]
        struct Raw {
            time: String,
            tree: String,
            #[serde(default)]
            tags: Vec<String>,
            #[serde(default)]
            hostname: String,
        }
        let bad = |why: String| Error::Other(format!("not a snapshot of this repository: {why}"));
        let plain = self.crypto.open(data).map_err(|e| bad(e.to_string()))?;
        // Repository version 2: a leading 2 marks zstd-compressed JSON.
        let json = match plain.first() {
            Some(2) => zstd::decode_all(&plain[1..]).map_err(|e| bad(e.to_string()))?,
            _ => plain,
        };
        let raw: Raw = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
        let time = raw
            .time
            .parse::<rustic_core::jiff::Timestamp>()
            .map_err(|e| bad(format!("its time `{}`: {e}", raw.time)))?;
        Ok(SnapshotFacts {
            time,
            tree: raw.tree,
            tags: raw.tags,
            hostname: raw.hostname,
        })
    }
}

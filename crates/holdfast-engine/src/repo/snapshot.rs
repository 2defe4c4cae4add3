//! Snapshots as Holdfast shows them, and a snapshot opened to stream its files out.

use std::io::Write;

use holdfast_core::SnapshotMeta;
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{IndexedFullStatus, Repository};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::Manifest;

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
    pub(super) fn from_file(s: &SnapshotFile) -> Self {
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

/// A snapshot opened for reading: its files (path inside the snapshot, sorted) and a way to
/// stream each one out.
pub struct SnapshotReader {
    pub(super) repo: Repository<IndexedFullStatus>,
    pub(super) files: Vec<(String, Node)>,
    /// The manifest's file, when the backup wrote one.
    pub(super) manifest: Option<Node>,
    pub(super) repo_name: String,
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
        self.dump_node(node, w)
    }

    /// What the backup counted in its streams; `None` for a snapshot made before Holdfast
    /// wrote manifests, or by another tool.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        let Some(node) = &self.manifest else {
            return Ok(None);
        };
        let mut json = Vec::new();
        self.dump_node(node, &mut json)?;
        serde_json::from_slice(&json).map(Some).map_err(|e| {
            Error::Other(format!(
                "the snapshot's {} cannot be read: {e}",
                crate::manifest::FILE
            ))
        })
    }

    fn dump_node(&self, node: &Node, w: &mut impl Write) -> Result<()> {
        self.repo.dump(node, w).map_err(|e| Error::Storage {
            repo: self.repo_name.clone(),
            detail: super::detail(&e),
        })
    }
}

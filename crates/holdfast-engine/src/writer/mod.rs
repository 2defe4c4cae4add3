//! Holdfast's own writer for the backup path: dump streams in, a standard restic v2 snapshot
//! out, at the speed of the dump tool.
//!
//! ```text
//!  stream threads (one per dump stream, a few at once)      read → chunk → SHA-256 → known?
//!        │ new blobs only (bounded queue)
//!  seal workers (one per core)                              zstd → AES-256-CTR + Poly1305
//!        │ (bounded queue)
//!  packer (one thread)                                      blobs → 16 MiB pack + header
//!        │ (bounded queue)
//!  uploaders (two threads)                                  storage backend
//! ```
//!
//! Every queue is bounded, so a slow stage (storage, compression) slows the readers, and the
//! dump tools block on their pipes: memory stays flat whatever the database's size. When all
//! streams ended cleanly and every pack is stored, the trees, one index file and then the
//! snapshot are written; a failed stream or upload writes no snapshot (and the storage layer's
//! [`crate::repo::Gate`] refuses one anyway). Packs of a failed backup are in no index; the
//! next prune removes them.
//!
//! rustic_core stays in charge of everything else (restore, forget, prune, check, keys); this
//! module reuses its file types ([`IndexFile`], [`Tree`], [`Node`], [`SnapshotFile`]) and
//! its storage backends.

mod chunker;
pub(crate) mod pack;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, bounded};
use rustic_core::jiff::{Timestamp, Zoned};
use rustic_core::repofile::{
    BlobType, Chunker as ChunkerKind, ConfigFile, FileType, IndexFile, IndexPack, Metadata, Node,
    NodeType, SnapshotFile, SnapshotSummary, Tree,
};
use rustic_core::{DataId, Id, OpenStatus, Repository, TreeId, WriteBackend};

use crate::error::{Error, Result};
use crate::repo::{Gate, detail};
use chunker::{Chunker, Params, Tables};
use pack::{Crypto, Pack, PackBuilder, RawId, SealedBlob, seal_blob, seal_file, sha256};

/// One stream of a backup: a file in the snapshot, and how to start reading it.
pub(crate) struct Input {
    /// The file's path below the snapshot's directory; one starting with `/` is a path from
    /// the snapshot's top instead (the manifest).
    pub name: String,
    pub open: Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send>> + Send>,
}

/// How much runs at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Dump streams read side by side.
    pub streams: usize,
    /// Compression and encryption threads.
    pub workers: usize,
    /// Concurrent pack uploads.
    pub uploaders: usize,
    /// Target size of a data pack.
    pub pack_size: usize,
}

impl Settings {
    /// One stream and one seal worker per core, at least two streams (a dump tool spends
    /// time waiting on its server).
    pub fn for_config(config: &ConfigFile) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            streams: cores.clamp(2, 8),
            workers: cores.clamp(1, 8),
            uploaders: 2,
            // restic's default pack size, unless the repository asks for another.
            pack_size: config.datapack_size.map_or(16 << 20, |s| s as usize),
        }
    }
}

/// What a backup added, for the snapshot's summary.
#[derive(Default)]
struct Stats {
    data_blobs: AtomicU64,
    data_added: AtomicU64,
    data_added_packed: AtomicU64,
}

/// The chunking parameters of a repository, or why the writer cannot handle it.
fn chunk_params(config: &ConfigFile) -> Result<Params> {
    if config.chunker() != ChunkerKind::Rabin {
        return Err(Error::Other(
            "this repository uses fixed-size chunking; Holdfast writes only to repositories \
             with restic's content-defined (Rabin) chunking, the default of restic, rustic \
             and Holdfast"
                .into(),
        ));
    }
    let p = Params {
        poly: config
            .poly()
            .map_err(|e| Error::Other(format!("the repository's chunker polynomial: {e}")))?,
        avg: config.chunk_size(),
        min: config.chunk_min_size(),
        max: config.chunk_max_size(),
    };
    p.validate()?;
    Ok(p)
}

/// The blobs a repository holds already: (data, trees).
fn known_blobs(repo: &Repository<OpenStatus>) -> Result<(HashSet<Id>, HashSet<Id>)> {
    let index_error = |e: Box<rustic_core::RusticError>| {
        Error::Other(format!("reading the index: {}", detail(&e)))
    };
    let mut data = HashSet::new();
    let mut trees = HashSet::new();
    for f in repo.stream_files::<IndexFile>().map_err(index_error)? {
        let (_, index) = f.map_err(index_error)?;
        for b in index.packs.into_iter().flat_map(|p| p.blobs) {
            match b.tpe {
                BlobType::Data => data.insert(*b.id),
                BlobType::Tree => trees.insert(*b.id),
            };
        }
    }
    Ok((data, trees))
}

/// Writes `inputs` as the files of one new snapshot under `dir`, and then `snap` itself.
/// Failures are recorded in `gate`; on any failure no snapshot is written and the error
/// returned is a placeholder for the gate's.
pub(crate) fn write_snapshot(
    repo: &Repository<OpenStatus>,
    be: &Arc<dyn WriteBackend>,
    inputs: Vec<Input>,
    dir: &str,
    mut snap: SnapshotFile,
    gate: &Gate,
    settings: Settings,
) -> Result<SnapshotFile> {
    let start = Zoned::now();
    let config = repo.config();
    let params = chunk_params(config)?;
    let zstd = config
        .zstd()
        .map_err(|e| Error::Other(format!("the repository's compression: {e}")))?;
    let verify = config.extra_verify();
    let key = repo.key();
    let crypto = Crypto::new(&key);
    let tables = Tables::new(params.poly);
    let (known_data, known_trees) = known_blobs(repo)?;
    let known = Mutex::new(known_data);
    let stats = Stats::default();
    let packs: Mutex<Vec<IndexPack>> = Mutex::new(Vec::new());
    let n = inputs.len();
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let inputs: Vec<Mutex<Option<Input>>> =
        inputs.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let nodes: Vec<Mutex<Option<Node>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);

    let (raw_tx, raw_rx) = bounded::<(RawId, Vec<u8>)>(settings.workers);
    let (sealed_tx, sealed_rx) = bounded::<SealedBlob>(settings.workers * 2);
    let (pack_tx, pack_rx) = bounded::<Pack>(1);

    std::thread::scope(|s| {
        for _ in 0..settings.uploaders {
            let rx = pack_rx.clone();
            let packs = &packs;
            s.spawn(move || upload(rx, be, packs, gate));
        }
        drop(pack_rx);
        {
            let crypto = &crypto;
            let pack_size = settings.pack_size;
            s.spawn(move || packer(sealed_rx, pack_tx, crypto, pack_size, gate));
        }
        for _ in 0..settings.workers {
            let (rx, tx) = (raw_rx.clone(), sealed_tx.clone());
            let (crypto, stats) = (&crypto, &stats);
            s.spawn(move || seal_worker(rx, tx, crypto, zstd, verify, stats, gate));
        }
        drop((raw_rx, sealed_tx));
        for _ in 0..settings.streams.min(n) {
            let tx = raw_tx.clone();
            let (inputs, nodes, next, tables, known, stats) =
                (&inputs, &nodes, &next, &tables, &known, &stats);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || gate.is_failed() {
                        break;
                    }
                    let input = inputs[i].lock().unwrap().take().expect("taken once");
                    let node = read_stream(input, tables, params, known, &tx, stats, gate);
                    *nodes[i].lock().unwrap() = node;
                }
            });
        }
        drop(raw_tx);
    });

    let mut packs = packs.into_inner().unwrap();
    if gate.is_failed() {
        // The packs stored so far are in no index: prune removes them as unindexed packs.
        // (Writing an index now would only wait out the storage's retries again.)
        return Err(Error::Other("the backup failed".into()));
    }
    let mut files = Vec::with_capacity(n);
    for node in nodes {
        files.push(node.into_inner().unwrap().ok_or_else(|| {
            Error::Other("a stream ended without a failure being recorded".into())
        })?);
    }

    // Trees: the directories of `dir/name` for every stream, innermost first.
    let mut summary = SnapshotSummary::default();
    // The summary counts the dump's files; those at the top (the manifest) describe them.
    let data: Vec<bool> = names.iter().map(|n| !n.starts_with('/')).collect();
    let data_files = data.iter().filter(|d| **d).count() as u64;
    summary.files_new = data_files;
    summary.total_files_processed = data_files;
    summary.total_bytes_processed = files
        .iter()
        .zip(&data)
        .filter(|(_, d)| **d)
        .map(|(f, _)| f.meta.size)
        .sum();
    let paths = names
        .iter()
        .zip(files)
        .map(|(name, node)| match name.strip_prefix('/') {
            Some(top) => (components(top), node),
            None => (components(&format!("{dir}/{name}")), node),
        })
        .collect();
    let mut trees = Vec::new();
    let mut dirs = 0;
    let root = build_tree(paths, &mut trees, &mut dirs)?;
    summary.dirs_new = dirs;
    summary.total_dirs_processed = dirs;

    let mut tree_pack = PackBuilder::new(64 * 1024);
    let mut zc = match zstd {
        Some(level) => Some(compressor(level)?),
        None => None,
    };
    let mut seen = known_trees;
    for (id, bytes) in &trees {
        if seen.insert(Id::new(*id)) {
            let b = seal_blob(&crypto, zc.as_mut(), *id, BlobType::Tree, bytes, verify)?;
            summary.tree_blobs += 1;
            summary.data_added_trees += bytes.len() as u64;
            summary.data_added_trees_packed += b.data.len() as u64;
            tree_pack.add(b);
        }
    }
    if !tree_pack.is_empty() {
        let p = tree_pack.finish(&crypto)?;
        let entry = p.index_entry();
        write(be, FileType::Pack, p.id, p.bytes, gate)?;
        packs.push(entry);
    }
    write_index(be, &crypto, zstd, packs, gate)?;

    summary.data_blobs = stats.data_blobs.load(Ordering::SeqCst);
    summary.data_added_files = stats.data_added.load(Ordering::SeqCst);
    summary.data_added_files_packed = stats.data_added_packed.load(Ordering::SeqCst);
    summary.data_added = summary.data_added_files + summary.data_added_trees;
    summary.data_added_packed = summary.data_added_files_packed + summary.data_added_trees_packed;
    let end = Zoned::now();
    summary.backup_duration = end.duration_since(&start).as_secs_f64();
    summary.total_duration = end.duration_since(&snap.time).as_secs_f64();
    summary.backup_start = start;
    summary.backup_end = end;
    snap.tree = root;
    snap.paths.add(dir.to_string());
    snap.summary = Some(summary);
    let json = serde_json::to_vec(&snap)
        .map_err(|e| Error::Other(format!("serialising the snapshot: {e}")))?;
    let (id, bytes) = seal_file(&crypto, zstd, &json)?;
    write(be, FileType::Snapshot, id, bytes, gate)?;
    snap.id = Id::new(id).into();
    Ok(snap)
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// Builds the tree holding `files` (path below this tree, file node), and the trees below it;
/// pushes each tree's (id, JSON) to `out`, innermost first, and returns this tree's id.
fn build_tree(
    files: Vec<(Vec<String>, Node)>,
    out: &mut Vec<(RawId, Vec<u8>)>,
    dirs: &mut u64,
) -> Result<TreeId> {
    let mut nodes = Vec::new();
    let mut below: BTreeMap<String, Vec<(Vec<String>, Node)>> = BTreeMap::new();
    for (mut path, node) in files {
        if path.len() <= 1 {
            nodes.push(node);
        } else {
            let first = path.remove(0);
            below.entry(first).or_default().push((path, node));
        }
    }
    for (name, sub) in below {
        let id = build_tree(sub, out, dirs)?;
        *dirs += 1;
        let mut node = Node::new_node(
            OsStr::new(&name),
            NodeType::Dir,
            Metadata {
                mode: Some(0o755),
                mtime: Some(Timestamp::now()),
                ..Default::default()
            },
        );
        node.subtree = Some(id);
        nodes.push(node);
    }
    nodes.sort_by(|a, b| a.name().cmp(&b.name()));
    let (bytes, id) = Tree { nodes }
        .serialize()
        .map_err(|e| Error::Other(format!("serialising a tree: {e}")))?;
    // A tree's id is the SHA-256 of its JSON, which `serialize` returns.
    out.push((sha256(&bytes), bytes));
    Ok(id)
}

fn compressor(level: i32) -> Result<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(level).map_err(|e| Error::Other(format!("zstd level {level}: {e}")))
}

fn write(
    be: &Arc<dyn WriteBackend>,
    tpe: FileType,
    id: RawId,
    bytes: Vec<u8>,
    gate: &Gate,
) -> Result<()> {
    be.write_bytes(tpe, &Id::new(id), false, Bytes::from(bytes).into())
        .map_err(|e| {
            let err = Error::Other(format!("storing a {tpe:?} file: {}", detail(&e)));
            gate.fail(err);
            Error::Other("storage failed".into())
        })
}

/// Writes the index file of `packs` (nothing if empty).
fn write_index(
    be: &Arc<dyn WriteBackend>,
    crypto: &Crypto,
    zstd: Option<i32>,
    packs: Vec<IndexPack>,
    gate: &Gate,
) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let index = IndexFile {
        supersedes: None,
        packs,
        packs_to_delete: vec![],
    };
    let json = serde_json::to_vec(&index)
        .map_err(|e| Error::Other(format!("serialising the index: {e}")))?;
    let (id, bytes) = seal_file(crypto, zstd, &json)?;
    write(be, FileType::Index, id, bytes, gate)
}

/// Reads one stream to its end: chunks, hashes, and hands on blobs the repository lacks.
/// Returns the stream's file node, or `None` after recording a failure in `gate`.
fn read_stream(
    input: Input,
    tables: &Tables,
    params: Params,
    known: &Mutex<HashSet<Id>>,
    tx: &Sender<(RawId, Vec<u8>)>,
    stats: &Stats,
    gate: &Gate,
) -> Option<Node> {
    let fail = |what: String| {
        gate.fail(Error::Other(what));
        None
    };
    let rd = match (input.open)() {
        Ok(r) => r,
        Err(e) => return fail(format!("starting `{}`: {e}", input.name)),
    };
    let mut chunker = Chunker::new(rd, tables, params);
    let mut content = Vec::new();
    let mut size = 0u64;
    loop {
        let chunk = match chunker.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return fail(format!("reading `{}`: {e}", input.name)),
        };
        let id = sha256(&chunk);
        size += chunk.len() as u64;
        content.push(DataId::from(Id::new(id)));
        if known.lock().unwrap().insert(Id::new(id)) {
            stats.data_blobs.fetch_add(1, Ordering::Relaxed);
            if tx.send((id, chunk)).is_err() {
                return None;
            }
        }
        if gate.is_failed() {
            return None;
        }
    }
    let name = input.name.rsplit('/').next().unwrap_or_default();
    let mut node = Node::new_node(
        OsStr::new(name),
        NodeType::File,
        Metadata {
            mode: Some(0o600),
            mtime: Some(Timestamp::now()),
            size,
            ..Default::default()
        },
    );
    node.content = Some(content);
    Some(node)
}

fn seal_worker(
    rx: Receiver<(RawId, Vec<u8>)>,
    tx: Sender<SealedBlob>,
    crypto: &Crypto,
    zstd: Option<i32>,
    verify: bool,
    stats: &Stats,
    gate: &Gate,
) {
    let mut zc = match zstd.map(compressor).transpose() {
        Ok(z) => z,
        Err(e) => {
            gate.fail(e);
            None
        }
    };
    for (id, data) in rx {
        if gate.is_failed() {
            continue; // drain, so the readers are never stuck on a full queue
        }
        match seal_blob(crypto, zc.as_mut(), id, BlobType::Data, &data, verify) {
            Ok(b) => {
                stats
                    .data_added
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                stats
                    .data_added_packed
                    .fetch_add(b.data.len() as u64, Ordering::Relaxed);
                if tx.send(b).is_err() {
                    return;
                }
            }
            Err(e) => gate.fail(e),
        }
    }
}

fn packer(
    rx: Receiver<SealedBlob>,
    tx: Sender<Pack>,
    crypto: &Crypto,
    pack_size: usize,
    gate: &Gate,
) {
    let new = || PackBuilder::new(pack_size + pack_size / 8);
    let mut pb = new();
    let finish = |pb: PackBuilder| match pb.finish(crypto) {
        Ok(p) => tx.send(p).is_ok(),
        Err(e) => {
            gate.fail(e);
            true
        }
    };
    for b in rx {
        if gate.is_failed() {
            continue;
        }
        pb.add(b);
        if pb.len() >= pack_size && !finish(std::mem::replace(&mut pb, new())) {
            return;
        }
    }
    if !pb.is_empty() && !gate.is_failed() {
        finish(pb);
    }
}

fn upload(
    rx: Receiver<Pack>,
    be: &Arc<dyn WriteBackend>,
    packs: &Mutex<Vec<IndexPack>>,
    gate: &Gate,
) {
    for p in rx {
        if gate.is_failed() {
            continue;
        }
        let entry = p.index_entry();
        if write(be, FileType::Pack, p.id, p.bytes, gate).is_ok() {
            packs.lock().unwrap().push(entry);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure names its seed.
#[cfg(test)]
pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

//! The data path: dump tools in, restic-format repository out, and back.
//!
//! - [`source`]: one driver per source kind. A driver knows how to ask its server what it is
//!   (version, reachability), which dump commands make a backup, and how to feed a restore.
//! - [`process`]: child processes whose stdout streams straight into the repository; a failed
//!   exit becomes an error, never a short snapshot.
//! - [`repo`]: the repository (rustic_core + rustic_backend): init, backup, snapshots, dump,
//!   forget, prune, check.
//! - [`manifest`]: what each backup holds (rows, objects, keys, files), counted from its
//!   streams as they pass and written into the snapshot, for restore drills to compare.
//! - `writer`: Holdfast's own pipelined writer for the backup path (chunk, hash, compress,
//!   encrypt, pack, upload), producing standard restic v2 snapshots.
//!
//! **Architecture invariant:** nothing is staged on disk. A dump flows from the tool's stdout
//! through the writer's chunker into pack files; a restore flows from the repository into the
//! restore tool's stdin.
//!
//! **Architecture invariant:** a snapshot file is written only after every stream of the backup
//! ended cleanly (tool exit status 0, no storage error). [`repo::Gate`] enforces this at the
//! storage layer, so no code path in rustic_core can write a snapshot of a failed dump.

pub mod drill;
pub mod error;
mod ftp;
pub mod manifest;
pub mod probe;
pub mod process;
pub mod repo;
pub mod source;
mod swift;
mod writer;

pub use error::{Error, Result};
pub use repo::{BackupOutcome, Repo, RepoConfig, SnapshotInfo, StorageCreds};
pub use source::{BackupOptions, RestoreOptions, RestoreStats, driver_for};

/// The version of Holdfast recorded in every snapshot.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

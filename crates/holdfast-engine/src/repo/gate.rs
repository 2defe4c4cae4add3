//! The gate of a backup: the first failure of any stream, the bytes read, and a storage
//! backend that refuses the snapshot file while a stream failed or is still running.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustic_core::repofile::FileType;
use rustic_core::{BytesList, ErrorKind, Id, ReadBackend, RusticError, RusticResult, WriteBackend};

use super::detail;
use crate::error::Error;

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
    /// The process groups of the dump tools still running (each tool leads its own).
    running: Mutex<Vec<u32>>,
}

impl Gate {
    /// Records a failure; the first one wins.
    pub fn fail(&self, e: Error) {
        {
            let mut f = self.failure.lock().unwrap();
            if f.is_some() {
                return;
            }
            tracing::debug!("backup failing: {e}");
            *f = Some(e);
        }
        // Stop every dump tool at once, with whatever it started: one that writes nothing
        // (waiting on a lock, a hung command) would otherwise hold its reader forever.
        for pgid in self.running.lock().unwrap().iter() {
            let _ = crate::process::kill_group(*pgid);
        }
    }

    /// A dump tool of this backup started, as the leader of process group `pgid`. A backup
    /// that has failed already stops it at once.
    pub(crate) fn started(&self, pgid: u32) {
        self.running.lock().unwrap().push(pgid);
        if self.is_failed() {
            let _ = crate::process::kill_group(pgid);
        }
    }

    /// The dump tool leading `pgid` ended; call before reaping it (its pid stays its own
    /// until then).
    pub(crate) fn ended(&self, pgid: u32) {
        self.running.lock().unwrap().retain(|p| *p != pgid);
    }

    pub fn is_failed(&self) -> bool {
        self.failure.lock().unwrap().is_some()
    }

    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.failure.lock().unwrap().take()
    }

    pub(super) fn may_write_snapshot(&self) -> bool {
        !self.is_failed()
            && self.completed.load(Ordering::SeqCst) == self.expected.load(Ordering::SeqCst)
    }
}

/// The gate of the backup in progress, swapped in by [`Repo::backup`].
pub(crate) type SharedGate = Arc<Mutex<Arc<Gate>>>;

/// Wraps the storage backend so that a snapshot file cannot be written while the gate reports a
/// failed or incomplete stream, and storage errors are remembered even if rustic_core logs and
/// skips them.
#[derive(Debug)]
pub(crate) struct GuardedBackend {
    pub(super) inner: Arc<dyn WriteBackend>,
    pub(super) gate: SharedGate,
    /// For errors: the repository as messages name it, and its kind.
    pub(super) repo: String,
    pub(super) kind: holdfast_core::StorageKind,
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

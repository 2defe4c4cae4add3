//! The tap on each dump stream, and the collection of their tallies into one manifest.
//!
//! The manifest is one more input of the backup, opened last: its reader waits until every
//! stream's tap is gone (ended or dropped after a failure) and is the manifest's JSON only when
//! every stream ended cleanly. A failed stream has already failed the backup, so no snapshot
//! is written and the manifest's error is never the one reported.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};

use super::{FileTally, Manifest, Tally};

/// The tallies of one backup's streams.
pub(crate) struct Collect {
    source: String,
    state: Mutex<State>,
    done: Condvar,
}

struct State {
    files: BTreeMap<String, FileTally>,
    /// Streams whose tap is still open (or not yet opened).
    open: usize,
    failed: bool,
}

impl Collect {
    pub(crate) fn new(source: &str, streams: usize) -> Self {
        Self {
            source: source.to_string(),
            state: Mutex::new(State {
                files: BTreeMap::new(),
                open: streams,
                failed: false,
            }),
            done: Condvar::new(),
        }
    }

    /// A stream that never opened (its tool did not start).
    pub(crate) fn never_opened(&self) {
        self.close(None, true);
    }

    fn close(&self, file: Option<(String, FileTally)>, failed: bool) {
        let mut s = self.state.lock().unwrap();
        if let Some((name, tally)) = file {
            s.files.insert(name, tally);
        }
        s.failed |= failed;
        s.open -= 1;
        if s.open == 0 {
            self.done.notify_all();
        }
    }

    /// Waits for every stream, then the manifest, or an error when a stream did not end cleanly.
    pub(crate) fn wait(&self) -> io::Result<Manifest> {
        let mut s = self.state.lock().unwrap();
        while s.open > 0 {
            s = self.done.wait(s).unwrap();
        }
        if s.failed {
            return Err(io::Error::other("a stream of the backup failed"));
        }
        Ok(Manifest {
            version: 1,
            source: self.source.clone(),
            files: std::mem::take(&mut s.files),
        })
    }

    /// The manifest as the reader of the backup's last input.
    pub(crate) fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        let m = self.wait()?;
        let json = serde_json::to_vec_pretty(&m).map_err(io::Error::other)?;
        Ok(Box::new(io::Cursor::new(json)))
    }
}

/// A dump stream's reader, with its bytes counted by a tally as they pass.
pub(crate) struct Tap<R> {
    inner: R,
    /// The file's path inside the snapshot, and its tally until the stream ended.
    name: String,
    tally: Option<Box<dyn Tally>>,
    bytes: u64,
    collect: Arc<Collect>,
    closed: bool,
}

impl<R: Read> Tap<R> {
    pub(crate) fn new(
        inner: R,
        name: String,
        tally: Box<dyn Tally>,
        collect: Arc<Collect>,
    ) -> Self {
        Self {
            inner,
            name,
            tally: Some(tally),
            bytes: 0,
            collect,
            closed: false,
        }
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(t) = self.tally.take() {
                let mut file = t.finish();
                file.bytes = self.bytes;
                self.closed = true;
                self.collect
                    .close(Some((std::mem::take(&mut self.name), file)), false);
            }
        } else if let Some(t) = &mut self.tally {
            t.feed(&buf[..n]);
            self.bytes += n as u64;
        }
        Ok(n)
    }
}

impl<R> Drop for Tap<R> {
    fn drop(&mut self) {
        if !self.closed {
            // Dropped before its end: the stream failed or was stopped.
            self.collect.close(None, true);
        }
    }
}

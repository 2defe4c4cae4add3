//! The lease: renewed while the attempt runs, carrying progress, bringing back cancels.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::agent::Heartbeat;
use holdfast_engine::repo::Gate;
use tokio::sync::watch;

use crate::link::{Link, LinkError};

#[derive(Default)]
pub(super) struct Flags {
    pub(super) cancelled: AtomicBool,
    pub(super) lost: AtomicBool,
    /// The agent is shutting down and stopped the job: it goes back to the queue.
    pub(super) handed_back: AtomicBool,
}

/// What the heartbeat reports: the running backup's gate (bytes read so far) and the bytes of
/// the tries before it.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) gate: Mutex<Option<Arc<Gate>>>,
    pub(super) written: AtomicU64,
}

impl Progress {
    pub(super) fn read(&self) -> u64 {
        self.gate
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |g| g.bytes.load(Ordering::Relaxed))
    }
}

/// Renews the lease until aborted. A cancel request or a lost lease raises `stop`, which
/// kills running hooks and fails a running backup's gate (no snapshot is written).
pub(super) async fn heartbeat(
    link: Arc<Link>,
    job: i64,
    lease_ms: u64,
    progress: Arc<Progress>,
    flags: Arc<Flags>,
    stop: Arc<watch::Sender<bool>>,
) {
    let every = Duration::from_millis((lease_ms / 3).clamp(100, 2_000));
    loop {
        tokio::time::sleep(every).await;
        let hb = Heartbeat {
            bytes_read: progress.read(),
            bytes_written: progress.written.load(Ordering::Relaxed),
        };
        match link.heartbeat(job, &hb).await {
            Ok(r) if r.cancel => {
                flags.cancelled.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
            }
            Ok(_) => {}
            Err(LinkError::Lost(_) | LinkError::Refused | LinkError::Unknown(_)) => {
                flags.lost.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
                return;
            }
            // The server may be restarting: keep working; the lease may be renewed in time.
            Err(e) => tracing::warn!(job, "heartbeat failed: {e}"),
        }
    }
}

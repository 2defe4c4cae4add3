//! The server's background loops as supervised workers: the scheduler's tick, the lease
//! reaper, and the embedded agent.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::secrets::{self};
use crate::worker;

use crate::scheduler;
use crate::state::AppState;

/// The scheduler's tick: fires due plans and prunes.
pub(crate) struct Tick(pub(crate) Arc<AppState>);

impl worker::Worker for Tick {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.0;
        let r = scheduler::tick(&s.store, s.now())
            .await
            .map_err(|e| e.to_string())?;
        if !r.queued.is_empty() || !r.prunes.is_empty() {
            s.wake.notify_waiters();
        }
        Ok(s.config.tick)
    }
}

/// The reaper: takes back jobs whose worker stopped renewing its lease.
pub(crate) struct Reaper(pub(crate) Arc<AppState>);

impl worker::Worker for Reaper {
    fn name(&self) -> &'static str {
        "reaper"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.0;
        let jitter = f64::from(secrets::random_bytes::<1>()[0]) / 256.0;
        let ids = scheduler::reap(&s.store, s.now(), jitter)
            .await
            .map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            s.wake.notify_waiters();
        }
        Ok(s.config.tick)
    }
}

/// Housekeeping: drops audit entries older than the retention and sessions that ended.
pub(crate) struct Housekeeping(pub(crate) Arc<AppState>);

impl worker::Worker for Housekeeping {
    fn name(&self) -> &'static str {
        "housekeeping"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.0;
        let now = s.now();
        let keep = i64::try_from(s.config.audit_retention.as_millis()).unwrap_or(i64::MAX);
        let e = |e: holdfast_store::StoreError| e.to_string();
        let gone = s
            .store
            .prune_audit(now.saturating_sub(keep))
            .await
            .map_err(e)?;
        if gone > 0 {
            tracing::info!(
                entries = gone,
                "audit log entries past their retention removed"
            );
        }
        s.store
            .delete_expired_sessions(now, crate::ui::SESSION_IDLE_MS)
            .await
            .map_err(e)?;
        Ok(Duration::from_secs(600))
    }
}

/// The embedded agent, over loopback. At shutdown it stops claiming and hands its running
/// jobs back (after the grace period), so nothing is left running without a lease.
pub(crate) struct EmbeddedAgent {
    pub(crate) config: holdfast_agent::AgentConfig,
    pub(crate) token: SecretString,
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

impl worker::Worker for EmbeddedAgent {
    fn name(&self) -> &'static str {
        "embedded-agent"
    }

    async fn step(&self) -> Result<Duration, String> {
        holdfast_agent::run(self.config.clone(), self.token.clone(), self.stop.clone()).await?;
        Ok(Duration::ZERO)
    }

    fn graceful(&self) -> bool {
        true
    }
}

//! Background loops (the scheduler's tick, the lease reaper, the embedded agent) as supervised
//! workers: each step runs in a task of its own, so an error or a panic ends only that step;
//! the supervisor records it, waits a backoff, and runs the worker again. Every worker's state
//! (runs, last run, last error, restarts) is visible in `GET /api/v1/health`, and all of them
//! stop cooperatively when the server shuts down.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

/// A background loop, one step at a time.
pub trait Worker: Send + Sync + 'static {
    /// Names the worker in logs and in `GET /api/v1/health`.
    fn name(&self) -> &'static str;

    /// One step of work. `Ok(wait)`: run again after `wait`. `Err`: the step failed; the
    /// supervisor records it and runs the worker again after a backoff. A step that never
    /// returns (the embedded agent) runs until shutdown.
    fn step(&self) -> impl Future<Output = Result<Duration, String>> + Send;

    /// Whether a running step is left to end by itself at shutdown (it watches the same stop
    /// signal and winds down, as the embedded agent hands its jobs back) instead of being
    /// dropped.
    fn graceful(&self) -> bool {
        false
    }
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerPhase {
    Running,
    Idle,
    /// Waiting out the backoff after a failed or panicked step.
    Restarting,
    Stopped,
}

/// A worker's state, as `GET /api/v1/health` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerStatus {
    pub name: &'static str,
    pub phase: WorkerPhase,
    /// Steps that ended (well or not).
    pub runs: u64,
    /// When the last step ended (RFC 3339).
    pub last_run: Option<String>,
    /// Why the last failed step failed (an error, or a panic's message).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Steps that failed or panicked, each followed by a restart.
    pub restarts: u64,
}

/// Every worker of this server, for the health answer.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    list: Arc<Mutex<Vec<WorkerStatus>>>,
}

/// How long the supervisor waits after the n-th failure in a row (doubling, at most a minute).
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

/// Resolves once `stop` is raised (or its sender is gone); holds no guard across awaits.
async fn raised(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// A panic's message, as far as it can be read.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => match p.downcast::<String>() {
            Ok(s) => format!("panicked: {s}"),
            Err(p) => match p.downcast::<&'static str>() {
                Ok(s) => format!("panicked: {s}"),
                Err(_) => "panicked".into(),
            },
        },
        Err(e) => e.to_string(),
    }
}

impl Workers {
    pub fn status(&self) -> Vec<WorkerStatus> {
        self.list.lock().unwrap().clone()
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.list.lock().unwrap()[i]);
    }

    /// Runs `worker` under supervision until `stop` is raised; the returned task ends then
    /// (a running step is dropped at its next await point).
    pub fn spawn<W: Worker>(
        &self,
        worker: W,
        restart: Restart,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let worker = Arc::new(worker);
        let i = {
            let mut l = self.list.lock().unwrap();
            l.push(WorkerStatus {
                name: worker.name(),
                phase: WorkerPhase::Idle,
                runs: 0,
                last_run: None,
                last_error: None,
                last_error_at: None,
                restarts: 0,
            });
            l.len() - 1
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                if *stop.borrow() {
                    break;
                }
                me.update(i, |s| s.phase = WorkerPhase::Running);
                let w = worker.clone();
                let mut task = tokio::spawn(async move { w.step().await });
                let outcome = tokio::select! {
                    r = &mut task => r,
                    _ = raised(&mut stop) => {
                        if worker.graceful() {
                            let _ = task.await;
                        } else {
                            task.abort();
                        }
                        break;
                    }
                };
                let failed = match outcome {
                    Ok(Ok(wait)) => {
                        failures = 0;
                        me.update(i, |s| {
                            s.runs += 1;
                            s.last_run = Some(now_rfc3339());
                            s.phase = WorkerPhase::Idle;
                        });
                        if wait.is_zero() {
                            continue;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = raised(&mut stop) => break,
                        }
                        continue;
                    }
                    Ok(Err(e)) => e,
                    Err(e) => panic_message(e),
                };
                failures = failures.saturating_add(1);
                let wait = restart
                    .first
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(restart.max);
                tracing::error!(
                    worker = worker.name(),
                    "{failed}; restarting in {:.1} s",
                    wait.as_secs_f64()
                );
                me.update(i, |s| {
                    s.runs += 1;
                    s.restarts += 1;
                    s.last_run = Some(now_rfc3339());
                    s.last_error = Some(failed);
                    s.last_error_at = s.last_run.clone();
                    s.phase = WorkerPhase::Restarting;
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = raised(&mut stop) => break,
                }
            }
            me.update(i, |s| s.phase = WorkerPhase::Stopped);
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// Panics on its first step, fails on its second, then works and says so.
    struct Flaky {
        steps: AtomicU32,
        working: Arc<Notify>,
    }

    impl Worker for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        async fn step(&self) -> Result<Duration, String> {
            match self.steps.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("the fire path's expect"),
                1 => Err("the store is unreachable".into()),
                _ => {
                    self.working.notify_one();
                    Ok(Duration::from_secs(3600))
                }
            }
        }
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_and_its_restart_is_visible() {
        let workers = Workers::default();
        let working = Arc::new(Notify::new());
        let (stop_tx, stop) = watch::channel(false);
        let task = workers.spawn(
            Flaky {
                steps: AtomicU32::new(0),
                working: working.clone(),
            },
            Restart {
                first: Duration::from_millis(10),
                max: Duration::from_millis(20),
            },
            stop,
        );
        tokio::time::timeout(Duration::from_secs(10), working.notified())
            .await
            .expect("the worker runs again after its panic and its error");
        let s = &workers.status()[0];
        assert_eq!(s.name, "flaky");
        assert_eq!(s.restarts, 2, "{s:?}");
        assert_eq!(
            s.last_error.as_deref(),
            Some("the store is unreachable"),
            "{s:?}"
        );
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the worker stops when asked")
            .unwrap();
        assert_eq!(workers.status()[0].phase, WorkerPhase::Stopped);
    }

    #[tokio::test]
    async fn a_panic_is_recorded_with_its_message() {
        struct Once;
        impl Worker for Once {
            fn name(&self) -> &'static str {
                "once"
            }
            async fn step(&self) -> Result<Duration, String> {
                panic!("boom")
            }
        }
        let workers = Workers::default();
        let (stop_tx, stop) = watch::channel(false);
        let task = workers.spawn(
            Once,
            Restart {
                first: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
            },
            stop,
        );
        // The first failure is recorded before the (hour-long) backoff starts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut changed = loop {
            let s = workers.status()[0].clone();
            if s.restarts == 1 || tokio::time::Instant::now() > deadline {
                break s;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(changed.phase, WorkerPhase::Restarting);
        assert_eq!(changed.last_error.take().as_deref(), Some("panicked: boom"));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}

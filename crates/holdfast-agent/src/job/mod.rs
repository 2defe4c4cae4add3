//! One attempt of one job: the plan's lifecycle steps in order, each retried on transient
//! failures, the always-run steps whatever happened, a heartbeat that renews the lease and
//! carries progress (and brings back cancel requests), and the result reported at the end.

//!
//! Along its seams: this file runs the attempt (the step loop, retries, the always-run steps);
//! [`log`] batches the job's log lines to the server, [`heartbeat`] renews the lease, [`env`]
//! is what hooks see, and each operation has its file: [`backup`], [`restore`], [`prune`],
//! [`copy`], [`verify`] (restore drills).

mod backup;
mod copy;
mod env;
mod heartbeat;
mod log;
mod prune;
mod restore;
mod verify;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::SourceSpec;
use holdfast_core::agent::{Finish, Outcome, SourceTicket, StepReport, StepState, Ticket, Work};
use holdfast_core::lifecycle::{Hook, RELEASED, Step, StepRetry};
use holdfast_engine::{Error as EngineError, Repo, RepoConfig};
use tokio::sync::watch;

use crate::hook::{self, HookEnv};
use crate::link::{Link, LinkError};
use crate::policy::Policy;

use heartbeat::{Flags, Progress, heartbeat};
pub use log::JobLog;

/// Why a step or an attempt failed, and whether trying again may help.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub transient: bool,
}

impl Failure {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: false,
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: true,
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Self {
            transient: e.is_transient(),
            reason: e.to_string(),
        }
    }
}

#[derive(Default)]
struct Done {
    snapshot_id: Option<String>,
    bytes_read: u64,
    bytes_written: u64,
    /// Backups: the plan's restore points after retention.
    restore_points: Option<u64>,
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) % 1000) as f64 / 1000.0
}

/// Runs one attempt of the job and reports its end. When `shutdown` is raised, the job may
/// go on for `grace`; then it is stopped like a cancel and handed back to the queue.
pub async fn run(
    link: Arc<Link>,
    t: Ticket,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    policy: Arc<Policy>,
) {
    let (log, flusher) = JobLog::start(link.clone(), t.job);
    log.line(format!(
        "attempt {} of {} started on agent {}",
        t.attempt,
        t.max_attempts,
        link.agent()
    ));
    let (stop_tx, stop) = watch::channel(false);
    let flags = Arc::new(Flags::default());
    let progress = Arc::new(Progress::default());
    let stop_tx = Arc::new(stop_tx);
    let hb = tokio::spawn(heartbeat(
        link.clone(),
        t.job,
        t.lease_ms,
        progress.clone(),
        flags.clone(),
        stop_tx.clone(),
    ));
    let hand_back = {
        let (flags, stop_tx, log) = (flags.clone(), stop_tx.clone(), log.clone());
        tokio::spawn(async move {
            if shutdown.wait_for(|v| *v).await.is_err() {
                return;
            }
            log.line(format!(
                "the agent is shutting down: the job may go on for {} s, then it is stopped and handed back to the queue",
                grace.as_secs()
            ));
            tokio::time::sleep(grace).await;
            flags.handed_back.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
    };
    let result = if let Some(why) = policy.refuses(&t) {
        // Nothing of the job runs, not even its cleanup hooks: they are the plan's too.
        log.line(format!("refused by agent {}: {why}", link.agent()));
        Err(Failure::permanent(format!(
            "refused by agent {}: {why}",
            link.agent()
        )))
    } else {
        match Ctx::new(
            link.clone(),
            &t,
            log.clone(),
            stop,
            progress.clone(),
            policy,
        ) {
            Ok(ctx) => ctx.execute().await,
            Err(f) => Err(f),
        }
    };
    hb.abort();
    hand_back.abort();
    let lost = flags.lost.load(Ordering::SeqCst);
    let finish = match result {
        Ok(done) => Finish {
            outcome: Outcome::Succeeded,
            transient: false,
            reason: None,
            snapshot_id: done.snapshot_id,
            bytes_read: done.bytes_read,
            bytes_written: done.bytes_written,
            restore_points: done.restore_points,
        },
        Err(f) => {
            let cancelled = flags.cancelled.load(Ordering::SeqCst);
            let handed_back = flags.handed_back.load(Ordering::SeqCst) && !cancelled;
            Finish {
                outcome: if cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                },
                transient: f.transient || handed_back,
                reason: Some(if handed_back {
                    format!(
                        "the agent {} shut down before the job ended ({}); another attempt takes over",
                        link.agent(),
                        f.reason
                    )
                } else {
                    f.reason
                }),
                snapshot_id: None,
                bytes_read: progress.read(),
                bytes_written: progress.written.load(Ordering::Relaxed),
                restore_points: None,
            }
        }
    };
    if lost {
        log.line(format!(
            "agent {} lost the job's lease; its result is dropped and another attempt takes over",
            link.agent()
        ));
    }
    drop(log);
    let _ = flusher.await;
    if lost {
        return;
    }
    match link.finish(t.job, &finish).await {
        Ok(()) => {}
        Err(LinkError::Lost(m)) => tracing::warn!(job = t.job, "result refused: {m}"),
        Err(e) => tracing::error!(job = t.job, "cannot report the job's result: {e}"),
    }
}

fn source_spec(s: &SourceTicket, url: &str) -> Result<SourceSpec, Failure> {
    s.spec(url)
        .map_err(|e| Failure::permanent(format!("source `{}`: {e}", s.name)))
}

fn open_or_init(cfg: &RepoConfig) -> Result<Repo, EngineError> {
    match Repo::open(cfg) {
        Err(EngineError::RepoNotFound { .. }) => match Repo::init(cfg) {
            // Another job (on this agent or another) created it first: use theirs.
            Ok(()) | Err(EngineError::RepoExists { .. }) => Repo::open(cfg),
            Err(e) => Err(e),
        },
        other => other,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::permanent(format!("the job's thread failed: {e}")))?
}

struct Ctx {
    link: Arc<Link>,
    t: Ticket,
    log: JobLog,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
    repo: RepoConfig,
    source: Mutex<Option<SourceSpec>>,
    snapshot: Mutex<Option<String>>,
    /// The attempt's private directory (mode 0700), removed at the end.
    work: tempfile::TempDir,
    env_file: PathBuf,
    policy: Arc<Policy>,
}

impl Ctx {
    fn new(
        link: Arc<Link>,
        t: &Ticket,
        log: JobLog,
        stop: watch::Receiver<bool>,
        progress: Arc<Progress>,
        policy: Arc<Policy>,
    ) -> Result<Self, Failure> {
        let work = tempfile::Builder::new()
            .prefix(&format!("holdfast-job-{}-", t.job))
            .tempdir()
            .map_err(|e| {
                Failure::transient(format!("cannot create the job's work directory: {e}"))
            })?;
        let env_file = work.path().join("hook.env");
        let source = match t.source() {
            Some(s) => Some(source_spec(s, &s.url)?),
            None => None,
        };
        let restore_point = match &t.work {
            Work::Restore { restore, .. } => Some(restore.restore_point.clone()),
            _ => None,
        };
        let repo = RepoConfig::from_ticket_via(&t.repository, link.server())?;
        Ok(Self {
            link,
            repo,
            snapshot: Mutex::new(restore_point),
            t: t.clone(),
            log,
            stop,
            progress,
            source: Mutex::new(source),
            work,
            env_file,
            policy,
        })
    }

    fn retry(&self) -> StepRetry {
        self.t.plan().map(|p| p.step_retry).unwrap_or_default()
    }

    fn hook(&self, step: Step) -> Option<&Hook> {
        self.t.plan().and_then(|p| p.hooks.get(step))
    }

    /// The hook of `step` as it runs here: a named hook becomes the path of its file in the
    /// agent's hooks directory (the policy checked before the job started that it exists).
    fn hook_to_run(&self, step: Step) -> Option<Hook> {
        let mut h = self.hook(step)?.clone();
        if let Some(dir) = &self.policy.hooks_dir
            && crate::policy::is_named(&h.run)
        {
            h.run = env::sh_quote(&dir.join(&h.run).display().to_string());
        }
        Some(h)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn report(
        &self,
        attempt: u32,
        step: &str,
        try_no: u32,
        state: StepState,
        detail: Option<String>,
    ) {
        let r = StepReport {
            attempt,
            step: step.into(),
            try_no,
            state,
            detail,
        };
        if let Err(e) = self.link.step(self.t.job, &r).await {
            tracing::warn!(job = self.t.job, "cannot record step {step}: {e}");
        }
    }

    async fn execute(&self) -> Result<Done, Failure> {
        for a in &self.t.cleanup_first {
            self.log.line(format!(
                "attempt {a} ended without cleaning up (its agent stopped reporting): running its cleanup and unlock steps first"
            ));
            if let Err(f) = self.always(*a).await {
                return Err(Failure::transient(format!(
                    "cleaning up after attempt {a} failed: {}; not starting a new backup over a lock that may still be held",
                    f.reason
                )));
            }
        }
        if let Work::Prune = self.t.work {
            return self.prune().await;
        }
        if let Work::Verify { .. } = self.t.work {
            return self.verify().await;
        }
        let (main, _) = Step::plan_for(self.t.kind());
        let mut result: Result<Done, Failure> = Ok(Done::default());
        let mut started = false;
        for &step in main {
            let builtin = matches!(step, Step::Backup | Step::Restore);
            if self.hook(step).is_none() && !builtin {
                continue;
            }
            if self.stopped() {
                result = Err(Failure::permanent("cancelled"));
                break;
            }
            started = true;
            match self.step(step, self.t.attempt, false).await {
                Ok(Some(d)) => result = Ok(d),
                Ok(None) => {}
                Err(f) => {
                    result = Err(f);
                    break;
                }
            }
        }
        if started && let Err(f) = self.always(self.t.attempt).await {
            match &mut result {
                Ok(d) => {
                    let saved = d
                        .snapshot_id
                        .as_deref()
                        .map(|s| {
                            format!(
                                " (the backup itself is saved as restore point {})",
                                &s[..s.len().min(8)]
                            )
                        })
                        .unwrap_or_default();
                    result = Err(Failure::permanent(format!("{}{saved}", f.reason)));
                }
                Err(_) => self.log.line(format!("also: {}", f.reason)),
            }
        }
        if let (
            Ok(_),
            Work::Backup {
                plan,
                copy_repository: Some(to),
                ..
            },
        ) = (&result, &self.t.work)
            && !self.stopped()
        {
            self.copy(plan, to).await;
        }
        result
    }

    /// The cleanup and unlock steps of `attempt`, each tried even when another failed; then
    /// the attempt is recorded as released. Returns the first failure.
    async fn always(&self, attempt: u32) -> Result<(), Failure> {
        let (_, always) = Step::plan_for(self.t.kind());
        let mut first = Ok(());
        for &step in always {
            if self.hook(step).is_none() {
                continue;
            }
            if let Err(f) = self.step(step, attempt, true).await
                && first.is_ok()
            {
                first = Err(f);
            }
        }
        if first.is_ok() {
            self.report(attempt, RELEASED, 1, StepState::Succeeded, None)
                .await;
        }
        first
    }

    /// Runs `step` with retries. `always` steps run even when the job is being cancelled.
    async fn step(&self, step: Step, attempt: u32, always: bool) -> Result<Option<Done>, Failure> {
        let retry = self.retry();
        let (_keep, never) = watch::channel(false);
        let stop = if always { never } else { self.stop.clone() };
        let mut try_no = 1;
        loop {
            self.report(attempt, step.as_str(), try_no, StepState::Running, None)
                .await;
            let r = self.once(step, attempt, stop.clone()).await;
            match r {
                Ok(d) => {
                    self.report(attempt, step.as_str(), try_no, StepState::Succeeded, None)
                        .await;
                    return Ok(d);
                }
                Err(f) => {
                    self.report(
                        attempt,
                        step.as_str(),
                        try_no,
                        StepState::Failed,
                        Some(f.reason.clone()),
                    )
                    .await;
                    let stopped = !always && self.stopped();
                    if !f.transient || try_no >= retry.attempts || stopped {
                        return Err(f);
                    }
                    let wait = Duration::from_millis(retry.delay_ms(try_no + 1, jitter()));
                    self.log.line(format!(
                        "{step} failed (try {try_no} of {}): {}; trying again in {:.1} s",
                        retry.attempts,
                        f.reason,
                        wait.as_secs_f64()
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        true = hook::stopped(stop.clone()) => return Err(f),
                    }
                    try_no += 1;
                }
            }
        }
    }

    async fn once(
        &self,
        step: Step,
        attempt: u32,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Done>, Failure> {
        match (step, self.hook_to_run(step)) {
            (Step::Backup, hook) => self.backup(hook).await.map(Some),
            (Step::Restore, hook) => self.restore(hook).await.map(Some),
            (_, Some(hook)) => {
                let (vars, secret_vars) = self.env(attempt);
                let env = HookEnv {
                    vars: &vars,
                    secret_vars: &secret_vars,
                    work_dir: self.work.path(),
                };
                hook::run(step, &hook, &env, &self.log, stop).await?;
                self.read_env_file()?;
                Ok(None)
            }
            (_, None) => Ok(None),
        }
    }
}

//! One attempt of one job: the plan's lifecycle steps in order, each retried on transient
//! failures, the always-run steps whatever happened, a heartbeat that renews the lease and
//! carries progress (and brings back cancel requests), and the result reported at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::SourceSpec;
use holdfast_core::agent::{
    Finish, Heartbeat, Outcome, RepoTicket, SourceTicket, StepReport, StepState, Ticket, Work,
};
use holdfast_core::lifecycle::{COPY, Hook, NO_RETRY_EXIT, RELEASED, Step, StepRetry};
use holdfast_core::plan::PlanSpec;
use holdfast_engine::repo::Gate;
use holdfast_engine::{Error as EngineError, Repo, RepoConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, watch};

use crate::hook::{self, HookEnv};
use crate::link::{Link, LinkError};

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

/// The job's log: lines go to the server in batches, in order, from a task of their own.
#[derive(Clone)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<String>,
}

impl JobLog {
    fn start(link: Arc<Link>, job: i64) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut lines = vec![first];
                while lines.len() < 200 {
                    match rx.try_recv() {
                        Ok(l) => lines.push(l),
                        Err(_) => break,
                    }
                }
                if let Err(e) = link.log(job, lines).await {
                    tracing::warn!(job, "cannot send log lines: {e}");
                }
            }
        });
        (Self { tx }, task)
    }

    pub fn line(&self, l: impl Into<String>) {
        let _ = self.tx.send(l.into());
    }
}

#[derive(Default)]
struct Flags {
    cancelled: AtomicBool,
    lost: AtomicBool,
    /// The agent is shutting down and stopped the job: it goes back to the queue.
    handed_back: AtomicBool,
}

/// What the heartbeat reports: the running backup's gate (bytes read so far) and the bytes of
/// the tries before it.
#[derive(Default)]
struct Progress {
    gate: Mutex<Option<Arc<Gate>>>,
    written: AtomicU64,
}

impl Progress {
    fn read(&self) -> u64 {
        self.gate
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |g| g.bytes.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Done {
    snapshot_id: Option<String>,
    bytes_read: u64,
    bytes_written: u64,
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) % 1000) as f64 / 1000.0
}

/// Renews the lease until aborted. A cancel request or a lost lease raises `stop`, which
/// kills running hooks and fails a running backup's gate (no snapshot is written).
async fn heartbeat(
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

/// Runs one attempt of the job and reports its end. When `shutdown` is raised, the job may
/// go on for `grace`; then it is stopped like a cancel and handed back to the queue.
pub async fn run(link: Arc<Link>, t: Ticket, mut shutdown: watch::Receiver<bool>, grace: Duration) {
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
    let result = match Ctx::new(link.clone(), &t, log.clone(), stop, progress.clone()) {
        Ok(ctx) => ctx.execute().await,
        Err(f) => Err(f),
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

/// One try of the copy: what was copied and what the copy's retention did, for the job.
fn copy_once(
    src: &RepoConfig,
    to: &RepoTicket,
    plan: &PlanSpec,
    log: &JobLog,
) -> Result<String, Failure> {
    let Some(spec) = &plan.copy else {
        return Err(Failure::permanent("the plan has no copy endpoint"));
    };
    let src = Repo::open(src)?;
    let dest = open_or_init(&RepoConfig::from_ticket(to)?)?;
    let tag = format!("plan={}", plan.name);
    let r = src.copy_to(&dest, &tag)?;
    let short = |id: &str| id[..id.len().min(8)].to_string();
    let copied: Vec<String> = r
        .copied
        .iter()
        .map(|(a, b)| format!("{} as {}", short(a), short(b)))
        .collect();
    let mut detail = if copied.is_empty() {
        format!(
            "copy: endpoint `{}` is up to date ({} copies of the plan's restore points there)",
            to.endpoint, r.present
        )
    } else {
        format!(
            "copied {} restore point(s) to endpoint `{}`: {}",
            copied.len(),
            to.endpoint,
            copied.join(", ")
        )
    };
    let policy = spec
        .retention
        .as_ref()
        .unwrap_or(&plan.retention)
        .keep_policy();
    match dest.forget(&policy, false, Some(&tag)) {
        Ok(f) => detail.push_str(&format!(
            "; retention there: kept {}, forgot {}",
            f.kept.len(),
            f.removed.len()
        )),
        Err(e) => log.line(format!(
            "retention on copy endpoint `{}` failed (the copies are saved): {e}",
            to.endpoint
        )),
    }
    Ok(detail)
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

/// Environment variables for a child process.
type Vars = Vec<(String, String)>;

/// Quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
}

impl Ctx {
    fn new(
        link: Arc<Link>,
        t: &Ticket,
        log: JobLog,
        stop: watch::Receiver<bool>,
        progress: Arc<Progress>,
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
        Ok(Self {
            link,
            repo: RepoConfig::from_ticket(&t.repository)?,
            snapshot: Mutex::new(restore_point),
            t: t.clone(),
            log,
            stop,
            progress,
            source: Mutex::new(source),
            work,
            env_file,
        })
    }

    fn retry(&self) -> StepRetry {
        self.t.plan().map(|p| p.step_retry).unwrap_or_default()
    }

    fn hook(&self, step: Step) -> Option<&Hook> {
        self.t.plan().and_then(|p| p.hooks.get(step))
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

    /// Copies the plan's backups that the copy endpoint lacks (this one, and any an earlier
    /// failed copy left behind), then applies the copy's retention there. Retried like a step;
    /// a copy that fails in the end leaves the backup itself, and the job, successful.
    async fn copy(&self, plan: &PlanSpec, ct: &RepoTicket) {
        let retry = self.retry();
        let attempt = self.t.attempt;
        let mut try_no = 1;
        loop {
            self.report(attempt, COPY, try_no, StepState::Running, None)
                .await;
            let (src, log) = (self.repo.clone(), self.log.clone());
            let (ct2, plan2) = (ct.clone(), plan.clone());
            let r = blocking(move || copy_once(&src, &ct2, &plan2, &log)).await;
            match r {
                Ok(detail) => {
                    self.log.line(&detail);
                    self.report(attempt, COPY, try_no, StepState::Succeeded, Some(detail))
                        .await;
                    return;
                }
                Err(f) => {
                    self.report(
                        attempt,
                        COPY,
                        try_no,
                        StepState::Failed,
                        Some(f.reason.clone()),
                    )
                    .await;
                    if !f.transient || try_no >= retry.attempts || self.stopped() {
                        self.log.line(format!(
                            "copy to endpoint `{}` failed: {}; the backup itself is saved, and \
                             the next backup copies what is missing",
                            ct.endpoint, f.reason
                        ));
                        return;
                    }
                    let wait = Duration::from_millis(retry.delay_ms(try_no + 1, jitter()));
                    self.log.line(format!(
                        "copy failed (try {try_no} of {}): {}; trying again in {:.1} s",
                        retry.attempts,
                        f.reason,
                        wait.as_secs_f64()
                    ));
                    tokio::time::sleep(wait).await;
                    try_no += 1;
                }
            }
        }
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

    /// The environment every hook gets: the job's context, never a secret but the source's
    /// password (in the environment only, where the dump tools expect it too).
    fn env(&self, attempt: u32) -> (Vars, Vars) {
        let t = &self.t;
        let mut v: Vec<(String, String)> = vec![
            ("HOLDFAST_JOB_ID".into(), t.job.to_string()),
            ("HOLDFAST_JOB_KIND".into(), t.kind().to_string()),
            ("HOLDFAST_ATTEMPT".into(), attempt.to_string()),
            ("HOLDFAST_AGENT".into(), self.link.agent().to_string()),
            ("HOLDFAST_ENDPOINT".into(), t.repository.endpoint.clone()),
            (
                "HOLDFAST_WORK_DIR".into(),
                self.work.path().display().to_string(),
            ),
            (
                "HOLDFAST_ENV_FILE".into(),
                self.env_file.display().to_string(),
            ),
            ("HOLDFAST_NO_RETRY_EXIT".into(), NO_RETRY_EXIT.to_string()),
        ];
        if let Some(p) = t.plan() {
            v.push(("HOLDFAST_PLAN".into(), p.name.clone()));
        }
        if let Some(s) = self.snapshot.lock().unwrap().clone() {
            v.push(("HOLDFAST_SNAPSHOT_ID".into(), s));
        }
        let mut secret = vec![];
        if let Some(st) = t.source() {
            v.push(("HOLDFAST_SOURCE_NAME".into(), st.name.clone()));
            v.push(("HOLDFAST_SOURCE_KIND".into(), st.kind.clone()));
        }
        if let Some(spec) = self.source.lock().unwrap().as_ref() {
            v.push(("HOLDFAST_SOURCE_URL".into(), spec.to_string()));
            match spec {
                SourceSpec::Postgres(a) | SourceSpec::Mysql(a) => {
                    v.push(("HOLDFAST_SOURCE_HOST".into(), a.host.clone()));
                    if let Some(p) = a.port {
                        v.push(("HOLDFAST_SOURCE_PORT".into(), p.to_string()));
                    }
                    if let Some(u) = &a.user {
                        v.push(("HOLDFAST_SOURCE_USER".into(), u.clone()));
                    }
                    if let Some(d) = &a.database {
                        v.push(("HOLDFAST_SOURCE_DATABASE".into(), d.clone()));
                    }
                    if let Some(pw) = &a.password {
                        secret.push((
                            "HOLDFAST_SOURCE_PASSWORD".into(),
                            pw.expose_secret().to_string(),
                        ));
                    }
                }
                SourceSpec::Redis { host, port, .. } => {
                    v.push(("HOLDFAST_SOURCE_HOST".into(), host.clone()));
                    v.push(("HOLDFAST_SOURCE_PORT".into(), port.to_string()));
                }
                SourceSpec::Sqlite { path } | SourceSpec::Folder { path } => {
                    v.push(("HOLDFAST_SOURCE_PATH".into(), path.display().to_string()));
                }
                SourceSpec::Command { .. } => {}
            }
        }
        (v, secret)
    }

    async fn once(
        &self,
        step: Step,
        attempt: u32,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Done>, Failure> {
        match (step, self.hook(step).cloned()) {
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

    /// A hook may hand the dump another connection (a temporary replica, say) by writing
    /// `HOLDFAST_SOURCE_URL=...` to `$HOLDFAST_ENV_FILE`.
    fn read_env_file(&self) -> Result<(), Failure> {
        let Ok(text) = std::fs::read_to_string(&self.env_file) else {
            return Ok(());
        };
        let Some(st) = self.t.source() else {
            return Ok(());
        };
        for line in text.lines() {
            if let Some(url) = line.trim().strip_prefix("HOLDFAST_SOURCE_URL=") {
                let spec = source_spec(st, url.trim())?;
                let mut cur = self.source.lock().unwrap();
                if cur.as_ref().map(|c| c.to_string()) != Some(spec.to_string()) {
                    self.log.line(format!(
                        "a hook handed over another connection: this job now uses {spec}"
                    ));
                }
                *cur = Some(spec);
            }
        }
        Ok(())
    }

    fn new_gate(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        *self.progress.gate.lock().unwrap() = Some(gate.clone());
        // A cancel (or a lost lease) stops the dump tools and keeps the snapshot unwritten.
        let stop = self.stop.clone();
        let g = gate.clone();
        tokio::spawn(async move {
            if hook::stopped(stop).await {
                g.fail(EngineError::Other(
                    "the job was cancelled or lost its lease".into(),
                ));
            }
        });
        gate
    }

    async fn backup(&self, hook: Option<Hook>) -> Result<Done, Failure> {
        let Work::Backup {
            plan, source: st, ..
        } = self.t.work.clone()
        else {
            return Err(Failure::permanent("not a backup job"));
        };
        let source = self
            .source
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Failure::permanent("a backup job without a source"))?;
        let (vars, secret_vars) = self.env(self.t.attempt);
        let gate = self.new_gate();
        let timer = hook.as_ref().map(|h| {
            let g = gate.clone();
            let secs = h.timeout_secs;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                g.fail(EngineError::SourceUnreachable {
                    source_name: "backup hook".into(),
                    detail: format!("timed out after {secs} s and was stopped"),
                });
            })
        });
        match &hook {
            Some(_) => self.log.line(format!(
                "backing up with the plan's backup hook (for {} source `{}`) into endpoint `{}`",
                st.kind, st.name, self.t.repository.endpoint
            )),
            None => self.log.line(format!(
                "backing up {} source `{}` ({source}) into endpoint `{}`",
                st.kind, st.name, self.t.repository.endpoint
            )),
        }
        let cfg = self.repo.clone();
        let policy = plan.retention.keep_policy();
        let log = self.log.clone();
        let r = blocking(move || {
            let repo = open_or_init(&cfg)?;
            let opts = holdfast_engine::BackupOptions {
                single_stream: st.single_stream,
                all_databases: st.all_databases,
                plan: Some(plan.name.clone()),
                tags: vec![],
                restrict_key: Some(repo.derive_secret(&format!("pg_dump restrict key {source}"))),
            };
            let set = match &hook {
                None => holdfast_engine::driver_for(&source).backup_set(&opts)?,
                Some(h) => {
                    let cmd = SourceSpec::Command {
                        name: st.name.clone(),
                        command: h.run.clone(),
                    };
                    let mut set = holdfast_engine::driver_for(&cmd).backup_set(&opts)?;
                    for s in &mut set.streams {
                        let mut c = s.cmd.clone().env("HOLDFAST_STEP", "backup");
                        for (k, v) in &vars {
                            c = c.env(k, v);
                        }
                        for (k, v) in &secret_vars {
                            c = c.secret_env(k, Some(&SecretString::from(v.clone())));
                        }
                        s.cmd = c;
                    }
                    set
                }
            };
            let outcome = repo.backup(set, gate)?;
            let s = &outcome.snapshot;
            log.line(format!(
                "restore point {} saved: {} bytes read, {} bytes added to the repository, {:.1} s",
                s.short_id, s.bytes, s.added_bytes, s.duration_secs
            ));
            // Retention touches only this plan's snapshots; a failure here keeps the backup.
            match repo.forget(&policy, false, Some(&format!("plan={}", plan.name))) {
                Ok(r) => log.line(format!(
                    "retention: kept {} restore point(s), forgot {}",
                    r.kept.len(),
                    r.removed.len()
                )),
                Err(e) => log.line(format!("retention failed (the backup is saved): {e}")),
            }
            Ok(Done {
                snapshot_id: Some(s.id.clone()),
                bytes_read: s.bytes,
                bytes_written: s.added_bytes,
            })
        })
        .await;
        if let Some(t) = timer {
            t.abort();
        }
        if let Ok(d) = &r {
            *self.snapshot.lock().unwrap() = d.snapshot_id.clone();
            self.progress
                .written
                .store(d.bytes_written, Ordering::Relaxed);
        }
        r
    }

    async fn restore(&self, hook: Option<Hook>) -> Result<Done, Failure> {
        let Work::Restore {
            restore: rt,
            target: target_ticket,
            ..
        } = self.t.work.clone()
        else {
            return Err(Failure::permanent("not a restore job"));
        };
        let target = match &hook {
            // The hook reads the restore point on its stdin; its context comes first in the
            // script (no secrets: those would show in the process list).
            Some(h) => {
                let (vars, _) = self.env(self.t.attempt);
                let exports: String = vars
                    .iter()
                    .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
                    .collect();
                SourceSpec::Command {
                    name: target_ticket.name.clone(),
                    command: format!("export HOLDFAST_STEP=restore\n{exports}{}", h.run),
                }
            }
            None => self
                .source
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| Failure::permanent("a restore job without a target"))?,
        };
        self.log.line(format!(
            "restoring restore point {} from endpoint `{}` into {}",
            rt.restore_point,
            self.t.repository.endpoint,
            if hook.is_some() {
                "the plan's restore hook".to_string()
            } else {
                target.to_string()
            }
        ));
        let cfg = self.repo.clone();
        let log = self.log.clone();
        let opts = holdfast_engine::RestoreOptions {
            create: rt.create,
            jobs: 2,
            force: rt.force,
        };
        let d = blocking(move || {
            let repo = Repo::open(&cfg)?;
            let snap = repo.find(&rt.restore_point)?;
            let reader = repo.reader(&snap)?;
            let stats = holdfast_engine::source::restore(&target, &snap, &reader, &opts)?;
            // The dump's size as the snapshot recorded it (the files' nodes may not carry it).
            let bytes = stats.bytes.max(snap.bytes);
            log.line(format!(
                "restored {bytes} bytes in {} file(s) in {:.1} s",
                stats.files, stats.duration_secs
            ));
            Ok(Done {
                snapshot_id: Some(snap.id.clone()),
                bytes_read: bytes,
                bytes_written: bytes,
            })
        })
        .await?;
        self.progress
            .written
            .store(d.bytes_written, Ordering::Relaxed);
        Ok(d)
    }

    /// Removes the data no restore point uses any more, after the repository's grace period
    /// (rustic's two-phase prune), so a backup writing elsewhere at the same time loses nothing.
    async fn prune(&self) -> Result<Done, Failure> {
        self.log.line(format!(
            "pruning the repository of endpoint `{}`",
            self.t.repository.endpoint
        ));
        let cfg = self.repo.clone();
        let log = self.log.clone();
        blocking(move || {
            let started = std::time::Instant::now();
            let repo = match Repo::open(&cfg) {
                Err(EngineError::RepoNotFound { .. }) => {
                    log.line("no repository yet: nothing to prune");
                    return Ok(Done::default());
                }
                other => other?,
            };
            repo.prune(false)?;
            log.line(format!(
                "pruned in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            Ok(Done::default())
        })
        .await
    }
}

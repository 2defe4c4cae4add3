//! The embedded runner: workers inside `holdfast serve` that claim jobs from the queue and run
//! them through the engine, renewing their lease while they work. (The agent issue moves this
//! loop into `holdfast agent`; the server keeps it as its embedded agent.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use holdfast_core::job::{Event, JobState, transition};
use holdfast_core::plan::PlanSpec;
use holdfast_engine::repo::Gate;
use holdfast_engine::{Error as EngineError, Repo, RepoConfig};
use holdfast_store::{Job, JobUpdate, Kind};

use crate::AppState;
use crate::model::{CheckStep, EndpointTestReport, JobParams};

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug)]
struct Failure {
    reason: String,
    transient: bool,
}

impl Failure {
    fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: false,
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

impl From<holdfast_store::StoreError> for Failure {
    fn from(e: holdfast_store::StoreError) -> Self {
        Self {
            transient: matches!(e, holdfast_store::StoreError::Db(_)),
            reason: e.to_string(),
        }
    }
}

impl From<crate::api::ApiError> for Failure {
    fn from(e: crate::api::ApiError) -> Self {
        Self::permanent(e.to_string())
    }
}

struct Done {
    snapshot_id: Option<String>,
    bytes_written: u64,
    lines: Vec<String>,
}

/// One worker: claims and runs jobs until the process ends.
pub async fn worker(state: Arc<AppState>, owner: String) {
    loop {
        let now = state.now();
        match state
            .store
            .claim(&owner, now, now + state.config.lease.as_millis() as i64)
            .await
        {
            Ok(Some(job)) => run(&state, &owner, job).await,
            Ok(None) => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(state.config.poll) => {}
                }
            }
            Err(e) => {
                tracing::error!("claiming a job: {e}");
                tokio::time::sleep(state.config.poll).await;
            }
        }
    }
}

async fn log(state: &AppState, job: i64, line: &str) {
    if let Err(e) = state.store.append_log(job, state.now(), line).await {
        tracing::warn!(job, "cannot store a log line: {e}");
    }
}

#[derive(Default)]
struct Stop {
    cancelled: AtomicBool,
    lost: AtomicBool,
}

/// Renews the lease and reports progress until aborted. A cancel request or a lost lease
/// fails the backup's gate, which stops the dump tools and keeps the snapshot from being saved.
async fn heartbeat(
    state: Arc<AppState>,
    job: i64,
    owner: String,
    gate: Arc<Gate>,
    stop: Arc<Stop>,
) {
    let every = (state.config.lease / 3).min(Duration::from_secs(2));
    loop {
        tokio::time::sleep(every).await;
        let now = state.now();
        let read = gate.bytes.load(Ordering::Relaxed) as i64;
        match state
            .store
            .heartbeat(
                job,
                &owner,
                now + state.config.lease.as_millis() as i64,
                read,
                0,
            )
            .await
        {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                if !stop.cancelled.swap(true, Ordering::SeqCst) {
                    gate.fail(EngineError::Other("cancelled through the API".into()));
                }
            }
            Ok(None) => {
                stop.lost.store(true, Ordering::SeqCst);
                gate.fail(EngineError::Other(
                    "this worker lost the job's lease; another attempt takes over".into(),
                ));
                return;
            }
            // The store is unreachable: keep working; the lease may still be renewed in time.
            Err(e) => tracing::warn!(job, "heartbeat failed: {e}"),
        }
    }
}

async fn run(state: &Arc<AppState>, owner: &str, job: Job) {
    log(
        state,
        job.id,
        &format!(
            "attempt {} of {} started on worker {owner}",
            job.attempt, job.max_attempts
        ),
    )
    .await;
    let gate = Arc::new(Gate::default());
    let stop = Arc::new(Stop::default());
    let hb = tokio::spawn(heartbeat(
        state.clone(),
        job.id,
        owner.to_string(),
        gate.clone(),
        stop.clone(),
    ));
    let result = match job.kind.as_str() {
        "backup" => backup(state, &job, gate.clone()).await,
        "restore" => restore(state, &job, gate.clone()).await,
        "prune" => prune(state, &job).await,
        other => Err(Failure::permanent(format!("unknown job kind `{other}`"))),
    };
    hb.abort();
    if stop.lost.load(Ordering::SeqCst) {
        log(
            state,
            job.id,
            &format!("worker {owner} lost the lease; its result is dropped"),
        )
        .await;
        return;
    }
    let params: JobParams = serde_json::from_str(&job.params).unwrap_or_default();
    let mut backoff = params.backoff;
    backoff.attempts = u32::try_from(job.max_attempts).unwrap_or(1);
    let bytes_read = gate.bytes.load(Ordering::Relaxed) as i64;
    let (event, done) = match result {
        Ok(done) => (Event::Succeeded, Some(done)),
        Err(_) if stop.cancelled.load(Ordering::SeqCst) => (Event::Cancelled, None),
        Err(f) => (
            Event::Failed {
                transient: f.transient,
                reason: f.reason,
            },
            None,
        ),
    };
    if let Some(d) = &done {
        for l in &d.lines {
            log(state, job.id, l).await;
        }
    }
    let attempt = u32::try_from(job.attempt).unwrap_or(1);
    let jitter = f64::from(crate::secrets::random_bytes::<1>()[0]) / 256.0;
    let next = match transition(JobState::Running, attempt, &event, &backoff, jitter) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(job = job.id, "{e}");
            return;
        }
    };
    let now = state.now();
    let line = match (&next.state, &next.error) {
        (JobState::Succeeded, _) => "succeeded".to_string(),
        (JobState::Cancelled, _) => "cancelled; no restore point was saved".to_string(),
        (JobState::Queued, Some(e)) => format!(
            "attempt {attempt} failed: {e}; attempt {} in {} s",
            next.attempt,
            next.retry_in_secs.unwrap_or(0)
        ),
        (_, Some(e)) => format!("failed: {e}"),
        (s, None) => s.as_str().to_string(),
    };
    log(state, job.id, &line).await;
    let c = JobUpdate {
        state: next.state.as_str().into(),
        attempt: i64::from(next.attempt),
        run_after: next.retry_in_secs.map(|s| now + s as i64 * 1000),
        error: next.error,
        snapshot_id: done.as_ref().and_then(|d| d.snapshot_id.clone()),
        bytes_read,
        bytes_written: done.as_ref().map_or(0, |d| d.bytes_written as i64),
        now,
    };
    match state.store.finish(job.id, owner, &c).await {
        Ok(true) => {
            if next.state == JobState::Queued {
                state.wake.notify_waiters();
            }
        }
        Ok(false) => tracing::warn!(
            job = job.id,
            "the job's lease was taken back before it finished"
        ),
        Err(e) => tracing::error!(job = job.id, "cannot record the job's result: {e}"),
    }
}

fn plan_of(spec: &str) -> Result<PlanSpec, Failure> {
    serde_json::from_str(spec)
        .map_err(|e| Failure::permanent(format!("stored plan is unreadable: {e}")))
}

fn open_or_init(cfg: &RepoConfig) -> Result<Repo, EngineError> {
    match Repo::open(cfg) {
        Err(EngineError::RepoNotFound { .. }) => {
            Repo::init(cfg)?;
            Repo::open(cfg)
        }
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

async fn backup(state: &Arc<AppState>, job: &Job, gate: Arc<Gate>) -> Result<Done, Failure> {
    let plan_name = job
        .plan
        .clone()
        .ok_or_else(|| Failure::permanent("a backup job without a plan"))?;
    let plan = state
        .store
        .get(Kind::Plan, &plan_name)
        .await?
        .ok_or_else(|| Failure::permanent(format!("plan `{plan_name}` was deleted")))?;
    let spec = plan_of(&plan.spec)?;
    let ep = state.store.must_get(Kind::Endpoint, &spec.endpoint).await?;
    let src = state.store.must_get(Kind::Source, &spec.source).await?;
    let cfg = state.repo_config(&ep, Some(spec.compression))?;
    let (source, stored) = state.source_spec(&src, None)?;
    log(
        state,
        job.id,
        &format!(
            "backing up {} source `{}` ({source}) into endpoint `{}`",
            stored.kind, spec.source, spec.endpoint
        ),
    )
    .await;
    let policy = spec.retention.keep_policy();
    blocking(move || {
        let repo = open_or_init(&cfg)?;
        let opts = holdfast_engine::BackupOptions {
            single_stream: stored.single_stream,
            all_databases: stored.all_databases,
            plan: Some(plan_name.clone()),
            tags: vec![],
            restrict_key: Some(repo.derive_secret(&format!("pg_dump restrict key {source}"))),
        };
        let set = holdfast_engine::driver_for(&source).backup_set(&opts)?;
        let outcome = repo.backup(set, gate)?;
        let s = &outcome.snapshot;
        let mut lines = vec![format!(
            "restore point {} saved: {} bytes read, {} bytes added to the repository, {:.1} s",
            s.short_id, s.bytes, s.added_bytes, s.duration_secs
        )];
        // Retention touches only this plan's snapshots; a failure here does not undo the backup.
        match repo.forget(&policy, false, Some(&format!("plan={plan_name}"))) {
            Ok(r) => lines.push(format!(
                "retention: kept {} restore point(s), forgot {}",
                r.kept.len(),
                r.removed.len()
            )),
            Err(e) => lines.push(format!("retention failed (the backup is saved): {e}")),
        }
        Ok(Done {
            snapshot_id: Some(s.id.clone()),
            bytes_written: s.added_bytes,
            lines,
        })
    })
    .await
}

async fn restore(state: &Arc<AppState>, job: &Job, gate: Arc<Gate>) -> Result<Done, Failure> {
    let params: JobParams = serde_json::from_str(&job.params)
        .map_err(|e| Failure::permanent(format!("job parameters are unreadable: {e}")))?;
    let endpoint = job
        .endpoint
        .clone()
        .ok_or_else(|| Failure::permanent("a restore job without an endpoint"))?;
    let target = params
        .target_source
        .clone()
        .ok_or_else(|| Failure::permanent("a restore job without a target"))?;
    let point = params
        .restore_point
        .clone()
        .ok_or_else(|| Failure::permanent("a restore job without a restore point"))?;
    let ep = state.store.must_get(Kind::Endpoint, &endpoint).await?;
    let src = state.store.must_get(Kind::Source, &target).await?;
    let cfg = state.repo_config(&ep, None)?;
    let (spec, _) = state.source_spec(&src, params.database.as_deref())?;
    log(
        state,
        job.id,
        &format!("restoring restore point {point} from endpoint `{endpoint}` into {spec}"),
    )
    .await;
    let opts = holdfast_engine::RestoreOptions {
        create: params.create,
        jobs: 2,
        force: params.force,
    };
    blocking(move || {
        let repo = Repo::open(&cfg)?;
        let snap = repo.find(&point)?;
        let reader = repo.reader(&snap)?;
        let stats = holdfast_engine::source::restore(&spec, &snap, &reader, &opts)?;
        gate.bytes.store(stats.bytes, Ordering::Relaxed);
        Ok(Done {
            snapshot_id: Some(snap.id.clone()),
            bytes_written: stats.bytes,
            lines: vec![format!(
                "restored {} bytes in {} file(s) into {spec} in {:.1} s",
                stats.bytes, stats.files, stats.duration_secs
            )],
        })
    })
    .await
}

/// Removes the data no restore point uses any more. Packs are deleted only after the
/// repository's grace period (rustic's two-phase prune), so a backup writing at the same time
/// elsewhere (another server, the CLI) never loses data; the queue also keeps this server's
/// own jobs off the endpoint while it runs.
async fn prune(state: &Arc<AppState>, job: &Job) -> Result<Done, Failure> {
    let endpoint = job
        .endpoint
        .clone()
        .ok_or_else(|| Failure::permanent("a prune job without an endpoint"))?;
    let ep = state.store.must_get(Kind::Endpoint, &endpoint).await?;
    let cfg = state.repo_config(&ep, None)?;
    log(
        state,
        job.id,
        &format!("pruning the repository of endpoint `{endpoint}`"),
    )
    .await;
    blocking(move || {
        let started = std::time::Instant::now();
        let repo = match Repo::open(&cfg) {
            Err(EngineError::RepoNotFound { .. }) => {
                return Ok(Done {
                    snapshot_id: None,
                    bytes_written: 0,
                    lines: vec!["no repository yet: nothing to prune".into()],
                });
            }
            other => other?,
        };
        repo.prune(false)?;
        Ok(Done {
            snapshot_id: None,
            bytes_written: 0,
            lines: vec![format!(
                "pruned in {:.1} s",
                started.elapsed().as_secs_f64()
            )],
        })
    })
    .await
}

/// The endpoint `test` action: can the repository be reached, opened (or created), and read?
pub fn test_repository(cfg: &RepoConfig) -> EndpointTestReport {
    let mut steps = vec![CheckStep {
        check: "location".into(),
        ok: true,
        detail: format!("{}", cfg.location),
    }];
    let opened = match Repo::open(cfg) {
        Ok(r) => {
            steps.push(CheckStep {
                check: "repository".into(),
                ok: true,
                detail: "reachable; the repository exists and the password opens it".into(),
            });
            Ok(r)
        }
        Err(EngineError::RepoNotFound { .. }) => match Repo::init(cfg)
            .and_then(|()| Repo::open(cfg))
        {
            Ok(r) => {
                steps.push(CheckStep {
                    check: "repository".into(),
                    ok: true,
                    detail: "reachable and writable; no repository was there, so one was created"
                        .into(),
                });
                Ok(r)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match opened {
        Ok(repo) => match repo.snapshots() {
            Ok(s) => steps.push(CheckStep {
                check: "snapshots".into(),
                ok: true,
                detail: format!("{} snapshot(s) listed", s.len()),
            }),
            Err(e) => steps.push(CheckStep {
                check: "snapshots".into(),
                ok: false,
                detail: e.to_string(),
            }),
        },
        Err(e) => steps.push(CheckStep {
            check: match e {
                EngineError::WrongPassword { .. } => "password",
                _ => "repository",
            }
            .into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    EndpointTestReport {
        ok: steps.iter().all(|s| s.ok),
        steps,
    }
}

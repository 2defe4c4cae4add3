//! The scheduler: fires due plans into the job queue and takes back jobs whose worker
//! stopped renewing its lease. Both run on every replica; the store's compare-and-set
//! statements make sure each fire and each take-back happens once.

use holdfast_core::Schedule;
use holdfast_core::job::{Backoff, Event, JobKind, JobState, Next, Trigger, transition};
use holdfast_core::plan::PlanSpec;
use holdfast_store::{FireOutcome, Job, JobUpdate, NewJob, Store, StoreError};
use jiff::Timestamp;

use crate::model::{JobParams, StoredEndpoint};

/// A backup job for `spec`.
pub fn backup_job(spec: &PlanSpec, trigger: Trigger, fire_at: Option<i64>, now: i64) -> NewJob {
    let params = JobParams {
        backoff: spec.retry,
        ..JobParams::default()
    };
    NewJob {
        kind: JobKind::Backup,
        plan: Some(spec.name.clone()),
        endpoint: Some(spec.endpoint.clone()),
        trigger,
        max_attempts: i64::from(spec.retry.attempts.max(1)),
        params: serde_json::to_string(&params).expect("params serialize"),
        fire_at,
        run_after: now,
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub queued: Vec<i64>,
    pub skipped: Vec<i64>,
    /// Prune jobs queued.
    pub prunes: Vec<i64>,
    /// Restore drills queued.
    pub drills: Vec<i64>,
}

/// A restore drill of `spec` (of `restore_point`, or of its newest ones), reading part
/// `part` of the packs in check mode. A drill that finds a problem has done its work: it is
/// not retried; one that could not run (the agent died) is, once.
pub fn verify_job(
    spec: &PlanSpec,
    trigger: Trigger,
    restore_point: Option<String>,
    part: Option<(u32, u32)>,
    now: i64,
) -> NewJob {
    let backoff = Backoff {
        attempts: 2,
        ..Backoff::default()
    };
    NewJob {
        kind: JobKind::Verify,
        plan: Some(spec.name.clone()),
        endpoint: Some(spec.endpoint.clone()),
        trigger,
        max_attempts: i64::from(backoff.attempts),
        params: serde_json::to_string(&JobParams {
            backoff,
            restore_point,
            part,
            ..JobParams::default()
        })
        .expect("params serialize"),
        // The slot is the plan's `next_verify_at`, moved by compare-and-set; `fire_at` stays
        // the backups' (one job per plan and backup slot).
        fire_at: None,
        run_after: now,
    }
}

/// When the plan's next scheduled drill is due after `now` (Unix ms); `None` without one.
pub fn next_verify(spec: &PlanSpec, now: i64) -> Option<i64> {
    let v = spec.verify.as_ref()?;
    let sched = Schedule::parse(v.schedule.as_deref()?, &v.timezone).ok()?;
    let now = Timestamp::from_millisecond(now).unwrap_or_default();
    sched
        .next_after(now)
        .map(|z| z.timestamp().as_millisecond())
}

/// A prune of `endpoint`'s repository.
pub fn prune_job(endpoint: &str, trigger: Trigger, fire_at: Option<i64>, now: i64) -> NewJob {
    let backoff = Backoff::default();
    NewJob {
        kind: JobKind::Prune,
        plan: None,
        endpoint: Some(endpoint.into()),
        trigger,
        max_attempts: i64::from(backoff.attempts.max(1)),
        params: serde_json::to_string(&JobParams {
            backoff,
            ..JobParams::default()
        })
        .expect("params serialize"),
        fire_at,
        run_after: now,
    }
}

/// Fires every plan whose time has come, as of `now` (Unix ms). A plan that missed several
/// fires (the server was down) fires once, for the latest missed time.
pub async fn tick(store: &Store, now: i64) -> Result<TickReport, StoreError> {
    let mut report = TickReport::default();
    let now_ts = Timestamp::from_millisecond(now).unwrap_or_default();
    let parallel = match store.dialect() {
        holdfast_store::Dialect::Postgres => 4,
        holdfast_store::Dialect::Sqlite => 1,
    };
    let mut fires = tokio::task::JoinSet::new();
    for plan in store.due_plans(now).await? {
        let Some(expected) = plan.plan.as_ref().and_then(|c| c.next_fire_at) else {
            continue;
        };
        let spec: PlanSpec = match serde_json::from_str(&plan.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(plan = %plan.name, "stored plan is unreadable: {e}");
                continue;
            }
        };
        let sched = match Schedule::parse(&spec.schedule, &spec.timezone) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(plan = %plan.name, "{e}");
                continue;
            }
        };
        // The latest fire time at or before now; at least the one that was due.
        let since = Timestamp::from_millisecond(expected - 1).unwrap_or_default();
        let fire_at = sched
            .due(since, now_ts)
            .map_or(expected, |z| z.timestamp().as_millisecond());
        let next = sched
            .next_after(now_ts)
            .map(|z| z.timestamp().as_millisecond());
        let job = backup_job(&spec, Trigger::Schedule, Some(fire_at), now);
        let store = store.clone();
        fires.spawn(async move {
            let outcome = store.fire(&plan.name, expected, next, &job, now).await;
            (plan.name, outcome)
        });
        // PostgreSQL takes fires of different plans in parallel (each its own transaction on
        // its own connection); SQLite has one writer, so one at a time.
        while fires.len() >= parallel {
            collect(fires.join_next().await, &mut report)?;
        }
    }
    while let Some(r) = fires.join_next().await {
        collect(Some(r), &mut report)?;
    }
    for (plan, expected) in store.due_verifies(now).await? {
        let spec: PlanSpec = match serde_json::from_str(&plan.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(plan = %plan.name, "stored plan is unreadable: {e}");
                continue;
            }
        };
        let next = next_verify(&spec, now);
        let parts = spec.verify.as_ref().map_or(1, |v| v.parts.max(1));
        let part = if parts > 1 {
            let n = store.verify_part(&plan.name).await?;
            Some(((n % i64::from(parts)) as u32 + 1, parts))
        } else {
            None
        };
        let job = verify_job(&spec, Trigger::Schedule, None, part, now);
        if let Some(id) = store
            .fire_verify(&plan.name, expected, next, &job, now)
            .await?
        {
            tracing::info!(plan = %plan.name, job = id, "scheduled restore drill queued");
            report.drills.push(id);
        }
    }
    for (ep, expected) in store.due_prunes(now).await? {
        let spec: StoredEndpoint = match serde_json::from_str(&ep.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(endpoint = %ep.name, "stored endpoint is unreadable: {e}");
                continue;
            }
        };
        let next = spec
            .prune()
            .and_then(|s| s.next_after(now_ts))
            .map(|z| z.timestamp().as_millisecond());
        let job = prune_job(&ep.name, Trigger::Schedule, Some(expected), now);
        if let Some(id) = store
            .fire_prune(&ep.name, expected, next, &job, now)
            .await?
        {
            tracing::info!(endpoint = %ep.name, job = id, "scheduled prune queued");
            report.prunes.push(id);
        }
    }
    Ok(report)
}

type Fired = (String, Result<FireOutcome, StoreError>);

fn collect(
    joined: Option<Result<Fired, tokio::task::JoinError>>,
    report: &mut TickReport,
) -> Result<(), StoreError> {
    let Some(joined) = joined else { return Ok(()) };
    let (plan, outcome) = match joined {
        Ok(x) => x,
        // A fire that panicked took no slot (its transaction was dropped): the next tick
        // tries it again. The other plans of this tick go on.
        Err(e) => {
            tracing::error!("a scheduled fire failed: {e}");
            return Ok(());
        }
    };
    match outcome? {
        FireOutcome::Queued(id) => {
            tracing::info!(%plan, job = id, "scheduled backup queued");
            report.queued.push(id);
        }
        FireOutcome::Skipped { job, busy } => {
            tracing::warn!(%plan, job, busy, "scheduled backup skipped: the previous one is still running");
            report.skipped.push(job);
        }
        FireOutcome::AlreadyFired => {}
    }
    Ok(())
}

/// The retry policy of job `j`: the one it was queued with, its attempts as stored.
pub(crate) fn backoff_of(j: &Job) -> Backoff {
    let params: JobParams = serde_json::from_str(&j.params).unwrap_or_default();
    Backoff {
        attempts: u32::try_from(j.max_attempts).unwrap_or(1),
        ..params.backoff
    }
}

/// `at` plus `secs` seconds, in Unix ms, saturating instead of overflowing.
pub(crate) fn after_secs(at: i64, secs: u64) -> i64 {
    at.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
}

/// What the store writes for a transition `next` decided at `now`.
pub(crate) fn update(
    next: Next,
    now: i64,
    snapshot_id: Option<String>,
    bytes: (i64, i64),
) -> JobUpdate {
    JobUpdate {
        state: next.state,
        attempt: i64::from(next.attempt),
        run_after: next.retry_in_secs.map(|s| after_secs(now, s)),
        error: next.error,
        snapshot_id,
        bytes_read: bytes.0,
        bytes_written: bytes.1,
        now,
    }
}

/// Takes back running jobs whose lease expired before `now`: back to the queue after a
/// backoff (attempt + 1), or failed when out of attempts; cancelled when a cancel was
/// requested. Returns the jobs taken back.
pub async fn reap(store: &Store, now: i64, jitter: f64) -> Result<Vec<i64>, StoreError> {
    let mut out = Vec::new();
    for j in store.expired(now).await? {
        let attempt = u32::try_from(j.attempt).unwrap_or(1);
        let event = if j.cancel_requested {
            Event::Cancelled
        } else {
            Event::LeaseExpired
        };
        let Ok(next) = transition(JobState::Running, attempt, &event, &backoff_of(&j), jitter)
        else {
            continue;
        };
        let what = match next.state {
            JobState::Queued => format!(
                "attempt {} queued in {} s",
                next.attempt,
                next.retry_in_secs.unwrap_or(0)
            ),
            JobState::Cancelled => "the job is cancelled, as requested".into(),
            _ => "no attempts left".into(),
        };
        let c = update(next, now, None, (j.bytes_read, j.bytes_written));
        if store.take_back(&j, &c).await? {
            let line = format!(
                "attempt {attempt} lost: agent {} stopped renewing its lease; {what}",
                j.lease_owner.as_deref().unwrap_or("?"),
            );
            store.append_log(j.id, now, &line).await?;
            tracing::warn!(job = j.id, "{line}");
            out.push(j.id);
        }
    }
    Ok(out)
}

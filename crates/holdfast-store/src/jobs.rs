//! The durable job queue. A job is inserted `queued`, claimed by one worker under a lease that
//! heartbeats renew, and finished by the worker that holds the lease. A job whose lease expires
//! is put back by whichever replica notices first. Every step is one conditional statement, so
//! two replicas (or a worker and a reaper) never both win.

use holdfast_core::job::{JobKind, JobState, Trigger};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use crate::row::{all, col, flag_col, word};
use crate::{Dialect, Result, Store, StoreError};

pub(crate) const JOB_COLUMNS: &str = "id, kind, plan, endpoint, trigger, state, attempt, max_attempts, params, fire_at, created_at, run_after, \
     started_at, finished_at, lease_owner, lease_expires, cancel_requested, bytes_read, bytes_written, snapshot_id, error";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub plan: Option<String>,
    /// The storage endpoint the job writes to or reads from.
    pub endpoint: Option<String>,
    pub trigger: Trigger,
    pub state: JobState,
    pub attempt: i64,
    pub max_attempts: i64,
    /// JSON the server defines (retry policy, restore target).
    pub params: String,
    /// The schedule's fire time this job is for (Unix ms).
    pub fire_at: Option<i64>,
    pub created_at: i64,
    /// Not claimed before this time (backoff).
    pub run_after: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub cancel_requested: bool,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
}

/// A job row (selected with [`JOB_COLUMNS`]), read by column name.
pub(crate) fn job(r: &AnyRow) -> std::result::Result<Job, sqlx::Error> {
    Ok(Job {
        id: col(r, "id")?,
        kind: word(r, "kind")?,
        plan: col(r, "plan")?,
        endpoint: col(r, "endpoint")?,
        trigger: word(r, "trigger")?,
        state: word(r, "state")?,
        attempt: col(r, "attempt")?,
        max_attempts: col(r, "max_attempts")?,
        params: col(r, "params")?,
        fire_at: col(r, "fire_at")?,
        created_at: col(r, "created_at")?,
        run_after: col(r, "run_after")?,
        started_at: col(r, "started_at")?,
        finished_at: col(r, "finished_at")?,
        lease_owner: col(r, "lease_owner")?,
        lease_expires: col(r, "lease_expires")?,
        cancel_requested: flag_col(r, "cancel_requested")?,
        bytes_read: col(r, "bytes_read")?,
        bytes_written: col(r, "bytes_written")?,
        snapshot_id: col(r, "snapshot_id")?,
        error: col(r, "error")?,
    })
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub plan: Option<String>,
    pub endpoint: Option<String>,
    pub trigger: Trigger,
    pub max_attempts: i64,
    pub params: String,
    pub fire_at: Option<i64>,
    pub run_after: i64,
}

/// What a scheduler fire did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// Another replica (or an earlier tick) fired this slot already.
    AlreadyFired,
    Queued(i64),
    /// Recorded as skipped, because `busy` was still queued or running.
    Skipped {
        job: i64,
        busy: i64,
    },
}

/// The end of an attempt: the job's new state, as `holdfast_core::job::transition` decided.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub state: JobState,
    pub attempt: i64,
    /// For a job back in the queue: when it may be claimed again.
    pub run_after: Option<i64>,
    pub error: Option<String>,
    pub snapshot_id: Option<String>,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub now: i64,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub plan: Option<String>,
    /// Only jobs of these plans (a scoped caller's); empty: none.
    pub plans: Option<Vec<String>>,
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    /// Only jobs with a smaller id (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub id: i64,
    pub at: i64,
    pub line: String,
}

impl Store {
    pub(crate) async fn insert_job_in(
        conn: &mut sqlx::AnyConnection,
        new: &NewJob,
        state: JobState,
        error: Option<&str>,
        now: i64,
    ) -> std::result::Result<i64, sqlx::Error> {
        let sql = format!(
            "INSERT INTO jobs (kind, plan, trigger, state, attempt, max_attempts, params, fire_at, created_at, run_after, error, finished_at, endpoint)
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, {}, $11) RETURNING id",
            if state == JobState::Queued { "NULL" } else { "$8" }
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(new.kind.as_str())
            .bind(&new.plan)
            .bind(new.trigger.as_str())
            .bind(state.as_str())
            .bind(new.max_attempts)
            .bind(&new.params)
            .bind(new.fire_at)
            .bind(now)
            .bind(new.run_after)
            .bind(error)
            .bind(&new.endpoint)
            .fetch_one(&mut *conn)
            .await?;
        col(&row, "id")
    }

    /// The queued or running backup of `plan`, if any.
    async fn busy_in(
        conn: &mut sqlx::AnyConnection,
        plan: &str,
    ) -> std::result::Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id FROM jobs WHERE plan = $1 AND kind = 'backup' AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(plan)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| col(&r, "id")).transpose()
    }

    /// Fires a plan's schedule slot: moves `next_fire_at` from `expected` to `next` and queues
    /// the job (or records it as skipped while another backup of the plan is queued or
    /// running), all in one transaction. Only one caller per slot gets past the
    /// compare-and-set, so replicas never queue a slot twice.
    pub async fn fire(
        &self,
        plan: &str,
        expected: i64,
        next: Option<i64>,
        job: &NewJob,
        now: i64,
    ) -> Result<FireOutcome> {
        let mut tx = self.pool.begin().await?;
        self.async_commit(&mut tx).await?;
        let moved = sqlx::query(
            "UPDATE plans SET next_fire_at = $3 WHERE name = $1 AND next_fire_at = $2 AND paused = 0",
        )
        .bind(plan)
        .bind(expected)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(FireOutcome::AlreadyFired);
        }
        let outcome = match Self::busy_in(&mut tx, plan).await? {
            Some(busy) => {
                let why = format!("skipped: job {busy} of this plan was still queued or running");
                let id =
                    Self::insert_job_in(&mut tx, job, JobState::Skipped, Some(&why), now).await;
                id.map(|job| FireOutcome::Skipped { job, busy })
            }
            None => Self::insert_job_in(&mut tx, job, JobState::Queued, None, now)
                .await
                .map(FireOutcome::Queued),
        };
        match outcome {
            Ok(o) => {
                tx.commit().await?;
                Ok(o)
            }
            // The same slot fired before (e.g. next_fire_at was reset to it): not again.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Ok(FireOutcome::AlreadyFired)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A fire need not wait for PostgreSQL's WAL flush: a crash loses the whole transaction
    /// (the moved `next_fire_at` with its job), never half of it, and the next tick fires the
    /// slot again. (SQLite runs with `synchronous = NORMAL`, which is the same trade.)
    async fn async_commit(&self, tx: &mut sqlx::AnyConnection) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Sets when the endpoint's repository is pruned next (`None`: never).
    pub async fn set_next_prune(&self, endpoint: &str, at: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE endpoints SET next_prune_at = $2 WHERE name = $1")
            .bind(endpoint)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Endpoints whose prune is due, with the time it was due.
    pub async fn due_prunes(&self, now: i64) -> Result<Vec<(crate::Resource, i64)>> {
        let sql = format!(
            "SELECT {}, next_prune_at FROM endpoints WHERE next_prune_at IS NOT NULL AND next_prune_at <= $1 ORDER BY next_prune_at",
            crate::Kind::Endpoint.columns()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| {
            Ok((
                crate::resources::from_row(crate::Kind::Endpoint, r)?,
                col(r, "next_prune_at")?,
            ))
        })?)
    }

    /// Fires an endpoint's prune slot: moves `next_prune_at` from `expected` to `next` and
    /// queues the prune job, unless one for the endpoint is already queued or running. `None`
    /// when another replica fired the slot, or a prune was pending.
    pub async fn fire_prune(
        &self,
        endpoint: &str,
        expected: i64,
        next: Option<i64>,
        job: &NewJob,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        self.async_commit(&mut tx).await?;
        let moved = sqlx::query(
            "UPDATE endpoints SET next_prune_at = $3 WHERE name = $1 AND next_prune_at = $2",
        )
        .bind(endpoint)
        .bind(expected)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(None);
        }
        let pending = sqlx::query(
            "SELECT id FROM jobs WHERE endpoint = $1 AND kind = 'prune' AND state IN ('queued', 'running') LIMIT 1",
        )
        .bind(endpoint)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match pending {
            Some(_) => None,
            None => Some(Self::insert_job_in(&mut tx, job, JobState::Queued, None, now).await?),
        };
        tx.commit().await?;
        Ok(id)
    }

    /// Queues a job.
    pub async fn enqueue(&self, job: &NewJob, now: i64) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        Ok(Self::insert_job_in(&mut conn, job, JobState::Queued, None, now).await?)
    }

    /// Queues a backup of the job's plan, unless another backup of it is queued or running:
    /// then returns that job's id as the error.
    pub async fn enqueue_unless_busy(
        &self,
        job: &NewJob,
        now: i64,
    ) -> Result<std::result::Result<i64, i64>> {
        let mut tx = self.pool.begin().await?;
        if let Some(plan) = &job.plan {
            // A write first takes the plan's row lock (PostgreSQL) or the write lock (SQLite),
            // so two replicas cannot both see "not busy".
            sqlx::query("UPDATE plans SET paused = paused WHERE name = $1")
                .bind(plan)
                .execute(&mut *tx)
                .await?;
            if let Some(busy) = Self::busy_in(&mut tx, plan).await? {
                return Ok(Err(busy));
            }
        }
        let id = Self::insert_job_in(&mut tx, job, JobState::Queued, None, now).await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job).transpose()?)
    }

    pub async fn must_job(&self, id: i64) -> Result<Job> {
        self.job(id).await?.ok_or(StoreError::NotFound {
            kind: "job",
            name: id.to_string(),
        })
    }

    /// Jobs matching `f`, newest first.
    pub async fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        let mut text_args: Vec<String> = Vec::new();
        for (column, v) in [
            ("plan =", f.plan.clone()),
            ("state =", f.state.map(|s| s.as_str().to_string())),
            ("kind =", f.kind.map(|k| k.as_str().to_string())),
        ] {
            if let Some(v) = v {
                text_args.push(v);
                sql += &format!(" AND {column} ${}", text_args.len());
            }
        }
        if let Some(plans) = &f.plans {
            if plans.is_empty() {
                sql += " AND 1 = 0";
            } else {
                let marks: Vec<String> = plans
                    .iter()
                    .map(|p| {
                        text_args.push(p.clone());
                        format!("${}", text_args.len())
                    })
                    .collect();
                sql += &format!(" AND plan IN ({})", marks.join(", "));
            }
        }
        if f.before.is_some() {
            sql += &format!(" AND id < ${}", text_args.len() + 1);
        }
        sql += &format!(" ORDER BY id DESC LIMIT {}", f.limit.clamp(1, 1000));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for v in text_args {
            q = q.bind(v);
        }
        if let Some(b) = f.before {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(all(&rows, job)?)
    }

    /// The plan's newest backup job (skipped fires aside), or its newest in `state`.
    pub async fn last_job(&self, plan: &str, state: Option<JobState>) -> Result<Option<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE plan = $1 AND kind = 'backup' {} ORDER BY id DESC LIMIT 1",
            if state.is_some() {
                "AND state = $2"
            } else {
                "AND state <> 'skipped'"
            }
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(plan);
        if let Some(s) = state {
            q = q.bind(s.as_str());
        }
        Ok(q.fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(job)
            .transpose()?)
    }

    /// For every plan with backups: its newest backup job (skips aside) and when its newest
    /// successful backup finished. Per plan, two walks back from its newest job on the
    /// `(plan, id)` index that stop at the first match, so the cost follows the number of
    /// plans, not of jobs.
    pub async fn plan_results(
        &self,
    ) -> Result<std::collections::HashMap<String, (Job, Option<i64>)>> {
        let cols = JOB_COLUMNS
            .split(',')
            .map(|c| format!("j.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, (SELECT s.finished_at FROM jobs s
                 WHERE s.plan = p.name AND s.kind = 'backup' AND s.state = 'succeeded'
                 ORDER BY s.id DESC LIMIT 1) AS last_success
             FROM plans p JOIN jobs j ON j.id = (SELECT l.id FROM jobs l
                 WHERE l.plan = p.name AND l.kind = 'backup' AND l.state <> 'skipped'
                 ORDER BY l.id DESC LIMIT 1)"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        let mut out = std::collections::HashMap::new();
        for row in &rows {
            let j = job(row)?;
            let ok: Option<i64> = col(row, "last_success")?;
            if let Some(plan) = j.plan.clone() {
                out.insert(plan, (j, ok));
            }
        }
        Ok(out)
    }

    /// Claims the oldest runnable job for `owner` with a lease until `lease_expires`. A prune
    /// waits while any job uses its endpoint, and no job starts on an endpoint being pruned.
    pub async fn claim(&self, owner: &str, now: i64, lease_expires: i64) -> Result<Option<Job>> {
        let lock = match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires = $2, started_at = $3
             WHERE state = 'queued' AND id = (
                 SELECT id FROM jobs q WHERE state = 'queued' AND run_after <= $3 AND {}
                 ORDER BY run_after, id LIMIT 1 {lock})
             RETURNING {JOB_COLUMNS}",
            crate::agents::RUNNABLE.replace("{q}", "q.")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_expires)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job).transpose()?)
    }

    /// Renews `owner`'s lease and records progress. Returns whether a cancel was requested, or
    /// `None` when the lease is lost (expired and taken back): the worker must stop.
    pub async fn heartbeat(
        &self,
        id: i64,
        owner: &str,
        lease_expires: i64,
        bytes_read: i64,
        bytes_written: i64,
    ) -> Result<Option<bool>> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires = $3, bytes_read = $4, bytes_written = $5
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested",
        )
        .bind(id)
        .bind(owner)
        .bind(lease_expires)
        .bind(bytes_read)
        .bind(bytes_written)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| flag_col(&r, "cancel_requested")).transpose()?)
    }

    /// Ends `owner`'s attempt: finished, or back in the queue for a retry. A job whose cancel
    /// was requested never goes back to the queue: it ends `cancelled` instead. False when the
    /// lease was lost meanwhile (another attempt owns the job now).
    pub async fn finish(&self, id: i64, owner: &str, c: &JobUpdate) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN $3 = 'queued' AND cancel_requested <> 0 THEN 'cancelled' ELSE $3 END,
                 attempt = $4, run_after = COALESCE($5, run_after), error = $6,
                 snapshot_id = $7, bytes_read = $8, bytes_written = $9,
                 finished_at = CASE WHEN $3 = 'queued' AND cancel_requested = 0 THEN NULL ELSE $10 END,
                 trigger = CASE WHEN $3 = 'queued' AND cancel_requested = 0 THEN 'retry' ELSE trigger END,
                 lease_owner = NULL, lease_expires = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(c.state.as_str())
        .bind(c.attempt)
        .bind(c.run_after)
        .bind(&c.error)
        .bind(&c.snapshot_id)
        .bind(c.bytes_read)
        .bind(c.bytes_written)
        .bind(c.now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends the leases `owner` holds (a revoked agent): its running jobs count as expired
    /// before `now`, for the reaper to take back. Returns their ids.
    pub async fn expire_leases_of(&self, owner: &str, now: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires = $2
             WHERE lease_owner = $1 AND state = 'running' RETURNING id",
        )
        .bind(owner)
        .bind(now - 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| col(r, "id"))?)
    }

    /// Running jobs whose lease ran out before `now`.
    pub async fn expired(&self, now: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires < $1 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, job)?)
    }

    /// Takes back an expired job `j` (as [`Store::expired`] returned it), if its lease is still
    /// the one seen then (same owner and expiry): back to the queue, or failed when out of
    /// attempts; `cancelled` when a cancel was requested.
    pub async fn take_back(&self, j: &Job, c: &JobUpdate) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN $4 = 'queued' AND cancel_requested <> 0 THEN 'cancelled' ELSE $4 END,
                 attempt = $5, run_after = COALESCE($6, run_after), error = $7,
                 finished_at = CASE WHEN $4 = 'queued' AND cancel_requested = 0 THEN NULL ELSE $8 END,
                 trigger = CASE WHEN $4 = 'queued' AND cancel_requested = 0 THEN 'retry' ELSE trigger END,
                 lease_owner = NULL, lease_expires = NULL
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND lease_expires = $3",
        )
        .bind(j.id)
        .bind(&j.lease_owner)
        .bind(j.lease_expires)
        .bind(c.state.as_str())
        .bind(c.attempt)
        .bind(c.run_after)
        .bind(&c.error)
        .bind(c.now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Cancels a queued job at once, or asks the worker of a running one to stop. Returns the
    /// job as it is now.
    pub async fn cancel(&self, id: i64, now: i64) -> Result<Job> {
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $2, error = 'cancelled before it started'
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.must_job(id).await
    }

    pub async fn append_log(&self, job_id: i64, at: i64, line: &str) -> Result<()> {
        self.append_logs(job_id, at, &[line.to_string()]).await
    }

    /// A job's log lines after line id `after`, oldest first.
    pub async fn log(&self, job_id: i64, after: i64, limit: i64) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT id, at, line FROM job_log WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok(LogLine {
                id: col(r, "id")?,
                at: col(r, "at")?,
                line: col(r, "line")?,
            })
        })?)
    }
}

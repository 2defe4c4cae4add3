//! Restore drills: each plan's next scheduled drill, and what each drill proved.

use sqlx::AssertSqlSafe;

use crate::jobs::NewJob;
use crate::row::{all, col};
use holdfast_core::job::JobState;

use crate::{Result, Store};

/// One drill's result, as recorded.
#[derive(Debug, Clone)]
pub struct DrillRow {
    pub job_id: i64,
    pub plan: String,
    pub endpoint: String,
    pub snapshot_id: String,
    /// `restore` or `check`.
    pub mode: String,
    pub passed: bool,
    pub rto_ms: Option<i64>,
    pub finished_at: i64,
    /// The full report (`holdfast_core::drill::DrillReport`) as JSON.
    pub report: String,
}

const COLUMNS: &str =
    "job_id, plan, endpoint, snapshot_id, mode, passed, rto_ms, finished_at, report";

fn from_row(r: &sqlx::any::AnyRow) -> std::result::Result<DrillRow, sqlx::Error> {
    Ok(DrillRow {
        job_id: col(r, "job_id")?,
        plan: col(r, "plan")?,
        endpoint: col(r, "endpoint")?,
        snapshot_id: col(r, "snapshot_id")?,
        mode: col(r, "mode")?,
        passed: col::<i64>(r, "passed")? != 0,
        rto_ms: col(r, "rto_ms")?,
        finished_at: col(r, "finished_at")?,
        report: col(r, "report")?,
    })
}

impl Store {
    /// Records a drill's report (a second report of the same job replaces the first: a later
    /// attempt's).
    pub async fn record_drill(&self, d: &DrillRow) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM drills WHERE job_id = $1")
            .bind(d.job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO drills (job_id, plan, endpoint, snapshot_id, mode, passed, rto_ms, finished_at, report)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(d.job_id)
        .bind(&d.plan)
        .bind(&d.endpoint)
        .bind(&d.snapshot_id)
        .bind(&d.mode)
        .bind(i64::from(d.passed))
        .bind(d.rto_ms)
        .bind(d.finished_at)
        .bind(&d.report)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The drill job `job` reported, if any.
    pub async fn drill_of_job(&self, job: i64) -> Result<Option<DrillRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drills WHERE job_id = $1"
        )))
        .bind(job)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The newest drill of each restore point in `endpoint`'s repository.
    pub async fn latest_drills_on(&self, endpoint: &str) -> Result<Vec<DrillRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drills d WHERE endpoint = $1 AND job_id = \
               (SELECT MAX(e.job_id) FROM drills e WHERE e.snapshot_id = d.snapshot_id AND e.endpoint = d.endpoint) \
             ORDER BY finished_at DESC"
        )))
        .bind(endpoint)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, from_row)?)
    }

    /// The plan's newest drills, newest first.
    pub async fn drills_of_plan(&self, plan: &str, limit: i64) -> Result<Vec<DrillRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drills WHERE plan = $1 ORDER BY job_id DESC LIMIT $2"
        )))
        .bind(plan)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, from_row)?)
    }

    /// Queues a drill of the job's plan, unless one is queued or running: then that one's id
    /// is the error.
    pub async fn enqueue_drill(
        &self,
        job: &NewJob,
        now: i64,
    ) -> Result<std::result::Result<i64, i64>> {
        let mut tx = self.pool.begin().await?;
        let plan = job.plan.clone().unwrap_or_default();
        // A write first: it takes SQLite's write lock (waiting under busy_timeout) before the
        // read, so a job another connection finishes meanwhile cannot fail the insert with
        // SQLITE_BUSY; on PostgreSQL it locks the plan's row, so two replicas asked at once
        // queue one drill, not two.
        sqlx::query("UPDATE plans SET paused = paused WHERE name = $1")
            .bind(&plan)
            .execute(&mut *tx)
            .await?;
        let pending = sqlx::query(
            "SELECT id FROM jobs WHERE plan = $1 AND kind = 'verify' AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(&plan)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = pending {
            return Ok(Err(col(&r, "id")?));
        }
        let id = Self::insert_job_in(&mut tx, job, JobState::Queued, None, now).await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    /// The newest drill of each plan (that has one).
    pub async fn last_drill_per_plan(&self) -> Result<Vec<DrillRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drills d WHERE finished_at = \
               (SELECT MAX(e.finished_at) FROM drills e WHERE e.plan = d.plan) ORDER BY plan"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, from_row)?)
    }

    /// The newest passing drill of each plan: (plan, finished_at, rto_ms).
    pub async fn last_passed_drill_per_plan(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT plan, finished_at, rto_ms FROM drills d WHERE passed = 1 AND finished_at = \
               (SELECT MAX(e.finished_at) FROM drills e WHERE e.plan = d.plan AND e.passed = 1) ORDER BY plan",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok((col(r, "plan")?, col(r, "finished_at")?, col(r, "rto_ms")?))
        })?)
    }

    /// Drills per plan and result: (plan, passed, count).
    pub async fn drill_counts(&self) -> Result<Vec<(String, bool, i64)>> {
        let rows = sqlx::query(
            "SELECT plan, passed, COUNT(*) AS n FROM drills GROUP BY plan, passed ORDER BY plan, passed",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok((col(r, "plan")?, col::<i64>(r, "passed")? != 0, col(r, "n")?))
        })?)
    }

    /// Sets when the plan's next scheduled drill is due (`None`: none).
    pub async fn set_next_verify(&self, plan: &str, at: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE plans SET next_verify_at = $2 WHERE name = $1")
            .bind(plan)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Plans whose drill is due (not paused), with the time it was due.
    pub async fn due_verifies(&self, now: i64) -> Result<Vec<(crate::Resource, i64)>> {
        let sql = format!(
            "SELECT {}, next_verify_at FROM plans WHERE next_verify_at IS NOT NULL AND next_verify_at <= $1 AND paused = 0 ORDER BY next_verify_at",
            crate::Kind::Plan.columns()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| {
            Ok((
                crate::resources::from_row(crate::Kind::Plan, r)?,
                col(r, "next_verify_at")?,
            ))
        })?)
    }

    /// Fires a plan's drill slot: moves `next_verify_at` from `expected` to `next` and queues
    /// the drill, unless one of the plan's drills is already queued or running; with a drill
    /// queued, the plan's check part moves on. `None` when another replica fired the slot, or
    /// a drill was pending.
    pub async fn fire_verify(
        &self,
        plan: &str,
        expected: i64,
        next: Option<i64>,
        job: &NewJob,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE plans SET next_verify_at = $3 WHERE name = $1 AND next_verify_at = $2",
        )
        .bind(plan)
        .bind(expected)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(None);
        }
        let pending = sqlx::query(
            "SELECT id FROM jobs WHERE plan = $1 AND kind = 'verify' AND state IN ('queued', 'running') LIMIT 1",
        )
        .bind(plan)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match pending {
            Some(_) => None,
            None => {
                let id = Self::insert_job_in(&mut tx, job, JobState::Queued, None, now).await?;
                sqlx::query("UPDATE plans SET verify_part = verify_part + 1 WHERE name = $1")
                    .bind(plan)
                    .execute(&mut *tx)
                    .await?;
                Some(id)
            }
        };
        tx.commit().await?;
        Ok(id)
    }

    /// The plan's check-drill counter (how many scheduled drills it fired), for the part
    /// the next one reads.
    pub async fn verify_part(&self, plan: &str) -> Result<i64> {
        let row = sqlx::query("SELECT verify_part FROM plans WHERE name = $1")
            .bind(plan)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| col(&r, "verify_part"))
            .transpose()?
            .unwrap_or(0))
    }
}

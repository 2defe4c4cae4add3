//! Agents and the lifecycle steps they record for each job.

use holdfast_core::agent::StepState;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::jobs::{JOB_COLUMNS, job};
use crate::row::{all, col, word};
use crate::{Job, Result, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    pub name: String,
    /// JSON object of label → value.
    pub labels: String,
    pub version: String,
    pub hostname: String,
    pub slots: i64,
    pub registered_at: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRow {
    pub attempt: i64,
    pub step: String,
    pub try_no: i64,
    pub state: StepState,
    pub agent: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub detail: Option<String>,
}

/// The claim's exclusions, for a job row named `q` (or unqualified in an UPDATE): a prune
/// waits while any job uses its endpoint, and no job starts on an endpoint being pruned.
pub(crate) const RUNNABLE: &str = "COALESCE({q}endpoint, '') NOT IN (SELECT r.endpoint FROM jobs r
         WHERE r.state = 'running' AND r.kind = 'prune' AND r.endpoint IS NOT NULL)
     AND ({q}kind <> 'prune' OR COALESCE({q}endpoint, '') NOT IN (SELECT r.endpoint FROM jobs r
         WHERE r.state = 'running' AND r.endpoint IS NOT NULL))";

impl Store {
    /// Records an agent (or its new labels, version and slots), seen `at`.
    pub async fn upsert_agent(&self, a: &AgentRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (name, labels, version, hostname, slots, registered_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (name) DO UPDATE SET labels = $2, version = $3, hostname = $4, slots = $5,
                 registered_at = $6, last_seen = $6",
        )
        .bind(&a.name)
        .bind(&a.labels)
        .bind(&a.version)
        .bind(&a.hostname)
        .bind(a.slots)
        .bind(a.registered_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        let rows = self.agent_rows(Some(name)).await?;
        Ok(rows.into_iter().next())
    }

    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        self.agent_rows(None).await
    }

    async fn agent_rows(&self, name: Option<&str>) -> Result<Vec<AgentRow>> {
        let sql = format!(
            "SELECT name, labels, version, hostname, slots, registered_at, last_seen FROM agents {} ORDER BY name",
            if name.is_some() {
                "WHERE name = $1"
            } else {
                ""
            }
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(n) = name {
            q = q.bind(n);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(all(&rows, |r| {
            Ok(AgentRow {
                name: col(r, "name")?,
                labels: col(r, "labels")?,
                version: col(r, "version")?,
                hostname: col(r, "hostname")?,
                slots: col(r, "slots")?,
                registered_at: col(r, "registered_at")?,
                last_seen: col(r, "last_seen")?,
            })
        })?)
    }

    /// Forgets an agent; false when it is not registered.
    pub async fn delete_agent(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM agents WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Notes that the agent was heard from; false when it is not registered.
    pub async fn touch_agent(&self, name: &str, now: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE agents SET last_seen = $2 WHERE name = $1")
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// (job id, lease owner) of every running job.
    pub async fn running_owners(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT id, lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| Ok((col(r, "id")?, col(r, "lease_owner")?)))?)
    }

    /// Up to `limit` jobs that could be claimed now, oldest first. The caller picks one it
    /// may run (by the agent's labels) and takes it with [`Store::claim_job`].
    pub async fn claim_candidates(&self, now: i64, limit: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs q WHERE state = 'queued' AND run_after <= $1 AND {}
             ORDER BY run_after, id LIMIT $2",
            RUNNABLE.replace("{q}", "q.")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, job)?)
    }

    /// Claims job `id` for `owner` if it is still queued and runnable; `None` when another
    /// agent or replica was first.
    pub async fn claim_job(
        &self,
        id: i64,
        owner: &str,
        now: i64,
        lease_expires: i64,
    ) -> Result<Option<Job>> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires = $3, started_at = $4
             WHERE id = $1 AND state = 'queued' AND run_after <= $4 AND {}
             RETURNING {JOB_COLUMNS}",
            RUNNABLE.replace("{q}", "")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(owner)
            .bind(lease_expires)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job).transpose()?)
    }

    /// Records a step starting (a new row) or ending (its row updated).
    pub async fn record_step(&self, job_id: i64, s: &StepRow) -> Result<()> {
        if s.state != StepState::Running {
            let r = sqlx::query(
                "UPDATE job_steps SET state = $5, finished_at = $6, detail = $7
                 WHERE job_id = $1 AND attempt = $2 AND step = $3 AND try_no = $4 AND state = 'running'",
            )
            .bind(job_id)
            .bind(s.attempt)
            .bind(&s.step)
            .bind(s.try_no)
            .bind(s.state.as_str())
            .bind(s.finished_at)
            .bind(&s.detail)
            .execute(&self.pool)
            .await?;
            if r.rows_affected() > 0 {
                return Ok(());
            }
        }
        sqlx::query(
            "INSERT INTO job_steps (job_id, attempt, step, try_no, state, agent, started_at, finished_at, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job_id)
        .bind(s.attempt)
        .bind(&s.step)
        .bind(s.try_no)
        .bind(s.state.as_str())
        .bind(&s.agent)
        .bind(s.started_at)
        .bind(s.finished_at)
        .bind(&s.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A job's steps, in the order they started.
    pub async fn steps(&self, job_id: i64) -> Result<Vec<StepRow>> {
        let rows = sqlx::query(
            "SELECT attempt, step, try_no, state, agent, started_at, finished_at, detail
             FROM job_steps WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok(StepRow {
                attempt: col(r, "attempt")?,
                step: col(r, "step")?,
                try_no: col(r, "try_no")?,
                state: word(r, "state")?,
                agent: col(r, "agent")?,
                started_at: col(r, "started_at")?,
                finished_at: col(r, "finished_at")?,
                detail: col(r, "detail")?,
            })
        })?)
    }

    /// Appends several log lines to a job at once.
    pub async fn append_logs(&self, job_id: i64, at: i64, lines: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for l in lines {
            sqlx::query("INSERT INTO job_log (job_id, at, line) VALUES ($1, $2, $3)")
                .bind(job_id)
                .bind(at)
                .bind(l)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

//! Aggregates over the job history for `/metrics`: a few grouped queries, whatever the number
//! of jobs, never one query per plan. Sums are cast to BIGINT: PostgreSQL's SUM of a BIGINT is a
//! NUMERIC.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;

use crate::jobs::{JOB_COLUMNS, job};
use crate::row::{all, col};
use crate::{Job, Result, Store};

/// Backups of one plan ending in one state: how many, and when the last one finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    pub plan: String,
    pub state: String,
    pub count: i64,
    pub last_finished: Option<i64>,
}

/// The durations of one plan's successful backups, bucketed: `cumulative[i]` took at most
/// `bounds_ms[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations {
    pub plan: String,
    pub cumulative: Vec<i64>,
    pub sum_ms: i64,
    pub count: i64,
}

impl Store {
    /// Finished backups by plan and state.
    pub async fn run_counts(&self) -> Result<Vec<RunCount>> {
        let rows = sqlx::query(
            "SELECT plan, state, COUNT(*) AS n, MAX(finished_at) AS last FROM jobs
             WHERE kind = 'backup' AND plan IS NOT NULL AND state IN ('succeeded', 'failed', 'cancelled')
             GROUP BY plan, state ORDER BY plan, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok(RunCount {
                plan: col(r, "plan")?,
                state: col(r, "state")?,
                count: col(r, "n")?,
                last_finished: col(r, "last")?,
            })
        })?)
    }

    /// Successful backups' durations by plan, in buckets of at most `bounds_ms`.
    pub async fn durations(&self, bounds_ms: &[i64]) -> Result<Vec<Durations>> {
        let buckets: String = bounds_ms
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(", CAST(SUM(CASE WHEN finished_at - started_at <= {b} THEN 1 ELSE 0 END) AS BIGINT) AS b{i}")
            })
            .collect();
        let sql = format!(
            "SELECT plan, COUNT(*) AS n, CAST(SUM(finished_at - started_at) AS BIGINT) AS total{buckets} FROM jobs
             WHERE kind = 'backup' AND plan IS NOT NULL AND state = 'succeeded'
                 AND started_at IS NOT NULL AND finished_at IS NOT NULL
             GROUP BY plan ORDER BY plan"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| {
            Ok(Durations {
                plan: col(r, "plan")?,
                count: col(r, "n")?,
                sum_ms: col::<Option<i64>>(r, "total")?.unwrap_or(0),
                cumulative: (0..bounds_ms.len())
                    .map(|i| col::<Option<i64>>(r, &format!("b{i}")).map(|v| v.unwrap_or(0)))
                    .collect::<std::result::Result<_, _>>()?,
            })
        })?)
    }

    /// Each plan's newest successful backup.
    pub async fn last_successes(&self) -> Result<HashMap<String, Job>> {
        let cols = JOB_COLUMNS
            .split(',')
            .map(|c| format!("j.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM plans p JOIN jobs j ON j.id = (SELECT s.id FROM jobs s
                 WHERE s.plan = p.name AND s.kind = 'backup' AND s.state = 'succeeded'
                 ORDER BY s.id DESC LIMIT 1)"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::new();
        for j in all(&rows, job)? {
            if let Some(p) = j.plan.clone() {
                out.insert(p, j);
            }
        }
        Ok(out)
    }

    /// Records how many restore points of its plan a backup's retention kept.
    pub async fn set_restore_points(&self, job: i64, n: i64) -> Result<()> {
        sqlx::query("UPDATE jobs SET restore_points = $2 WHERE id = $1")
            .bind(job)
            .bind(n)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// For each plan, the restore points its newest successful backup that counted them left.
    pub async fn restore_points(&self) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT p.name AS plan, (SELECT s.restore_points FROM jobs s
                 WHERE s.plan = p.name AND s.kind = 'backup' AND s.state = 'succeeded'
                     AND s.restore_points IS NOT NULL
                 ORDER BY s.id DESC LIMIT 1) AS n
             FROM plans p",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for r in &rows {
            if let Some(n) = col::<Option<i64>>(r, "n")? {
                out.insert(col(r, "plan")?, n);
            }
        }
        Ok(out)
    }

    /// Jobs by kind and state: (kind, state, count).
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok((col(r, "kind")?, col(r, "state")?, col(r, "n")?))
        })?)
    }

    /// Since when the oldest queued job that may run now has waited (its `run_after`).
    pub async fn oldest_runnable(&self, now: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(run_after) AS t FROM jobs WHERE state = 'queued' AND run_after <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(col(&row, "t")?)
    }
}

//! Snapshots the server's repository proxy received: when, from which job, for which plan.

use std::collections::HashMap;

use crate::row::col;
use crate::{Result, Store};

impl Store {
    /// Records that the proxy is about to store `snapshot` in `endpoint`'s repository for job
    /// `job` of `plan`. Recorded before the file is written, so no snapshot a client sent
    /// through the proxy is ever without its received time. A second record of the same
    /// snapshot keeps the first.
    pub async fn record_received(
        &self,
        endpoint: &str,
        snapshot: &str,
        plan: &str,
        job: i64,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO received_snapshots (endpoint, snapshot, plan, job_id, received_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (endpoint, snapshot) DO NOTHING",
        )
        .bind(endpoint)
        .bind(snapshot)
        .bind(plan)
        .bind(job)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When each snapshot of `endpoint` that came through the proxy was received (Unix ms),
    /// by snapshot id.
    pub async fn received(&self, endpoint: &str) -> Result<HashMap<String, i64>> {
        let rows =
            sqlx::query("SELECT snapshot, received_at FROM received_snapshots WHERE endpoint = $1")
                .bind(endpoint)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((col(r, "snapshot")?, col(r, "received_at")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

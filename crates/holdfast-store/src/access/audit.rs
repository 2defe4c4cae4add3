//! The audit log: appended, read newest first with filters, pruned by age.

use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::row::{all, col};
use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: String,
    /// JSON: what changed (field names, never secret values).
    pub detail: Option<String>,
    pub remote: Option<String>,
}

/// Which audit rows to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Exact resource (`plan/nightly`) or a kind prefix ending in `/` (`plan/`).
    pub resource: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Rows with ids below this (the next page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn append_audit(&self, a: &AuditRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, resource, outcome, detail, remote)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(a.at)
        .bind(&a.actor)
        .bind(&a.action)
        .bind(&a.resource)
        .bind(&a.outcome)
        .bind(&a.detail)
        .bind(&a.remote)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut sql = String::from(
            "SELECT id, at, actor, action, resource, outcome, detail, remote FROM audit WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if f.actor.is_some() {
            sql += &format!(" AND actor = ${}", next());
        }
        let prefix = f.resource.as_deref().is_some_and(|r| r.ends_with('/'));
        if f.resource.is_some() {
            sql += &if prefix {
                format!(" AND resource LIKE ${}", next())
            } else {
                format!(" AND resource = ${}", next())
            };
        }
        if f.since.is_some() {
            sql += &format!(" AND at >= ${}", next());
        }
        if f.until.is_some() {
            sql += &format!(" AND at < ${}", next());
        }
        if f.before_id.is_some() {
            sql += &format!(" AND id < ${}", next());
        }
        sql += &format!(" ORDER BY id DESC LIMIT ${}", next());
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(a) = &f.actor {
            q = q.bind(a.clone());
        }
        if let Some(r) = &f.resource {
            q = q.bind(if prefix {
                format!("{}%", r.replace(['%', '_'], ""))
            } else {
                r.clone()
            });
        }
        for v in [f.since, f.until, f.before_id].into_iter().flatten() {
            q = q.bind(v);
        }
        q = q.bind(f.limit);
        let rows = q.fetch_all(&self.pool).await?;
        Ok(all(&rows, |r| {
            Ok(AuditRow {
                id: col(r, "id")?,
                at: col(r, "at")?,
                actor: col(r, "actor")?,
                action: col(r, "action")?,
                resource: col(r, "resource")?,
                outcome: col(r, "outcome")?,
                detail: col(r, "detail")?,
                remote: col(r, "remote")?,
            })
        })?)
    }

    /// Deletes audit rows older than `before`; returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

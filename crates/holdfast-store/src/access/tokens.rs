//! Tokens (API, agent credentials and enrolments), stored as hashes; revoking one never
//! takes away the last way an admin gets in.

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::last_admin;
use crate::row::{all, col};
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    /// `api`, `agent` or `enrol`.
    pub kind: String,
    pub user_id: Option<i64>,
    pub role: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// An agent credential: its agent's name. An enrolment: the name it is for, if bound.
    pub agent: Option<String>,
    /// JSON object: the labels an agent may serve, or an enrolment allows.
    pub labels: Option<String>,
    pub uses_left: Option<i64>,
    /// JSON object of plan labels this token adds to its owner's scope.
    pub scope: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, name, kind, user_id, role, created_at, last_used_at, \
     expires_at, revoked_at, agent, labels, uses_left, scope";

fn token(r: &AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: col(r, "id")?,
        name: col(r, "name")?,
        kind: col(r, "kind")?,
        user_id: col(r, "user_id")?,
        role: col(r, "role")?,
        created_at: col(r, "created_at")?,
        last_used_at: col(r, "last_used_at")?,
        expires_at: col(r, "expires_at")?,
        revoked_at: col(r, "revoked_at")?,
        agent: col(r, "agent")?,
        labels: col(r, "labels")?,
        uses_left: col(r, "uses_left")?,
        scope: col(r, "scope")?,
    })
}

/// A token to store: everything but its id and times.
#[derive(Debug, Clone, Default)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub kind: &'a str,
    pub user_id: Option<i64>,
    pub role: &'a str,
    pub expires_at: Option<i64>,
    pub agent: Option<&'a str>,
    pub labels: Option<&'a str>,
    pub uses_left: Option<i64>,
    pub scope: Option<&'a str>,
}

impl Store {
    /// Stores a token's hash; returns its id.
    pub async fn insert_token(&self, t: &NewToken<'_>, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO tokens (name, hash, created_at, kind, user_id, role, expires_at, agent,
                 labels, uses_left, scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(t.name)
        .bind(t.hash)
        .bind(now)
        .bind(t.kind)
        .bind(t.user_id)
        .bind(t.role)
        .bind(t.expires_at)
        .bind(t.agent)
        .bind(t.labels)
        .bind(t.uses_left)
        .bind(t.scope)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_unique_violation() => StoreError::Exists {
                kind: "agent credential",
                name: t.agent.unwrap_or(t.name).to_string(),
            },
            _ => e.into(),
        })?;
        Ok(col(&row, "id")?)
    }

    /// The token with this hash, revoked or not (the caller decides what a revoked or
    /// expired one is worth).
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(token).transpose()?)
    }

    pub async fn token(&self, id: i64) -> Result<Option<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(token).transpose()?)
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, token)?)
    }

    /// Notes that a token was used (at most about once a minute per token, to keep reads
    /// cheap).
    pub async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE tokens SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes a token; false when there is no live token with that id. Refused (`InUse`)
    /// when it is the last live admin credential of the last enabled admin account.
    pub async fn revoke_token(&self, id: i64, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let r =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if Self::admin_ways_in(&mut tx, now).await? == 0 {
            tx.rollback().await?;
            return Err(last_admin());
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes every live token of kind `kind` of the agent `agent`; returns how many.
    pub async fn revoke_agent_tokens(&self, agent: &str, now: i64) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1
             WHERE kind = 'agent' AND agent = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(agent)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Uses an enrolment token once: compare-and-set on its uses left, so that two agents
    /// enrolling at once with a single-use token cannot both succeed.
    pub async fn use_enrolment(&self, id: i64, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE tokens SET uses_left = uses_left - 1, last_used_at = $2,
                 revoked_at = CASE WHEN uses_left - 1 <= 0 THEN $2 ELSE revoked_at END
             WHERE id = $1 AND kind = 'enrol' AND revoked_at IS NULL AND uses_left > 0
               AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives the tokens that predate accounts (no owner) to account `user_id`.
    pub async fn adopt_tokens(&self, user_id: i64) -> Result<u64> {
        let r =
            sqlx::query("UPDATE tokens SET user_id = $1 WHERE user_id IS NULL AND kind = 'api'")
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }
}

//! UI sign-in sessions, by the hash of their id.

use crate::row::col;
use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user_id: i64,
    pub role: String,
    pub token_id: Option<i64>,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen: i64,
}

impl Store {
    pub async fn insert_session(&self, hash: &str, s: &SessionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (hash, user_id, role, token_id, csrf, created_at, expires_at,
                 last_seen)
             VALUES ($1, $2, $7, $8, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(s.user_id)
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.last_seen)
        .bind(&s.role)
        .bind(s.token_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live session with this hash: not expired, and used within `idle_ms`. Renews its
    /// last use.
    pub async fn session(&self, hash: &str, now: i64, idle_ms: i64) -> Result<Option<SessionRow>> {
        let r = sqlx::query(
            "UPDATE sessions SET last_seen = $2
             WHERE hash = $1 AND expires_at > $2 AND last_seen > $3
             RETURNING user_id, role, token_id, csrf, created_at, expires_at, last_seen",
        )
        .bind(hash)
        .bind(now)
        .bind(now - idle_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| {
            Ok::<_, sqlx::Error>(SessionRow {
                user_id: col(&r, "user_id")?,
                role: col(&r, "role")?,
                token_id: col(&r, "token_id")?,
                csrf: col(&r, "csrf")?,
                created_at: col(&r, "created_at")?,
                expires_at: col(&r, "expires_at")?,
                last_seen: col(&r, "last_seen")?,
            })
        })
        .transpose()?)
    }

    pub async fn delete_session(&self, hash: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends every session of an account (its password changed, it was disabled).
    pub async fn delete_sessions_of(&self, user_id: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes sessions that ended before `now`.
    pub async fn delete_expired_sessions(&self, now: i64, idle_ms: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen <= $2")
            .bind(now)
            .bind(now - idle_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

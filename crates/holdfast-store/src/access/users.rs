//! Accounts: people and service accounts, their roles, scopes and sign-in failures.

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::last_admin;
use crate::row::{all, col};
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    pub role: String,
    /// argon2id PHC string; `None`: no password sign-in.
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// An account made by an OpenID Connect sign-in: `ISSUER#SUB`.
    pub oidc_subject: Option<String>,
    /// JSON object of plan labels the account is limited to; `None`: every plan.
    pub scope: Option<String>,
}

/// What an account change sets; `None` leaves a field as it is (`Some(None)` clears it).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserChange<'a> {
    pub role: Option<&'a str>,
    /// A new argon2id hash (failed sign-ins and a lock are cleared with it).
    pub password_hash: Option<Option<&'a str>>,
    pub disabled_at: Option<Option<i64>>,
    /// A JSON object of plan labels.
    pub scope: Option<Option<&'a str>>,
}

const USER_COLUMNS: &str = "id, name, kind, role, password_hash, failed_logins, locked_until, \
     created_at, disabled_at, oidc_subject, scope";

fn user(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: col(r, "id")?,
        name: col(r, "name")?,
        kind: col(r, "kind")?,
        role: col(r, "role")?,
        password_hash: col(r, "password_hash")?,
        failed_logins: col(r, "failed_logins")?,
        locked_until: col(r, "locked_until")?,
        created_at: col(r, "created_at")?,
        disabled_at: col(r, "disabled_at")?,
        oidc_subject: col(r, "oidc_subject")?,
        scope: col(r, "scope")?,
    })
}

impl Store {
    /// Creates an account; `Exists` when the name is taken.
    pub async fn insert_user(&self, u: &UserRow) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO users (name, kind, role, password_hash, failed_logins, created_at,
                 oidc_subject, scope)
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&u.name)
        .bind(&u.kind)
        .bind(&u.role)
        .bind(&u.password_hash)
        .bind(u.created_at)
        .bind(&u.oidc_subject)
        .bind(&u.scope)
        .fetch_optional(&self.pool)
        .await?;
        match r {
            Some(r) => Ok(col(&r, "id")?),
            None => Err(StoreError::Exists {
                kind: "user",
                name: u.name.clone(),
            }),
        }
    }

    pub async fn user(&self, id: i64) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(user).transpose()?)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(user).transpose()?)
    }

    /// The account an OpenID Connect subject (`ISSUER#SUB`) signed in as before.
    pub async fn user_by_oidc_subject(&self, subject: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE oidc_subject = $1");
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(user).transpose()?)
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, user)?)
    }

    /// Changes an account's role, password hash, disabled time or scope, in one transaction.
    /// Refused (`LastAdmin`) when it would leave no enabled, unscoped admin.
    pub async fn update_user(&self, id: i64, c: &UserChange<'_>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let r = sqlx::query(
            "UPDATE users SET role = COALESCE($2, role),
                 password_hash = CASE WHEN $3 = 1 THEN $4 ELSE password_hash END,
                 disabled_at = CASE WHEN $5 = 1 THEN $6 ELSE disabled_at END,
                 failed_logins = CASE WHEN $3 = 1 THEN 0 ELSE failed_logins END,
                 locked_until = CASE WHEN $3 = 1 THEN NULL ELSE locked_until END,
                 scope = CASE WHEN $7 = 1 THEN $8 ELSE scope END
             WHERE id = $1",
        )
        .bind(id)
        .bind(c.role)
        .bind(i64::from(c.password_hash.is_some()))
        .bind(c.password_hash.flatten())
        .bind(i64::from(c.disabled_at.is_some()))
        .bind(c.disabled_at.flatten())
        .bind(i64::from(c.scope.is_some()))
        .bind(c.scope.flatten())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let admins = Self::admins_in(&mut tx).await?;
        if admins == 0 {
            tx.rollback().await?;
            return Err(last_admin());
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes an account with its tokens and sessions; refused when it is the last admin.
    pub async fn delete_user(&self, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        sqlx::query("DELETE FROM tokens WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if Self::admins_in(&mut tx).await? == 0 {
            tx.rollback().await?;
            return Err(last_admin());
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed sign-in; locks the account until `lock_until` when this was failure
    /// number `lock_after` or later. Returns the failures so far.
    pub async fn login_failed(&self, id: i64, lock_after: i64, lock_until: i64) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1,
                 locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END
             WHERE id = $1 RETURNING failed_logins",
        )
        .bind(id)
        .bind(lock_after)
        .bind(lock_until)
        .fetch_one(&self.pool)
        .await?;
        Ok(col(&row, "failed_logins")?)
    }

    pub async fn login_succeeded(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

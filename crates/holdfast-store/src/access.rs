//! Accounts, tokens (API, agent and enrolment), sign-in sessions and the audit log. The store
//! keeps only hashes of tokens and session ids; what a role may do is the server's business.

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

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
    // ----- accounts -----

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

    /// Changes an account's role, password hash (`Some(None)` removes it) or disabled time.
    /// Refused (`InUse`) when it would leave no enabled admin.
    pub async fn update_user(
        &self,
        id: i64,
        role: Option<&str>,
        password_hash: Option<Option<&str>>,
        disabled_at: Option<Option<i64>>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let r = sqlx::query(
            "UPDATE users SET role = COALESCE($2, role),
                 password_hash = CASE WHEN $3 = 1 THEN $4 ELSE password_hash END,
                 disabled_at = CASE WHEN $5 = 1 THEN $6 ELSE disabled_at END,
                 failed_logins = CASE WHEN $3 = 1 THEN 0 ELSE failed_logins END,
                 locked_until = CASE WHEN $3 = 1 THEN NULL ELSE locked_until END
             WHERE id = $1",
        )
        .bind(id)
        .bind(role)
        .bind(i64::from(password_hash.is_some()))
        .bind(password_hash.flatten())
        .bind(i64::from(disabled_at.is_some()))
        .bind(disabled_at.flatten())
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

    /// Sets (`Some`) or clears (`None`) an account's scope; its sessions end, so that no
    /// browser keeps what the account no longer has.
    /// Refused (`LastAdmin`) when it would leave no unscoped enabled admin.
    pub async fn set_user_scope(&self, id: i64, scope: Option<&str>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        self.lock_admins(&mut tx).await?;
        let r = sqlx::query("UPDATE users SET scope = $2 WHERE id = $1")
            .bind(id)
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        if Self::admins_in(&mut tx).await? == 0 {
            tx.rollback().await?;
            return Err(last_admin());
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
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

    /// Serializes whatever could take away the last way an admin gets in: on PostgreSQL
    /// (READ COMMITTED) two such changes at once would each count the other's admin; the
    /// row locks make the second wait and count again. SQLite runs one writer at a time.
    async fn lock_admins(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
        if self.dialect == crate::Dialect::Postgres {
            sqlx::query("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
                .fetch_all(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn admins_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users
             WHERE role = 'admin' AND disabled_at IS NULL AND scope IS NULL",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(col(&row, "n")?)
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

    // ----- tokens -----

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

    /// How an admin can still get in: enabled admin accounts with a password, plus live
    /// admin API tokens of enabled admin accounts (or of no account, from before accounts).
    async fn admin_ways_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL
                    AND scope IS NULL AND password_hash IS NOT NULL)
             + (SELECT COUNT(*) FROM tokens t LEFT JOIN users u ON u.id = t.user_id
                WHERE t.kind = 'api' AND t.role = 'admin' AND t.revoked_at IS NULL
                  AND t.scope IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1)
                  AND (t.user_id IS NULL OR (u.role = 'admin' AND u.disabled_at IS NULL
                       AND u.scope IS NULL))) AS n",
        )
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        Ok(col(&row, "n")?)
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

    // ----- sessions -----

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

    // ----- audit log -----

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

fn last_admin() -> StoreError {
    StoreError::LastAdmin
}

//! Accounts, tokens (API, agent and enrolment), sign-in sessions and the audit log. The store
//! keeps only hashes of tokens and session ids; what a role may do is the server's business.
//! What could take away the last way an admin gets in is checked here, in one transaction.

mod audit;
mod sessions;
mod tokens;
mod users;

pub use audit::{AuditFilter, AuditRow};
pub use sessions::SessionRow;
pub use tokens::{NewToken, TokenRow};
pub use users::{UserChange, UserRow};

use crate::row::col;
use crate::{Result, Store, StoreError};

impl Store {
    /// Serializes whatever could take away the last way an admin gets in: on PostgreSQL
    /// (READ COMMITTED) two such changes at once would each count the other's admin; the
    /// row locks make the second wait and count again. SQLite runs one writer at a time.
    pub(super) async fn lock_admins(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<()> {
        if self.dialect == crate::Dialect::Postgres {
            sqlx::query("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
                .fetch_all(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn admins_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users
             WHERE role = 'admin' AND disabled_at IS NULL AND scope IS NULL",
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(col(&row, "n")?)
    }

    /// How an admin can still get in: enabled admin accounts with a password, plus live
    /// admin API tokens of enabled admin accounts (or of no account, from before accounts).
    pub(super) async fn admin_ways_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        now: i64,
    ) -> Result<i64> {
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
}

pub(super) fn last_admin() -> StoreError {
    StoreError::LastAdmin
}

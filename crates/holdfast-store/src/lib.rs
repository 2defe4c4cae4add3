//! The metadata store: endpoints, sources, plans, jobs, job logs and API tokens, in SQLite (the
//! default, one file) or PostgreSQL (several server replicas sharing the work).
//!
//! **Architecture invariant:** this is the only crate that writes SQL. One code path serves both
//! databases through sqlx's `Any` driver; where they differ (claiming a job with
//! `FOR UPDATE SKIP LOCKED`), [`Dialect`] says so. The store knows nothing of cron or retries:
//! callers pass the times and states that the rules in `holdfast-core` decided, and every change
//! that could race another replica is a compare-and-set in one statement.

mod access;
mod agents;
mod alerts;
mod drills;
mod jobs;
mod migrate;
mod received;
mod resources;
mod row;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use crate::row::col;

pub use access::{AuditFilter, AuditRow, NewToken, SessionRow, TokenRow, UserChange, UserRow};
pub use agents::{AgentRow, StepRow};
pub use alerts::{Attempt, AttemptRow, DeliveryRow, EventRow, NewEvent, PlanAlert};
pub use drills::DrillRow;
pub use jobs::{FireOutcome, Job, JobFilter, JobUpdate, LogLine, NewJob};
pub use resources::{Kind, NewResource, PlanCols, Resource};
pub use stats::{Durations, RunCount};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} `{name}` already exists; update it with PUT, or pick another name")]
    Exists { kind: &'static str, name: String },

    #[error(
        "{kind} `{name}` was changed since you read it (it is at version {current}); read it again and retry"
    )]
    VersionMismatch {
        kind: &'static str,
        name: String,
        current: i64,
    },

    #[error("{kind} `{name}` is used by {used_by}; change or delete that first")]
    InUse {
        kind: &'static str,
        name: String,
        used_by: String,
    },

    #[error(
        "refused: this is the last way an admin can get in; create another admin account or \
         admin token first"
    )]
    LastAdmin,

    #[error("metadata store: {0}")]
    Db(#[from] sqlx::Error),
}

/// Which SQL database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A handle on the metadata database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl Store {
    /// Connects to `url` (`sqlite:///path/holdfast.db` or `postgres://...`), creating a SQLite
    /// file when missing, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL scheme in `{}`; use sqlite://PATH or postgres://...",
                    url.split("://").next().unwrap_or(url)
                )
                .into(),
            )));
        };
        let url = match dialect {
            // WAL lets readers go on while a job writes; create the file on first start.
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let store = Self { pool, dialect };
        migrate::run(&store).await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A server-wide setting, e.g. whether first-start setup has run.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| col(&r, "value")).transpose()?)
    }

    /// Sets `key` unless it is set; returns whether this call set it (the first replica wins).
    pub async fn set_setting_once(&self, key: &str, value: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Closes the pool (tests use this to let a PostgreSQL database be dropped).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

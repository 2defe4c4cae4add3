//! Schema migrations, run at start by every server. The SQL is written once with `{ID}` and
//! `{INT}` placeholders and rendered for the dialect. On PostgreSQL an advisory lock keeps two
//! replicas starting together from migrating at once.

use sqlx::AssertSqlSafe;
use sqlx::Connection;

use crate::{Dialect, Result, Store};

/// (version, SQL). Append only: never edit a released migration.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_prune_schedule.sql")),
    (3, include_str!("../migrations/0003_indexes.sql")),
    (4, include_str!("../migrations/0004_agents.sql")),
    (5, include_str!("../migrations/0005_alerts.sql")),
    (6, include_str!("../migrations/0006_access.sql")),
    (7, include_str!("../migrations/0007_oidc.sql")),
    (8, include_str!("../migrations/0008_scope.sql")),
    (9, include_str!("../migrations/0009_received.sql")),
    (10, include_str!("../migrations/0010_drills.sql")),
];

/// Arbitrary, fixed: "holdfast" in ASCII, truncated to fit.
const LOCK_KEY: i64 = 0x686f_6c64_6661;

fn render(sql: &str, dialect: Dialect) -> String {
    let (id, int) = match dialect {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER"),
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
    };
    sql.replace("{ID}", id).replace("{INT}", int)
}

pub(crate) async fn run(store: &Store) -> Result<()> {
    let mut conn = store.pool.acquire().await?;
    if store.dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let result = async {
        sqlx::raw_sql(AssertSqlSafe(render(
            "CREATE TABLE IF NOT EXISTS holdfast_schema (version {INT} PRIMARY KEY, applied_at {INT} NOT NULL)",
            store.dialect,
        )))
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM holdfast_schema")
            .fetch_one(&mut *conn)
            .await?;
        let current: i64 = crate::row::col(&row, "v")?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tracing::info!(version, "applying metadata schema migration");
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(render(sql, store.dialect)))
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO holdfast_schema (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(0i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok::<_, crate::StoreError>(())
    }
    .await;
    if store.dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    result
}

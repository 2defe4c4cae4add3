//! Endpoints, sources, plans and notifiers: a JSON spec, the server's ciphertext of their secrets, and a
//! version for optimistic concurrency (the API's ETag). Plans also carry the columns the
//! scheduler reads.

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use crate::row::{all, col, flag_col};
use crate::{Result, Store, StoreError, flag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Endpoint,
    Source,
    Plan,
    Notifier,
}

impl Kind {
    pub fn noun(self) -> &'static str {
        match self {
            Self::Endpoint => "endpoint",
            Self::Source => "source",
            Self::Plan => "plan",
            Self::Notifier => "notifier",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Endpoint => "endpoints",
            Self::Source => "sources",
            Self::Plan => "plans",
            Self::Notifier => "notifiers",
        }
    }

    pub(crate) fn columns(self) -> &'static str {
        match self {
            Self::Plan => {
                "name, spec, secrets, version, created_at, updated_at, source, endpoint, paused, next_fire_at"
            }
            _ => "name, spec, secrets, version, created_at, updated_at",
        }
    }
}

/// The scheduler's view of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCols {
    pub source: String,
    pub endpoint: String,
    pub paused: bool,
    /// When the plan fires next (Unix ms); `None` when its schedule has no next time.
    pub next_fire_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    /// JSON, without secrets.
    pub spec: String,
    /// The server's ciphertext of the secrets, if any.
    pub secrets: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Present for plans.
    pub plan: Option<PlanCols>,
}

/// What a create or update writes.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub name: String,
    pub spec: String,
    /// On update, `None` keeps the stored secrets (they are write-only in the API).
    pub secrets: Option<String>,
    /// Required for plans.
    pub plan: Option<PlanCols>,
}

pub(crate) fn from_row(kind: Kind, r: &AnyRow) -> Result<Resource, sqlx::Error> {
    Ok(Resource {
        name: col(r, "name")?,
        spec: col(r, "spec")?,
        secrets: col(r, "secrets")?,
        version: col(r, "version")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
        plan: match kind {
            Kind::Plan => Some(PlanCols {
                source: col(r, "source")?,
                endpoint: col(r, "endpoint")?,
                paused: flag_col(r, "paused")?,
                next_fire_at: col(r, "next_fire_at")?,
            }),
            _ => None,
        },
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

impl Store {
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Option<Resource>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE name = $1",
            kind.columns(),
            kind.table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| from_row(kind, &r)).transpose()?)
    }

    /// Like [`Store::get`], but a missing resource is an error.
    pub async fn must_get(&self, kind: Kind, name: &str) -> Result<Resource> {
        self.get(kind, name).await?.ok_or(StoreError::NotFound {
            kind: kind.noun(),
            name: name.into(),
        })
    }

    /// All resources of a kind, by name.
    pub async fn list(&self, kind: Kind) -> Result<Vec<Resource>> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY name",
            kind.columns(),
            kind.table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| from_row(kind, r))?)
    }

    pub async fn count(&self, kind: Kind) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) AS n FROM {}", kind.table());
        let row = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        Ok(col(&row, "n")?)
    }

    pub async fn create(&self, kind: Kind, new: &NewResource, now: i64) -> Result<Resource> {
        let res = match (kind, &new.plan) {
            (Kind::Plan, Some(p)) => {
                sqlx::query(
                    "INSERT INTO plans (name, spec, secrets, version, created_at, updated_at, source, endpoint, paused, next_fire_at)
                     VALUES ($1, $2, $3, 1, $4, $4, $5, $6, $7, $8)",
                )
                .bind(&new.name)
                .bind(&new.spec)
                .bind(&new.secrets)
                .bind(now)
                .bind(&p.source)
                .bind(&p.endpoint)
                .bind(flag(p.paused))
                .bind(p.next_fire_at)
                .execute(&self.pool)
                .await
            }
            (Kind::Plan, None) => panic!("a plan needs its plan columns"),
            _ => {
                let sql = format!(
                    "INSERT INTO {} (name, spec, secrets, version, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $4)",
                    kind.table()
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&new.name)
                    .bind(&new.spec)
                    .bind(&new.secrets)
                    .bind(now)
                    .execute(&self.pool)
                    .await
            }
        };
        match res {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Exists {
                kind: kind.noun(),
                name: new.name.clone(),
            }),
            Err(e) => Err(e.into()),
            Ok(_) => self.must_get(kind, &new.name).await,
        }
    }

    /// Replaces a resource's spec (and secrets, when given). With `if_version`, only when the
    /// stored version is still that one.
    pub async fn update(
        &self,
        kind: Kind,
        new: &NewResource,
        if_version: Option<i64>,
        now: i64,
    ) -> Result<Resource> {
        let check = if if_version.is_some() {
            " AND version = $5"
        } else {
            ""
        };
        let res = match (kind, &new.plan) {
            (Kind::Plan, Some(p)) => {
                let sql = format!(
                    "UPDATE plans SET spec = $2, secrets = COALESCE($3, secrets), version = version + 1,
                     updated_at = $4, source = $6, endpoint = $7, paused = $8, next_fire_at = $9
                     WHERE name = $1{check}"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&new.name)
                    .bind(&new.spec)
                    .bind(&new.secrets)
                    .bind(now)
                    .bind(if_version.unwrap_or(0))
                    .bind(&p.source)
                    .bind(&p.endpoint)
                    .bind(flag(p.paused))
                    .bind(p.next_fire_at)
                    .execute(&self.pool)
                    .await
            }
            (Kind::Plan, None) => panic!("a plan needs its plan columns"),
            _ => {
                let sql = format!(
                    "UPDATE {} SET spec = $2, secrets = COALESCE($3, secrets), version = version + 1,
                     updated_at = $4 WHERE name = $1{check}",
                    kind.table()
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(&new.name)
                    .bind(&new.spec)
                    .bind(&new.secrets)
                    .bind(now)
                    .bind(if_version.unwrap_or(0))
                    .execute(&self.pool)
                    .await
            }
        };
        let res = match res {
            Err(e) if is_fk_violation(&e) => {
                return Err(StoreError::NotFound {
                    kind: "source or endpoint",
                    name: new
                        .plan
                        .as_ref()
                        .map(|p| format!("{} / {}", p.source, p.endpoint))
                        .unwrap_or_default(),
                });
            }
            other => other?,
        };
        if res.rows_affected() == 1 {
            return self.must_get(kind, &new.name).await;
        }
        let current = self.must_get(kind, &new.name).await?;
        Err(StoreError::VersionMismatch {
            kind: kind.noun(),
            name: new.name.clone(),
            current: current.version,
        })
    }

    /// Deletes a resource. Sources and endpoints that plans use are refused.
    pub async fn delete(&self, kind: Kind, name: &str, if_version: Option<i64>) -> Result<()> {
        let current = self.must_get(kind, name).await?;
        if let Some(v) = if_version
            && v != current.version
        {
            return Err(StoreError::VersionMismatch {
                kind: kind.noun(),
                name: name.into(),
                current: current.version,
            });
        }
        // Plans name their notifiers in their spec; the API checks those.
        if matches!(kind, Kind::Source | Kind::Endpoint) {
            let column = if kind == Kind::Source {
                "source"
            } else {
                "endpoint"
            };
            let sql = format!("SELECT name FROM plans WHERE {column} = $1 ORDER BY name");
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
            let users: Vec<String> = all(&rows, |r| col(r, "name"))?;
            if !users.is_empty() {
                return Err(StoreError::InUse {
                    kind: kind.noun(),
                    name: name.into(),
                    used_by: format!("plan(s) {}", users.join(", ")),
                });
            }
        }
        let sql = format!(
            "DELETE FROM {} WHERE name = $1 AND version = $2",
            kind.table()
        );
        let res = sqlx::query(AssertSqlSafe(sql))
            .bind(name)
            .bind(current.version)
            .execute(&self.pool)
            .await;
        match res {
            Err(e) if is_fk_violation(&e) => Err(StoreError::InUse {
                kind: kind.noun(),
                name: name.into(),
                used_by: "a plan".into(),
            }),
            Err(e) => Err(e.into()),
            Ok(r) if r.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(StoreError::VersionMismatch {
                kind: kind.noun(),
                name: name.into(),
                current: current.version + 1,
            }),
        }
    }

    /// Pauses or resumes a plan, setting when it fires next.
    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> Result<Resource> {
        let r = sqlx::query(
            "UPDATE plans SET paused = $2, next_fire_at = $3, version = version + 1, updated_at = $4 WHERE name = $1",
        )
        .bind(name)
        .bind(flag(paused))
        .bind(next_fire_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "plan",
                name: name.into(),
            });
        }
        self.must_get(Kind::Plan, name).await
    }

    /// Plans that are not paused and whose next fire time has come.
    pub async fn due_plans(&self, now: i64) -> Result<Vec<Resource>> {
        let sql = format!(
            "SELECT {} FROM plans WHERE paused = 0 AND next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at, name",
            Kind::Plan.columns()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| from_row(Kind::Plan, r))?)
    }
}

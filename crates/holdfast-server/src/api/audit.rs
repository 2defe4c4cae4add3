//! `/api/v1/audit`: the audit log, newest first, filtered by actor, resource and time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult};
use crate::AppState;
use crate::model::rfc3339;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this actor (as shown in `actor`, e.g. `alice` or `alice (token ci)`).
    actor: Option<String>,
    /// Only this resource (`plans/nightly`), or every one of a kind (`plans/`).
    resource: Option<String>,
    /// Entries at or after this time (RFC 3339).
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    until: Option<String>,
    /// Entries older than this id (the next page: the last id of the previous one).
    before: Option<i64>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    /// `plans.create`, `tokens.delete`, `session.sign-in`…
    pub action: String,
    pub resource: Option<String>,
    /// `ok`, or the HTTP status the request ended with, or why it was refused.
    pub outcome: String,
    /// What the request sent: its field names (never their values).
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
    /// The caller's address.
    pub remote: Option<String>,
}

fn time(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|t| {
        t.parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|e| {
                ApiError::BadRequest(format!("{field}: `{t}` is not an RFC 3339 time: {e}"))
            })
    })
    .transpose()
}

#[utoipa::path(get, path = "/audit", security(("token" = ["audit"])), tag = "audit", params(AuditQuery),
    description = "The audit log, newest first: every change and sensitive action with who, when, from where and the outcome.",
    responses((status = 200, body = [AuditEntry])))]
pub async fn audit_log(
    State(s): State<Arc<AppState>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = super::jobs::in_range("limit", q.limit, 100, 1, 1000)?;
    let f = holdfast_store::AuditFilter {
        actor: q.actor,
        resource: q.resource,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        before_id: q.before,
        limit,
    };
    let rows = s.store.audit(&f).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: rfc3339(r.at),
                actor: r.actor,
                action: r.action,
                resource: r.resource,
                outcome: r.outcome,
                detail: r.detail.and_then(|d| serde_json::from_str(&d).ok()),
                remote: r.remote,
            })
            .collect(),
    ))
}

//! `/api/v1/jobs`: the queue's jobs, newest first, each with its steps and log; cancel.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use holdfast_core::job::{JobKind, JobState};
use holdfast_store::JobFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use crate::access::Principal;
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_log))
        .routes(routes!(cancel_job))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only this plan's jobs.
    plan: Option<String>,
    state: Option<JobState>,
    kind: Option<JobKind>,
    /// Only jobs with a smaller id: the next page after the last id you have.
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100); others are refused (400).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/jobs", security(("token" = ["read"])), tag = "jobs", params(JobQuery),
    description = "Jobs, newest first.",
    responses((status = 200, body = [JobView]), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<JobView>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = in_range("limit", q.limit, 100, 1, 1000)?;
    let jobs = s
        .store
        .jobs(&JobFilter {
            plan: q.plan,
            plans: crate::access::scope::visible_plans(&s.store, &who).await?,
            state: q.state,
            kind: q.kind,
            before: q.before,
            limit,
        })
        .await?;
    Ok(Json(jobs.iter().map(JobView::new).collect()))
}

/// A query parameter's value (or its default), refused when outside `min..=max`.
pub(super) fn in_range(
    name: &str,
    v: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> ApiResult<i64> {
    match v.unwrap_or(default) {
        v if (min..=max).contains(&v) => Ok(v),
        v => Err(ApiError::BadRequest(format!(
            "query parameter `{name}` is {v}; give {min} to {max} (default {default})"
        ))),
    }
}

fn job_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("job `{id}` not found (job ids are numbers)")))
}

fn log_view(l: holdfast_store::LogLine) -> LogLineView {
    LogLineView {
        id: l.id,
        at: rfc3339(l.at),
        line: l.line,
    }
}

#[utoipa::path(get, path = "/jobs/{id}", security(("token" = ["read"])), tag = "jobs",
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let j = s.store.must_job(job_id(&id)?).await?;
    let mut v = JobView::at(&j, s.now());
    let steps = s.store.steps(j.id).await?;
    v.steps = Some(steps.iter().map(StepView::new).collect());
    v.copy = CopyView::from_steps(&steps);
    let log = s.store.log(j.id, 0, 1000).await?;
    v.log = Some(log.into_iter().map(log_view).collect());
    Ok(Json(v))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines after this line id (to follow a running job).
    after: Option<i64>,
    /// Lines at most, 1 to 10000 (default 1000); others are refused (400).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/jobs/{id}/log", security(("token" = ["read"])), tag = "jobs", params(LogQuery),
    responses((status = 200, body = [LogLineView]), (status = 404, body = ErrorBody)))]
pub async fn job_log(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<LogLineView>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = in_range("limit", q.limit, 1000, 1, 10_000)?;
    let j = s.store.must_job(job_id(&id)?).await?;
    let lines = s.store.log(j.id, q.after.unwrap_or(0), limit).await?;
    Ok(Json(lines.into_iter().map(log_view).collect()))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", security(("token" = ["run"])), tag = "jobs",
    description = "Cancels a queued job at once; a running job stops at its next heartbeat and ends `cancelled`, without a restore point.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let id = job_id(&id)?;
    let before = s.store.must_job(id).await?;
    if before.state.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} already ended ({}); nothing to cancel",
            before.state
        )));
    }
    let j = s.store.cancel(id, s.now()).await?;
    s.store
        .append_log(id, s.now(), "cancel requested through the API")
        .await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
}

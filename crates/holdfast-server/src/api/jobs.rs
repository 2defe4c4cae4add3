//! Jobs, restore points, restores and API tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use holdfast_core::job::JobState;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{JobFilter, Kind, NewJob};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::model::*;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only this plan's jobs.
    plan: Option<String>,
    /// queued, running, succeeded, failed, cancelled or skipped.
    state: Option<String>,
    /// backup or restore.
    kind: Option<String>,
    /// Only jobs with a smaller id: the next page after the last id you have.
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    description = "Jobs, newest first.",
    responses((status = 200, body = [JobView]), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(s): State<Arc<AppState>>,
    q: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<JobView>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(st) = &q.state
        && JobState::parse(st).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "unknown job state `{st}`; use queued, running, succeeded, failed, cancelled or skipped"
        )));
    }
    let jobs = s
        .store
        .jobs(&JobFilter {
            plan: q.plan,
            state: q.state,
            kind: q.kind,
            before: q.before,
            limit: q.limit.unwrap_or(100),
        })
        .await?;
    Ok(Json(jobs.iter().map(JobView::new).collect()))
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

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
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
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", tag = "jobs", params(LogQuery),
    responses((status = 200, body = [LogLineView]), (status = 404, body = ErrorBody)))]
pub async fn job_log(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<LogLineView>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let j = s.store.must_job(job_id(&id)?).await?;
    let lines = s
        .store
        .log(
            j.id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(lines.into_iter().map(log_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    description = "Cancels a queued job at once; a running job stops at its next heartbeat and ends `cancelled`, without a restore point.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let id = job_id(&id)?;
    let before = s.store.must_job(id).await?;
    if JobState::parse(&before.state).is_some_and(JobState::is_final) {
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RestorePointQuery {
    /// The plan whose backups to list.
    pub(crate) plan: Option<String>,
    /// Or every snapshot in this endpoint's repository.
    pub(crate) endpoint: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/restore-points", tag = "restores", params(RestorePointQuery),
    description = "The snapshots in the repository itself, newest first: after the metadata store is lost, existing backups reappear here.",
    responses((status = 200, body = [RestorePointView]), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn restore_points(
    State(s): State<Arc<AppState>>,
    q: Result<Query<RestorePointQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<RestorePointView>>> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (endpoint, plan) = match (&q.plan, &q.endpoint) {
        (Some(p), None) => {
            let r = s.store.must_get(Kind::Plan, p).await?;
            let ep = r.plan.map(|c| c.endpoint).unwrap_or_default();
            (ep, Some(p.clone()))
        }
        (None, Some(e)) => (e.clone(), None),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of ?plan=NAME or ?endpoint=NAME".into(),
            ));
        }
    };
    let repo = s.repo(&endpoint).await?;
    let snaps = tokio::task::spawn_blocking(move || repo.snapshots())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadGateway(e.to_string()))?;
    let mut out: Vec<RestorePointView> = snaps
        .into_iter()
        .filter(|sn| {
            plan.is_none() || sn.meta.as_ref().and_then(|m| m.plan.as_deref()) == plan.as_deref()
        })
        .map(|sn| RestorePointView {
            plan: sn.meta.as_ref().and_then(|m| m.plan.clone()),
            source_kind: sn.meta.as_ref().map(|m| m.source.clone()),
            database: sn.meta.as_ref().and_then(|m| m.database.clone()),
            source_host: sn.meta.as_ref().and_then(|m| m.db_host.clone()),
            id: sn.id,
            short_id: sn.short_id,
            time: sn.time,
            hostname: sn.hostname,
            bytes: sn.bytes,
            added_bytes: sn.added_bytes,
            duration_secs: sn.duration_secs,
            tags: sn.tags,
        })
        .collect();
    out.reverse();
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/v1/restores", tag = "restores", request_body = RestoreInput,
    description = "Queues a restore job from a restore point into the plan's source, another source, or another database.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_restore(
    State(s): State<Arc<AppState>>,
    Body(input): Body<RestoreInput>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let plan = s
        .store
        .get(Kind::Plan, &input.plan)
        .await?
        .ok_or_else(|| ApiError::field("plan", format!("no plan named `{}`", input.plan)))?;
    let spec: PlanSpec = serde_json::from_str(&plan.spec)
        .map_err(|e| ApiError::Internal(format!("stored plan is unreadable: {e}")))?;
    let target = input.target_source.clone().unwrap_or(spec.source.clone());
    if s.store.get(Kind::Source, &target).await?.is_none() {
        return Err(ApiError::field(
            "target_source",
            format!("no source named `{target}`"),
        ));
    }
    if input.restore_point.len() < 4 || !input.restore_point.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(ApiError::field(
            "restore_point",
            "give a restore point's id (at least 4 hex digits) from GET /api/v1/restore-points",
        ));
    }
    if let Some(db) = &input.database
        && (db.is_empty() || db.len() > 63 || db.contains(['/', '\0']))
    {
        return Err(ApiError::field(
            "database",
            "1 to 63 characters, without `/`",
        ));
    }
    let params = JobParams {
        backoff: spec.retry,
        restore_point: Some(input.restore_point),
        target_source: Some(target),
        database: input.database,
        create: input.create,
        force: input.force,
    };
    let job = NewJob {
        kind: "restore".into(),
        plan: Some(spec.name.clone()),
        endpoint: Some(spec.endpoint.clone()),
        trigger: "manual".into(),
        max_attempts: i64::from(spec.retry.attempts),
        params: serde_json::to_string(&params).expect("params serialize"),
        fire_at: None,
        run_after: s.now(),
    };
    let id = s.store.enqueue(&job, s.now()).await?;
    s.wake.notify_waiters();
    let j = s.store.must_job(id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
}

// ----- tokens -----

fn token_view(t: (i64, String, i64, Option<i64>)) -> TokenView {
    TokenView {
        id: t.0,
        name: t.1,
        created_at: rfc3339(t.2),
        revoked_at: t.3.map(rfc3339),
        token: None,
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = [TokenView])))]
pub async fn list_tokens(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = s.store.tokens().await?;
    Ok(Json(tokens.into_iter().map(token_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenInput,
    description = "Creates an API token. The answer holds the token; it is shown only this once.",
    responses((status = 201, body = TokenView), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    Body(input): Body<TokenInput>,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    if input.name.trim().is_empty() || input.name.len() > 100 {
        return Err(ApiError::field(
            "name",
            "1 to 100 characters, saying who or what uses the token",
        ));
    }
    let token = crate::secrets::new_token();
    let now = s.now();
    let id = s
        .store
        .insert_token(&input.name, &crate::secrets::hash_token(&token), now)
        .await?;
    let mut v = token_view((id, input.name, now, None));
    v.token = Some(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    description = "Revokes a token at once.",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("token `{id}` not found")))?;
    if s.store.revoke_token(n, s.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no live token with id {n} (it may be revoked already)"
        )))
    }
}

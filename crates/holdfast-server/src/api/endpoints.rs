//! `/api/v1/endpoints`: storage endpoints (create, read, replace with If-Match, delete), their
//! connection test and a prune now.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use holdfast_core::job::Trigger;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Kind, NewResource, Resource};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::{WriteOpts, invalid, merge_secrets, name_matches, parse, spec_json, upsert};
use super::{ApiError, ApiResult, Body, ErrorBody, if_match, tagged};
use crate::AppState;
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, put_endpoint, delete_endpoint))
        .routes(routes!(test_endpoint))
        .routes(routes!(prune_endpoint))
}

fn endpoint_view(r: &Resource, state: &AppState) -> ApiResult<EndpointView> {
    let s: StoredEndpoint = parse(r)?;
    let secrets: EndpointSecrets = match &r.secrets {
        Some(sealed) => state.open_secrets(Kind::Endpoint, &r.name, sealed)?,
        None => Default::default(),
    };
    Ok(EndpointView {
        name: r.name.clone(),
        kind: s.kind,
        url: holdfast_core::location::redact_url(&s.url),
        next_prune: state.next_prune(&s).map(rfc3339),
        access_key_id: s.access_key_id,
        user: s.user,
        prune_schedule: s.prune_schedule,
        prune_timezone: s.prune_timezone,
        agent_access: s.agent_access,
        password_set: secrets.password.is_some(),
        secret_access_key_set: secrets.secret_access_key.is_some(),
        storage_password_set: secrets.storage_password.is_some(),
        ssh_key_set: secrets.ssh_key.is_some(),
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/endpoints", security(("token" = ["read"])), tag = "endpoints",
    responses((status = 200, body = [EndpointView])))]
pub async fn list_endpoints(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<EndpointView>>> {
    let rows = s.store.list(Kind::Endpoint).await?;
    rows.iter()
        .map(|r| endpoint_view(r, &s))
        .collect::<ApiResult<_>>()
        .map(Json)
}

pub(crate) async fn save_endpoint(
    s: &AppState,
    dry_run: bool,
    input: EndpointInput,
    path_name: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &input.name)?;
    }
    let existing = s.store.get(Kind::Endpoint, &input.name).await?;
    let creating = existing.is_none() || path_name.is_none();
    invalid(input.validate(creating))?;
    let was = existing
        .as_ref()
        .and_then(|r| serde_json::from_str::<StoredEndpoint>(&r.spec).ok())
        .map(|o| o.agent_access);
    let (name, spec, secrets) = input.split(was);
    let sealed = merge_secrets(s, Kind::Endpoint, &name, existing.as_ref(), &secrets)?;
    let old_prune = existing
        .as_ref()
        .and_then(|r| serde_json::from_str::<StoredEndpoint>(&r.spec).ok())
        .map(|o| (o.prune_schedule, o.prune_timezone));
    let reschedule =
        old_prune != Some((spec.prune_schedule.clone(), spec.prune_timezone.clone())) && !dry_run;
    let new = NewResource {
        name,
        spec: spec_json(&spec),
        secrets: sealed,
        plan: None,
    };
    let (status, r) = upsert(
        s,
        Kind::Endpoint,
        &new,
        path_name,
        existing.as_ref(),
        headers,
        dry_run,
    )
    .await?;
    if reschedule {
        s.schedule_prune(&r.name, &spec).await?;
    }
    Ok(tagged(status, r.version, endpoint_view(&r, s)?))
}

#[utoipa::path(post, path = "/endpoints", security(("token" = ["configure"])), tag = "endpoints", request_body = EndpointInput,
    responses((status = 201, body = EndpointView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_endpoint(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(input): Body<EndpointInput>,
) -> ApiResult<Response> {
    save_endpoint(&s, false, input, None, &headers).await
}

#[utoipa::path(get, path = "/endpoints/{name}", security(("token" = ["read"])), tag = "endpoints",
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Endpoint, &name).await?;
    Ok(tagged(StatusCode::OK, r.version, endpoint_view(&r, &s)?))
}

#[utoipa::path(put, path = "/endpoints/{name}", security(("token" = ["configure"])), tag = "endpoints", params(WriteOpts), request_body = EndpointInput,
    description = "Creates or replaces an endpoint. Secrets left out keep their stored values. Send If-Match with the ETag of a GET to refuse a concurrent change (412).",
    responses((status = 200, body = EndpointView), (status = 201, body = EndpointView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(input): Body<EndpointInput>,
) -> ApiResult<Response> {
    save_endpoint(&s, opts.dry_run, input, Some(&name), &headers).await
}

#[utoipa::path(delete, path = "/endpoints/{name}", security(("token" = ["configure"])), tag = "endpoints",
    description = "Deletes the endpoint's record; the repository and its backups stay where they are.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    for p in s.store.list(Kind::Plan).await? {
        if let Ok(spec) = serde_json::from_str::<PlanSpec>(&p.spec)
            && spec.copy.is_some_and(|c| c.endpoint == name)
        {
            return Err(ApiError::Conflict(format!(
                "endpoint `{name}` receives the copies of plan `{}`; change the plan's copy first",
                p.name
            )));
        }
    }
    s.store
        .delete(Kind::Endpoint, &name, if_match(&headers)?)
        .await?;
    s.forget_repo(&name);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/endpoints/{name}/test", security(("token" = ["configure"])), tag = "endpoints",
    description = "Opens the endpoint's repository, creating it when it does not exist, and reports each check.",
    responses((status = 200, body = EndpointTestReport), (status = 404, body = ErrorBody)))]
pub async fn test_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<EndpointTestReport>> {
    let r = s.store.must_get(Kind::Endpoint, &name).await?;
    let cfg = s.repo_config(&r, None)?;
    let report = tokio::task::spawn_blocking(move || crate::repository::test_repository(&cfg))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(report))
}

#[utoipa::path(post, path = "/endpoints/{name}/prune", security(("token" = ["configure"])), tag = "endpoints",
    description = "Queues a prune of the endpoint's repository now (as its `prune_schedule` does): data no restore point uses is removed. It waits while other jobs use the endpoint.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn prune_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    s.store.must_get(Kind::Endpoint, &name).await?;
    let job = crate::scheduler::prune_job(&name, Trigger::Manual, None, s.now());
    let id = s.store.enqueue(&job, s.now()).await?;
    s.wake.notify_waiters();
    let j = s.store.must_job(id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
}

//! Endpoints, sources and plans: create, read, replace (with If-Match), delete, and actions.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use holdfast_core::Schedule;
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::{Kind, NewResource, PlanCols, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, ApiResult, Body, ErrorBody, if_match, tagged};
use crate::AppState;
use crate::model::*;

fn parse<T: DeserializeOwned>(r: &Resource) -> ApiResult<T> {
    serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::Internal(format!("stored {} is unreadable: {e}", r.name)))
}

fn spec_json<T: Serialize>(t: &T) -> String {
    serde_json::to_string(t).expect("specs serialize")
}

/// Seals the secrets given in `new` over those stored in `old`: a field left out keeps its
/// stored value. `None` keeps what is stored: nothing was given, or only the stored values.
fn merge_secrets<T: Serialize>(
    state: &AppState,
    kind: Kind,
    name: &str,
    old: Option<&Resource>,
    new: &T,
) -> ApiResult<Option<String>> {
    let new = serde_json::to_value(new).expect("secrets serialize");
    let given: serde_json::Map<String, serde_json::Value> = new
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if given.is_empty() && old.is_some() {
        return Ok(None);
    }
    let stored = match old.and_then(|r| r.secrets.as_deref()) {
        Some(sealed) => Some(state.open_secrets::<serde_json::Value>(kind, name, sealed)?),
        None => None,
    };
    let mut merged = stored
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if let Some(m) = merged.as_object_mut() {
        m.extend(given);
    }
    if stored.as_ref() == Some(&merged) {
        return Ok(None);
    }
    Ok(Some(state.seal(kind, name, &merged)))
}

fn name_matches(path: &str, body: &str) -> ApiResult<()> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::field(
            "name",
            format!(
                "`{body}` differs from the name in the URL (`{path}`); renaming is not supported"
            ),
        ))
    }
}

fn invalid(errs: Vec<FieldError>) -> ApiResult<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errs))
    }
}

/// Creates the resource (POST, or PUT of a new name) or replaces it (PUT, honouring If-Match).
/// A PUT that changes nothing writes nothing: the version (ETag) stays, so `holdfast apply`
/// is idempotent and can tell what changed.
async fn upsert(
    s: &AppState,
    kind: Kind,
    new: &NewResource,
    path_name: Option<&str>,
    existing: Option<&Resource>,
    headers: &HeaderMap,
    dry_run: bool,
) -> ApiResult<(StatusCode, Resource)> {
    // What the write would store, for a dry run.
    let would_be = |old: Option<&Resource>| Resource {
        name: new.name.clone(),
        spec: new.spec.clone(),
        secrets: new
            .secrets
            .clone()
            .or_else(|| old.and_then(|o| o.secrets.clone())),
        version: old.map_or(1, |o| o.version + 1),
        created_at: old.map_or(s.now(), |o| o.created_at),
        updated_at: s.now(),
        plan: new.plan.clone(),
    };
    if let (Some(_), Some(old)) = (path_name, existing) {
        let if_version = if_match(headers)?;
        if if_version.is_some_and(|v| v != old.version) && dry_run {
            return Err(holdfast_store::StoreError::VersionMismatch {
                kind: kind.noun(),
                name: new.name.clone(),
                current: old.version,
            }
            .into());
        }
        let same = old.spec == new.spec && new.secrets.is_none() && old.plan == new.plan;
        if same && if_version.is_none_or(|v| v == old.version) {
            return Ok((StatusCode::OK, old.clone()));
        }
        if dry_run {
            return Ok((StatusCode::OK, would_be(Some(old))));
        }
        let r = s.store.update(kind, new, if_version, s.now()).await?;
        Ok((StatusCode::OK, r))
    } else if dry_run {
        if existing.is_some() {
            return Err(holdfast_store::StoreError::Exists {
                kind: kind.noun(),
                name: new.name.clone(),
            }
            .into());
        }
        Ok((StatusCode::CREATED, would_be(None)))
    } else {
        Ok((
            StatusCode::CREATED,
            s.store.create(kind, new, s.now()).await?,
        ))
    }
}

/// Options of a create or replace.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteOpts {
    /// Validate and answer with what would be stored, without storing it.
    #[serde(default)]
    pub dry_run: bool,
}

// ----- endpoints -----

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
        password_set: secrets.password.is_some(),
        secret_access_key_set: secrets.secret_access_key.is_some(),
        storage_password_set: secrets.storage_password.is_some(),
        ssh_key_set: secrets.ssh_key.is_some(),
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/api/v1/endpoints", tag = "endpoints",
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
    let (name, spec, secrets) = input.split();
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

#[utoipa::path(post, path = "/api/v1/endpoints", tag = "endpoints", request_body = EndpointInput,
    responses((status = 201, body = EndpointView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_endpoint(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(input): Body<EndpointInput>,
) -> ApiResult<Response> {
    save_endpoint(&s, false, input, None, &headers).await
}

#[utoipa::path(get, path = "/api/v1/endpoints/{name}", tag = "endpoints",
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Endpoint, &name).await?;
    Ok(tagged(StatusCode::OK, r.version, endpoint_view(&r, &s)?))
}

#[utoipa::path(put, path = "/api/v1/endpoints/{name}", tag = "endpoints", params(WriteOpts), request_body = EndpointInput,
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

#[utoipa::path(delete, path = "/api/v1/endpoints/{name}", tag = "endpoints",
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

#[utoipa::path(post, path = "/api/v1/endpoints/{name}/test", tag = "endpoints",
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

#[utoipa::path(post, path = "/api/v1/endpoints/{name}/prune", tag = "endpoints",
    description = "Queues a prune of the endpoint's repository now (as its `prune_schedule` does): data no restore point uses is removed. It waits while other jobs use the endpoint.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn prune_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    s.store.must_get(Kind::Endpoint, &name).await?;
    let job = crate::scheduler::prune_job(&name, "manual", None, s.now());
    let id = s.store.enqueue(&job, s.now()).await?;
    s.wake.notify_waiters();
    let j = s.store.must_job(id).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
}

// ----- sources -----

fn source_view(r: &Resource) -> ApiResult<SourceView> {
    let s: StoredSource = parse(r)?;
    Ok(SourceView {
        name: r.name.clone(),
        kind: s.kind,
        url: s.url,
        command: s.command,
        labels: s.labels,
        single_stream: s.single_stream,
        all_databases: s.all_databases,
        // Whether the sealed secrets hold a password is not worth a decryption per listing.
        password_set: r.secrets.is_some(),
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/api/v1/sources", tag = "sources",
    responses((status = 200, body = [SourceView])))]
pub async fn list_sources(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<SourceView>>> {
    let rows = s.store.list(Kind::Source).await?;
    rows.iter()
        .map(source_view)
        .collect::<ApiResult<_>>()
        .map(Json)
}

pub(crate) async fn save_source(
    s: &AppState,
    dry_run: bool,
    input: SourceInput,
    path_name: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &input.name)?;
    }
    let (name, spec, secrets) = input.validate().map_err(ApiError::Invalid)?;
    let existing = s.store.get(Kind::Source, &name).await?;
    let sealed = if secrets.password.is_some() || existing.is_some() {
        merge_secrets(s, Kind::Source, &name, existing.as_ref(), &secrets)?
    } else {
        None
    };
    let new = NewResource {
        name,
        spec: spec_json(&spec),
        secrets: sealed,
        plan: None,
    };
    let (status, r) = upsert(
        s,
        Kind::Source,
        &new,
        path_name,
        existing.as_ref(),
        headers,
        dry_run,
    )
    .await?;
    Ok(tagged(status, r.version, source_view(&r)?))
}

#[utoipa::path(post, path = "/api/v1/sources", tag = "sources", request_body = SourceInput,
    responses((status = 201, body = SourceView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_source(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(input): Body<SourceInput>,
) -> ApiResult<Response> {
    save_source(&s, false, input, None, &headers).await
}

#[utoipa::path(get, path = "/api/v1/sources/{name}", tag = "sources",
    responses((status = 200, body = SourceView), (status = 404, body = ErrorBody)))]
pub async fn get_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Source, &name).await?;
    Ok(tagged(StatusCode::OK, r.version, source_view(&r)?))
}

#[utoipa::path(put, path = "/api/v1/sources/{name}", tag = "sources", params(WriteOpts), request_body = SourceInput,
    responses((status = 200, body = SourceView), (status = 201, body = SourceView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(input): Body<SourceInput>,
) -> ApiResult<Response> {
    save_source(&s, opts.dry_run, input, Some(&name), &headers).await
}

#[utoipa::path(delete, path = "/api/v1/sources/{name}", tag = "sources",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    s.store
        .delete(Kind::Source, &name, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- plans -----

fn zoned_rfc3339(z: &jiff::Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

pub(crate) async fn plan_view(s: &AppState, r: &Resource, detail: bool) -> ApiResult<PlanView> {
    let mut spec: PlanSpec = parse(r)?;
    let cols = r.plan.as_ref().expect("plans have plan columns");
    spec.paused = cols.paused;
    let next_runs = match (cols.paused, Schedule::parse(&spec.schedule, &spec.timezone)) {
        (false, Ok(sched)) => {
            let now = jiff::Timestamp::from_millisecond(s.now()).unwrap_or_default();
            sched.upcoming(now, 5).iter().map(zoned_rfc3339).collect()
        }
        _ => vec![],
    };
    let (last_job, last_success) = if detail {
        let last = s.store.last_job(&r.name, None).await?;
        let ok = s.store.last_job(&r.name, Some("succeeded")).await?;
        (
            last.map(|j| JobSummary {
                id: j.id,
                state: j.state,
                finished_at: j.finished_at.map(rfc3339),
                error: j.error,
            }),
            ok.and_then(|j| j.finished_at).map(rfc3339),
        )
    } else {
        (None, None)
    };
    Ok(PlanView {
        spec,
        next_runs,
        last_job,
        last_success,
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/api/v1/plans", tag = "plans",
    responses((status = 200, body = [PlanView])))]
pub async fn list_plans(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<PlanView>>> {
    let rows = s.store.list(Kind::Plan).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(plan_view(&s, r, false).await?);
    }
    Ok(Json(out))
}

/// Validates a plan, including that its source and endpoint exist, and works out when it
/// fires next.
async fn plan_cols(s: &AppState, spec: &PlanSpec, old: Option<&Resource>) -> ApiResult<PlanCols> {
    let mut errs = spec.validate();
    if !spec.source.trim().is_empty() && s.store.get(Kind::Source, &spec.source).await?.is_none() {
        errs.push(FieldError {
            field: "source".into(),
            reason: format!("no source named `{}`; create it first", spec.source),
        });
    }
    if !spec.endpoint.trim().is_empty()
        && s.store.get(Kind::Endpoint, &spec.endpoint).await?.is_none()
    {
        errs.push(FieldError {
            field: "endpoint".into(),
            reason: format!("no endpoint named `{}`; create it first", spec.endpoint),
        });
    }
    if let Some(c) = &spec.copy
        && !c.endpoint.trim().is_empty()
        && c.endpoint != spec.endpoint
        && s.store.get(Kind::Endpoint, &c.endpoint).await?.is_none()
    {
        errs.push(FieldError {
            field: "copy.endpoint".into(),
            reason: format!("no endpoint named `{}`; create it first", c.endpoint),
        });
    }
    invalid(errs)?;
    let sched = Schedule::parse(&spec.schedule, &spec.timezone)
        .map_err(|e| ApiError::field("schedule", e.to_string()))?;
    // An edit that keeps the schedule keeps a pending fire (e.g. one missed during downtime).
    let unchanged = old.and_then(|o| {
        let prev: PlanSpec = serde_json::from_str(&o.spec).ok()?;
        let cols = o.plan.as_ref()?;
        (prev.schedule == spec.schedule && prev.timezone == spec.timezone && !cols.paused)
            .then_some(cols.next_fire_at)
    });
    let next_fire_at = if spec.paused {
        None
    } else if let Some(keep) = unchanged {
        keep
    } else {
        let now = jiff::Timestamp::from_millisecond(s.now()).unwrap_or_default();
        sched
            .next_after(now)
            .map(|z| z.timestamp().as_millisecond())
    };
    Ok(PlanCols {
        source: spec.source.clone(),
        endpoint: spec.endpoint.clone(),
        paused: spec.paused,
        next_fire_at,
    })
}

pub(crate) async fn save_plan(
    s: &AppState,
    dry_run: bool,
    spec: PlanSpec,
    path_name: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &spec.name)?;
    }
    let existing = s.store.get(Kind::Plan, &spec.name).await?;
    let cols = plan_cols(s, &spec, existing.as_ref()).await?;
    let new = NewResource {
        name: spec.name.clone(),
        spec: spec_json(&spec),
        secrets: None,
        plan: Some(cols),
    };
    let (status, r) = upsert(
        s,
        Kind::Plan,
        &new,
        path_name,
        existing.as_ref(),
        headers,
        dry_run,
    )
    .await?;
    Ok(tagged(status, r.version, plan_view(s, &r, true).await?))
}

#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", request_body = PlanSpec,
    responses((status = 201, body = PlanView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_plan(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(spec): Body<PlanSpec>,
) -> ApiResult<Response> {
    save_plan(&s, false, spec, None, &headers).await
}

#[utoipa::path(get, path = "/api/v1/plans/{name}", tag = "plans",
    responses((status = 200, body = PlanView), (status = 404, body = ErrorBody)))]
pub async fn get_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Plan, &name).await?;
    Ok(tagged(
        StatusCode::OK,
        r.version,
        plan_view(&s, &r, true).await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/plans/{name}", tag = "plans", params(WriteOpts), request_body = PlanSpec,
    responses((status = 200, body = PlanView), (status = 201, body = PlanView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(spec): Body<PlanSpec>,
) -> ApiResult<Response> {
    save_plan(&s, opts.dry_run, spec, Some(&name), &headers).await
}

#[utoipa::path(delete, path = "/api/v1/plans/{name}", tag = "plans",
    description = "Deletes the plan; its jobs and its backups in the repository stay.",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    s.store
        .delete(Kind::Plan, &name, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(s: &AppState, name: &str, paused: bool) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Plan, name).await?;
    let spec: PlanSpec = parse(&r)?;
    let next = if paused {
        None
    } else {
        // Fires missed while paused do not run: the plan fires at its next time from now.
        let now = jiff::Timestamp::from_millisecond(s.now()).unwrap_or_default();
        Schedule::parse(&spec.schedule, &spec.timezone)
            .ok()
            .and_then(|sc| sc.next_after(now))
            .map(|z| z.timestamp().as_millisecond())
    };
    let r = s.store.set_paused(name, paused, next, s.now()).await?;
    Ok(tagged(
        StatusCode::OK,
        r.version,
        plan_view(s, &r, true).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/plans/{name}/pause", tag = "plans",
    responses((status = 200, body = PlanView), (status = 404, body = ErrorBody)))]
pub async fn pause_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    set_paused(&s, &name, true).await
}

#[utoipa::path(post, path = "/api/v1/plans/{name}/resume", tag = "plans",
    responses((status = 200, body = PlanView), (status = 404, body = ErrorBody)))]
pub async fn resume_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    set_paused(&s, &name, false).await
}

#[utoipa::path(post, path = "/api/v1/plans/{name}/run", tag = "plans",
    description = "Queues a backup now. Refused (409) while another backup of the plan is queued or running.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn run_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let r = s.store.must_get(Kind::Plan, &name).await?;
    let spec: PlanSpec = parse(&r)?;
    let job = crate::scheduler::backup_job(&spec, "manual", None, s.now());
    match s.store.enqueue_unless_busy(&job, s.now()).await? {
        Ok(id) => {
            s.wake.notify_waiters();
            let j = s.store.must_job(id).await?;
            Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
        }
        Err(busy) => Err(ApiError::Conflict(format!(
            "plan `{name}` already has backup job {busy} queued or running; wait for it or cancel it"
        ))),
    }
}

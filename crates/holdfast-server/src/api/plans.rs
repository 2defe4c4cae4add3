//! `/api/v1/plans`: what to back up where and when (create, read, replace with If-Match,
//! delete), pause, resume and run now.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use holdfast_core::Schedule;
use holdfast_core::job::{JobState, Trigger};
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::{Kind, NewResource, PlanCols, Resource};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::{WriteOpts, invalid, name_matches, parse, spec_json, upsert};
use super::{ApiError, ApiResult, Body, ErrorBody, if_match, tagged};
use crate::AppState;
use crate::access::{Perm, Principal};
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(get_plan, put_plan, delete_plan))
        .routes(routes!(pause_plan))
        .routes(routes!(resume_plan))
        .routes(routes!(run_plan))
}

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
    let next_drill = (!cols.paused)
        .then(|| crate::scheduler::next_verify(&spec, s.now()))
        .flatten()
        .map(rfc3339);
    let last_drill = if detail {
        s.store
            .drills_of_plan(&r.name, 1)
            .await?
            .first()
            .map(super::drills::DrillSummary::of)
    } else {
        None
    };
    let (last_job, last_success) = if detail {
        let last = s.store.last_job(&r.name, None).await?;
        let ok = s.store.last_job(&r.name, Some(JobState::Succeeded)).await?;
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
        next_drill,
        last_drill,
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/plans", security(("token" = ["read"])), tag = "plans",
    responses((status = 200, body = [PlanView])))]
pub async fn list_plans(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
) -> ApiResult<Json<Vec<PlanView>>> {
    let rows = s.store.list(Kind::Plan).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let v = plan_view(&s, r, false).await?;
        if who.sees(&v.spec.labels) {
            out.push(v);
        }
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
    for (i, r) in spec.alerts.notify.iter().enumerate() {
        if holdfast_core::plan::valid_name(&r.notifier)
            && s.store.get(Kind::Notifier, &r.notifier).await?.is_none()
        {
            errs.push(FieldError {
                field: format!("alerts.notify[{i}].notifier"),
                reason: format!("no notifier named `{}`; create it first", r.notifier),
            });
        }
    }
    if let Some(reason) = super::drills::into_problem(s, spec).await? {
        errs.push(FieldError {
            field: "verify.into".into(),
            reason,
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

/// What a scoped caller's plan may be: not another team's (under the same name, or one that
/// left history: its jobs and backups would come with the name), and on a source one of its
/// plans already backs up (else a new plan would reach any database and restore it anywhere;
/// an admin makes a team's first plan).
async fn scoped_plan(
    s: &AppState,
    who: &Principal,
    spec: &PlanSpec,
    before: Option<&PlanSpec>,
) -> ApiResult<()> {
    let exists = || ApiError::Conflict(format!("a plan named `{}` exists already", spec.name));
    match before {
        Some(b) if !who.sees(&b.labels) => return Err(exists()),
        Some(b) if b.source == spec.source => return Ok(()),
        Some(_) => {}
        None => {
            let history = s
                .store
                .jobs(&holdfast_store::JobFilter {
                    plan: Some(spec.name.clone()),
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            if !history.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "the name `{}` was used by a plan with a history of jobs and backups; \
                     pick another name",
                    spec.name
                )));
            }
        }
    }
    if crate::access::scope::backs_up(&s.store, who, &spec.source, Some(&spec.name)).await? {
        return Ok(());
    }
    Err(ApiError::field(
        "source",
        format!(
            "this credential (scoped to plans labelled {}) makes plans only for the sources its \
             plans already back up; ask an admin to make the first plan of `{}`",
            who.scope().text(),
            spec.source
        ),
    ))
}

/// A scoped caller's drills restore only into a source its plans already back up (else
/// `verify.into` would write the team's data into any server); an admin names another.
async fn scoped_drill_target(
    s: &AppState,
    who: &Principal,
    spec: &PlanSpec,
    before: Option<&PlanSpec>,
) -> ApiResult<()> {
    let into = |p: &PlanSpec| p.verify.as_ref().and_then(|v| v.into.clone());
    let Some(target) = into(spec) else {
        return Ok(());
    };
    if before.and_then(into).as_ref() == Some(&target)
        || crate::access::scope::backs_up(&s.store, who, &target, Some(&spec.name)).await?
    {
        return Ok(());
    }
    Err(ApiError::field(
        "verify.into",
        format!(
            "this credential (scoped to plans labelled {}) names as drill targets only sources              its plans back up; ask an admin to name `{target}`",
            who.scope().text()
        ),
    ))
}

pub(crate) async fn save_plan(
    s: &AppState,
    dry_run: bool,
    spec: PlanSpec,
    path_name: Option<&str>,
    headers: &HeaderMap,
    who: &Principal,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &spec.name)?;
    }
    let existing = s.store.get(Kind::Plan, &spec.name).await?;
    let before = existing
        .as_ref()
        .and_then(|r| serde_json::from_str::<PlanSpec>(&r.spec).ok());
    if !who.sees(&spec.labels) {
        return Err(ApiError::field(
            "labels",
            format!(
                "this credential is scoped to plans labelled {}; the plan must carry them",
                who.scope().text()
            ),
        ));
    }
    if !who.scope().is_all() {
        scoped_plan(s, who, &spec, before.as_ref()).await?;
        scoped_drill_target(s, who, &spec, before.as_ref()).await?;
    }
    // The hooks, and for a plan with hooks its source too: it chooses where they run.
    let same = match &before {
        Some(b) => b.hooks == spec.hooks && (spec.hooks.is_empty() || b.source == spec.source),
        None => spec.hooks.is_empty(),
    };
    if !same {
        who.require(
            Perm::Commands,
            "changing a plan's hooks (shell commands run on an agent)",
        )?;
    }
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
    if !dry_run {
        // A drill schedule that is unchanged keeps its pending slot.
        let changed = before
            .as_ref()
            .is_none_or(|b| b.verify != spec.verify || b.paused != spec.paused);
        if changed {
            let next = (!spec.paused)
                .then(|| crate::scheduler::next_verify(&spec, s.now()))
                .flatten();
            s.store.set_next_verify(&spec.name, next).await?;
        }
    }
    Ok(tagged(status, r.version, plan_view(s, &r, true).await?))
}

#[utoipa::path(post, path = "/plans", security(("token" = ["configure"])), tag = "plans", request_body = PlanSpec,
    responses((status = 201, body = PlanView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_plan(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Body(spec): Body<PlanSpec>,
) -> ApiResult<Response> {
    save_plan(&s, false, spec, None, &headers, &who).await
}

#[utoipa::path(get, path = "/plans/{name}", security(("token" = ["read"])), tag = "plans",
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

#[utoipa::path(put, path = "/plans/{name}", security(("token" = ["configure"])), tag = "plans", params(WriteOpts), request_body = PlanSpec,
    responses((status = 200, body = PlanView), (status = 201, body = PlanView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_plan(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(spec): Body<PlanSpec>,
) -> ApiResult<Response> {
    save_plan(&s, opts.dry_run, spec, Some(&name), &headers, &who).await
}

#[utoipa::path(delete, path = "/plans/{name}", security(("token" = ["configure"])), tag = "plans",
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

#[utoipa::path(post, path = "/plans/{name}/pause", security(("token" = ["configure"])), tag = "plans",
    responses((status = 200, body = PlanView), (status = 404, body = ErrorBody)))]
pub async fn pause_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    set_paused(&s, &name, true).await
}

#[utoipa::path(post, path = "/plans/{name}/resume", security(("token" = ["configure"])), tag = "plans",
    responses((status = 200, body = PlanView), (status = 404, body = ErrorBody)))]
pub async fn resume_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    set_paused(&s, &name, false).await
}

#[utoipa::path(post, path = "/plans/{name}/run", security(("token" = ["run"])), tag = "plans",
    description = "Queues a backup now. Refused (409) while another backup of the plan is queued or running.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn run_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let r = s.store.must_get(Kind::Plan, &name).await?;
    let spec: PlanSpec = parse(&r)?;
    let job = crate::scheduler::backup_job(&spec, Trigger::Manual, None, s.now());
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

//! `/api/v1/restore-points` (read from the repositories themselves) and `/api/v1/restores`
//! (a restore job into a source, a new database or a folder).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use holdfast_core::job::{JobKind, Trigger};
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Kind, NewJob};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::access::{Perm, Principal};
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(restore_points))
        .routes(routes!(create_restore))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RestorePointQuery {
    /// The plan whose backups to list.
    pub(crate) plan: Option<String>,
    /// Or every snapshot in this endpoint's repository.
    pub(crate) endpoint: Option<String>,
}

#[utoipa::path(get, path = "/restore-points", security(("token" = ["read"])), tag = "restores", params(RestorePointQuery),
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
    let drills: std::collections::HashMap<String, super::drills::DrillSummary> = s
        .store
        .latest_drills_on(&endpoint)
        .await?
        .iter()
        .map(|d| (d.snapshot_id.clone(), super::drills::DrillSummary::of(d)))
        .collect();
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
            short_id: sn.short_id,
            time: sn.time,
            hostname: sn.hostname,
            bytes: sn.bytes,
            added_bytes: sn.added_bytes,
            duration_secs: sn.duration_secs,
            tags: sn.tags,
            verification: drills.get(&sn.id).cloned(),
            id: sn.id,
        })
        .collect();
    out.reverse();
    Ok(Json(out))
}

/// A scoped caller restores only its plans' own backups (not another plan's that shares the
/// repository) and only into the sources of its plans.
async fn scoped_restore(
    s: &Arc<AppState>,
    who: &Principal,
    input: &RestoreInput,
    spec: &PlanSpec,
    target: &str,
) -> ApiResult<()> {
    // A named database on a shared server may be another team's: replacing one is for the
    // plan's own database only.
    if input.force && input.database.is_some() {
        return Err(ApiError::Forbidden(format!(
            "a credential scoped to plans labelled {} replaces only its plan's own database \
             (`force` without `database`); restore into a new database instead",
            who.scope().text()
        )));
    }
    if target != spec.source {
        let ours = crate::access::scope::backs_up(&s.store, who, target, None).await?;
        if !ours {
            return Err(ApiError::field(
                "target_source",
                format!(
                    "this credential restores only into the sources of its plans (labelled {})",
                    who.scope().text()
                ),
            ));
        }
    }
    let Json(points) = restore_points(
        State(s.clone()),
        Ok(Query(RestorePointQuery {
            plan: Some(input.plan.clone()),
            endpoint: None,
        })),
    )
    .await?;
    let wanted = input.restore_point.to_ascii_lowercase();
    if wanted.len() < 4 || !points.iter().any(|p| p.id.starts_with(&wanted)) {
        return Err(ApiError::field(
            "restore_point",
            format!(
                "no restore point `{}` of plan `{}`",
                input.restore_point, input.plan
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/restores", security(("token" = ["run"])), tag = "restores", request_body = RestoreInput,
    description = "Queues a restore job from a restore point into the plan's source, another source, or another database.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_restore(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    Body(input): Body<RestoreInput>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    if input.force {
        who.require(
            Perm::Overwrite,
            "a restore that replaces the target's data (`force`)",
        )?;
    }
    let plan = s
        .store
        .get(Kind::Plan, &input.plan)
        .await?
        .ok_or_else(|| ApiError::field("plan", format!("no plan named `{}`", input.plan)))?;
    let spec: PlanSpec = serde_json::from_str(&plan.spec)
        .map_err(|e| ApiError::Internal(format!("stored plan is unreadable: {e}")))?;
    if !who.sees(&spec.labels) {
        return Err(ApiError::field(
            "plan",
            format!("no plan named `{}`", input.plan),
        ));
    }
    let target = input.target_source.clone().unwrap_or(spec.source.clone());
    if !who.scope().is_all() {
        scoped_restore(&s, &who, &input, &spec, &target).await?;
    }
    let Some(target_row) = s.store.get(Kind::Source, &target).await? else {
        return Err(ApiError::field(
            "target_source",
            format!("no source named `{target}`"),
        ));
    };
    // Into the plan's own source, with no other database named: that is the production
    // database. Only on purpose (and then safely: the engine restores into a temporary
    // database and swaps it in only when the restore succeeded).
    let stored = serde_json::from_str::<StoredSource>(&target_row.spec)
        .map_err(|e| ApiError::Internal(format!("stored source `{target}` is unreadable: {e}")))?;
    let kind = stored.kind;
    // What may replace data whatever the request says: a command or restore hook (it does
    // what it does), every database of a server (roles included), or the plan's own
    // database without another name.
    let replaces = kind == holdfast_core::SourceKind::Command
        || spec.hooks.restore.is_some()
        || stored.all_databases
        || (target == spec.source && input.database.is_none());
    if replaces && !input.force {
        who.require(
            Perm::Overwrite,
            "this restore (into a command, a restore hook, every database of a server, or the \
             plan's own database)",
        )?;
    }
    if input.target_source.is_none()
        && input.database.is_none()
        && !input.force
        && kind != holdfast_core::SourceKind::Command
        && spec.hooks.restore.is_none()
    {
        return Err(ApiError::field(
            "database",
            format!(
                "this would restore over source `{target}`'s own data; name another database \
                 (`database`, created when missing) or another source (`target_source`), or set \
                 `force: true` (Overwrite in the UI) to replace it: the restore then goes into a \
                 temporary database that is swapped in only when it succeeded"
            ),
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
        part: None,
    };
    let job = NewJob {
        kind: JobKind::Restore,
        plan: Some(spec.name.clone()),
        endpoint: Some(spec.endpoint.clone()),
        trigger: Trigger::Manual,
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

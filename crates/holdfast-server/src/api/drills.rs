//! Restore drills: `POST /plans/{name}/verify` runs one now, `GET /plans/{name}/drills` lists a
//! plan's, `GET /jobs/{id}/drill` is one drill's report (JSON, or text for audits).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_core::drill::DrillReport;
use holdfast_core::job::Trigger;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{DrillRow, Kind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::parse;
use super::{ApiError, ApiResult, ErrorBody};
use crate::AppState;
use crate::model::{JobView, StoredSource, rfc3339};
use holdfast_core::{SourceKind, SourceSpec};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(verify_plan))
        .routes(routes!(plan_drills))
        .routes(routes!(job_drill))
}

/// What a drill run now drills.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    /// A restore point (snapshot id); by default the plan's newest (or one of its newest, as
    /// its `verify.random_of_last` says).
    #[serde(default)]
    pub restore_point: Option<String>,
}

/// What a drill proved, in short (the whole report is at `/jobs/{job}/drill`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DrillSummary {
    pub job: i64,
    pub restore_point: String,
    /// `restore` or `check`.
    pub mode: String,
    pub passed: bool,
    pub verified_at: String,
    /// The restore's wall time, when a restore ran to its end.
    pub rto_secs: Option<f64>,
    /// One line: passed with its check count and time, or the first failed check.
    pub summary: String,
}

impl DrillSummary {
    pub fn of(d: &DrillRow) -> Self {
        let summary = serde_json::from_str::<DrillReport>(&d.report)
            .map(|r| r.summary())
            .unwrap_or_else(|_| "the stored report does not read".into());
        Self {
            job: d.job_id,
            restore_point: d.snapshot_id.clone(),
            mode: d.mode.clone(),
            passed: d.passed,
            verified_at: rfc3339(d.finished_at),
            rto_secs: d.rto_ms.map(|ms| ms as f64 / 1000.0),
            summary,
        }
    }
}

#[utoipa::path(post, path = "/plans/{name}/verify", security(("token" = ["run"])), tag = "plans",
    request_body(content = VerifyInput, description = "Optional: which restore point."),
    description = "Queues a restore drill of the plan now (its `verify` section says how; without one, a restore drill of the newest restore point). Refused (409) while another drill of the plan is queued or running.",
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn verify_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let input: VerifyInput = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyInput::default()
    } else {
        super::decode_json(&body)?
    };
    let r = s.store.must_get(Kind::Plan, &name).await?;
    let spec: PlanSpec = parse(&r)?;
    if let Some(rp) = &input.restore_point
        && (rp.len() < 8 || rp.len() > 64 || !rp.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::field(
            "restore_point",
            "a restore point id: 8 to 64 hexadecimal digits",
        ));
    }
    let job =
        crate::scheduler::verify_job(&spec, Trigger::Manual, input.restore_point, None, s.now());
    match s.store.enqueue_drill(&job, s.now()).await? {
        Ok(id) => {
            s.wake.notify_waiters();
            let j = s.store.must_job(id).await?;
            Ok((StatusCode::ACCEPTED, Json(JobView::new(&j))))
        }
        Err(busy) => Err(ApiError::Conflict(format!(
            "plan `{name}` already has drill job {busy} queued or running; wait for it or cancel it"
        ))),
    }
}

#[utoipa::path(get, path = "/plans/{name}/drills", security(("token" = ["read"])), tag = "plans",
    description = "The plan's newest restore drills (at most 100), newest first.",
    responses((status = 200, body = [DrillSummary]), (status = 404, body = ErrorBody)))]
pub async fn plan_drills(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<DrillSummary>>> {
    s.store.must_get(Kind::Plan, &name).await?;
    let rows = s.store.drills_of_plan(&name, 100).await?;
    Ok(Json(rows.iter().map(DrillSummary::of).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportFormat {
    /// `json` (the default) or `text`, a readable report for audits.
    #[serde(default)]
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/jobs/{id}/drill", security(("token" = ["read"])), tag = "jobs", params(ReportFormat),
    description = "A restore drill's report: every check with what was expected and found, the recovery time and where it went.",
    responses((status = 200, body = DrillReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn job_drill(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<ReportFormat>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("job `{id}` not found")))?;
    report_response(&s, id, q.format.as_deref()).await
}

/// A drill's report as JSON or text, with a file name for downloads.
pub(crate) async fn report_response(
    s: &AppState,
    id: i64,
    format: Option<&str>,
) -> ApiResult<Response> {
    let row = s
        .store
        .drill_of_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} has no drill report")))?;
    let report: DrillReport = serde_json::from_str(&row.report)
        .map_err(|e| ApiError::Internal(format!("the stored report does not read: {e}")))?;
    let file = format!("drill-{}-job{id}", row.plan);
    match format.unwrap_or("json") {
        "json" => Ok((
            [(
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{file}.json\""),
            )],
            Json(report),
        )
            .into_response()),
        "text" => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{file}.txt\""),
                ),
            ],
            report.text(),
        )
            .into_response()),
        other => Err(ApiError::BadRequest(format!(
            "format `{other}`: use json or text"
        ))),
    }
}

/// Why the scratch server a plan's drills restore into (`verify.into`) may not be used, if it
/// may not: a source that is missing, not a PostgreSQL or MariaDB server of the plan's kind,
/// or the plan's own server and database. Checked when the plan is saved and again when a
/// drill is handed out (the sources may have changed since).
pub(crate) async fn into_problem(s: &AppState, plan: &PlanSpec) -> ApiResult<Option<String>> {
    let Some(into) = plan.verify.as_ref().and_then(|v| v.into.as_deref()) else {
        return Ok(None);
    };
    let Some(target) = s.store.get(Kind::Source, into).await? else {
        return Ok(Some(format!(
            "no source named `{into}`; create the scratch server's source first"
        )));
    };
    let target: StoredSource = parse(&target)?;
    if !matches!(target.kind, SourceKind::Postgres | SourceKind::Mysql) {
        return Ok(Some(format!(
            "source `{into}` is a {} source; drills restore into a PostgreSQL or MariaDB \
             server only (leave `into` out: the others get a throwaway copy)",
            target.kind
        )));
    }
    let Some(source) = s.store.get(Kind::Source, &plan.source).await? else {
        // The plan's own `source` field reports this.
        return Ok(None);
    };
    let source: StoredSource = parse(&source)?;
    if source.kind != target.kind {
        return Ok(Some(format!(
            "source `{into}` is a {} server and the plan backs up a {} source; name a scratch \
             server of the same kind",
            target.kind, source.kind
        )));
    }
    if source.all_databases {
        return Ok(Some(format!(
            "the plan backs up every database of source `{}` (with its roles): that is drilled \
             in a throwaway server only; leave `into` out",
            plan.source
        )));
    }
    let parse_url = |st: &StoredSource, name: &str| {
        SourceSpec::parse(&st.url, st.command.as_deref())
            .map_err(|e| ApiError::Internal(format!("stored source `{name}` does not read: {e}")))
    };
    let (t, src) = (parse_url(&target, into)?, parse_url(&source, &plan.source)?);
    Ok(t.is_database_of(&src).then(|| {
        format!(
            "source `{into}` ({t}) is the plan's own server and database (source `{}`, {src}); \
             a drill never restores into its source: name a scratch server, or leave `into` \
             out for a throwaway one next to the agent",
            plan.source
        )
    }))
}

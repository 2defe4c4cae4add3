//! The UI's plans: the plan page with its settings and restore points, restore, pause and
//! resume, and delete after a confirmation, through the API's own handlers (the form that
//! creates and edits one is in `plan_form`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::job::JobState;
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::{JobFilter, Kind};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::form::{
    check, confirm_delete, confirmed, delete_link, delete_refused, form, if_match, names, opt,
    outcome, parse_input, select, text, without_secrets,
};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::api::Body;

pub async fn plan(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    plan_page(&s, &sess, &name, &Fields::new(), &[]).await
}

async fn plan_page(
    s: &Arc<AppState>,
    sess: &Session,
    name: &str,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    // An unreadable stored plan is a page that says so, never a panic.
    let (spec, paused, _) = match super::plan_form::stored(s, name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let points = points_of(s, name).await;
    let last_drill = s
        .store
        .drills_of_plan(name, 1)
        .await
        .ok()
        .and_then(|d| d.first().map(crate::api::drills::DrillSummary::of));
    let sources = names(s, Kind::Source).await;
    let mut values = values.clone();
    values
        .entry("target_source".into())
        .or_insert_with(|| spec.source.clone());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Plan " (name) }
        p #summary { (spec.source) " → " (spec.endpoint) " · " code { (spec.schedule) } " " (spec.timezone)
            @if paused { " · " span.badge.stale #paused { "paused" } } }
        @if sess.may(&format!("/ui/plans/{name}/pause")) {
            form.inline method="post" action={"/ui/plans/" (name) (if paused { "/resume" } else { "/pause" })} {
                input type="hidden" name="csrf" value=(sess.csrf);
                button #pause { (if paused { "Resume" } else { "Pause" }) }
            }
            " "
        }
        @if sess.may(&format!("/ui/plans/{name}/run")) {
            form.inline method="post" action={"/ui/plans/" (name) "/run"} {
                input type="hidden" name="csrf" value=(sess.csrf);
                button.run { "Run now" }
            }
            " "
        }
        @if sess.may(&format!("/ui/plans/{name}/verify")) {
            form.inline method="post" action={"/ui/plans/" (name) "/verify"} {
                input type="hidden" name="csrf" value=(sess.csrf);
                button #verify { "Run drill now" }
            }
            " "
        }
        @if sess.may(&format!("/ui/plans/{name}/edit")) {
            a.button #edit href={"/ui/plans/" (name) "/edit"} { "Edit" } " "
        }
        (delete_link(sess, "plan", name))
        p { a href={"/ui/jobs?plan=" (name)} { "Jobs of this plan" } }
        h2 { "Settings" }
        table #settings {
            tbody {
                tr { th { "Next runs" } td { @if paused { "paused" } @else {
                    @let next = holdfast_core::Schedule::parse(&spec.schedule, &spec.timezone)
                        .map(|sc| sc.upcoming(jiff::Timestamp::now(), 5))
                        .unwrap_or_default();
                    @if next.is_empty() { "none" }
                    ul { @for z in &next { li { (z.strftime("%a %Y-%m-%d %H:%M %Z")) } } }
                } } }
                tr { th { "Retention" } td #retention { (retention_text(&spec.retention)) } }
                tr { th { "Copy" } td #copy { @match &spec.copy {
                    Some(c) => { "to endpoint " (c.endpoint) @if let Some(r) = &c.retention { ", keeping " (retention_text(r)) } @else { ", with the plan's retention" } },
                    None => "none",
                } } }
                tr { th { "Hooks" } td #hooks {
                    @let hooks = holdfast_core::lifecycle::Step::ALL.iter()
                        .filter_map(|st| spec.hooks.get(*st).map(|h| (st, h))).collect::<Vec<_>>();
                    @if hooks.is_empty() { "none" }
                    ul { @for (st, h) in &hooks { li { strong { (st) } " (timeout " (h.timeout_secs) " s): " code { (super::short(&h.run, 120)) } } } }
                } }
                tr { th { "Restore drills" } td #drills {
                    @match &spec.verify {
                        Some(v) => {
                            @match (v.mode, &v.into) {
                                (holdfast_core::drill::DrillMode::Check, _) => "read and check",
                                (_, Some(into)) => { "restore into scratch source " a href={"/ui/sources/" (into)} { (into) } },
                                (_, None) => "restore into a throwaway copy",
                            }
                            @if let Some(sc) = &v.schedule { ", " code { (sc) } " " (v.timezone) } @else { ", when asked" }
                            @if let Some(t) = v.rto_target_secs { ", recovery time target " (t) " s" }
                            @if !v.checks.is_empty() { ", " (v.checks.len()) " SQL check(s)" }
                        },
                        None => "none scheduled (Run drill now drills the newest restore point)",
                    }
                    @if let Some(d) = &last_drill {
                        br; span #last-drill class={"badge " (if d.passed { "succeeded" } else { "failed" })} {
                            (drill_badge(d)) }
                        " " a href={"/ui/jobs/" (d.job)} { "report" }
                    }
                } }
                tr { th { "Retries" } td { (spec.retry.attempts) " attempts, waiting " (spec.retry.base_secs) " s doubling to " (spec.retry.cap_secs) " s" } }
            }
        }
        h2 { "Restore points" }
        @match &points {
            Err(e) => p.error role="alert" { (e.to_string()) },
            Ok(Json(points)) if points.is_empty() => p { "No backups yet." },
            Ok(Json(points)) => {
                p #stored { (points.len()) " restore points; together they added "
                    (super::bytes(points.iter().map(|p| p.added_bytes as i64).sum())) " to the repository, for "
                    (super::bytes(points.iter().map(|p| p.bytes as i64).sum())) " of dumps" }
                table #restore-points {
                    thead { tr { th { "Restore point" } th { "Taken" } th { "Database" } th { "Size" } th { "Verified" } th { "Restore to…" } } }
                    tbody { @for p in points {
                        tr data-point=(p.short_id) {
                            td { code { (p.short_id) } } td { (super::when_text(&p.time)) }
                            td { (p.database.clone().unwrap_or_default()) }
                            td { (super::bytes(p.bytes as i64)) }
                            td.verified { @match &p.verification {
                                Some(d) => { span class={"badge " (if d.passed { "succeeded" } else { "failed" })} title=(d.summary) { (drill_badge(d)) }
                                    " " a href={"/ui/jobs/" (d.job)} { "report" } },
                                None => "not yet",
                            } }
                            td {
                                @let inputs = vec![
                                    select("target_source", "Into source", sources.clone()),
                                    text("database", "Database", "a new name restores beside it; empty: the source's own (needs Overwrite)"),
                                    check("create", "Create the database", ""),
                                    check("force", "Overwrite what is there", "restored into a temporary database, swapped in only when it succeeded"),
                                ];
                                details open[!errors.is_empty() && values.get("point") == Some(&p.id)] {
                                    summary { "Restore…" }
                                    div.restore data-point=(p.short_id) {
                                        (form(&format!("/ui/plans/{name}/restore?point={}", p.id), sess, &inputs, &values, errors, "Restore"))
                                    }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    (status, page(&format!("Plan {name}"), Some(sess), body)).into_response()
}

/// "verified <time>, restored in 41 s", or "drill failed <time>" (the UI's one time format).
fn drill_badge(d: &crate::api::drills::DrillSummary) -> maud::Markup {
    let when = super::when_text(&d.verified_at);
    html! { @match (d.passed, d.rto_secs) {
        (true, Some(rto)) => { "verified " (when) ", restored in " (seconds(rto)) " s" },
        (true, None) => { "verified " (when) " (data read back)" },
        (false, _) => { "drill failed " (when) },
    } }
}

/// Seconds as a badge shows them: a tenth below ten seconds (a small database restores in
/// under one), whole above.
fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.0}")
    }
}

#[derive(Deserialize)]
pub struct PointQuery {
    point: String,
}

pub async fn restore(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<PointQuery>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let v = json!({"plan": name, "restore_point": q.point,
        "target_source": opt(&f, "target_source"), "database": opt(&f, "database"),
        "create": f.get("create").is_some_and(|v| v == "true"),
        "force": f.get("force").is_some_and(|v| v == "true")});
    let r = match parse_input(v) {
        Ok(input) => {
            match crate::api::restores::create_restore(
                State(s.clone()),
                axum::Extension(sess.who.clone()),
                Body(input),
            )
            .await
            {
                Ok((_, Json(j))) => Ok(Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response()),
                Err(e) => outcome::<()>(Err(e), ""),
            }
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            let mut f = without_secrets(f);
            f.insert("point".into(), q.point.clone());
            plan_page(&s, &sess, &name, &f, &errs).await
        }
    }
}

/// Pause or resume a plan (`paused` says which).
async fn set_paused(s: Arc<AppState>, name: String, paused: bool) -> Response {
    let r = if paused {
        crate::api::plans::pause_plan(State(s.clone()), Path(name.clone())).await
    } else {
        crate::api::plans::resume_plan(State(s.clone()), Path(name.clone())).await
    };
    match r {
        Ok(_) => Redirect::to(&format!("/ui/plans/{name}")).into_response(),
        Err(e) => error_page(StatusCode::CONFLICT, &e.to_string()),
    }
}

pub async fn pause(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_paused(s, name, true).await
}

pub async fn resume(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_paused(s, name, false).await
}

/// A retention policy in words.
fn retention_text(r: &holdfast_core::plan::Retention) -> String {
    match r {
        holdfast_core::plan::Retention::Gfs(k) => {
            let parts: Vec<String> = [
                ("last", k.last),
                ("hourly", k.hourly),
                ("daily", k.daily),
                ("weekly", k.weekly),
                ("monthly", k.monthly),
                ("yearly", k.yearly),
            ]
            .iter()
            .filter_map(|(w, n)| n.map(|n| format!("{n} {w}")))
            .chain(k.within.as_ref().map(|w| format!("everything within {w}")))
            .collect();
            if parts.is_empty() {
                "everything".into()
            } else {
                parts.join(", ")
            }
        }
        holdfast_core::plan::Retention::Period { period, unit } => match unit {
            holdfast_core::plan::PeriodUnit::Days => format!("everything within {period} days"),
            holdfast_core::plan::PeriodUnit::Hours => format!("everything within {period} hours"),
            holdfast_core::plan::PeriodUnit::Files => format!("the last {period}"),
        },
    }
}

/// The plan's restore points, read from its repository as the API lists them.
async fn points_of(
    s: &Arc<AppState>,
    name: &str,
) -> crate::api::ApiResult<axum::Json<Vec<crate::model::RestorePointView>>> {
    crate::api::restores::restore_points(
        State(s.clone()),
        Ok(Query(crate::api::restores::RestorePointQuery {
            plan: Some(name.to_string()),
            endpoint: None,
        })),
    )
    .await
}

/// What deleting plan `name` stops and what stays, in words (the API's: its jobs and its
/// backups in the repository stay).
async fn consequences(s: &Arc<AppState>, name: &str, spec: &PlanSpec) -> Markup {
    let points = points_of(s, name).await;
    let jobs = s
        .store
        .jobs(&JobFilter {
            plan: Some(name.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let queued: Vec<i64> = jobs
        .iter()
        .filter(|j| j.state == JobState::Queued && j.kind == holdfast_core::job::JobKind::Backup)
        .map(|j| j.id)
        .collect();
    html! {
        p #stops { "Its schedule stops: no more backups of source " strong { (spec.source) }
            " into endpoint " strong { (spec.endpoint) } "." }
        p #stays {
            @match &points {
                Ok(Json(p)) if p.len() == 1 => { "Its 1 restore point stays" },
                Ok(Json(p)) => { "Its " (p.len()) " restore points stay" },
                Err(e) => { "Its restore points (they cannot be counted now: " (e.to_string()) ") stay" },
            }
            " in the repository of endpoint " strong { (spec.endpoint) }
            @if let Some(c) = &spec.copy { ", and their copies in endpoint " strong { (c.endpoint) } "," }
            " and can still be restored: with restic, or here after creating a plan named "
            code { (name) } " on that endpoint again. Nothing is deleted from a repository."
        }
        p #jobs-stay { @match jobs.len() { 0 => "It has no jobs.", 1 => "Its 1 job stays in the job history.",
            n => { "Its " (n) @if n >= 1000 { " or more" } " jobs stay in the job history." } } }
        @if !queued.is_empty() {
            p.warn { "Its queued backup (job " (queued.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(", "))
                ") will not run: it fails when an agent would start it." }
        }
    }
}

pub async fn confirm_delete_plan(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let (spec, _, version) = match super::plan_form::stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let what = consequences(&s, &name, &spec).await;
    let back = format!("/ui/plans/{name}");
    confirm_delete(&sess, "plan", &name, version, &back, what, None)
}

pub async fn delete_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let (spec, _, version) = match super::plan_form::stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let refused = if confirmed(&f, &name) {
        match crate::api::plans::delete_plan(State(s.clone()), Path(name.clone()), if_match(&f))
            .await
        {
            Ok(_) => return Redirect::to("/").into_response(),
            Err(e) => delete_refused(&e),
        }
    } else {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("type `{name}` to confirm"),
        )
    };
    let what = consequences(&s, &name, &spec).await;
    let back = format!("/ui/plans/{name}");
    let version = f
        .get("version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(version);
    confirm_delete(&sess, "plan", &name, version, &back, what, Some(refused))
}

//! The UI's plans: create with a cron preview, the plan page with its settings and restore
//! points, restore, pause and resume, through the API's own handlers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::Schedule;
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::Kind;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::form::{check, form, names, opt, outcome, parse_input, select, text, without_secrets};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::api::Body;

pub async fn new_plan(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    let mut f = Fields::new();
    f.insert("timezone".into(), "UTC".into());
    f.insert("schedule".into(), "0 3 * * *".into());
    // The API's default retention, so a plan made here keeps what one made elsewhere keeps.
    if let holdfast_core::plan::Retention::Gfs(k) = holdfast_core::plan::Retention::default() {
        for (field, n) in [
            ("keep_last", k.last),
            ("keep_daily", k.daily),
            ("keep_weekly", k.weekly),
            ("keep_monthly", k.monthly),
        ] {
            if let Some(n) = n {
                f.insert(field.into(), n.to_string());
            }
        }
    }
    plan_form(&s, &sess, &f, &[]).await
}

async fn plan_form(
    s: &AppState,
    sess: &Session,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    let sources = names(s, Kind::Source).await;
    let endpoints = names(s, Kind::Endpoint).await;
    let inputs = vec![
        text("name", "Name", "lowercase letters, digits and -"),
        select("source", "Source", sources),
        select("endpoint", "Endpoint", endpoints),
        text(
            "schedule",
            "Schedule",
            "5-field cron (minute hour day month weekday) or @daily, @hourly …",
        ),
        text("timezone", "Time zone", "IANA name, e.g. Europe/Berlin"),
        text(
            "keep_last",
            "Keep the last",
            "backups (retention; empty: none by count)",
        ),
        text("keep_daily", "Keep daily", "one per day for this many days"),
        text("keep_weekly", "Keep weekly", ""),
        text("keep_monthly", "Keep monthly", ""),
        check("paused", "Paused", ""),
    ];
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "New plan" }
        (form("/ui/plans", sess, &inputs, values, errors, "Create plan"))
        section.preview {
            h2 { "Next runs" }
            ol #next-runs {}
            p.error #cron-error role="status" {}
        }
    };
    (status, page("New plan", Some(sess), body)).into_response()
}

pub async fn create_plan(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let mut keep = serde_json::Map::new();
    keep.insert("style".into(), "gfs".into());
    let mut bad = vec![];
    for (field, rule) in [
        ("keep_last", "last"),
        ("keep_daily", "daily"),
        ("keep_weekly", "weekly"),
        ("keep_monthly", "monthly"),
    ] {
        match f.get(field).map_or("", |v| v.trim()) {
            "" => {}
            v => match v.parse::<u32>() {
                Ok(n) => {
                    keep.insert(rule.into(), n.into());
                }
                Err(_) => bad.push(FieldError {
                    field: field.into(),
                    reason: "a whole number".into(),
                }),
            },
        }
    }
    let r = match bad.is_empty() {
        false => Err(bad),
        true => {
            let name = f.get("name").cloned().unwrap_or_default();
            let v = json!({"name": name,
                "source": f.get("source").cloned().unwrap_or_default(),
                "endpoint": f.get("endpoint").cloned().unwrap_or_default(),
                "schedule": f.get("schedule").cloned().unwrap_or_default(),
                "timezone": f.get("timezone").cloned().unwrap_or_default(),
                "paused": f.get("paused").is_some_and(|v| v == "true"),
                "retention": keep});
            match parse_input::<PlanSpec>(v) {
                Ok(spec) => outcome(
                    crate::api::plans::save_plan(
                        &s,
                        false,
                        spec,
                        None,
                        &HeaderMap::new(),
                        &sess.who,
                    )
                    .await,
                    &format!("/ui/plans/{name}"),
                ),
                Err(e) => Err(e),
            }
        }
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            let errs: Vec<FieldError> = errs
                .into_iter()
                .map(|mut e| {
                    if let Some(rule) = e.field.strip_prefix("retention.") {
                        e.field = format!("keep_{rule}");
                    } else if e.field == "retention" {
                        e.field = "keep_last".into();
                    }
                    e
                })
                .collect();
            plan_form(&s, &sess, &without_secrets(f), &errs).await
        }
    }
}

#[derive(Deserialize)]
pub struct CronQuery {
    schedule: String,
    timezone: String,
}

/// The next five runs of a schedule in a time zone, for the plan form as the user types.
pub async fn cron_preview(_: Session, Query(q): Query<CronQuery>) -> Response {
    match Schedule::parse(&q.schedule, &q.timezone) {
        Ok(sched) => {
            let now = jiff::Timestamp::now();
            let runs: Vec<String> = sched
                .upcoming(now, 5)
                .iter()
                .map(|z| z.strftime("%a %Y-%m-%d %H:%M %Z").to_string())
                .collect();
            Json(json!({"runs": runs})).into_response()
        }
        Err(e) => {
            let field = if e.what.starts_with("timezone") {
                "timezone"
            } else {
                "schedule"
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"field": field, "error": e.to_string()})),
            )
                .into_response()
        }
    }
}

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
    let Ok(r) = s.store.must_get(Kind::Plan, name).await else {
        return error_page(StatusCode::NOT_FOUND, &format!("no plan named `{name}`"));
    };
    let spec: PlanSpec = serde_json::from_str(&r.spec).unwrap_or_else(|_| unreachable!());
    let points = crate::api::restores::restore_points(
        State(s.clone()),
        Ok(Query(crate::api::restores::RestorePointQuery {
            plan: Some(name.to_string()),
            endpoint: None,
        })),
    )
    .await;
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
        @let paused = r.plan.as_ref().is_some_and(|c| c.paused);
        p { (spec.source) " → " (spec.endpoint) " · " code { (spec.schedule) } " " (spec.timezone)
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
        }
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
                    thead { tr { th { "Restore point" } th { "Taken" } th { "Database" } th { "Size" } th { "Restore to…" } } }
                    tbody { @for p in points {
                        tr data-point=(p.short_id) {
                            td { code { (p.short_id) } } td { (super::when_text(&p.time)) }
                            td { (p.database.clone().unwrap_or_default()) }
                            td { (super::bytes(p.bytes as i64)) }
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

//! The web UI: server-rendered HTML (maud, escaped by construction) and a few lines of
//! hand-written JavaScript for live progress over Server-Sent Events. No build step, no CDN.
//!
//! Sign-in, sessions and what each form needs are in `session`; every page shows only the
//! controls its viewer's role can use, and the handlers refuse the rest anyway.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use holdfast_core::Schedule;
use holdfast_core::job::JobState;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Job, Kind};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::AppState;
use crate::access::Perm;
use crate::model::rfc3339;

mod access;
mod endpoints;
mod form;
mod jobs;
mod notifiers;
mod oidc;
mod plan_form;
mod plans;
mod session;
mod sources;

pub(crate) use session::IDLE_MS as SESSION_IDLE_MS;
pub(crate) use session::actor;
use session::{Posted, Session};

const PAGE: usize = 50;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/oidc/login", get(oidc::login))
        .route("/ui/oidc/callback", get(oidc::callback))
        .route("/ui/jobs", get(jobs::jobs))
        .route("/ui/jobs/{id}", get(jobs::job))
        .route("/ui/jobs/{id}/events", get(jobs::job_events))
        .route("/ui/plans/{name}/run", post(run_now))
        .route("/ui/plans/{name}/verify", post(verify_now))
        .route("/ui/jobs/{id}/drill", get(jobs::drill_report))
        .route(
            "/ui/endpoints",
            get(endpoints::endpoints).post(endpoints::create_endpoint),
        )
        .route(
            "/ui/endpoints/{name}",
            get(endpoints::endpoint).post(endpoints::save_endpoint),
        )
        .route("/ui/endpoints/{name}/test", post(endpoints::test_endpoint))
        .route(
            "/ui/endpoints/{name}/delete",
            get(endpoints::confirm_delete_endpoint).post(endpoints::delete_endpoint),
        )
        .route(
            "/ui/sources",
            get(sources::sources).post(sources::create_source),
        )
        .route(
            "/ui/sources/{name}",
            get(sources::source).post(sources::save_source),
        )
        .route(
            "/ui/sources/{name}/delete",
            get(sources::confirm_delete_source).post(sources::delete_source),
        )
        .route("/ui/plans", post(plan_form::create_plan))
        .route("/ui/plans/new", get(plan_form::new_plan))
        .route("/ui/plans/{name}", get(plans::plan))
        .route(
            "/ui/plans/{name}/edit",
            get(plan_form::edit_plan).post(plan_form::save_plan),
        )
        .route(
            "/ui/plans/{name}/delete",
            get(plans::confirm_delete_plan).post(plans::delete_plan),
        )
        .route("/ui/plans/{name}/restore", post(plans::restore))
        .route("/ui/plans/{name}/pause", post(plans::pause))
        .route("/ui/plans/{name}/resume", post(plans::resume))
        .route("/ui/cron-preview", get(plan_form::cron_preview))
        .route("/ui/agents", get(access::agents))
        .route("/ui/agents/{name}/revoke", post(access::revoke_agent))
        .route("/ui/enrolments", post(access::enrol))
        .route("/ui/access", get(access::access))
        .route("/ui/users", post(access::create_user))
        .route("/ui/users/{name}/disable", post(access::disable_user))
        .route("/ui/users/{name}/enable", post(access::enable_user))
        .route("/ui/tokens", post(access::create_token))
        .route("/ui/tokens/{id}/revoke", post(access::revoke_token))
        .route("/ui/audit", get(access::audit))
        .route(
            "/ui/notifiers",
            get(notifiers::notifiers).post(notifiers::create_notifier),
        )
        .route(
            "/ui/notifiers/{name}",
            get(notifiers::notifier).post(notifiers::save),
        )
        .route("/ui/notifiers/{name}/test", post(notifiers::test))
        .route("/ui/notifiers/{name}/delete", post(notifiers::delete))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
}

fn page(title: &str, signed_in: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Holdfast" }
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Holdfast" }
                    @if let Some(sess) = signed_in {
                        nav {
                            a href="/" { "Plans" }
                            a href="/ui/jobs" { "Jobs" }
                            a href="/ui/endpoints" { "Endpoints" }
                            a href="/ui/sources" { "Sources" }
                            a href="/ui/agents" { "Agents" }
                            a href="/ui/notifiers" { "Notifiers" }
                            a href="/ui/access" { "Access" }
                            @if sess.can(Perm::Audit) { a href="/ui/audit" { "Audit" } }
                            span.who #who { (sess.who.actor()) @if let Some(r) = sess.who.role() { " · " (r.as_str()) } @if !sess.who.scope().is_all() { " · " (sess.who.scope().text()) } }
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(sess.csrf);
                                button { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        page(
            "Error",
            None,
            html! { h1 { "Something went wrong" } p.error role="alert" { (message) } },
        ),
    )
        .into_response()
}

// ----- dashboard -----

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

/// A plan's health on the dashboard, worst first.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Health {
    Failing,
    Stale,
    Running,
    Healthy,
    New,
    Paused,
}

impl Health {
    fn label(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Stale => "stale",
            Self::Running => "running",
            Self::Healthy => "ok",
            Self::New => "no backup yet",
            Self::Paused => "paused",
        }
    }
}

struct Row {
    spec: PlanSpec,
    health: Health,
    last: Option<Job>,
    last_success: Option<i64>,
    next: Option<String>,
}

async fn dashboard(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Query(q): Query<PageQuery>,
) -> Response {
    let (plans, mut results) =
        match tokio::try_join!(s.store.list(Kind::Plan), s.store.plan_results()) {
            Ok(x) => x,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    let now_ms = s.now();
    let now = jiff::Timestamp::from_millisecond(now_ms).unwrap_or_default();
    let mut rows: Vec<Row> = plans
        .iter()
        .filter_map(|r| {
            let mut spec: PlanSpec = serde_json::from_str(&r.spec).ok()?;
            if !sess.who.sees(&spec.labels) {
                return None;
            }
            spec.paused = r.plan.as_ref().is_some_and(|c| c.paused);
            let (last, last_success) = match results.remove(&r.name) {
                Some((j, ok)) => (Some(j), ok),
                None => (None, None),
            };
            let upcoming = Schedule::parse(&spec.schedule, &spec.timezone)
                .map(|s| s.upcoming(now, 2))
                .unwrap_or_default();
            let interval_ms = match upcoming.as_slice() {
                [a, b, ..] => Some(b.timestamp().as_millisecond() - a.timestamp().as_millisecond()),
                _ => None,
            };
            let health = match (&last, spec.paused) {
                (_, true) => Health::Paused,
                (None, _) => Health::New,
                (Some(j), _) if j.state == JobState::Failed => Health::Failing,
                (Some(j), _) if matches!(j.state, JobState::Running | JobState::Queued) => {
                    Health::Running
                }
                _ => {
                    let stale = match (last_success, interval_ms) {
                        (Some(at), Some(i)) => now_ms - at > 2 * i,
                        (None, _) => true,
                        _ => false,
                    };
                    if stale {
                        Health::Stale
                    } else {
                        Health::Healthy
                    }
                }
            };
            let next = (!spec.paused)
                .then(|| {
                    upcoming
                        .first()
                        .map(|z| z.strftime("%Y-%m-%d %H:%M %Z").to_string())
                })
                .flatten();
            Some(Row {
                spec,
                health,
                last,
                last_success,
                next,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.health.cmp(&b.health).then(a.spec.name.cmp(&b.spec.name)));
    let failing = rows.iter().filter(|r| r.health == Health::Failing).count();
    let stale = rows.iter().filter(|r| r.health == Health::Stale).count();
    let pages = rows.len().div_ceil(PAGE).max(1);
    let at = q.page.unwrap_or(1).clamp(1, pages);
    let shown = &rows[(at - 1) * PAGE..(at * PAGE).min(rows.len())];
    // Notifiers whose last message did not go out: alerts may not be reaching anyone.
    let undelivered: Vec<crate::notify::NotifierView> =
        match crate::api::notifiers::list_notifiers(State(s.clone())).await {
            Ok(axum::Json(l)) => l
                .into_iter()
                .filter(|n| matches!(n.last_delivery.as_deref(), Some("retrying" | "failed")))
                .collect(),
            Err(_) => Vec::new(),
        };
    page(
        "Plans",
        Some(&sess),
        html! {
            h1 { "Backup plans" }
            @for n in &undelivered {
                p.error.notifier-warning role="alert" {
                    "Notifier " a href="/ui/notifiers" { (n.name) } " cannot deliver alerts ("
                    (n.last_delivery.clone().unwrap_or_default()) "): " (n.last_error.clone().unwrap_or_default())
                }
            }
            p { a.button href="/ui/plans/new" { "New plan" } }
            p.summary {
                (rows.len()) " plans · "
                span class=(if failing > 0 { "bad" } else { "" }) { (failing) " failing" } " · "
                span class=(if stale > 0 { "warn" } else { "" }) { (stale) " stale" }
            }
            @if rows.is_empty() {
                p { "No plans yet. Create one with " code { "POST /api/v1/plans" } " or "
                    code { "holdfast apply" } "." }
            } @else {
                table #plans {
                    thead { tr {
                        th { "Plan" } th { "Status" } th { "Source → endpoint" } th { "Schedule" }
                        th { "Last result" } th { "Last size / stored (dedup)" } th { "Last success" }
                        th { "Next run" } th {}
                    } }
                    tbody {
                        @for r in shown {
                            tr data-plan=(r.spec.name) {
                                td { a href={"/ui/plans/" (r.spec.name)} { (r.spec.name) } }
                                td { span class={"badge " (r.health.label().replace(' ', "-"))} { (r.health.label()) } }
                                td { (r.spec.source) " → " (r.spec.endpoint)
                                     @if let Some(c) = &r.spec.copy { " (+ copy to " (c.endpoint) ")" } }
                                td { code { (r.spec.schedule) } " " small { (r.spec.timezone) } }
                                td {
                                    @if let Some(j) = &r.last {
                                        a href={"/ui/jobs/" (j.id)} { (j.state) }
                                        @if let Some(e) = &j.error { div.error title=(e) { (short(e, 90)) } }
                                    } @else { "—" }
                                }
                                td { @if let Some(j) = r.last.as_ref().filter(|j| j.bytes_read > 0) {
                                    (bytes(j.bytes_read)) " / " (bytes(j.bytes_written))
                                    @if j.bytes_written > 0 {
                                        " (" (format!("{:.1}", j.bytes_read as f64 / j.bytes_written as f64)) "×)"
                                    }
                                } }
                                td { @match r.last_success { Some(at) => (when(at)), None => "never" } }
                                td { (r.next.clone().unwrap_or_else(|| "—".into())) }
                                td {
                                    @if sess.can(Perm::Run) {
                                        form.inline method="post" action={"/ui/plans/" (r.spec.name) "/run"} {
                                            input type="hidden" name="csrf" value=(sess.csrf);
                                            button.run { "Run now" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                (pager(at, pages))
            }
        },
    )
    .into_response()
}

/// A moment as the UI shows it: the viewer's local time with its zone (the page's script sets
/// it from `datetime`); without the script, UTC to the second. Never nanoseconds.
pub(crate) fn when(ms: i64) -> Markup {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or_default();
    html! { time datetime=(rfc3339(ms)) { (t.strftime("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// [`when`] for a time the API already wrote as RFC 3339.
pub(crate) fn when_text(rfc: &str) -> Markup {
    match rfc.parse::<jiff::Timestamp>() {
        Ok(t) => when(t.as_millisecond()),
        Err(_) => html! { (rfc) },
    }
}

/// The end of `s`, at most `n` characters: where an error says what finally went wrong.
fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_string();
    }
    let skip = count - n;
    format!("…{}", s.chars().skip(skip).collect::<String>())
}

pub(crate) fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Links to the plans page's neighbouring pages.
fn pager(at: usize, pages: usize) -> Markup {
    html! {
        @if pages > 1 {
            nav.pager {
                @if at > 1 { a href={"/?page=" (at - 1)} { "← previous" } }
                " page " (at) " of " (pages) " "
                @if at < pages { a href={"/?page=" (at + 1)} { "next →" } }
            }
        }
    }
}

async fn run_now(State(s): State<Arc<AppState>>, Path(name): Path<String>, _: Posted) -> Response {
    match crate::api::plans::run_plan(State(s.clone()), Path(name)).await {
        Ok((_, axum::Json(j))) => Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response(),
        Err(e) => error_page(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn verify_now(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    let none = axum::body::Bytes::new();
    match crate::api::drills::verify_plan(State(s.clone()), Path(name), none).await {
        Ok((_, axum::Json(j))) => Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response(),
        Err(e) => error_page(StatusCode::CONFLICT, &e.to_string()),
    }
}

fn bytes(n: i64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("ui/app.js"),
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("ui/app.css"),
    )
        .into_response()
}

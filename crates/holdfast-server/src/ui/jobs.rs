//! The UI's jobs: the list (filtered by plan and state, paged), a job's page with its steps
//! and log, and its live updates over Server-Sent Events until it has finished.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use holdfast_core::job::{JobKind, JobState};
use holdfast_store::JobFilter;
use maud::html;
use serde::Deserialize;

use super::session::Session;
use super::{PAGE, bytes, error_page, page, tail, when};
use crate::AppState;
use crate::model::rfc3339;

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    plan: Option<String>,
    state: Option<String>,
    before: Option<i64>,
}

pub(super) async fn jobs(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Query(q): Query<JobsQuery>,
) -> Response {
    let plans = match crate::access::scope::visible_plans(&s.store, &sess.who).await {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let filter = JobFilter {
        plan: q.plan.clone().filter(|p| !p.is_empty()),
        plans,
        state: q.state.as_deref().and_then(JobState::parse),
        kind: None,
        before: q.before,
        limit: PAGE as i64,
    };
    let list = match s.store.jobs(&filter).await {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let extra = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("plan", filter.plan.as_deref().unwrap_or_default())
        .append_pair("state", filter.state.map_or("", JobState::as_str))
        .finish();
    page(
        "Jobs",
        Some(&sess),
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/ui/jobs" {
                label { "Plan " input name="plan" value=(filter.plan.clone().unwrap_or_default()); }
                label { "State "
                    select name="state" {
                        option value="" selected[filter.state.is_none()] { "any" }
                        @for st in JobState::ALL {
                            option value=(st) selected[filter.state == Some(*st)] { (st) }
                        }
                    }
                }
                button { "Filter" }
            }
            table #jobs {
                thead { tr { th { "Job" } th { "Kind" } th { "Plan" } th { "State" } th { "Started" }
                             th { "Duration" } th { "Read" } th { "Error" } } }
                tbody {
                    @for j in &list {
                        tr {
                            td { a href={"/ui/jobs/" (j.id)} { "#" (j.id) } }
                            td { (j.kind) }
                            td { (j.plan.clone().unwrap_or_default()) }
                            td { span class={"badge " (j.state)} { (j.state) } }
                            td { @if let Some(at) = j.started_at { (when(at)) } }
                            td { (j.started_at.zip(j.finished_at).map(|(a, b)| format!("{:.1} s", (b - a) as f64 / 1000.0)).unwrap_or_default()) }
                            td { (bytes(j.bytes_read)) }
                            td.error title=(j.error.clone().unwrap_or_default()) {
                                (j.error.as_deref().map(|e| tail(e, 100)).unwrap_or_default())
                            }
                        }
                    }
                }
            }
            @if let Some(last) = list.last().filter(|_| list.len() == PAGE) {
                nav.pager { a href={"/ui/jobs?before=" (last.id) "&" (extra)} { "older →" } }
            }
        },
    )
    .into_response()
}

pub(super) async fn job(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(id): Path<i64>,
) -> Response {
    let (j, steps, log) = match tokio::try_join!(
        s.store.must_job(id),
        s.store.steps(id),
        s.store.log(id, 0, 1000)
    ) {
        Ok(x) => x,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let last_log = log.last().map(|l| l.id).unwrap_or(0);
    // A drill's report, as its text.
    let drill = match j.kind {
        JobKind::Verify => s.store.drill_of_job(id).await.ok().flatten().and_then(|d| {
            serde_json::from_str::<holdfast_core::drill::DrillReport>(&d.report).ok()
        }),
        _ => None,
    };
    page(
        &format!("Job {id}"),
        Some(&sess),
        html! {
            h1 { "Job #" (j.id) " · " (j.kind) @if let Some(p) = &j.plan { " of plan " (p) } }
            div #job data-id=(j.id) data-after=(last_log) data-live=(!j.state.is_final()) {
                p { "State: " span #state class={"badge " (j.state)} { (j.state) }
                    " · attempt " (j.attempt) " of " (j.max_attempts) }
                @match j.kind {
                    JobKind::Restore => p { "Read from the repository " span #read { (bytes(j.bytes_read)) }
                        ", written to the target " span #written { (bytes(j.bytes_written)) } " " span #rate {} },
                    JobKind::Prune | JobKind::Verify => {},
                    JobKind::Backup => p { "Read " span #read { (bytes(j.bytes_read)) } ", added to the repository "
                        span #written { (bytes(j.bytes_written)) } " " span #rate {} },
                }
                progress #progress max="1" value=(if j.state.is_final() { "1" } else { "0" }) {}
                @if let Some(e) = &j.error { p.error #error role="alert" { (e) } }
                @if let Some(snap) = &j.snapshot_id { p { "Restore point " code #snapshot { (snap) } } }
            }
            @if let Some(r) = &drill {
                h2 { "Drill report" }
                p { span #drill-result class={"badge " (if r.passed { "succeeded" } else { "failed" })} {
                        (if r.passed { "passed" } else { "failed" }) }
                    " " (r.summary()) " · "
                    a #drill-download href={"/ui/jobs/" (j.id) "/drill?format=text"} download { "download (text)" }
                    " · " a href={"/ui/jobs/" (j.id) "/drill?format=json"} download { "JSON" } }
                pre #drill-report { (r.text()) }
            }
            // Drills and prunes run no hooks: a steps table would stay empty.
            @if !steps.is_empty() || matches!(j.kind, JobKind::Backup | JobKind::Restore) {
            h2 { "Steps" }
            table #steps {
                thead { tr { th { "Attempt" } th { "Step" } th { "Try" } th { "State" } th { "Agent" } th { "Started" } th { "Detail" } } }
                tbody {
                    @for st in &steps {
                        tr { td { (st.attempt) } td { (st.step) } td { (st.try_no) }
                             td { span class={"badge " (st.state)} { (st.state) } }
                             td { (st.agent) } td { (when(st.started_at)) } td { (st.detail.clone().unwrap_or_default()) } }
                    }
                }
            }
            }
            h2 { "Log" }
            pre #log { @for l in &log { (when(l.at)) "  " (l.line) "\n" } }
        },
    )
    .into_response()
}

/// Live updates of a job: `log` events (one line each) and `job` events (the API's `JobView`),
/// until the job has finished.
pub(super) async fn job_events(
    State(s): State<Arc<AppState>>,
    _sess: Session,
    Path(id): Path<i64>,
    Query(q): Query<AfterQuery>,
) -> Response {
    struct Cursor {
        s: Arc<AppState>,
        after: i64,
        done: bool,
    }
    let start = Cursor {
        s,
        after: q.after.unwrap_or(0),
        done: false,
    };
    let stream = futures_util::stream::unfold(start, move |mut c| async move {
        if c.done {
            return None;
        }
        let mut events: Vec<Result<Event, Infallible>> = vec![];
        let j = c.s.store.must_job(id).await.ok()?;
        if let Ok(lines) = c.s.store.log(id, c.after, 500).await {
            for l in lines {
                c.after = l.id;
                events.push(Ok(Event::default()
                    .event("log")
                    .id(l.id.to_string())
                    .data(format!("{}  {}", rfc3339(l.at), l.line))));
            }
        }
        let mut view = crate::model::JobView::at(&j, c.s.now());
        // The steps table follows too.
        if let Ok(steps) = c.s.store.steps(id).await {
            view.steps = Some(steps.iter().map(crate::model::StepView::new).collect());
        }
        events.push(Ok(Event::default()
            .event("job")
            .data(serde_json::to_string(&view).unwrap_or_default())));
        if j.state.is_final() {
            c.done = true;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Some((futures_util::stream::iter(events), c))
    });
    use futures_util::StreamExt;
    Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct AfterQuery {
    after: Option<i64>,
}

#[derive(serde::Deserialize)]
pub struct DrillFormat {
    format: Option<String>,
}

/// A drill's report to download (text for audits, or JSON).
pub(super) async fn drill_report(
    State(s): State<Arc<AppState>>,
    _sess: Session,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<DrillFormat>,
) -> Response {
    match crate::api::drills::report_response(&s, id, q.format.as_deref()).await {
        Ok(r) => r,
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

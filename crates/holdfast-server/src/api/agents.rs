//! The agents' side of the API: register, long-poll for a job (answered with its ticket),
//! heartbeat, log lines, lifecycle steps, and the attempt's end, which the server turns into the
//! job's next state with the rules of `holdfast_core::job`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use holdfast_core::agent::{
    DrillResult, Finish, Heartbeat, HeartbeatReply, Hello, LogLines, Outcome, StepReport,
    StepState, Ticket, labels_match,
};
use holdfast_core::job::{Event, JobKind, JobState, transition};
use holdfast_core::lifecycle::{COPY, RELEASED, Step};
use holdfast_core::plan::PlanSpec;
use holdfast_store::{AgentRow, Job, JobUpdate, Kind, StepRow};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ticket::{access_of, prepare_repository, ticket};
use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::access::Principal;
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, register_agent))
        .routes(routes!(delete_agent))
        .routes(routes!(claim))
        .routes(routes!(heartbeat))
        .routes(routes!(log))
        .routes(routes!(step))
        .routes(routes!(finish))
        .routes(routes!(drill))
}

/// An agent counts as online when it was heard from this recently (its long-polls return at
/// least every 20 s).
const ONLINE_MS: i64 = 60_000;

/// An agent not heard from for this long is shown as stale: probably gone for good (a
/// machine replaced, a test agent); `DELETE /api/v1/agents/NAME` removes it.
const STALE_MS: i64 = 24 * 60 * 60 * 1000;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn agent_view(a: &AgentRow, running: &[(i64, String)], now: i64) -> AgentView {
    AgentView {
        name: a.name.clone(),
        labels: serde_json::from_str(&a.labels).unwrap_or_default(),
        version: a.version.clone(),
        hostname: a.hostname.clone(),
        slots: a.slots,
        registered_at: rfc3339(a.registered_at),
        last_seen: rfc3339(a.last_seen),
        online: now - a.last_seen < ONLINE_MS,
        stale: now - a.last_seen >= STALE_MS,
        running_jobs: running
            .iter()
            .filter(|(_, o)| *o == a.name)
            .map(|(id, _)| *id)
            .collect(),
    }
}

#[utoipa::path(get, path = "/agents", security(("token" = ["read"])), tag = "agents",
    description = "Every agent that registered: its labels, version, when it was last heard from, and the jobs it runs now.",
    responses((status = 200, body = [AgentView])))]
pub async fn list_agents(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<AgentView>>> {
    let running = s.store.running_owners().await?;
    let now = s.now();
    let agents = s.store.agents().await?;
    Ok(Json(
        agents
            .iter()
            .map(|a| agent_view(a, &running, now))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/agents", security(("token" = ["agent"])), tag = "agents", request_body = Hello,
    description = "An agent registers (again, after a restart or with new labels).",
    responses((status = 200, body = AgentView), (status = 422, body = ErrorBody)))]
pub async fn register_agent(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(h): Body<Hello>,
) -> ApiResult<Json<AgentView>> {
    check_hello(&h)?;
    if let Principal::Agent { name, labels, .. } = &p {
        if *name != h.name {
            return Err(ApiError::Forbidden(format!(
                "this credential belongs to agent `{name}`; it cannot register as `{}`",
                h.name
            )));
        }
        if let Some(why) = beyond(&h.labels, labels) {
            return Err(ApiError::Forbidden(format!(
                "agent `{name}` may not serve {why}; enrol it again with those labels"
            )));
        }
    }
    let now = s.now();
    let row = AgentRow {
        name: h.name.clone(),
        labels: serde_json::to_string(&h.labels).expect("labels serialize"),
        version: h.version,
        hostname: h.hostname,
        slots: i64::from(h.slots),
        registered_at: now,
        last_seen: now,
    };
    s.store.upsert_agent(&row).await?;
    tracing::info!(agent = %h.name, labels = ?h.labels, "agent registered");
    let running = s.store.running_owners().await?;
    Ok(Json(agent_view(&row, &running, now)))
}

/// The first label of `asked` that `bound` does not grant (`team=payments`), if any.
pub(crate) fn beyond(
    asked: &BTreeMap<String, String>,
    bound: &BTreeMap<String, String>,
) -> Option<String> {
    asked
        .iter()
        .find(|(k, v)| bound.get(*k) != Some(*v))
        .map(|(k, v)| format!("label `{k}={v}`"))
}

/// What an agent says of itself, checked: its name, labels, version, host name and slots.
pub(crate) fn check_hello(h: &Hello) -> ApiResult<()> {
    if !valid_name(&h.name) || h.name == "enrol" {
        return Err(ApiError::field(
            "name",
            "1 to 100 letters, digits, `-`, `_`, `.` or `:` (not `enrol`)",
        ));
    }
    if let Some(k) = h.labels.keys().find(|k| !valid_name(k)) {
        return Err(ApiError::field(
            "labels",
            format!("label `{k}`: names are 1 to 100 letters, digits, `-`, `_`, `.` or `:`"),
        ));
    }
    let problems = holdfast_core::plan::label_problems(h.labels.iter());
    if !problems.is_empty() {
        return Err(ApiError::field("labels", problems.join("; ")));
    }
    if h.version.len() > 100 || h.hostname.len() > 255 {
        return Err(ApiError::field(
            if h.version.len() > 100 {
                "version"
            } else {
                "hostname"
            },
            "too long (version: 100 bytes, hostname: 255)",
        ));
    }
    if h.slots == 0 || h.slots > 64 {
        return Err(ApiError::field("slots", "1 to 64"));
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    /// Seconds to wait for a job, 0 to 60 (default 20); others are refused (400).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<i64>,
}

#[utoipa::path(delete, path = "/agents/{name}", security(("token" = ["access"])), tag = "agents",
    description = "Forgets an agent (one that is gone for good). Refused while it runs jobs; an agent that comes back registers again.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_agent(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let running: Vec<i64> = s
        .store
        .running_owners()
        .await?
        .into_iter()
        .filter(|(_, owner)| *owner == name)
        .map(|(id, _)| id)
        .collect();
    if !running.is_empty() {
        return Err(ApiError::Conflict(format!(
            "agent `{name}` runs job(s) {running:?}; cancel them or wait until they end"
        )));
    }
    if !s.store.delete_agent(&name).await? {
        return Err(ApiError::NotFound(format!(
            "agent `{name}` is not registered"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// What a job asks of the agent that runs it.
enum Selector {
    /// The labels of the job's source (none: any agent).
    Labels(BTreeMap<String, String>),
    /// An unlabelled source on this host (a loopback address, or a local file or folder):
    /// only the server's own embedded agent may run it, since on another agent the same URL
    /// would mean another machine.
    EmbeddedOnly,
    /// There is no job to run any more (its plan or source is gone): claiming it fails it
    /// with the reason, without a secret leaving the server.
    Gone,
}

/// The labels job `j`'s source asks of its agent. An error when they cannot be known (a
/// stored spec that does not read, a store error): such a job goes to no agent, since a
/// label-restricted job, with its secrets, must never go to the wrong one.
async fn selector(s: &AppState, j: &Job) -> Result<Selector, String> {
    let source = match j.kind {
        // A drill runs where the plan's backups run: next to the database, with its tools.
        JobKind::Backup | JobKind::Verify => {
            let Some(p) = &j.plan else {
                return Ok(Selector::Gone);
            };
            let Some(r) = s
                .store
                .get(Kind::Plan, p)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(Selector::Gone);
            };
            serde_json::from_str::<PlanSpec>(&r.spec)
                .map_err(|e| format!("stored plan `{p}` is unreadable: {e}"))?
                .source
        }
        JobKind::Restore => serde_json::from_str::<JobParams>(&j.params)
            .map_err(|e| format!("the restore's stored parameters are unreadable: {e}"))?
            .target_source
            .ok_or("the restore names no target source")?,
        // A prune touches no source; it runs on any agent, unless the endpoint's agents reach
        // it through the server: then only the server itself (its embedded agent) prunes.
        JobKind::Prune => {
            let Some(name) = &j.endpoint else {
                return Ok(Selector::Gone);
            };
            let Some(ep) = s
                .store
                .get(Kind::Endpoint, name)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(Selector::Gone);
            };
            return Ok(match access_of(&ep).map_err(|e| e.to_string())? {
                AgentAccess::Server => Selector::EmbeddedOnly,
                AgentAccess::Direct => Selector::Labels(BTreeMap::new()),
            });
        }
    };
    let Some(r) = s
        .store
        .get(Kind::Source, &source)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Selector::Gone);
    };
    let stored: StoredSource = serde_json::from_str(&r.spec)
        .map_err(|e| format!("stored source `{source}` is unreadable: {e}"))?;
    if stored.labels.is_empty() && names_this_host(&stored) {
        return Ok(Selector::EmbeddedOnly);
    }
    Ok(Selector::Labels(stored.labels))
}

/// Whether a source's URL means "this machine": a loopback host, or a path (SQLite, folder).
fn names_this_host(src: &StoredSource) -> bool {
    match holdfast_core::SourceSpec::parse(&src.url, src.command.as_deref()) {
        Ok(holdfast_core::SourceSpec::Postgres(a) | holdfast_core::SourceSpec::Mysql(a)) => {
            is_loopback(&a.host)
        }
        Ok(holdfast_core::SourceSpec::Redis { host, .. }) => is_loopback(&host),
        Ok(holdfast_core::SourceSpec::Sqlite { .. } | holdfast_core::SourceSpec::Folder { .. }) => {
            true
        }
        Ok(holdfast_core::SourceSpec::Command { .. }) => false,
        // A URL that does not parse runs nowhere useful; keep it on this host.
        Err(_) => true,
    }
}

/// `localhost`, 127.0.0.0/8, ::1, or no host at all (the local socket).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.is_empty()
        || h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Claims the oldest runnable job this agent's labels allow.
async fn claim_for(
    s: &AppState,
    agent: &str,
    labels: &BTreeMap<String, String>,
    embedded: bool,
) -> ApiResult<Option<Ticket>> {
    loop {
        let mut claimed = None;
        for j in s.store.claim_candidates(s.now(), 50).await? {
            match selector(s, &j).await {
                Ok(Selector::Labels(want)) if !labels_match(&want, labels) => continue,
                Ok(Selector::EmbeddedOnly) if !embedded => continue,
                Ok(_) => {}
                Err(why) => {
                    tracing::error!(job = j.id, "job not handed to any agent: {why}");
                    continue;
                }
            }
            prepare_repository(s, &j).await;
            let now = s.now();
            let lease =
                now.saturating_add(i64::try_from(s.config.lease.as_millis()).unwrap_or(i64::MAX));
            if let Some(job) = s.store.claim_job(j.id, agent, now, lease).await? {
                claimed = Some(job);
                break;
            }
        }
        let Some(job) = claimed else { return Ok(None) };
        match ticket(s, &job, agent, embedded).await {
            Ok(t) => return Ok(Some(t)),
            // The job cannot run anywhere (its plan or source is gone, a secret unreadable):
            // fail it with the reason and look for another.
            Err(e) => {
                let now = s.now();
                let reason = format!("cannot start: {e}");
                s.store.append_log(job.id, now, &reason).await?;
                let c = JobUpdate {
                    state: JobState::Failed,
                    attempt: job.attempt,
                    run_after: None,
                    error: Some(reason),
                    snapshot_id: None,
                    bytes_read: 0,
                    bytes_written: 0,
                    now,
                };
                s.store.finish(job.id, agent, &c).await?;
            }
        }
    }
}

#[utoipa::path(post, path = "/agents/{name}/claim", security(("token" = ["agent"])), tag = "agents", params(ClaimQuery),
    description = "Long-polls for a job whose source labels the agent carries. 200 with the job's ticket (secrets included), or 204 when none came within `wait` seconds.",
    responses((status = 200, body = Ticket), (status = 204), (status = 404, body = ErrorBody)))]
pub async fn claim(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
    q: Result<Query<ClaimQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = super::jobs::in_range("wait", q.wait, 20, 0, 60)?;
    let agent = s.store.agent(&name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "agent `{name}` is not registered; POST /api/v1/agents first"
        ))
    })?;
    let registered: BTreeMap<String, String> =
        serde_json::from_str(&agent.labels).unwrap_or_default();
    let Principal::Agent {
        labels: bound,
        embedded,
        ..
    } = &p
    else {
        return Err(ApiError::Forbidden(
            "claiming takes an agent credential".into(),
        ));
    };
    // Only what the credential grants counts, whatever the agents table says.
    let labels: BTreeMap<String, String> = registered
        .into_iter()
        .filter(|(k, v)| bound.get(k) == Some(v))
        .collect();
    let embedded = *embedded;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unsigned_abs());
    let mut stopping = s.stopping.subscribe();
    loop {
        if *stopping.borrow_and_update() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let woken = s.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        s.store.touch_agent(&name, s.now()).await?;
        if let Some(t) = claim_for(&s, &name, &labels, embedded).await? {
            tracing::info!(agent = %name, job = t.job, attempt = t.attempt, "job handed to agent");
            return Ok(Json(t).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(s.config.poll.min(deadline - now)) => {}
            // The server is shutting down: no more jobs from this replica.
            _ = stopping.wait_for(|v| *v) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

fn job_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("job `{id}` not found (job ids are numbers)")))
}

fn lost(id: i64, agent: &str) -> ApiError {
    ApiError::Conflict(format!(
        "job {id} is no longer held by agent `{agent}` (its lease expired or it ended); drop it"
    ))
}

/// Job `id`, if agent `agent` holds its lease: only the lease holder reports on a job, and
/// nothing is written to a finished one.
async fn held(s: &AppState, id: i64, agent: &str) -> ApiResult<Job> {
    let job = s.store.must_job(id).await?;
    if job.state != JobState::Running || job.lease_owner.as_deref() != Some(agent) {
        return Err(lost(id, agent));
    }
    Ok(job)
}

#[utoipa::path(post, path = "/agents/{name}/jobs/{id}/heartbeat", security(("token" = ["agent"])), tag = "agents", request_body = Heartbeat,
    description = "Renews the job's lease and records progress. 409 when the lease is lost: stop the job.",
    responses((status = 200, body = HeartbeatReply), (status = 409, body = ErrorBody)))]
pub async fn heartbeat(
    State(s): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    Body(hb): Body<Heartbeat>,
) -> ApiResult<Json<HeartbeatReply>> {
    let id = job_id(&id)?;
    let now = s.now();
    s.store.touch_agent(&name, now).await?;
    let lease = now.saturating_add(i64::try_from(s.config.lease.as_millis()).unwrap_or(i64::MAX));
    match s
        .store
        .heartbeat(
            id,
            &name,
            lease,
            i64::try_from(hb.bytes_read).unwrap_or(i64::MAX),
            i64::try_from(hb.bytes_written).unwrap_or(i64::MAX),
        )
        .await?
    {
        Some(cancel) => Ok(Json(HeartbeatReply { cancel })),
        None => Err(lost(id, &name)),
    }
}

#[utoipa::path(post, path = "/agents/{name}/jobs/{id}/log", security(("token" = ["agent"])), tag = "agents", request_body = LogLines,
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn log(
    State(s): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    Body(l): Body<LogLines>,
) -> ApiResult<StatusCode> {
    let id = job_id(&id)?;
    held(&s, id, &name).await?;
    let lines: Vec<String> = l
        .lines
        .into_iter()
        .map(|mut x| {
            if x.len() > 4000 {
                let mut cut = 4000;
                while !x.is_char_boundary(cut) {
                    cut -= 1;
                }
                x.truncate(cut);
                x.push('…');
            }
            x
        })
        .collect();
    s.store.append_logs(id, s.now(), &lines).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agents/{name}/jobs/{id}/steps", security(("token" = ["agent"])), tag = "agents", request_body = StepReport,
    description = "Records a lifecycle step starting or ending.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn step(
    State(s): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    Body(r): Body<StepReport>,
) -> ApiResult<StatusCode> {
    let id = job_id(&id)?;
    let job = held(&s, id, &name).await?;
    // The attempt it holds, or an earlier one it cleans up after; never one to come.
    if r.attempt == 0 || i64::from(r.attempt) > job.attempt {
        return Err(ApiError::field(
            "attempt",
            format!(
                "job {id} is at attempt {}; report steps of that one or of an earlier one",
                job.attempt
            ),
        ));
    }
    if r.step != RELEASED && r.step != COPY && Step::parse(&r.step).is_none() {
        return Err(ApiError::field(
            "step",
            format!("unknown step `{}`", r.step),
        ));
    }
    let now = s.now();
    let running = r.state == StepState::Running;
    s.store
        .record_step(
            id,
            &StepRow {
                attempt: i64::from(r.attempt),
                step: r.step,
                try_no: i64::from(r.try_no),
                state: r.state,
                agent: name,
                started_at: now,
                finished_at: (!running).then_some(now),
                detail: r.detail,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agents/{name}/jobs/{id}/drill", security(("token" = ["agent"])), tag = "agents", request_body = DrillResult,
    description = "Records a restore drill's report, before the attempt's finish. The server keeps the newest report of each job.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn drill(
    State(s): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    Body(r): Body<DrillResult>,
) -> ApiResult<StatusCode> {
    let id = job_id(&id)?;
    let job = held(&s, id, &name).await?;
    if job.kind != JobKind::Verify {
        return Err(ApiError::Conflict(format!(
            "job {id} is a {} job, not a restore drill",
            job.kind
        )));
    }
    if i64::from(r.attempt) != job.attempt {
        return Err(ApiError::field(
            "attempt",
            format!("job {id} is at attempt {}", job.attempt),
        ));
    }
    if r.report.snapshot.len() != 64 || !r.report.snapshot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::field(
            "report.snapshot",
            "not a restore point id (64 hexadecimal digits)",
        ));
    }
    let (Some(plan), Some(endpoint)) = (job.plan.clone(), job.endpoint.clone()) else {
        return Err(ApiError::Internal(format!(
            "drill job {id} names no plan or endpoint"
        )));
    };
    s.store
        .record_drill(&holdfast_store::DrillRow {
            job_id: id,
            plan,
            endpoint,
            snapshot_id: r.report.snapshot.clone(),
            mode: match r.report.mode {
                holdfast_core::drill::DrillMode::Restore => "restore".into(),
                holdfast_core::drill::DrillMode::Check => "check".into(),
            },
            passed: r.report.passed,
            rto_ms: r.report.rto_secs.map(|s| (s * 1000.0).round() as i64),
            finished_at: s.now(),
            report: serde_json::to_string(&r.report)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/agents/{name}/jobs/{id}/finish", security(("token" = ["agent"])), tag = "agents", request_body = Finish,
    description = "Ends the agent's attempt. The server decides what follows: done, or back in the queue after a backoff, or failed when out of attempts.",
    responses((status = 200, body = JobView), (status = 409, body = ErrorBody)))]
pub async fn finish(
    State(s): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
    Body(f): Body<Finish>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(&id)?;
    let job = held(&s, id, &name).await?;
    let event = match f.outcome {
        Outcome::Succeeded => Event::Succeeded,
        // A failure after a cancel was asked for ends the job, never retries it.
        Outcome::Cancelled => Event::Cancelled,
        Outcome::Failed if job.cancel_requested => Event::Cancelled,
        Outcome::Failed => Event::Failed {
            transient: f.transient,
            reason: f
                .reason
                .clone()
                .unwrap_or_else(|| "failed without a reason".into()),
        },
    };
    // Through the server's proxy the agent could not apply the plan's retention: the
    // server does, before the job shows as succeeded.
    let mut restore_points = f.restore_points;
    if matches!(event, Event::Succeeded)
        && let Some(n) = crate::retention::after_backup(&s, &job).await
    {
        restore_points = Some(n);
    }
    let attempt = u32::try_from(job.attempt).unwrap_or(1);
    let jitter = f64::from(crate::secrets::random_bytes::<1>()[0]) / 256.0;
    let next = transition(
        JobState::Running,
        attempt,
        &event,
        &crate::scheduler::backoff_of(&job),
        jitter,
    )
    .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let now = s.now();
    let line = match (&next.state, &next.error) {
        (JobState::Succeeded, _) => "succeeded".to_string(),
        (JobState::Cancelled, _) => "cancelled; no restore point was saved".to_string(),
        (JobState::Queued, Some(e)) => format!(
            "attempt {attempt} failed: {e}; attempt {} in {} s",
            next.attempt,
            next.retry_in_secs.unwrap_or(0)
        ),
        (_, Some(e)) => format!("failed: {e}"),
        (st, None) => st.as_str().to_string(),
    };
    s.store.append_log(id, now, &line).await?;
    let requeued = next.state == JobState::Queued;
    let c = crate::scheduler::update(
        next,
        now,
        f.snapshot_id,
        (
            i64::try_from(f.bytes_read).unwrap_or(i64::MAX),
            i64::try_from(f.bytes_written).unwrap_or(i64::MAX),
        ),
    );
    if let Some(n) = restore_points {
        s.store
            .set_restore_points(id, i64::try_from(n).unwrap_or(i64::MAX))
            .await?;
    }
    if !s.store.finish(id, &name, &c).await? {
        return Err(lost(id, &name));
    }
    if requeued {
        s.wake.notify_waiters();
    }
    // What the endpoint's repository holds may have changed: read it again when next shown.
    if let Some(ep) = &job.endpoint {
        s.endpoint_stats.lock().unwrap().remove(ep);
    }
    Ok(Json(JobView::new(&s.store.must_job(id).await?)))
}

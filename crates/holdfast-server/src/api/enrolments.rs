//! Agent identity: an admin makes an enrolment token (single- or limited-use, expiring); an
//! agent trades it once for a credential of its own, bound to its name and the labels it may
//! serve; an admin revokes an agent, and its running jobs fail over like a dead agent's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use holdfast_core::agent::{Enrolled, Hello};
use holdfast_store::{AgentRow, NewToken, TokenRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::{beyond, check_hello};
use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::access::Principal;
use crate::model::rfc3339;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_enrolments, create_enrolment))
        .routes(routes!(enrol))
        .routes(routes!(revoke_agent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentInput {
    /// The only agent name that may enrol with it; any name when absent.
    #[serde(default)]
    pub agent: Option<String>,
    /// The labels an agent enrolling with it may serve (it may ask for fewer). Absent: none
    /// (the agent serves only unlabelled sources), unless `any_labels`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// The agent's credential is bound to whatever labels it asks for at enrolment (then it
    /// may receive the jobs, and secrets, of any labelled source): only on purpose.
    #[serde(default)]
    pub any_labels: bool,
    /// How many agents may enrol with it: 1 to 1000 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub uses: Option<i64>,
    /// Seconds it stays valid: 60 to 2,592,000 (30 days; default 86,400, a day).
    #[serde(default)]
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in_secs: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolmentView {
    pub id: i64,
    pub agent: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub uses_left: i64,
    pub created_at: String,
    pub expires_at: String,
    /// Only in the answer to the create call: the token itself (`hf_enrol_…`). Give it to
    /// the agent as HOLDFAST_TOKEN; it is not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn view(t: &TokenRow) -> EnrolmentView {
    EnrolmentView {
        id: t.id,
        agent: t.agent.clone(),
        labels: t
            .labels
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok()),
        uses_left: t.uses_left.unwrap_or(0),
        created_at: rfc3339(t.created_at),
        expires_at: rfc3339(t.expires_at.unwrap_or(0)),
        token: None,
    }
}

#[utoipa::path(get, path = "/enrolments", security(("token" = ["access"])), tag = "agents",
    description = "Enrolment tokens that can still be used.",
    responses((status = 200, body = [EnrolmentView])))]
pub async fn list_enrolments(
    State(s): State<Arc<AppState>>,
) -> ApiResult<Json<Vec<EnrolmentView>>> {
    let now = s.now();
    Ok(Json(
        s.store
            .tokens()
            .await?
            .iter()
            .filter(|t| {
                t.kind == "enrol" && t.revoked_at.is_none() && t.expires_at.is_some_and(|e| e > now)
            })
            .map(view)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/enrolments", security(("token" = ["access"])), tag = "agents",
    request_body = EnrolmentInput,
    description = "Makes an enrolment token for agents. The answer holds it, shown only this once; revoke it with DELETE /tokens/{id}.",
    responses((status = 201, body = EnrolmentView), (status = 422, body = ErrorBody)))]
pub async fn create_enrolment(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(e): Body<EnrolmentInput>,
) -> ApiResult<(StatusCode, Json<EnrolmentView>)> {
    if let Some(a) = &e.agent {
        check_hello(&Hello {
            name: a.clone(),
            labels: BTreeMap::new(),
            version: String::new(),
            hostname: String::new(),
            slots: 1,
        })
        .map_err(|_| ApiError::field("agent", "1 to 100 letters, digits, `-`, `_`, `.` or `:`"))?;
    }
    if e.any_labels && e.labels.is_some() {
        return Err(ApiError::field(
            "any_labels",
            "give either `labels` or `any_labels`, not both",
        ));
    }
    let allowed = if e.any_labels {
        None
    } else {
        Some(e.labels.clone().unwrap_or_default())
    };
    if let Some(l) = &e.labels {
        let problems = holdfast_core::plan::label_problems(l.iter());
        if !problems.is_empty() {
            return Err(ApiError::field("labels", problems.join("; ")));
        }
    }
    let uses = super::jobs::in_range("uses", e.uses, 1, 1, 1000)?;
    let secs = super::jobs::in_range("expires_in_secs", e.expires_in_secs, 86_400, 60, 2_592_000)?;
    let token = format!(
        "hf_enrol_{}",
        hex::encode(crate::secrets::random_bytes::<32>())
    );
    let now = s.now();
    let labels = allowed
        .as_ref()
        .map(|l| serde_json::to_string(l).expect("labels serialize"));
    let name = format!("enrolment by {}", p.actor());
    let id = s
        .store
        .insert_token(
            &NewToken {
                name: &name,
                hash: &crate::secrets::hash_token(&token),
                kind: "enrol",
                user_id: p.user_id(),
                role: "viewer",
                expires_at: Some(now + secs * 1000),
                agent: e.agent.as_deref(),
                labels: labels.as_deref(),
                uses_left: Some(uses),
                scope: None,
            },
            now,
        )
        .await?;
    let t = s.store.token(id).await?.ok_or_else(|| {
        ApiError::Internal(format!("enrolment token {id} vanished after its insert"))
    })?;
    let mut v = view(&t);
    v.token = Some(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/agents/enrol", security(("token" = ["enrol"])), tag = "agents",
    request_body = Hello,
    description = "An agent trades an enrolment token for a credential of its own, bound to its name and labels (shown only this once). Refused for a name that already has a live credential: revoke that agent first.",
    responses((status = 201, body = Enrolled), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn enrol(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(h): Body<Hello>,
) -> ApiResult<(StatusCode, Json<Enrolled>)> {
    let Principal::Enrolment {
        token_id,
        agent,
        labels,
    } = p
    else {
        return Err(ApiError::Forbidden(
            "enrolling takes an enrolment token".into(),
        ));
    };
    check_hello(&h)?;
    if let Some(a) = &agent
        && *a != h.name
    {
        return Err(ApiError::Forbidden(format!(
            "this enrolment token is for agent `{a}`, not `{}`",
            h.name
        )));
    }
    if let Some(allowed) = &labels
        && let Some(why) = beyond(&h.labels, allowed)
    {
        return Err(ApiError::Forbidden(format!(
            "this enrolment token does not allow {why}"
        )));
    }
    let now = s.now();
    let taken = s.store.tokens().await?.into_iter().any(|t| {
        t.kind == "agent" && t.agent.as_deref() == Some(h.name.as_str()) && t.revoked_at.is_none()
    });
    if taken || s.config.replica.as_deref() == Some(h.name.as_str()) {
        return Err(ApiError::Conflict(format!(
            "agent `{}` is enrolled already; pick another name, or revoke it first (POST \
             /api/v1/agents/{}/revoke)",
            h.name, h.name
        )));
    }
    if !s.store.use_enrolment(token_id, now).await? {
        return Err(ApiError::Unauthorized(
            "this enrolment token is used up, expired or revoked".into(),
        ));
    }
    let credential = format!(
        "hf_agent_{}",
        hex::encode(crate::secrets::random_bytes::<32>())
    );
    let bound = serde_json::to_string(&h.labels).expect("labels serialize");
    s.store
        .insert_token(
            &NewToken {
                name: &format!("agent {}", h.name),
                hash: &crate::secrets::hash_token(&credential),
                kind: "agent",
                user_id: None,
                role: "viewer",
                expires_at: None,
                agent: Some(&h.name),
                labels: Some(&bound),
                uses_left: None,
                scope: None,
            },
            now,
        )
        .await?;
    s.store
        .upsert_agent(&AgentRow {
            name: h.name.clone(),
            labels: bound,
            version: h.version.clone(),
            hostname: h.hostname.clone(),
            slots: i64::from(h.slots),
            registered_at: now,
            last_seen: now,
        })
        .await?;
    tracing::info!(agent = %h.name, labels = ?h.labels, "agent enrolled");
    Ok((
        StatusCode::CREATED,
        Json(Enrolled {
            name: h.name,
            labels: h.labels,
            credential,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Credentials revoked.
    pub credentials: u64,
    /// Running jobs taken back from the agent (back to the queue, or failed when out of
    /// attempts).
    pub jobs: Vec<i64>,
}

#[utoipa::path(post, path = "/agents/{name}/revoke", security(("token" = ["access"])), tag = "agents",
    description = "Revokes an agent's credentials at once: its next call is refused, and its running jobs are taken back as a dead agent's are.",
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody)))]
pub async fn revoke_agent(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Revoked>> {
    let now = s.now();
    let credentials = s.store.revoke_agent_tokens(&name, now).await?;
    if credentials == 0 && s.store.agent(&name).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "agent `{name}` is not enrolled"
        )));
    }
    let held = s.store.expire_leases_of(&name, now).await?;
    let jitter = f64::from(crate::secrets::random_bytes::<1>()[0]) / 256.0;
    let jobs: Vec<i64> = crate::scheduler::reap(&s.store, now, jitter)
        .await?
        .into_iter()
        .filter(|j| held.contains(j))
        .collect();
    tracing::warn!(agent = %name, credentials, jobs = ?jobs, "agent revoked");
    Ok(Json(Revoked { credentials, jobs }))
}

//! `/api/v1/tokens`: API tokens (stored as hashes; a new token is shown once), each with a
//! role no higher than its owner's and an optional expiry; revoke. Everyone manages their
//! own tokens; the `access` permission sees and revokes all of them (agent credentials and
//! enrolment tokens included).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use holdfast_store::{NewToken, TokenRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::access::{Perm, Principal, Role};
use crate::model::rfc3339;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Who or what uses the token: 1 to 100 characters, not all blank.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// What it may do; at most what its owner may (default: the owner's role).
    #[serde(default)]
    pub role: Option<Role>,
    /// Seconds until it stops working: 60 to 315,360,000 (ten years); none: until revoked.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 315360000)]
    pub expires_in_secs: Option<i64>,
    /// The account it is for (a service account, say); only with the `access` permission.
    /// Default: the caller's own.
    #[serde(default)]
    pub user: Option<String>,
    /// Plan labels the token is limited to, on top of its owner's scope and the caller's
    /// (a token can only narrow): `{"team": "payments"}`.
    #[serde(default)]
    pub scope: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    /// `api`, `agent` (an agent's credential) or `enrol` (an enrolment token).
    pub kind: String,
    /// The account it belongs to (API tokens).
    pub user: Option<String>,
    pub role: Option<Role>,
    /// The agent it belongs to (agent credentials) or is for (enrolments).
    pub agent: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The plan labels the token adds to its owner's scope; empty: none.
    pub scope: std::collections::BTreeMap<String, String>,
    /// Only in the answer to the create call: the token itself. It is not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

async fn token_view(s: &AppState, t: &TokenRow) -> ApiResult<TokenView> {
    let user = match t.user_id {
        Some(id) => s.store.user(id).await?.map(|u| u.name),
        None => None,
    };
    Ok(TokenView {
        id: t.id,
        name: t.name.clone(),
        kind: t.kind.clone(),
        user,
        role: (t.kind == "api").then(|| Role::parse(&t.role)).flatten(),
        agent: t.agent.clone(),
        created_at: rfc3339(t.created_at),
        last_used_at: t.last_used_at.map(rfc3339),
        expires_at: t.expires_at.map(rfc3339),
        revoked_at: t.revoked_at.map(rfc3339),
        scope: t
            .scope
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default(),
        token: None,
    })
}

/// Whether `p` may see and revoke token `t`: its own, or any with `access`.
fn owns(p: &Principal, t: &TokenRow) -> bool {
    p.can(Perm::Access) || (t.kind == "api" && p.user_id().is_some() && t.user_id == p.user_id())
}

#[utoipa::path(get, path = "/tokens", security(("token" = ["own"])), tag = "tokens",
    description = "The caller's own tokens; with the `access` permission, every token (agent credentials and enrolment tokens too).",
    responses((status = 200, body = [TokenView])))]
pub async fn list_tokens(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let mut out = Vec::new();
    for t in s.store.tokens().await?.iter().filter(|t| owns(&p, t)) {
        out.push(token_view(&s, t).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/tokens", security(("token" = ["own"])), tag = "tokens", request_body = TokenInput,
    description = "Creates an API token for the caller (or, with `access`, for another account). Its role can be no higher than the caller's and its owner's. The answer holds the token; it is shown only this once.",
    responses((status = 201, body = TokenView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Body(input): Body<TokenInput>,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    let Principal::User { perms, role, .. } = &p else {
        return Err(ApiError::Forbidden("tokens are for users".into()));
    };
    if input.name.trim().is_empty() || input.name.chars().count() > 100 {
        return Err(ApiError::field(
            "name",
            "1 to 100 characters, saying who or what uses the token",
        ));
    }
    let (owner_id, owner_role) = match &input.user {
        Some(name) => {
            p.require(Perm::Access, "a token for another account")?;
            let u = s
                .store
                .user_by_name(name)
                .await?
                .ok_or_else(|| ApiError::field("user", format!("no account `{name}`")))?;
            let r = Role::parse(&u.role)
                .ok_or_else(|| ApiError::Internal(format!("account {name} has unknown role")))?;
            (Some(u.id), r)
        }
        None => (p.user_id(), *role),
    };
    let want = input.role.unwrap_or(owner_role);
    if !perms.covers(want.perms()) || !owner_role.covers(want) {
        return Err(ApiError::Forbidden(format!(
            "a token with role {} would be worth more than its owner (role {}) or than this \
             credential; pick a lower role",
            want.as_str(),
            owner_role.as_str()
        )));
    }
    if let Some(p) = holdfast_core::plan::label_problems(input.scope.iter())
        .into_iter()
        .next()
    {
        return Err(ApiError::field("scope", p));
    }
    // Never wider than the credential that makes it (a scoped token makes scoped tokens).
    let scope = p
        .scope()
        .narrowed(&input.scope)
        .map_err(|e| ApiError::field("scope", e))?;
    if let Some(id) = owner_id
        && let Some(owner) = s.store.user(id).await?
    {
        crate::access::Scope::from_json(owner.scope.as_deref())
            .map_err(ApiError::Internal)?
            .narrowed(&scope.labels().cloned().unwrap_or_default())
            .map_err(|e| ApiError::field("scope", e))?;
    }
    let scope_json = scope.to_json();
    let expires_at = match input.expires_in_secs {
        None => None,
        Some(v) => {
            let secs = super::jobs::in_range("expires_in_secs", Some(v), 0, 60, 315_360_000)?;
            Some(s.now() + secs * 1000)
        }
    };
    let token = crate::secrets::new_token();
    let now = s.now();
    let id = s
        .store
        .insert_token(
            &NewToken {
                name: input.name.trim(),
                hash: &crate::secrets::hash_token(&token),
                kind: "api",
                user_id: owner_id,
                role: want.as_str(),
                expires_at,
                scope: scope_json.as_deref(),
                ..NewToken::default()
            },
            now,
        )
        .await?;
    let t = s
        .store
        .token(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("token {id} vanished after its insert")))?;
    let mut v = token_view(&s, &t).await?;
    v.token = Some(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/tokens/{id}", security(("token" = ["own"])), tag = "tokens",
    description = "Revokes a token at once: one's own, or with `access` any (an agent's credential or an enrolment token too). The last way an admin can get in cannot be revoked (409).",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let missing = || ApiError::NotFound(format!("no live token with id {id} of yours"));
    let n: i64 = id.parse().map_err(|_| missing())?;
    let t = s.store.token(n).await?.ok_or_else(missing)?;
    if !owns(&p, &t) {
        return Err(missing());
    }
    if s.store.revoke_token(n, s.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no live token with id {n} (it may be revoked already)"
        )))
    }
}

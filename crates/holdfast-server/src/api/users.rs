//! `/api/v1/users`: accounts (people who sign in with a password, and service accounts that
//! only hold tokens), each with a role; and `/api/v1/whoami`, what the caller is.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use holdfast_store::UserRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::access::{Perm, Principal, Role, Scope, password};
use crate::model::rfc3339;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(whoami))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// A person: signs in to the UI with a password.
    User,
    /// A program (CI, a dashboard): only tokens, no sign-in.
    Service,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    pub name: String,
    #[serde(default = "user_kind")]
    pub kind: AccountKind,
    pub role: Role,
    /// For kind `user`: at least 12 characters. Write-only.
    #[serde(default)]
    pub password: Option<String>,
    /// Plan labels the account is limited to (`{"team": "payments"}`): it sees and acts on
    /// the plans carrying all of them, changes nothing else, and never has `access`, `audit`
    /// or `commands`. Absent or empty: every plan.
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
}

fn user_kind() -> AccountKind {
    AccountKind::User
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    pub role: Option<Role>,
    /// A new password (ends the account's UI sessions). Write-only.
    #[serde(default)]
    pub password: Option<String>,
    /// `true` disables the account: its tokens and sessions stop working at once.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// A new scope (`{}`: every plan); ends the account's UI sessions.
    #[serde(default)]
    pub scope: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub kind: AccountKind,
    pub role: Role,
    pub password_set: bool,
    /// Made by a sign-in through the OpenID provider: its role follows the provider's groups
    /// at each sign-in.
    pub oidc: bool,
    /// The plan labels the account is limited to; empty: every plan.
    pub scope: BTreeMap<String, String>,
    /// Locked after repeated failed sign-ins, until this time.
    pub locked_until: Option<String>,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

fn view(u: &UserRow, now: i64) -> UserView {
    UserView {
        name: u.name.clone(),
        kind: if u.kind == "service" {
            AccountKind::Service
        } else {
            AccountKind::User
        },
        role: Role::parse(&u.role).unwrap_or(Role::Viewer),
        password_set: u.password_hash.is_some(),
        oidc: u.oidc_subject.is_some(),
        scope: u
            .scope
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default(),
        locked_until: u.locked_until.filter(|t| *t > now).map(rfc3339),
        created_at: rfc3339(u.created_at),
        disabled_at: u.disabled_at.map(rfc3339),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

#[utoipa::path(get, path = "/users", security(("token" = ["access"])), tag = "users",
    responses((status = 200, body = [UserView])))]
pub async fn list_users(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<UserView>>> {
    let now = s.now();
    Ok(Json(
        s.store
            .users()
            .await?
            .iter()
            .map(|u| view(u, now))
            .collect(),
    ))
}

#[utoipa::path(post, path = "/users", security(("token" = ["access"])), tag = "users", request_body = UserInput,
    responses((status = 201, body = UserView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(s): State<Arc<AppState>>,
    Body(u): Body<UserInput>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    if !valid_name(&u.name) {
        return Err(ApiError::field(
            "name",
            "1 to 64 letters, digits, `-`, `_`, `.` or `@`",
        ));
    }
    let hash = match (u.kind, &u.password) {
        (AccountKind::Service, Some(_)) => {
            return Err(ApiError::field(
                "password",
                "service accounts do not sign in; give them tokens (POST /api/v1/tokens with `user`)",
            ));
        }
        (AccountKind::Service, None) => None,
        (AccountKind::User, None) => {
            return Err(ApiError::field("password", "required for kind `user`"));
        }
        (AccountKind::User, Some(p)) => {
            if let Some(why) = password::weak(p) {
                return Err(ApiError::field("password", why));
            }
            Some(password::hash(p))
        }
    };
    let scope = scope_of(&u.scope)?;
    let now = s.now();
    let row = UserRow {
        id: 0,
        name: u.name.clone(),
        kind: match u.kind {
            AccountKind::User => "user",
            AccountKind::Service => "service",
        }
        .into(),
        role: u.role.as_str().into(),
        password_hash: hash,
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        disabled_at: None,
        oidc_subject: None,
        scope: scope.to_json(),
    };
    row_or_conflict(s.store.insert_user(&row).await, &u.name)?;
    Ok((StatusCode::CREATED, Json(view(&row, now))))
}

fn row_or_conflict<T>(r: holdfast_store::Result<T>, name: &str) -> ApiResult<T> {
    r.map_err(|e| match e {
        holdfast_store::StoreError::Exists { .. } => {
            ApiError::Conflict(format!("an account `{name}` exists already"))
        }
        e => e.into(),
    })
}

fn scope_of(labels: &BTreeMap<String, String>) -> ApiResult<Scope> {
    let problems = holdfast_core::plan::label_problems(labels.iter());
    if let Some(p) = problems.into_iter().next() {
        return Err(ApiError::field("scope", p));
    }
    Ok(Scope::of(labels.clone()))
}

async fn must_user(s: &AppState, name: &str) -> ApiResult<UserRow> {
    s.store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account `{name}`")))
}

#[utoipa::path(put, path = "/users/{name}", security(("token" = ["access"])), tag = "users", request_body = UserChange,
    description = "Changes an account's role, password or whether it is disabled. The last enabled admin cannot be demoted or disabled (409).",
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_user(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Body(c): Body<UserChange>,
) -> ApiResult<Json<UserView>> {
    let u = must_user(&s, &name).await?;
    let hash = match &c.password {
        Some(_) if u.kind == "service" => {
            return Err(ApiError::field(
                "password",
                "service accounts do not sign in",
            ));
        }
        Some(p) => {
            if let Some(why) = password::weak(p) {
                return Err(ApiError::field("password", why));
            }
            Some(password::hash(p))
        }
        None => None,
    };
    let scope = c.scope.as_ref().map(scope_of).transpose()?;
    let now = s.now();
    let disabled = c.disabled.map(|d| d.then_some(now));
    let scope_json = scope.as_ref().map(Scope::to_json);
    // One transaction: a change the last-admin guard refuses leaves nothing half done.
    s.store
        .update_user(
            u.id,
            &holdfast_store::UserChange {
                role: c.role.map(Role::as_str),
                password_hash: hash.as_deref().map(Some),
                disabled_at: disabled,
                scope: scope_json.as_ref().map(Option::as_deref),
            },
        )
        .await?;
    // Whatever a browser holds of what the account no longer has ends.
    if c.password.is_some() || c.disabled == Some(true) || c.role.is_some() || scope.is_some() {
        s.store.delete_sessions_of(u.id).await?;
    }
    let u = must_user(&s, &name).await?;
    Ok(Json(view(&u, now)))
}

#[utoipa::path(delete, path = "/users/{name}", security(("token" = ["access"])), tag = "users",
    description = "Deletes an account with its tokens and sessions. The last enabled admin cannot be deleted (409).",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let u = must_user(&s, &name).await?;
    s.store.delete_user(u.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// The credential's role (a token's may be lower than its account's).
    pub role: Role,
    /// What it may do: read, audit, run, configure, access, overwrite, commands.
    pub permissions: Vec<String>,
    /// The token used, if the call came with one.
    pub token: Option<String>,
    /// The plan labels the credential is limited to; empty: every plan.
    pub scope: BTreeMap<String, String>,
}

#[utoipa::path(get, path = "/whoami", security(("token" = ["own"])), tag = "users",
    description = "Who the caller is and what its credential may do.",
    responses((status = 200, body = WhoAmI)))]
pub async fn whoami(axum::Extension(p): axum::Extension<Principal>) -> ApiResult<Json<WhoAmI>> {
    let Principal::User {
        name, role, token, ..
    } = &p
    else {
        return Err(ApiError::Forbidden("not a user's credential".into()));
    };
    let permissions = [
        Perm::Read,
        Perm::Audit,
        Perm::Run,
        Perm::Configure,
        Perm::Access,
        Perm::Overwrite,
        Perm::Commands,
    ]
    .into_iter()
    .filter(|x| p.can(*x))
    .map(|x| x.name().to_string())
    .collect();
    Ok(Json(WhoAmI {
        name: name.clone(),
        role: *role,
        permissions,
        token: token.as_ref().map(|t| t.1.clone()),
        scope: p.scope().labels().cloned().unwrap_or_default(),
    }))
}

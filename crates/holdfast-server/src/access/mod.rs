//! Who is calling and what they may do, checked in one place for every API route: the
//! bearer token (or the UI's session) becomes a [`Principal`], and the route's need, read
//! from its OpenAPI entry, is met or the request ends in 401/403 before any handler runs.

pub mod oidc;
pub mod password;
pub mod role;
pub mod scope;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use holdfast_store::TokenRow;

pub use role::{Perm, Perms, Role};
pub use scope::Scope;

use crate::AppState;
use crate::api::ApiError;

/// The caller of a request (a request extension once authenticated).
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person or service account, through an API token or a UI session.
    User {
        user_id: Option<i64>,
        name: String,
        /// What this credential may do: its own role's permissions and its owner's, both.
        perms: Perms,
        role: Role,
        /// The API token used, if it was one (not a UI session).
        token: Option<(i64, String)>,
        /// The plans it is limited to (its owner's scope, narrowed by the token's).
        scope: Scope,
    },
    /// An agent's own credential (or the embedded agent's, made at each start).
    Agent {
        name: String,
        labels: BTreeMap<String, String>,
        embedded: bool,
    },
    /// An enrolment token: it may only turn itself into an agent credential.
    Enrolment {
        token_id: i64,
        agent: Option<String>,
        labels: Option<BTreeMap<String, String>>,
    },
}

impl Principal {
    /// Who, as the audit log and job logs name them.
    pub fn actor(&self) -> String {
        match self {
            Self::User { name, token, .. } => match token {
                Some((_, t)) => format!("{name} (token {t})"),
                None => name.clone(),
            },
            Self::Agent { name, .. } => format!("agent {name}"),
            Self::Enrolment { token_id, .. } => format!("enrolment token {token_id}"),
        }
    }

    /// A user's or token's role; `None` for agents and enrolments.
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::User { role, .. } => Some(*role),
            _ => None,
        }
    }

    pub fn can(&self, p: Perm) -> bool {
        matches!(self, Self::User { perms, .. } if perms.has(p))
    }

    /// `Ok` when the caller holds `p`; otherwise the 403 that says what is missing.
    pub fn require(&self, p: Perm, what: &str) -> Result<(), ApiError> {
        if self.can(p) {
            return Ok(());
        }
        Err(ApiError::Forbidden(match self {
            Self::User { role, .. } => format!(
                "{what} needs the `{}` permission, which this credential (role {}) does not \
                 have; ask an admin{}",
                p.name(),
                role.as_str(),
                match p {
                    Perm::Commands => " (hooks and `cmd:` commands are admin-only)",
                    Perm::Overwrite => " (replacing a database needs an operator or admin)",
                    _ => "",
                }
            ),
            _ => format!(
                "{what} is not for agent or enrolment credentials: use an API token of a user"
            ),
        }))
    }

    pub fn user_id(&self) -> Option<i64> {
        match self {
            Self::User { user_id, .. } => *user_id,
            _ => None,
        }
    }
}

/// What a route asks of its caller: the scope of its OpenAPI `token` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Perm(Perm),
    /// The agent API: an agent credential whose name is the route's `{name}`.
    Agent,
    /// `POST /agents/enrol`: an enrolment token.
    Enrol,
    /// Any user credential; the handler limits it to what is the caller's own.
    Own,
}

impl Need {
    pub fn parse(scope: &str) -> Option<Self> {
        match scope {
            "agent" => Some(Self::Agent),
            "enrol" => Some(Self::Enrol),
            "own" => Some(Self::Own),
            s => Perm::parse(s).map(Self::Perm),
        }
    }
}

/// Each documented route's need, from the OpenAPI document (built once).
fn needs() -> &'static HashMap<(Method, String), Option<Need>> {
    static NEEDS: OnceLock<HashMap<(Method, String), Option<Need>>> = OnceLock::new();
    NEEDS.get_or_init(|| {
        let doc = serde_json::to_value(crate::api::openapi()).expect("the document serializes");
        let mut map = HashMap::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(m) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let scopes = op["security"][0]["token"].as_array();
                let need = match scopes.map(Vec::as_slice) {
                    Some([s]) => s.as_str().and_then(Need::parse),
                    _ => None,
                };
                map.insert((m, path.clone()), need);
            }
        }
        map
    })
}

/// The need of the route `path` (as matched, `/api/v1/plans/{name}`). `None`: the route has
/// no single known need in the document, and is refused (fail closed).
pub fn need_for(method: &Method, path: &str) -> Option<Need> {
    if path == "/metrics" || path == "/api/v1/openapi.json" {
        return Some(Need::Perm(Perm::Read));
    }
    needs()
        .get(&(method.clone(), path.to_string()))
        .copied()
        .flatten()
}

/// Why a credential was refused (a 401).
fn unauthenticated(why: &str) -> ApiError {
    ApiError::Unauthorized(why.to_string())
}

/// The principal behind bearer token `token`.
pub async fn from_token(s: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = crate::secrets::hash_token(token);
    if s.internal_token_hash.as_deref() == Some(hash.as_str()) {
        return Ok(Principal::Agent {
            name: s.config.replica.clone().unwrap_or_default(),
            labels: s.config.agent_labels.clone(),
            embedded: true,
        });
    }
    let Some(t) = s.store.token_by_hash(&hash).await? else {
        return Err(unauthenticated("unknown API token"));
    };
    let now = s.now();
    if t.revoked_at.is_some() {
        return Err(unauthenticated(if t.kind == "enrol" {
            "this enrolment token is used up or revoked; ask an admin for a new one"
        } else {
            "this token was revoked; create a new one"
        }));
    }
    if t.expires_at.is_some_and(|e| e <= now) {
        return Err(unauthenticated("this token has expired; create a new one"));
    }
    let p = principal_of(s, &t).await?;
    if t.kind != "enrol" {
        s.store.touch_token(t.id, now).await?;
    }
    Ok(p)
}

async fn principal_of(s: &AppState, t: &TokenRow) -> Result<Principal, ApiError> {
    let labels = |l: &Option<String>| -> Result<Option<BTreeMap<String, String>>, ApiError> {
        l.as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("token {}: labels do not read: {e}", t.id)))
    };
    match t.kind.as_str() {
        "api" => {
            let role = Role::parse(&t.role).ok_or_else(|| {
                ApiError::Internal(format!("token {} has unknown role `{}`", t.id, t.role))
            })?;
            let (name, perms, owner_scope) = match t.user_id {
                None => (t.name.clone(), role.perms(), Scope::ALL),
                Some(id) => {
                    let Some(u) = s.store.user(id).await? else {
                        return Err(unauthenticated("this token's account is gone"));
                    };
                    if u.disabled_at.is_some() {
                        return Err(unauthenticated("this token's account is disabled"));
                    }
                    let owner = Role::parse(&u.role).ok_or_else(|| {
                        ApiError::Internal(format!("account {} has unknown role", u.name))
                    })?;
                    let scope = Scope::from_json(u.scope.as_deref())
                        .map_err(|e| ApiError::Internal(format!("account {}: {e}", u.name)))?;
                    (u.name, role.perms().and(owner.perms()), scope)
                }
            };
            let scope = owner_scope
                .narrowed(&labels(&t.scope)?.unwrap_or_default())
                .map_err(|_| {
                    unauthenticated(
                        "this token's scope no longer fits its account's (an admin changed it); \
                         create a new token",
                    )
                })?;
            Ok(Principal::User {
                user_id: t.user_id,
                name,
                perms: scope.cap(perms),
                role,
                token: Some((t.id, t.name.clone())),
                scope,
            })
        }
        "agent" => Ok(Principal::Agent {
            name: t
                .agent
                .clone()
                .ok_or_else(|| ApiError::Internal(format!("agent token {} has no agent", t.id)))?,
            labels: labels(&t.labels)?.unwrap_or_default(),
            embedded: false,
        }),
        "enrol" => Ok(Principal::Enrolment {
            token_id: t.id,
            agent: t.agent.clone(),
            labels: labels(&t.labels)?,
        }),
        k => Err(ApiError::Internal(format!(
            "token {} has unknown kind `{k}`",
            t.id
        ))),
    }
}

/// Checks that `p` may call a route with need `need` (`path_agent`: the route's `{name}`).
pub fn allow(p: &Principal, need: Option<Need>, path_agent: Option<&str>) -> Result<(), ApiError> {
    let Some(need) = need else {
        return Err(ApiError::Forbidden(
            "this route has no permission declared; it is refused (a server bug: report it)".into(),
        ));
    };
    match (need, p) {
        (Need::Perm(perm), _) => p.require(perm, "this request"),
        (Need::Own, Principal::User { .. }) => Ok(()),
        (Need::Agent, Principal::Agent { name, .. }) => match path_agent {
            Some(n) if n == name => Ok(()),
            Some(n) => Err(ApiError::Forbidden(format!(
                "this credential belongs to agent `{name}`; it cannot act as agent `{n}`"
            ))),
            None => Ok(()),
        },
        (Need::Enrol, Principal::Enrolment { .. }) => Ok(()),
        (Need::Agent, _) => Err(ApiError::Forbidden(
            "the agent API takes an agent's own credential: enrol the agent with an enrolment \
             token (POST /api/v1/enrolments), not a user's API token"
                .into(),
        )),
        (Need::Enrol, _) => Err(ApiError::Forbidden(
            "enrolling takes an enrolment token (POST /api/v1/enrolments makes one)".into(),
        )),
        (Need::Own, _) => Err(ApiError::Forbidden(
            "this route is for users' credentials, not agents'".into(),
        )),
    }
}

/// What a credential scoped to some plans may not reach whatever its role: changes to
/// anything but plans, and the server-wide metrics.
pub fn scoped_route(p: &Principal, need: Option<Need>, path: &str) -> Result<(), ApiError> {
    if p.scope().is_all() {
        return Ok(());
    }
    let plans = path.starts_with("/api/v1/plans") || path.starts_with("/ui/plans");
    match need {
        Some(Need::Perm(Perm::Configure)) if !plans => {
            p.require_unscoped("changing endpoints, sources or notifiers")
        }
        _ if path == "/metrics" => p.require_unscoped("the server-wide metrics"),
        _ => Ok(()),
    }
}

/// For a scoped credential, the plan or job a route names (`/plans/{name}…`, `/jobs/{id}…`)
/// must be within its scope: else it is "not found", as if absent.
async fn scoped_item(
    s: &AppState,
    p: &Principal,
    pattern: &str,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let path = uri.path();
    if pattern == "/api/v1/restore-points" {
        let q: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        return match q.iter().find(|(k, _)| k == "plan") {
            Some((_, plan)) => scope::check_plan(&s.store, p, plan).await,
            None => p.require_unscoped("listing a whole endpoint's restore points"),
        };
    }
    // A nested router sees its path without `/api/v1`: the segment after the kind is used.
    scope::check_path(&s.store, p, pattern, path, "/api/v1").await
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The API's auth layer: authenticates, checks the route's need, and hands the handler the
/// [`Principal`].
pub async fn layer(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(&req) else {
        return unauthenticated("no API token").into_response();
    };
    let p = match from_token(&s, token).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // An unknown path has no matched route: it goes on to the 404, authenticated.
    if let Some(path) = req.extensions().get::<MatchedPath>().map(|m| m.as_str()) {
        let need = need_for(req.method(), path);
        // The `{name}` of an agent route (a nested router sees its path without `/api/v1`).
        let agent = if path.starts_with("/api/v1/agents/{name}") {
            let parts: Vec<&str> = req.uri().path().split('/').collect();
            parts
                .iter()
                .position(|p| *p == "agents")
                .and_then(|i| parts.get(i + 1).copied())
        } else {
            None
        };
        let mut checked = allow(&p, need, agent).and(scoped_route(&p, need, path));
        if checked.is_ok() && !p.scope().is_all() {
            checked = scoped_item(&s, &p, path, req.uri()).await;
        }
        if let Err(e) = checked {
            // The audit layer names who was refused.
            let mut resp = e.into_response();
            resp.extensions_mut().insert(p);
            return resp;
        }
    }
    req.extensions_mut().insert(p.clone());
    let mut resp = next.run(req).await;
    // For the audit layer around this one.
    resp.extensions_mut().insert(p);
    resp
}

/// Why a `file://` or `sqlite://` source or target at `url` would touch the server's own data
/// directory (its metadata, its key, its repository), if it would: refused for every role.
pub fn server_path(s: &AppState, url: &str) -> Option<String> {
    use holdfast_core::location::{SourceSpec, confine};
    let path = match SourceSpec::parse(url, Some("-")).ok()? {
        SourceSpec::Folder { path } | SourceSpec::Sqlite { path } => path,
        _ => return None,
    };
    let data = &s.config.data_dir;
    confine::overlaps(&path, data).then(|| {
        format!(
            "{} is (or holds) the server's own data directory {}; back up the server with \
             its own tools, never through a source",
            path.display(),
            data.display()
        )
    })
}

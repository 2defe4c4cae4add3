//! Signing in to the UI: a user name and password (argon2id, with a brake on repeated
//! failures), or an API token; either makes a server-side session. The cookie holds only a
//! random session id (HttpOnly, SameSite=Strict, Secure behind TLS); signing out deletes the
//! session. Every form carries the session's own random CSRF token, compared in constant
//! time; the sign-in form carries one of its own, bound to a cookie.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_store::SessionRow;
use maud::{Markup, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{error_page, page};
use crate::AppState;
use crate::access::{Perm, Principal, Role, Scope, password};
use crate::audit::{self, Entry};

pub(super) const COOKIE: &str = "holdfast_session";
const LOGIN_COOKIE: &str = "holdfast_signin";
/// A session ends this long after sign-in…
pub(super) const LIFETIME_MS: i64 = 12 * 60 * 60 * 1000;
/// …or after this long without use.
pub const IDLE_MS: i64 = 2 * 60 * 60 * 1000;

/// A signed-in browser: who, and the session's CSRF token.
pub struct Session {
    pub csrf: String,
    pub who: Principal,
}

impl Session {
    pub fn can(&self, p: Perm) -> bool {
        self.who.can(p)
    }

    /// Whether this session may post the form at `action` (`/ui/plans/nightly/run`): pages
    /// show only the controls their viewer can use.
    pub fn may(&self, action: &str) -> bool {
        let path = action.split('?').next().unwrap_or(action);
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 3 && ["plans", "endpoints", "sources", "notifiers"].contains(&parts[2]) {
            parts[3] = "{name}";
        }
        let pattern = parts.join("/");
        let need = need_of(&pattern);
        need.is_none_or(|p| self.can(p))
            && crate::access::scoped_route(&self.who, need.map(crate::access::Need::Perm), &pattern)
                .is_ok()
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{name}="))
                .map(str::to_string)
        })
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so): then
/// cookies are `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(r: &mut Response, headers: &HeaderMap, name: &str, value: &str, max_age: i64) {
    set_cookie_with(
        r,
        headers,
        name,
        value,
        max_age,
        Jar {
            same_site: "Strict",
            path: "/",
            tls: false,
        },
    );
}

/// Where a cookie goes: its SameSite, its path, and whether it is `Secure` even when no proxy
/// says TLS (the OIDC cookies, when the redirect URL is https).
pub(super) struct Jar {
    pub same_site: &'static str,
    pub path: &'static str,
    pub tls: bool,
}

/// A cookie with its own SameSite and path: the OIDC sign-in's must come back with the
/// provider's redirect, a top-level navigation from another site (`Lax`).
pub(super) fn set_cookie_with(
    r: &mut Response,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: i64,
    jar: Jar,
) {
    let Jar {
        same_site,
        path,
        tls,
    } = jar;
    let secure = if tls || over_tls(headers) {
        "; Secure"
    } else {
        ""
    };
    let c = format!(
        "{name}={value}; HttpOnly; SameSite={same_site}; Path={path}; Max-Age={max_age}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn session(s: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    let to_login = || Redirect::to("/ui/login").into_response();
    let id = cookie(headers, COOKIE).ok_or_else(to_login)?;
    let unavailable = |e: holdfast_store::StoreError| {
        tracing::error!("ui session: {e}");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the metadata store cannot be read; try again shortly (the server's log has the cause)",
        )
    };
    let hash = crate::secrets::hash_token(&id);
    let row = s
        .store
        .session(&hash, s.now(), IDLE_MS)
        .await
        .map_err(unavailable)?
        .ok_or_else(to_login)?;
    let user = s
        .store
        .user(row.user_id)
        .await
        .map_err(unavailable)?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(to_login)?;
    let mut extra = None;
    let token = match row.token_id {
        None => None,
        Some(t) => {
            let live = s
                .store
                .token(t)
                .await
                .map_err(unavailable)?
                .filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > s.now()))
                .ok_or_else(to_login)?;
            extra = live.scope;
            Some((live.id, live.name))
        }
    };
    // A scope that does not read ends the session (fail closed).
    let scope = Scope::from_json(user.scope.as_deref())
        .and_then(|owner| {
            let more = match &extra {
                Some(j) => serde_json::from_str(j).map_err(|e| e.to_string())?,
                None => Default::default(),
            };
            owner.narrowed(&more)
        })
        .map_err(|e| {
            tracing::error!("ui session of {}: {e}", user.name);
            to_login()
        })?;
    let (Some(role), Some(owner)) = (Role::parse(&row.role), Role::parse(&user.role)) else {
        return Err(to_login());
    };
    Ok(Session {
        csrf: row.csrf,
        who: Principal::User {
            user_id: Some(user.id),
            name: user.name,
            perms: scope.cap(role.perms().and(owner.perms())),
            role,
            token,
            scope,
        },
    })
}

/// Who the browser's session belongs to, if it has a live one (for the audit log).
pub async fn actor(s: &AppState, headers: &HeaderMap) -> Option<String> {
    session(s, headers).await.ok().map(|sess| sess.who.actor())
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, Response> {
        let sess = session(s, &parts.headers).await?;
        if !sess.can(Perm::Read) {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "this account may not read",
            ));
        }
        if !sess.who.scope().is_all() {
            in_scope(s, &sess, parts).await?;
        }
        Ok(sess)
    }
}

/// For a scoped session, the plan or job a page names must be within its scope (else the
/// page is "not found"), as the API's auth layer does for its routes.
async fn in_scope(s: &AppState, sess: &Session, parts: &Parts) -> Result<(), Response> {
    use crate::access::scope;
    let pattern = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str())
        .unwrap_or_default();
    let checked = scope::check_path(&s.store, &sess.who, pattern, parts.uri.path(), "/ui").await;
    checked.map_err(|e| error_page(e.status_code(), &e.to_string()))
}

/// Form fields as they came, by name.
pub type Fields = std::collections::BTreeMap<String, String>;

/// A form posted by a signed-in browser, with this session's CSRF token, to a route its
/// credential may use: its fields.
pub struct Posted {
    pub sess: Session,
    pub fields: Fields,
}

/// What each form of the UI needs: the one table for the UI, like the OpenAPI document's
/// scopes for the API. A form missing here needs `access` (fail closed).
fn need_of(path: &str) -> Option<Perm> {
    Some(match path {
        // One's own tokens: the handler lets each see and revoke only their own.
        "/ui/logout" | "/ui/tokens" | "/ui/tokens/{id}/revoke" => return None,
        "/ui/plans/{name}/run" | "/ui/plans/{name}/restore" | "/ui/plans/{name}/verify" => {
            Perm::Run
        }
        "/ui/endpoints"
        | "/ui/endpoints/{name}"
        | "/ui/endpoints/{name}/test"
        | "/ui/endpoints/{name}/delete"
        | "/ui/sources"
        | "/ui/sources/{name}"
        | "/ui/sources/{name}/delete"
        | "/ui/plans"
        | "/ui/plans/{name}/edit"
        | "/ui/plans/{name}/delete"
        | "/ui/plans/{name}/pause"
        | "/ui/plans/{name}/resume"
        | "/ui/notifiers"
        | "/ui/notifiers/{name}"
        | "/ui/notifiers/{name}/test"
        | "/ui/notifiers/{name}/delete" => Perm::Configure,
        _ => Perm::Access,
    })
}

impl FromRequest<Arc<AppState>> for Posted {
    type Rejection = Response;
    async fn from_request(req: Request, s: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let sess = Session::from_request_parts(&mut parts, s).await?;
        let path = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let Form(fields) = Form::<Fields>::from_request(Request::from_parts(parts, body), s)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same(fields.get("csrf").map_or("", String::as_str), &sess.csrf) {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "the form's security token does not match this session; reload the page and try again",
            ));
        }
        let need = need_of(&path);
        if let Some(p) = need
            && let Err(e) = sess.who.require(p, "this action")
        {
            return Err(error_page(StatusCode::FORBIDDEN, &e.to_string()));
        }
        if let Err(e) =
            crate::access::scoped_route(&sess.who, need.map(crate::access::Need::Perm), &path)
        {
            return Err(error_page(StatusCode::FORBIDDEN, &e.to_string()));
        }
        Ok(Self { sess, fields })
    }
}

pub(super) fn same(a: &str, b: &str) -> bool {
    !b.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ----- sign-in -----

pub async fn login_form(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let nonce = hex::encode(crate::secrets::random_bytes::<16>());
    let mut r = login_page(&s, None, &nonce).into_response();
    set_cookie(&mut r, &headers, LOGIN_COOKIE, &nonce, 3600);
    r
}

pub(super) fn login_page(s: &AppState, error: Option<&str>, nonce: &str) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(o) = &s.oidc {
                p { a.button #oidc-sign-in href="/ui/oidc/login" { "Sign in with " (o.config.label) } }
                p.hint { "Or with an account of this server:" }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(nonce);
                label for="user" { "User name" }
                input #user type="text" name="user" autocomplete="username";
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password";
                p.hint { "Or with an API token instead:" }
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off";
                @if let Some(e) = error { p.error #login-error role="alert" { (e) } }
                button type="submit" { "Sign in" }
            }
            p.hint { "The first start prints the " code { "admin" } " account's password and an admin API token." }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

const WRONG: &str = "wrong user name or password (after 5 failed tries in a row an account is \
                     locked for 15 minutes)";

pub async fn login(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    req_parts: axum::http::Extensions,
    Form(f): Form<LoginForm>,
) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let again = |status: StatusCode, why: &str| {
        let n = hex::encode(crate::secrets::random_bytes::<16>());
        let mut r = (status, login_page(&s, Some(why), &n)).into_response();
        set_cookie(&mut r, &headers, LOGIN_COOKIE, &n, 3600);
        r
    };
    if !same(&f.csrf, &nonce) {
        return again(
            StatusCode::FORBIDDEN,
            "the sign-in form expired or came from another page; sign in again",
        );
    }
    let remote = audit::remote(&req_parts);
    let outcome = if f.token.trim().is_empty() {
        by_password(&s, f.user.trim(), &f.password).await
    } else {
        by_token(&s, f.token.trim()).await
    };
    let (actor, result) = outcome;
    let ok = result.is_ok();
    audit::record(
        &s,
        Entry {
            actor: actor.clone(),
            action: "session.sign-in".into(),
            resource: None,
            outcome: match &result {
                Ok(_) => "ok".into(),
                Err(e) => format!("denied: {}", e.1),
            },
            detail: Some(serde_json::json!({
                "with": if f.token.trim().is_empty() { "password" } else { "token" }
            })),
            remote,
        },
    )
    .await;
    let row = match result {
        Ok(row) => row,
        Err((status, _)) => {
            if !ok {
                // A failed sign-in costs the caller a moment, whatever the reason.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            let msg = if f.token.trim().is_empty() {
                WRONG
            } else {
                "unknown, revoked or expired token, or not a user's token"
            };
            return again(status, msg);
        }
    };
    let id = hex::encode(crate::secrets::random_bytes::<32>());
    if let Err(e) = s
        .store
        .insert_session(&crate::secrets::hash_token(&id), &row)
        .await
    {
        tracing::error!("ui sign-in: {e}");
        return again(
            StatusCode::SERVICE_UNAVAILABLE,
            "the metadata store cannot be written; try again shortly",
        );
    }
    tracing::info!(user = %actor, "signed in to the UI");
    let mut r = Redirect::to("/").into_response();
    set_cookie(&mut r, &headers, COOKIE, &id, LIFETIME_MS / 1000);
    set_cookie(&mut r, &headers, LOGIN_COOKIE, "", 0);
    r
}

type SignIn = (String, Result<SessionRow, (StatusCode, &'static str)>);

pub(super) fn new_session(
    s: &AppState,
    user_id: i64,
    role: &str,
    token_id: Option<i64>,
) -> SessionRow {
    let now = s.now();
    SessionRow {
        user_id,
        role: role.to_string(),
        token_id,
        csrf: hex::encode(crate::secrets::random_bytes::<16>()),
        created_at: now,
        expires_at: now + LIFETIME_MS,
        last_seen: now,
    }
}

async fn by_password(s: &AppState, name: &str, pw: &str) -> SignIn {
    let actor = name.to_string();
    let denied = |why| (actor.clone(), Err((StatusCode::UNAUTHORIZED, why)));
    let user = match s.store.user_by_name(name).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("ui sign-in: {e}");
            return (
                actor,
                Err((StatusCode::SERVICE_UNAVAILABLE, "store unavailable")),
            );
        }
    };
    let Some(u) = user.filter(|u| u.password_hash.is_some()) else {
        password::verify_async(pw, None).await;
        return denied("unknown user");
    };
    let now = s.now();
    let matches = password::verify_async(pw, u.password_hash.as_deref()).await;
    if u.locked_until.is_some_and(|t| t > now) {
        return denied("locked");
    }
    if u.disabled_at.is_some() {
        return denied("disabled");
    }
    if !matches {
        let n = s
            .store
            .login_failed(u.id, password::LOCK_AFTER, now + password::LOCK_MS)
            .await
            .unwrap_or(0);
        if n >= password::LOCK_AFTER {
            tracing::warn!(user = %u.name, failures = n, "account locked after repeated failed sign-ins");
            return denied("wrong password; account locked");
        }
        return denied("wrong password");
    }
    if let Err(e) = s.store.login_succeeded(u.id).await {
        tracing::error!("ui sign-in: {e}");
    }
    (actor, Ok(new_session(s, u.id, &u.role, None)))
}

async fn by_token(s: &AppState, token: &str) -> SignIn {
    match crate::access::from_token(s, token).await {
        Ok(
            p @ Principal::User {
                user_id: Some(uid),
                role,
                token: Some((tid, _)),
                ..
            },
        ) => (p.actor(), Ok(new_session(s, uid, role.as_str(), Some(tid)))),
        Ok(p) => (
            p.actor(),
            Err((StatusCode::UNAUTHORIZED, "not a user's token")),
        ),
        Err(_) => (
            "unknown token".into(),
            Err((StatusCode::UNAUTHORIZED, "unknown token")),
        ),
    }
}

pub async fn logout(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Posted { sess, .. }: Posted,
) -> Response {
    if let Some(id) = cookie(&headers, COOKIE)
        && let Err(e) = s
            .store
            .delete_session(&crate::secrets::hash_token(&id))
            .await
    {
        tracing::error!("ui sign-out: {e}");
    }
    audit::record(
        &s,
        Entry {
            actor: sess.who.actor(),
            action: "session.sign-out".into(),
            resource: None,
            outcome: "ok".into(),
            detail: None,
            remote: None,
        },
    )
    .await;
    let mut r = Redirect::to("/ui/login").into_response();
    set_cookie(&mut r, &headers, COOKIE, "", 0);
    r
}

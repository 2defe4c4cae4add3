//! Signing in to the UI through an OpenID provider: `/ui/oidc/login` sends the browser to
//! the provider with a state, a nonce and a PKCE challenge (kept sealed in a cookie, so any
//! replica can take the callback); `/ui/oidc/callback` checks what comes back, maps the
//! user's groups to a role, finds or makes the account (by the provider's subject, never by
//! a name that a local account already has) and starts a session like a password sign-in.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_store::{StoreError, UserRow};
use maud::html;
use serde::Deserialize;

use super::page;
use super::session::{
    COOKIE, Jar, LIFETIME_MS, cookie, login_page, new_session, same, set_cookie_with,
};
use crate::AppState;
use crate::access::oidc::{Identity, Pending};
use crate::audit::{self, Entry};

const PENDING_COOKIE: &str = "holdfast_oidc";
/// How long a browser may stay at the provider.
const PENDING_MS: i64 = 10 * 60 * 1000;

/// Cookies are `Secure` when browsers come back over https (or a proxy says TLS).
fn tls(s: &AppState) -> bool {
    s.oidc
        .as_ref()
        .is_some_and(|o| o.config.redirect_url.starts_with("https://"))
}

/// The sign-in page again, with why (a new form nonce, as `login` does).
fn refused(s: &AppState, headers: &HeaderMap, status: StatusCode, why: &str) -> Response {
    let nonce = hex::encode(crate::secrets::random_bytes::<16>());
    let mut r = (status, login_page(s, Some(why), &nonce)).into_response();
    super::session::set_cookie_with(
        &mut r,
        headers,
        "holdfast_signin",
        &nonce,
        3600,
        Jar {
            same_site: "Strict",
            path: "/",
            tls: tls(s),
        },
    );
    set_cookie_with(
        &mut r,
        headers,
        PENDING_COOKIE,
        "",
        0,
        Jar {
            same_site: "Lax",
            path: "/ui/oidc",
            tls: tls(s),
        },
    );
    r
}

pub async fn login(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(oidc) = &s.oidc else {
        return refused(
            &s,
            &headers,
            StatusCode::NOT_FOUND,
            "this server has no OpenID provider configured (see `holdfast serve --help`, --oidc-issuer)",
        );
    };
    match oidc.start(s.now()).await {
        Ok((url, pending)) => {
            let sealed =
                s.seal_for_browser("oidc", &serde_json::to_vec(&pending).expect("serializes"));
            let mut r = Redirect::to(url.as_str()).into_response();
            set_cookie_with(
                &mut r,
                &headers,
                PENDING_COOKIE,
                &sealed,
                PENDING_MS / 1000,
                Jar {
                    same_site: "Lax",
                    path: "/ui/oidc",
                    tls: tls(&s),
                },
            );
            r
        }
        Err(e) => {
            tracing::warn!("oidc sign-in: {e}");
            refused(&s, &headers, StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// The issuer that answers (RFC 9207), when the provider says.
    iss: Option<String>,
}

/// At most `n` characters of what a provider (or whoever forged the callback) put in the
/// address, for a page or the log.
fn short(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

pub async fn callback(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    q: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(oidc) = &s.oidc else {
        return refused(
            &s,
            &headers,
            StatusCode::NOT_FOUND,
            "this server has no OpenID provider configured",
        );
    };
    let remote = audit::remote(&ext);
    let deny = |actor: String, status: StatusCode, why: String, log: String| {
        let s = s.clone();
        let headers = headers.clone();
        let remote = remote.clone();
        async move {
            audit::record(
                &s,
                Entry {
                    actor,
                    action: "session.sign-in".into(),
                    resource: None,
                    outcome: format!("denied: {log}"),
                    detail: Some(serde_json::json!({ "with": "oidc" })),
                    remote,
                },
            )
            .await;
            refused(&s, &headers, status, &why)
        }
    };
    let Ok(Query(q)) = q else {
        return deny(
            "unknown".into(),
            StatusCode::BAD_REQUEST,
            "the provider's answer was malformed; sign in again".into(),
            "malformed callback".into(),
        )
        .await;
    };
    let pending: Option<Pending> = cookie(&headers, PENDING_COOKIE)
        .and_then(|c| s.open_from_browser("oidc", &c))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|p: &Pending| s.now() - p.at < PENDING_MS);
    let Some(pending) = pending else {
        return deny(
            "unknown".into(),
            StatusCode::BAD_REQUEST,
            "this sign-in expired or was started in another browser; sign in again".into(),
            "no or expired sign-in cookie".into(),
        )
        .await;
    };
    if !same(q.state.as_deref().unwrap_or(""), &pending.state) {
        return deny(
            "unknown".into(),
            StatusCode::BAD_REQUEST,
            "the provider's answer does not belong to this sign-in (state mismatch); sign in again"
                .into(),
            "state mismatch".into(),
        )
        .await;
    }
    if q.iss
        .as_deref()
        .is_some_and(|i| i.trim_end_matches('/') != oidc.config.issuer)
    {
        return deny(
            "unknown".into(),
            StatusCode::BAD_REQUEST,
            "the answer came from another issuer than this server's provider; sign in again".into(),
            "issuer mismatch".into(),
        )
        .await;
    }
    if let Some(err) = &q.error {
        let what = format!(
            "{}{}",
            short(err, 60),
            q.error_description
                .as_deref()
                .map(|d| format!(": {}", short(d, 200)))
                .unwrap_or_default()
        );
        return deny(
            "unknown".into(),
            StatusCode::UNAUTHORIZED,
            format!("the provider did not sign you in ({what})"),
            format!("provider error {}", short(err, 60)),
        )
        .await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return deny(
            "unknown".into(),
            StatusCode::BAD_REQUEST,
            "the provider's answer has no code; sign in again".into(),
            "no code".into(),
        )
        .await;
    };
    let who = match oidc.finish(pending, code).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!("oidc sign-in: {e}");
            return deny(
                "unknown".into(),
                StatusCode::UNAUTHORIZED,
                e.to_string(),
                e.to_string(),
            )
            .await;
        }
    };
    let Some(role) = oidc.config.role_of(&who.groups) else {
        let groups = if who.groups.is_empty() {
            "none".to_string()
        } else {
            who.groups.join(", ")
        };
        withdraw(&s, &who).await;
        return deny(
            who.name.clone(),
            StatusCode::FORBIDDEN,
            format!(
                "you signed in at {} as {}, but none of your groups ({groups}) gives a role on \
                 this server; ask its admin to map one (holdfast serve --oidc-role GROUP=ROLE)",
                oidc.config.label, who.name
            ),
            "no mapped group".into(),
        )
        .await;
    };
    let user = match account(&s, &who, role.as_str()).await {
        Ok(u) => u,
        Err((status, why)) => {
            return deny(who.name.clone(), status, why.clone(), why).await;
        }
    };
    let id = hex::encode(crate::secrets::random_bytes::<32>());
    let row = new_session(&s, user.id, role.as_str(), None);
    if let Err(e) = s
        .store
        .insert_session(&crate::secrets::hash_token(&id), &row)
        .await
    {
        tracing::error!("oidc sign-in: {e}");
        return refused(
            &s,
            &headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "the metadata store cannot be written; try again shortly",
        );
    }
    audit::record(
        &s,
        Entry {
            actor: user.name.clone(),
            action: "session.sign-in".into(),
            resource: None,
            outcome: "ok".into(),
            detail: Some(serde_json::json!({ "with": "oidc", "role": role.as_str() })),
            remote,
        },
    )
    .await;
    tracing::info!(user = %user.name, role = role.as_str(), "signed in to the UI through the OpenID provider");
    // The session cookie is SameSite=Strict and this answer ends a navigation that another
    // site started, so the browser would not send it on a redirect: a page of ours moves on.
    let mut r = page(
        "Signed in",
        None,
        html! {
            meta http-equiv="refresh" content="0;url=/";
            h1 { "Signed in" }
            p { "Signed in as " strong #oidc-user { (user.name) } " (" (role.as_str()) "). " a href="/" { "Continue" } }
        },
    )
    .into_response();
    set_cookie_with(
        &mut r,
        &headers,
        COOKIE,
        &id,
        LIFETIME_MS / 1000,
        Jar {
            same_site: "Strict",
            path: "/",
            tls: tls(&s),
        },
    );
    set_cookie_with(
        &mut r,
        &headers,
        PENDING_COOKIE,
        "",
        0,
        Jar {
            same_site: "Lax",
            path: "/ui/oidc",
            tls: tls(&s),
        },
    );
    r
}

/// A provider's user who is in no mapped group any more keeps nothing that works: the
/// account's sessions end and its tokens are revoked (each under the last-admin guard).
async fn withdraw(s: &AppState, who: &Identity) {
    let Ok(Some(u)) = s.store.user_by_oidc_subject(&who.subject).await else {
        return;
    };
    if let Err(e) = s.store.delete_sessions_of(u.id).await {
        tracing::error!("oidc sign-in: {e}");
    }
    let now = s.now();
    for t in s.store.tokens().await.unwrap_or_default() {
        if t.user_id == Some(u.id) && t.revoked_at.is_none() {
            match s.store.revoke_token(t.id, now).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(user = %u.name, "oidc: token {} kept: {e}", t.id),
            }
        }
    }
    tracing::warn!(user = %u.name, "in no mapped group at the provider any more: sessions ended, tokens revoked");
}

/// The account of the provider's user: the one made at its first sign-in (its role follows
/// the groups at every sign-in), or a new one. A local account with the same name is never
/// taken over.
async fn account(
    s: &AppState,
    who: &Identity,
    role: &str,
) -> Result<UserRow, (StatusCode, String)> {
    let store_down = |e: StoreError| {
        tracing::error!("oidc sign-in: {e}");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the metadata store cannot be read; try again shortly".to_string(),
        )
    };
    if let Some(u) = s
        .store
        .user_by_oidc_subject(&who.subject)
        .await
        .map_err(store_down)?
    {
        if u.disabled_at.is_some() {
            return Err((
                StatusCode::FORBIDDEN,
                format!("the account {} is disabled on this server", u.name),
            ));
        }
        if u.role != role {
            match s
                .store
                .update_user(
                    u.id,
                    &holdfast_store::UserChange {
                        role: Some(role),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::LastAdmin) => {
                    return Err((
                        StatusCode::FORBIDDEN,
                        format!(
                            "your groups now give {role}, but {} is this server's last admin; \
                             an admin must be made first",
                            u.name
                        ),
                    ));
                }
                Err(e) => return Err(store_down(e)),
            }
        }
        return Ok(UserRow {
            role: role.to_string(),
            ..u
        });
    }
    let name = account_name(&who.name);
    let row = UserRow {
        id: 0,
        name: name.clone(),
        kind: "user".into(),
        role: role.to_string(),
        password_hash: None,
        failed_logins: 0,
        locked_until: None,
        created_at: s.now(),
        disabled_at: None,
        oidc_subject: Some(who.subject.clone()),
        scope: None,
    };
    match s.store.insert_user(&row).await {
        Ok(id) => Ok(UserRow { id, ..row }),
        Err(StoreError::Exists { .. }) => Err((
            StatusCode::CONFLICT,
            format!(
                "an account named {name} already exists on this server and is not this \
                 provider's user; an admin must rename or delete it before you can sign in"
            ),
        )),
        Err(e) => Err(store_down(e)),
    }
}

/// A name the API accepts (`[A-Za-z0-9._@-]`, at most 64), from what the provider calls the user.
fn account_name(from: &str) -> String {
    let n: String = from
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() { "oidc-user".into() } else { n }
}

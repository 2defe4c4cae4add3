//! The audit log: every change and every sensitive action, with who, when, from where and how
//! it ended. API requests that change something are recorded by one layer around the whole
//! API (the names of the fields they sent, never the values); sign-ins and what the UI does
//! are recorded where they happen.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use holdfast_store::AuditRow;

use crate::AppState;
use crate::access::Principal;

/// The largest request body the audit layers read (and pass on): the API's own limit.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// One thing to record.
pub struct Entry {
    pub actor: String,
    /// `plans.create`, `tokens.revoke`, `session.sign-in`…
    pub action: String,
    /// `plans/nightly`, `users/alice`…
    pub resource: Option<String>,
    /// `ok`, or the HTTP status and why (`403`, `denied: locked`).
    pub outcome: String,
    pub detail: Option<serde_json::Value>,
    pub remote: Option<String>,
}

/// Appends `e`; a store error is logged (the action itself already happened or was refused).
pub async fn record(s: &AppState, e: Entry) {
    let row = AuditRow {
        id: 0,
        at: s.now(),
        actor: e.actor,
        action: e.action,
        resource: e.resource,
        outcome: e.outcome,
        detail: e.detail.map(|d| d.to_string()),
        remote: e.remote,
    };
    if let Err(err) = s.store.append_audit(&row).await {
        tracing::error!(action = %row.action, actor = %row.actor, "cannot write the audit log: {err}");
    }
}

/// The peer's address, as the connection saw it.
pub fn remote(req_ext: &axum::http::Extensions) -> Option<String> {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// What a request to `path` (as matched, without `/api/v1`) with `method` does, and to what:
/// (`plans.run`, `plans/nightly`).
fn action_of(method: &Method, pattern: &str, actual: &str) -> (String, Option<String>) {
    let pat: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let act: Vec<&str> = actual.trim_start_matches('/').split('/').collect();
    let kind = pat.first().copied().unwrap_or("");
    let name = act
        .get(1)
        .filter(|_| pat.get(1).is_some_and(|p| p.starts_with('{')));
    let verb = match (method, pat.len()) {
        (&Method::POST, 1) => "create".to_string(),
        // The UI saves an edit by posting to the resource itself (`/endpoints/{name}`).
        (&Method::POST, 2) if pat[1].starts_with('{') => "update".to_string(),
        (&Method::PUT, _) => "update".to_string(),
        (&Method::DELETE, _) => "delete".to_string(),
        _ => pat.last().copied().unwrap_or("call").to_string(),
    };
    (
        format!("{kind}.{verb}"),
        name.map(|n| format!("{kind}/{n}")),
    )
}

/// Agents' own calls (claims, heartbeats, log lines, steps, results) are the job's history,
/// not the audit log's.
fn is_agent_traffic(pattern: &str) -> bool {
    pattern == "/agents"
        || (pattern.starts_with("/agents/{name}/") && !pattern.ends_with("/revoke"))
}

/// The API's audit layer (outside authentication, so refusals are recorded too).
pub async fn layer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let pattern = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_start_matches("/api/v1").to_string());
    let Some(pattern) = pattern.filter(|p| {
        !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && !is_agent_traffic(p)
    }) else {
        return next.run(req).await;
    };
    let actual = req.uri().path().trim_start_matches("/api/v1").to_string();
    let from = remote(req.extensions());
    // The body's top-level field names (never their values), and its `name`.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return crate::api::ApiError::BadRequest(format!("cannot read the request body: {e}"))
                .into_response();
        }
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let fields: Vec<String> = json
        .as_ref()
        .and_then(|v| v.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let body_name = json
        .as_ref()
        .and_then(|v| v.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let query = parts.uri.query().map(str::to_string);
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let (action, mut resource) = action_of(&method, &pattern, &actual);
    if resource.is_none()
        && let Some(n) = body_name
    {
        resource = Some(format!("{}/{n}", pattern.trim_start_matches('/')));
    }
    let status = resp.status();
    let actor = resp
        .extensions()
        .get::<Principal>()
        .map_or_else(|| "unauthenticated".to_string(), Principal::actor);
    let mut detail = serde_json::json!({ "fields": fields });
    if let Some(q) = query {
        detail["query"] = q.into();
    }
    record(
        &s,
        Entry {
            actor,
            action,
            resource,
            outcome: if status.is_success() {
                "ok".into()
            } else {
                status.as_u16().to_string()
            },
            detail: Some(detail),
            remote: from,
        },
    )
    .await;
    resp
}

/// The UI's audit layer: every form posted (sign-in and sign-out record themselves), with the
/// session's user, the form's field names (never their values) and the outcome (a redirect
/// is a success).
pub async fn ui_layer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let pattern = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_start_matches("/ui").to_string());
    let Some(pattern) = pattern
        .filter(|p| req.method() == Method::POST && !["/login", "/logout"].contains(&p.as_str()))
    else {
        return next.run(req).await;
    };
    let actual = req.uri().path().trim_start_matches("/ui").to_string();
    let from = remote(req.extensions());
    let actor = crate::ui::actor(&s, req.headers())
        .await
        .unwrap_or_else(|| "unauthenticated".into());
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return crate::api::ApiError::BadRequest(format!("cannot read the form: {e}"))
                .into_response();
        }
    };
    let fields: Vec<String> = url::form_urlencoded::parse(&bytes)
        .map(|(k, _)| k.into_owned())
        .filter(|k| k != "csrf")
        .collect();
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let (action, resource) = action_of(&Method::POST, &pattern, &actual);
    let status = resp.status();
    record(
        &s,
        Entry {
            actor,
            action: format!("ui.{action}"),
            resource,
            outcome: if status.is_success() || status.is_redirection() {
                "ok".into()
            } else {
                status.as_u16().to_string()
            },
            detail: Some(serde_json::json!({ "fields": fields })),
            remote: from,
        },
    )
    .await;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_the_resource() {
        let a = |m: Method, p: &str, x: &str| action_of(&m, p, x);
        assert_eq!(
            a(Method::POST, "/plans", "/plans"),
            ("plans.create".into(), None)
        );
        assert_eq!(
            a(Method::POST, "/plans/{name}/run", "/plans/nightly/run"),
            ("plans.run".into(), Some("plans/nightly".into()))
        );
        assert_eq!(
            a(Method::POST, "/sources/{name}", "/sources/shop"),
            ("sources.update".into(), Some("sources/shop".into()))
        );
        assert_eq!(
            a(
                Method::POST,
                "/plans/{name}/delete",
                "/plans/nightly/delete"
            ),
            ("plans.delete".into(), Some("plans/nightly".into()))
        );
        assert_eq!(
            a(Method::DELETE, "/tokens/{id}", "/tokens/7"),
            ("tokens.delete".into(), Some("tokens/7".into()))
        );
        assert!(is_agent_traffic("/agents/{name}/claim"));
        assert!(!is_agent_traffic("/agents/{name}/revoke"));
        assert!(!is_agent_traffic("/agents/enrol"));
    }
}

//! Who may do what, in the UI: accounts and every token (admins), one's own tokens (everyone),
//! agents with their enrolment and revocation, and the audit log (auditors and admins). The
//! forms call the API's own handlers with the session's principal.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::{Posted, Session};
use super::{error_page, page, when_text};
use crate::AppState;
use crate::access::{Perm, Role};
use crate::api::Body;

fn role_options(sess: &Session) -> Markup {
    html! {
        @for r in Role::ALL {
            @if sess.who.can(Perm::Access) || matches!(&sess.who, crate::access::Principal::User { role, .. } if role.covers(r)) {
                option value=(r.as_str()) { (r.as_str()) }
            }
        }
    }
}

/// Accounts (admins) and tokens: one's own, or every one for admins. `shown`: a token made
/// just now, shown this once.
async fn access_page(s: &Arc<AppState>, sess: &Session, shown: Option<(&str, &str)>) -> Response {
    let who = axum::Extension(sess.who.clone());
    let tokens = match crate::api::tokens::list_tokens(State(s.clone()), who).await {
        Ok(Json(t)) => t,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let users = if sess.can(Perm::Access) {
        match crate::api::users::list_users(State(s.clone())).await {
            Ok(Json(u)) => u,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    } else {
        vec![]
    };
    page(
        "Access",
        Some(sess),
        html! {
            h1 { "Access" }
            @if let Some((what, token)) = shown {
                p.notice #new-token role="status" { "The new " (what) " (shown only now): " code { (token) } }
            }
            @if sess.can(Perm::Access) {
                h2 { "Accounts" }
                table #users {
                    thead { tr { th { "Name" } th { "Kind" } th { "Role" } th { "Scope" } th { "State" } th { "Created" } th {} } }
                    tbody { @for u in &users {
                        tr data-user=(u.name) {
                            td { (u.name) } td { (format!("{:?}", u.kind).to_lowercase()) } td { (u.role.as_str()) }
                            td { (super::form::labels_text(&u.scope)) }
                            td { @if u.disabled_at.is_some() { span.badge.failed { "disabled" } }
                                 @else if u.locked_until.is_some() { span.badge.stale { "locked" } }
                                 @else { span.badge.succeeded { "active" } } }
                            td { (when_text(&u.created_at)) }
                            td { form.inline method="post" action={"/ui/users/" (u.name) (if u.disabled_at.is_some() { "/enable" } else { "/disable" })}
                                    data-confirm={(if u.disabled_at.is_some() { "Enable" } else { "Disable" }) " account " (u.name) "? Its tokens and sessions stop or start working at once."} {
                                    input type="hidden" name="csrf" value=(sess.csrf);
                                    button { (if u.disabled_at.is_some() { "Enable" } else { "Disable" }) }
                            } }
                        }
                    } }
                }
                h3 { "New account" }
                form.edit method="post" action="/ui/users" {
                    input type="hidden" name="csrf" value=(sess.csrf);
                    div.field { label for="name" { "Name" } input #name name="name"; }
                    div.field { label for="role" { "Role" } select #role name="role" { (role_options(sess)) } }
                    div.field { label for="kind" { "Kind" } select #kind name="kind" {
                        option value="user" { "user (signs in with a password)" }
                        option value="service" { "service (tokens only)" } } }
                    div.field { label for="scope" { "Scope" } input #scope name="scope";
                        p.hint { "Plan labels, key=value separated by commas (team=payments): the account sees and acts on those plans only. Empty: every plan." } }
                    div.field { label for="password" { "Password" } input #password name="password" type="password" autocomplete="new-password";
                        p.hint { "At least 12 characters; none for a service account." } }
                    button type="submit" { "Create account" }
                }
            }
            h2 { (if sess.can(Perm::Access) { "Tokens" } else { "Your tokens" }) }
            table #tokens {
                thead { tr { th { "Name" } th { "Kind" } th { "Account or agent" } th { "Role" } th { "Last used" } th { "Expires" } th {} } }
                tbody { @for t in tokens.iter().filter(|t| t.revoked_at.is_none()) {
                    tr data-token=(t.id) {
                        td { (t.name) } td { (t.kind) }
                        td { (t.user.clone().or(t.agent.clone()).unwrap_or_default()) }
                        td { (t.role.map(Role::as_str).unwrap_or("")) }
                        td { @match &t.last_used_at { Some(at) => (when_text(at)), None => "never" } }
                        td { @match &t.expires_at { Some(at) => (when_text(at)), None => "never" } }
                        td { form.inline method="post" action={"/ui/tokens/" (t.id) "/revoke"}
                                data-confirm={"Revoke token " (t.name) "? Whatever uses it stops working at once."} {
                                input type="hidden" name="csrf" value=(sess.csrf);
                                button.delete { "Revoke" }
                        } }
                    }
                } }
            }
            h3 { "New token" }
            form.edit method="post" action="/ui/tokens" {
                input type="hidden" name="csrf" value=(sess.csrf);
                div.field { label for="token-name" { "Name" } input #token-name name="name";
                    p.hint { "Who or what uses it (ci, grafana)." } }
                div.field { label for="token-role" { "Role" } select #token-role name="role" { (role_options(sess)) } }
                div.field { label for="token-scope" { "Scope" } input #token-scope name="scope";
                    p.hint { "Plan labels it adds to its owner's (team=payments); empty: the owner's." } }
                div.field { label for="token-days" { "Expires after (days)" } input #token-days name="days" value="90";
                    p.hint { "Empty: until revoked." } }
                button type="submit" { "Create token" }
            }
        },
    )
    .into_response()
}

pub async fn access(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    access_page(&s, &sess, None).await
}

fn back(what: &str, r: Result<impl Sized, crate::api::ApiError>) -> Response {
    match r {
        Ok(_) => Redirect::to(what).into_response(),
        Err(e) => error_page(e.status_code(), &e.to_string()),
    }
}

pub async fn create_user(
    State(s): State<Arc<AppState>>,
    Posted { fields: f, .. }: Posted,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let scope = match super::form::parse_labels(&get("scope")) {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e[0].reason),
    };
    let input = serde_json::json!({
        "name": get("name"),
        "role": get("role"),
        "kind": get("kind"),
        "password": Some(get("password")).filter(|p| !p.is_empty()),
        "scope": scope,
    });
    let input = match serde_json::from_value(input) {
        Ok(i) => i,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    back(
        "/ui/access",
        crate::api::users::create_user(State(s), Body(input)).await,
    )
}

pub async fn disable_user(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_disabled(s, name, true).await
}

pub async fn enable_user(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_disabled(s, name, false).await
}

async fn set_disabled(s: Arc<AppState>, name: String, disabled: bool) -> Response {
    let change = serde_json::from_value(serde_json::json!({ "disabled": disabled }))
        .expect("a valid change");
    back(
        "/ui/access",
        crate::api::users::update_user(State(s), Path(name), Body(change)).await,
    )
}

pub async fn create_token(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let days = f.get("days").map(|d| d.trim()).unwrap_or("");
    let expires = if days.is_empty() {
        None
    } else {
        match days.parse::<i64>() {
            Ok(d) if (1..=3650).contains(&d) => Some(d * 86_400),
            _ => {
                return error_page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "expires after: a whole number of days, 1 to 3650, or empty",
                );
            }
        }
    };
    let scope = match super::form::parse_labels(f.get("scope").map_or("", String::as_str)) {
        Ok(l) => l,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e[0].reason),
    };
    let input = serde_json::json!({
        "name": f.get("name").cloned().unwrap_or_default(),
        "role": f.get("role").cloned().unwrap_or_else(|| "viewer".into()),
        "expires_in_secs": expires,
        "scope": scope,
    });
    let input = match serde_json::from_value(input) {
        Ok(i) => i,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    match crate::api::tokens::create_token(
        State(s.clone()),
        axum::Extension(sess.who.clone()),
        Body(input),
    )
    .await
    {
        Ok((_, Json(t))) => {
            access_page(&s, &sess, Some(("token", t.token.as_deref().unwrap_or("")))).await
        }
        Err(e) => error_page(e.status_code(), &e.to_string()),
    }
}

pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    Posted { sess, .. }: Posted,
) -> Response {
    back(
        "/ui/access",
        crate::api::tokens::revoke_token(State(s), axum::Extension(sess.who), Path(id)).await,
    )
}

// ----- agents -----

pub async fn agents(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    agents_page(&s, &sess, None).await
}

async fn agents_page(s: &Arc<AppState>, sess: &Session, enrolment: Option<&str>) -> Response {
    let list = match crate::api::agents::list_agents(State(s.clone())).await {
        Ok(Json(l)) => l,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let admin = sess.can(Perm::Access);
    page(
        "Agents",
        Some(sess),
        html! {
            h1 { "Agents" }
            @if let Some(t) = enrolment {
                p.notice #new-token role="status" { "The enrolment token (shown only now; give it to the agent as HOLDFAST_TOKEN): " code { (t) } }
            }
            table #agents {
                thead { tr { th { "Name" } th { "Labels" } th { "Version" } th { "Host" } th { "Slots" }
                             th { "Last seen" } th { "Running" } @if admin { th {} } } }
                tbody { @for a in &list {
                    tr { td { (a.name) @if a.stale { " " span.badge.stale { "not seen for a day or more" } } @else if !a.online { " " span.badge.stale { "offline" } } }
                         td { @for (k, v) in &a.labels { code { (k) "=" (v) } " " } }
                         td { (a.version) } td { (a.hostname) } td { (a.slots) } td { (when_text(&a.last_seen)) }
                         td { @for j in &a.running_jobs { a href={"/ui/jobs/" (j)} { "#" (j) } " " } }
                         @if admin { td { form.inline method="post" action={"/ui/agents/" (a.name) "/revoke"}
                                data-confirm={"Revoke agent " (a.name) "? Its running jobs go back to the queue and it must enrol again."} {
                                input type="hidden" name="csrf" value=(sess.csrf);
                                button.delete { "Revoke" } } } } }
                } }
            }
            @if admin {
                h2 { "Enrol an agent" }
                form.edit method="post" action="/ui/enrolments" {
                    input type="hidden" name="csrf" value=(sess.csrf);
                    div.field { label for="agent" { "Agent name" } input #agent name="agent";
                        p.hint { "Empty: any name." } }
                    div.field { label for="labels" { "Labels it may serve" } input #labels name="labels";
                        p.hint { "KEY=VALUE, comma-separated; empty: none (unlabelled sources only)." } }
                    div.field { label { input type="checkbox" name="any_labels" value="on"; " Any labels the agent asks for (it may then receive every labelled source's jobs and secrets)" } }
                    button type="submit" { "Make an enrolment token" }
                }
            }
        },
    )
    .into_response()
}

pub async fn enrol(State(s): State<Arc<AppState>>, Posted { sess, fields: f }: Posted) -> Response {
    let agent = f
        .get("agent")
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    let labels = f.get("labels").map(|l| l.trim()).filter(|l| !l.is_empty());
    let mut map = serde_json::Map::new();
    for pair in labels.into_iter().flat_map(|l| l.split(',')) {
        let Some((k, v)) = pair.trim().split_once('=') else {
            return error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("labels: `{pair}` is not KEY=VALUE"),
            );
        };
        map.insert(k.trim().into(), v.trim().into());
    }
    let any = f.get("any_labels").is_some_and(|v| v == "on");
    let input = serde_json::json!({
        "agent": agent,
        "labels": labels.map(|_| serde_json::Value::Object(map)),
        "any_labels": any,
    });
    let input = match serde_json::from_value(input) {
        Ok(i) => i,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    match crate::api::enrolments::create_enrolment(
        State(s.clone()),
        axum::Extension(sess.who.clone()),
        Body(input),
    )
    .await
    {
        Ok((_, Json(e))) => agents_page(&s, &sess, e.token.as_deref()).await,
        Err(e) => error_page(e.status_code(), &e.to_string()),
    }
}

pub async fn revoke_agent(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    back(
        "/ui/agents",
        crate::api::enrolments::revoke_agent(State(s), Path(name)).await,
    )
}

// ----- audit log -----

#[derive(Deserialize)]
pub struct AuditFilter {
    actor: Option<String>,
    resource: Option<String>,
}

pub async fn audit(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Query(q): Query<AuditFilter>,
) -> Response {
    if let Err(e) = sess.who.require(Perm::Audit, "the audit log") {
        return error_page(StatusCode::FORBIDDEN, &e.to_string());
    }
    let f = holdfast_store::AuditFilter {
        actor: q.actor.clone().filter(|a| !a.is_empty()),
        resource: q.resource.clone().filter(|r| !r.is_empty()),
        limit: 200,
        ..Default::default()
    };
    let rows = match s.store.audit(&f).await {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    page(
        "Audit log",
        Some(&sess),
        html! {
            h1 { "Audit log" }
            form.filters method="get" action="/ui/audit" {
                label for="actor" { "Actor" } input #actor name="actor" value=(q.actor.unwrap_or_default());
                label for="resource" { "Resource" } input #resource name="resource" value=(q.resource.unwrap_or_default()) placeholder="plans/ or plans/nightly";
                button { "Filter" }
            }
            table #audit {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Resource" } th { "Outcome" } th { "From" } } }
                tbody { @for r in &rows {
                    tr { td { (super::when(r.at)) } td { (r.actor) } td { code { (r.action) } }
                         td { (r.resource.clone().unwrap_or_default()) }
                         td { @if r.outcome == "ok" { span.badge.succeeded { "ok" } } @else { span.badge.failed { (r.outcome) } } }
                         td { (r.remote.clone().unwrap_or_default()) } }
                } }
            }
        },
    )
    .into_response()
}

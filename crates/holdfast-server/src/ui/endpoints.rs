//! The UI's endpoints: the list with what each repository holds and its last prune, create,
//! edit (secrets never shown, kept unless given), "Test connection" and delete after a
//! confirmation, through the API's own handlers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::{Kind, Resource};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::form::{
    Input, InputKind, confirm_delete, confirmed, delete_link, delete_refused, form, if_match, opt,
    outcome, parse_input, plans_that, secret, secret_lines, select, status_of, text,
    without_secrets,
};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::access::Perm;

fn endpoint_inputs() -> Vec<Input<'static>> {
    vec![
        text("name", "Name", "lowercase letters, digits and -"),
        select(
            "kind",
            "Kind",
            ["local", "s3", "swift", "sftp", "ftp", "webdav"]
                .map(String::from)
                .to_vec(),
        ),
        text(
            "url",
            "Location",
            "/srv/backups, s3://bucket/prefix?endpoint=…, sftp://user@host/path, webdav://user@host/path …",
        ),
        secret(
            "password",
            "Repository password",
            "write-only; keep a copy: restic needs it to read the backups",
        ),
        text("access_key_id", "S3 access key id", ""),
        secret("secret_access_key", "S3 secret access key", "write-only"),
        text(
            "user",
            "Storage user",
            "Swift, FTP, WebDAV, SFTP (when the URL names none)",
        ),
        secret(
            "storage_password",
            "Storage password",
            "write-only; Swift key, FTP or WebDAV password",
        ),
        secret_lines(
            "ssh_key",
            "SFTP private key",
            "write-only; OpenSSH format; empty: the agent's own SSH keys",
        ),
        text(
            "prune_schedule",
            "Prune schedule",
            "cron, or off: when data no restore point uses is removed",
        ),
        text("prune_timezone", "Prune time zone", ""),
        select(
            "agent_access",
            "Agents reach the storage",
            ["server", "direct"].map(String::from).to_vec(),
        ),
    ]
}

/// The API's endpoint input from a form (empty secrets: keep what is stored).
fn endpoint_json(f: &Fields, name: &str) -> Value {
    json!({"name": name,
        "kind": f.get("kind").cloned().unwrap_or_default(), "url": f.get("url").cloned().unwrap_or_default(),
        "password": opt(f, "password"), "access_key_id": opt(f, "access_key_id"),
        "secret_access_key": opt(f, "secret_access_key"), "user": opt(f, "user"),
        "storage_password": opt(f, "storage_password"), "ssh_key": opt(f, "ssh_key"),
        "prune_schedule": f.get("prune_schedule").cloned().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "0 4 * * 0".into()),
        "prune_timezone": f.get("prune_timezone").cloned().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "UTC".into()),
        "agent_access": opt(f, "agent_access")})
}

pub async fn endpoints(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    endpoints_page(&s, &sess, &Fields::new(), &[], None).await
}

async fn endpoints_page(
    s: &Arc<AppState>,
    sess: &Session,
    values: &Fields,
    errors: &[FieldError],
    report: Option<(String, crate::model::EndpointTestReport)>,
) -> Response {
    let list = s.store.list(Kind::Endpoint).await.unwrap_or_default();
    // The newest prune job of each endpoint (one page of them is plenty).
    let prunes = s
        .store
        .jobs(&holdfast_store::JobFilter {
            kind: Some(holdfast_core::job::JobKind::Prune),
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Storage endpoints" }
        @if let Some((name, r)) = &report {
            section #test-report {
                h2 { "Test of " (name) ": " @if r.ok { span.badge.ok { "ok" } } @else { span.badge.failed { "failed" } } }
                ul { @for c in &r.steps {
                    li data-check=(c.check) class=(if c.ok { "" } else { "error" }) {
                        strong { (c.check) } ": " (if c.ok { "ok" } else { "failed" }) " — " (c.detail)
                    }
                } }
            }
        }
        table #endpoints {
            thead { tr { th { "Name" } th { "Kind" } th { "Location" } th { "Holds" } th { "Last prune" } th {} } }
            tbody { @for r in &list {
                @let v: Value = serde_json::from_str(&r.spec).unwrap_or_default();
                @let stats = s.endpoint_stats(&r.name);
                @let pruned = prunes.iter().find(|j| j.endpoint.as_deref() == Some(r.name.as_str()));
                tr data-endpoint=(r.name) {
                    td { a href={"/ui/endpoints/" (r.name)} { (r.name) } } td { (v["kind"].as_str().unwrap_or("")) }
                    td { code { (holdfast_core::location::redact_url(v["url"].as_str().unwrap_or(""))) } }
                    td.holds { @match &stats {
                        Some(st) if st.error.is_some() => span.error title=(st.error.clone().unwrap_or_default()) { "cannot read it" },
                        Some(st) if st.read_at.is_some() => { (st.restore_points) (if st.restore_points == 1 { " restore point, " } else { " restore points, " })
                            (super::bytes(i64::try_from(st.stored_bytes).unwrap_or(i64::MAX))) " stored" },
                        _ => span.hint { "counting…" },
                    } }
                    td { @match pruned {
                        Some(j) => { span class={"badge " (j.state)} { (j.state) } " "
                            @if let Some(at) = j.finished_at.or(j.started_at) { (super::when(at)) } },
                        None => "never",
                    } }
                    td { @if sess.can(Perm::Configure) { form.inline method="post" action={"/ui/endpoints/" (r.name) "/test"} {
                        input type="hidden" name="csrf" value=(sess.csrf);
                        button.test { "Test connection" } } } }
                }
            } }
        }
        h2 { "New endpoint" }
        (form("/ui/endpoints", sess, &endpoint_inputs(), values, errors, "Create endpoint"))
    };
    (status, page("Endpoints", Some(sess), body)).into_response()
}

pub async fn create_endpoint(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let v = endpoint_json(&f, f.get("name").map_or("", String::as_str));
    let r = match parse_input(v) {
        Ok(input) => outcome(
            crate::api::endpoints::save_endpoint(&s, false, input, None, &HeaderMap::new()).await,
            "/ui/endpoints",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => endpoints_page(&s, &sess, &without_secrets(f), &errs, None).await,
    }
}

/// The edit form of one endpoint: its settings filled in, its secrets blank (kept unless given).
pub async fn endpoint(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let Ok(Some(r)) = s.store.get(Kind::Endpoint, &name).await else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("no endpoint named `{name}`"),
        );
    };
    let v: Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let mut f = Fields::new();
    f.insert("version".into(), r.version.to_string());
    for k in [
        "kind",
        "url",
        "access_key_id",
        "user",
        "prune_schedule",
        "prune_timezone",
        "agent_access",
    ] {
        if let Some(x) = v[k].as_str() {
            f.insert(k.into(), x.into());
        }
    }
    endpoint_edit(&sess, &name, &f, &[])
}

fn endpoint_edit(sess: &Session, name: &str, values: &Fields, errors: &[FieldError]) -> Response {
    let inputs: Vec<Input> = endpoint_inputs()
        .into_iter()
        .filter(|i| i.name != "name")
        .map(|i| match i.kind {
            InputKind::Secret | InputKind::SecretLines => Input {
                hint: "write-only: leave empty to keep the one set",
                ..i
            },
            _ => i,
        })
        .collect();
    let test = format!("/ui/endpoints/{name}/test");
    let body = html! {
        h1 { "Endpoint " (name) }
        (form(&format!("/ui/endpoints/{name}"), sess, &inputs, values, errors, "Save"))
        p {
            @if sess.may(&test) {
                form.inline method="post" action=(test) {
                    input type="hidden" name="csrf" value=(sess.csrf);
                    button.test { "Test connection" }
                }
                " "
            }
            (delete_link(sess, "endpoint", name))
        }
    };
    (
        status_of(errors),
        page(&format!("Endpoint {name}"), Some(sess), body),
    )
        .into_response()
}

pub async fn save_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let r = match parse_input(endpoint_json(&f, &name)) {
        Ok(input) => outcome(
            crate::api::endpoints::save_endpoint(&s, false, input, Some(&name), &if_match(&f))
                .await,
            "/ui/endpoints",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => endpoint_edit(&sess, &name, &without_secrets(f), &errs),
    }
}

pub async fn test_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, .. }: Posted,
) -> Response {
    match crate::api::endpoints::test_endpoint(State(s.clone()), Path(name.clone())).await {
        Ok(Json(report)) => {
            endpoints_page(&s, &sess, &Fields::new(), &[], Some((name, report))).await
        }
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

/// The plans that use endpoint `name`: as their repository, or for their copies.
/// The plans that use `name`, as far as `who` may see them.
async fn users(s: &AppState, who: &crate::access::Principal, name: &str) -> Vec<String> {
    s.store
        .list(Kind::Plan)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.plan.as_ref().is_some_and(|c| c.endpoint == name)
                || serde_json::from_str::<PlanSpec>(&p.spec)
                    .is_ok_and(|sp| sp.copy.is_some_and(|c| c.endpoint == name))
        })
        .filter(|p| {
            serde_json::from_str::<holdfast_core::plan::PlanSpec>(&p.spec)
                .is_ok_and(|sp| who.sees(&sp.labels))
        })
        .map(|p| p.name)
        .collect()
}

/// What deleting endpoint `name` loses and keeps, in words (the API's: the record goes, the
/// repository and its backups stay where they are).
fn consequences(s: &Arc<AppState>, r: &Resource, used_by: &[String]) -> Markup {
    let v: Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let url = holdfast_core::location::redact_url(v["url"].as_str().unwrap_or(""));
    let held = s
        .endpoint_stats(&r.name)
        .filter(|st| st.read_at.is_some() && st.error.is_none())
        .map(|st| st.restore_points);
    html! {
        p { "Holdfast forgets endpoint " strong { (r.name) } ": its location, prune schedule and stored "
            "credentials, the repository password among them. " }
        p { "The repository at " code { (url) } " stays where it is, with "
            @match held { Some(1) => "its 1 restore point", Some(n) => { "its " (n) " restore points" }, None => "all its restore points" }
            ": restic can still read them with the repository password (keep your copy of it: Holdfast will not have one), "
            "and an endpoint created again with the same location and password shows them again." }
        @if !used_by.is_empty() {
            p.error #still-used { (plans_that(used_by, "uses it", "use it")) ": the server refuses to delete it until "
                (if used_by.len() == 1 { "that plan is deleted or uses" } else { "they are deleted or use" }) " another endpoint." }
        }
    }
}

async fn stored(s: &AppState, name: &str) -> Result<Resource, Response> {
    match s.store.get(Kind::Endpoint, name).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            &format!("no endpoint named `{name}`"),
        )),
        Err(e) => Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

pub async fn confirm_delete_endpoint(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let r = match stored(&s, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let what = consequences(&s, &r, &users(&s, &sess.who, &name).await);
    let back = format!("/ui/endpoints/{name}");
    confirm_delete(&sess, "endpoint", &name, r.version, &back, what, None)
}

pub async fn delete_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let r = match stored(&s, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let refused = if confirmed(&f, &name) {
        match crate::api::endpoints::delete_endpoint(
            State(s.clone()),
            Path(name.clone()),
            if_match(&f),
        )
        .await
        {
            Ok(_) => return Redirect::to("/ui/endpoints").into_response(),
            Err(e) => delete_refused(&e),
        }
    } else {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("type `{name}` to confirm"),
        )
    };
    let what = consequences(&s, &r, &users(&s, &sess.who, &name).await);
    let back = format!("/ui/endpoints/{name}");
    let version = f
        .get("version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(r.version);
    confirm_delete(
        &sess,
        "endpoint",
        &name,
        version,
        &back,
        what,
        Some(refused),
    )
}

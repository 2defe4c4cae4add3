//! The UI's sources: the list, create, edit (the password never shown, kept unless given) and
//! delete after a confirmation, through the API's own handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::plan::FieldError;
use holdfast_store::{Kind, Resource};
use maud::html;
use serde_json::{Value, json};

use super::form::{
    Input, InputKind, check, confirm_delete, confirmed, delete_link, delete_refused, form,
    if_match, labels_text, opt, outcome, parse_input, parse_labels, plans_that, secret, select,
    status_of, text, without_secrets,
};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::access::Perm;
use crate::model::StoredSource;

/// The source form; the command only for a session that may set one (`commands`).
fn source_inputs(sess: &Session) -> Vec<Input<'static>> {
    let mut inputs = vec![
        text("name", "Name", "lowercase letters, digits and -"),
        select(
            "kind",
            "Kind",
            ["postgres", "mysql", "sqlite", "redis", "folder", "command"]
                .map(String::from)
                .to_vec(),
        ),
        text(
            "url",
            "Address",
            "postgres://user@host:5432/db, mysql://user@host/db, sqlite:///path, redis://host:6379, file:///dir",
        ),
        secret("password", "Database password", "write-only"),
    ];
    if sess.can(Perm::Commands) {
        inputs.push(text(
            "command",
            "Command",
            "for kind command: its stdout is the backup",
        ));
    }
    inputs.extend([
        text(
            "labels",
            "Agent labels",
            "key=value, separated by commas: only agents with these labels run its jobs",
        ),
        check(
            "single_stream",
            "One stream",
            "PostgreSQL: one pg_dump stream instead of one file per table",
        ),
        check(
            "all_databases",
            "All databases",
            "PostgreSQL: every database plus roles and tablespaces",
        ),
    ]);
    inputs
}

/// The API's source input from a form. A field the form did not show (the command, for a
/// session without `commands`) keeps its stored value; an empty password keeps the stored one.
fn source_json(
    f: &Fields,
    name: &str,
    stored: Option<&StoredSource>,
) -> Result<Value, Vec<FieldError>> {
    let labels = match (f.get("labels"), stored) {
        (Some(t), _) => parse_labels(t)?,
        (None, Some(st)) => st.labels.clone(),
        (None, None) => BTreeMap::new(),
    };
    let command = match (f.contains_key("command"), stored) {
        (true, _) | (false, None) => opt(f, "command"),
        (false, Some(st)) => st.command.clone().map_or(Value::Null, Value::String),
    };
    let on = |k: &str| f.get(k).is_some_and(|v| v == "true");
    Ok(json!({"name": name,
        "kind": f.get("kind").cloned().unwrap_or_default(), "url": opt(f, "url"),
        "password": opt(f, "password"), "command": command, "labels": labels,
        "single_stream": on("single_stream"), "all_databases": on("all_databases")}))
}

pub async fn sources(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    sources_page(&s, &sess, &Fields::new(), &[]).await
}

async fn sources_page(
    s: &AppState,
    sess: &Session,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    let list = s.store.list(Kind::Source).await.unwrap_or_default();
    let body = html! {
        h1 { "Sources" }
        table #sources {
            thead { tr { th { "Name" } th { "Kind" } th { "Address" } th { "Labels" } } }
            tbody { @for r in &list {
                @let v: Value = serde_json::from_str(&r.spec).unwrap_or_default();
                tr data-source=(r.name) { td { a href={"/ui/sources/" (r.name)} { (r.name) } } td { (v["kind"].as_str().unwrap_or("")) }
                     td { code { (holdfast_core::location::redact_url(v["url"].as_str().unwrap_or(""))) } }
                     td { (labels_text(&serde_json::from_value(v["labels"].clone()).unwrap_or_default())) } }
            } }
        }
        h2 { "New source" }
        (form("/ui/sources", sess, &source_inputs(sess), values, errors, "Create source"))
    };
    (status_of(errors), page("Sources", Some(sess), body)).into_response()
}

pub async fn create_source(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let name = f.get("name").cloned().unwrap_or_default();
    let r = match source_json(&f, &name, None).and_then(parse_input) {
        Ok(input) => outcome(
            crate::api::sources::save_source(&s, false, input, None, &HeaderMap::new(), &sess.who)
                .await,
            "/ui/sources",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => sources_page(&s, &sess, &without_secrets(f), &errs).await,
    }
}

/// The stored source and what it is stored as, or the page that says it is not there.
async fn stored(s: &AppState, name: &str) -> Result<(Resource, StoredSource), Response> {
    let not_found = || error_page(StatusCode::NOT_FOUND, &format!("no source named `{name}`"));
    let r = match s.store.get(Kind::Source, name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    };
    let spec: StoredSource = serde_json::from_str(&r.spec).map_err(|_| not_found())?;
    Ok((r, spec))
}

/// The plans that back source `name` up.
/// The plans that use `name`, as far as `who` may see them.
async fn users(s: &AppState, who: &crate::access::Principal, name: &str) -> Vec<String> {
    s.store
        .list(Kind::Plan)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.plan.as_ref().is_some_and(|c| c.source == name))
        .filter(|p| {
            serde_json::from_str::<holdfast_core::plan::PlanSpec>(&p.spec)
                .is_ok_and(|sp| who.sees(&sp.labels))
        })
        .map(|p| p.name)
        .collect()
}

/// The edit form of one source: its settings filled in, its password blank (kept unless given).
pub async fn source(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let (r, spec) = match stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let mut f = Fields::new();
    f.insert("version".into(), r.version.to_string());
    f.insert("kind".into(), spec.kind.as_str().into());
    f.insert("url".into(), spec.url.clone());
    if let Some(c) = &spec.command {
        f.insert("command".into(), c.clone());
    }
    f.insert("labels".into(), labels_text(&spec.labels));
    for (k, on) in [
        ("single_stream", spec.single_stream),
        ("all_databases", spec.all_databases),
    ] {
        if on {
            f.insert(k.into(), "true".into());
        }
    }
    edit(&sess, &name, &f, &[], &users(&s, &sess.who, &name).await)
}

fn edit(
    sess: &Session,
    name: &str,
    values: &Fields,
    errors: &[FieldError],
    used_by: &[String],
) -> Response {
    let inputs: Vec<Input> = source_inputs(sess)
        .into_iter()
        .filter(|i| i.name != "name")
        .map(|i| match i.kind {
            InputKind::Secret => Input {
                hint: "write-only: leave empty to keep the one set",
                ..i
            },
            _ => i,
        })
        .collect();
    let body = html! {
        h1 { "Source " (name) }
        p #used-by { @if used_by.is_empty() { "No plan backs it up." } @else {
            "Backed up by " @for (i, p) in used_by.iter().enumerate() {
                @if i > 0 { ", " } a href={"/ui/plans/" (p)} { (p) }
            } "."
        } }
        (form(&format!("/ui/sources/{name}"), sess, &inputs, values, errors, "Save"))
        p { (delete_link(sess, "source", name)) }
    };
    (
        status_of(errors),
        page(&format!("Source {name}"), Some(sess), body),
    )
        .into_response()
}

pub async fn save_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let (_, spec) = match stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let r = match source_json(&f, &name, Some(&spec)).and_then(parse_input) {
        Ok(input) => outcome(
            crate::api::sources::save_source(
                &s,
                false,
                input,
                Some(&name),
                &if_match(&f),
                &sess.who,
            )
            .await,
            "/ui/sources",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => edit(
            &sess,
            &name,
            &without_secrets(f),
            &errs,
            &users(&s, &sess.who, &name).await,
        ),
    }
}

/// What deleting source `name` loses and keeps, in words.
fn consequences(name: &str, used_by: &[String]) -> maud::Markup {
    html! {
        p { "Holdfast forgets source " strong { (name) } ": its address, settings and stored password. "
            "The database itself is not touched, and the backups taken from it stay in their repositories." }
        @if !used_by.is_empty() {
            p.error #still-used { (plans_that(used_by, "backs it up", "back it up")) ": the server refuses to delete it until "
                (if used_by.len() == 1 { "that plan is deleted or backs" } else { "they are deleted or back" }) " up another source." }
        }
    }
}

pub async fn confirm_delete_source(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let (r, _) = match stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let used_by = users(&s, &sess.who, &name).await;
    let back = format!("/ui/sources/{name}");
    confirm_delete(
        &sess,
        "source",
        &name,
        r.version,
        &back,
        consequences(&name, &used_by),
        None,
    )
}

pub async fn delete_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let (r, _) = match stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let refused = if confirmed(&f, &name) {
        match crate::api::sources::delete_source(State(s.clone()), Path(name.clone()), if_match(&f))
            .await
        {
            Ok(_) => return Redirect::to("/ui/sources").into_response(),
            Err(e) => delete_refused(&e),
        }
    } else {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("type `{name}` to confirm"),
        )
    };
    let used_by = users(&s, &sess.who, &name).await;
    let back = format!("/ui/sources/{name}");
    let version = f
        .get("version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(r.version);
    confirm_delete(
        &sess,
        "source",
        &name,
        version,
        &back,
        consequences(&name, &used_by),
        Some(refused),
    )
}

//! The UI's sources: the list and the create form, through the API's own handlers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_core::plan::FieldError;
use holdfast_store::Kind;
use maud::html;
use serde_json::{Value, json};

use super::form::{Input, form, opt, outcome, parse_input, secret, select, text, without_secrets};
use super::page;
use super::session::{Fields, Posted, Session};
use crate::AppState;

fn source_inputs() -> Vec<Input<'static>> {
    vec![
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
        text(
            "command",
            "Command",
            "for kind command: its stdout is the backup",
        ),
    ]
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
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Sources" }
        table #sources {
            thead { tr { th { "Name" } th { "Kind" } th { "Address" } th { "Labels" } } }
            tbody { @for r in &list {
                @let v: Value = serde_json::from_str(&r.spec).unwrap_or_default();
                tr { td { (r.name) } td { (v["kind"].as_str().unwrap_or("")) }
                     td { code { (holdfast_core::location::redact_url(v["url"].as_str().unwrap_or(""))) } }
                     td { (v["labels"].to_string()) } }
            } }
        }
        h2 { "New source" }
        (form("/ui/sources", sess, &source_inputs(), values, errors, "Create source"))
    };
    (status, page("Sources", Some(sess), body)).into_response()
}

pub async fn create_source(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let v = json!({"name": f.get("name").cloned().unwrap_or_default(),
        "kind": f.get("kind").cloned().unwrap_or_default(), "url": opt(&f, "url"),
        "password": opt(&f, "password"), "command": opt(&f, "command")});
    let r = match parse_input(v) {
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

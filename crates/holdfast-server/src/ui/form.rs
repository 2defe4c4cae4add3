//! What the UI's forms share: inputs and the form that shows them with their field errors,
//! turning an API answer into "go there" or the form again, reading fields into the API's
//! input, the version an edit started from (sent as If-Match), and the confirmation step
//! before a delete. Every form goes through the API's own handlers, so validation is the API's.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::plan::FieldError;
use holdfast_store::Kind;
use maud::{Markup, html};
use serde_json::Value;

use super::session::{Fields, Session};
use super::{error_page, page};
use crate::AppState;
use crate::api::ApiError;

/// One input of a form.
pub(super) struct Input<'a> {
    pub(super) name: &'a str,
    pub(super) label: &'a str,
    pub(super) kind: InputKind,
    pub(super) hint: &'a str,
}

pub(super) enum InputKind {
    Text,
    Secret,
    /// A write-only secret of several lines (an SSH private key).
    SecretLines,
    /// Several lines shown as they are (a hook's script).
    Lines,
    Select(Vec<String>),
    Check,
}

pub(super) fn text<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Text,
        hint,
    }
}

pub(super) fn select<'a>(name: &'a str, label: &'a str, options: Vec<String>) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Select(options),
        hint: "",
    }
}

pub(super) fn secret<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Secret,
        hint,
    }
}

pub(super) fn secret_lines<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::SecretLines,
        hint,
    }
}

pub(super) fn lines<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Lines,
        hint,
    }
}

pub(super) fn check<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Check,
        hint,
    }
}

/// The form posting `inputs` to `action`, filled with `values`, each field's errors beside it.
/// A `version` among the values goes along hidden: the version of the resource this edit
/// started from, which the handler sends as If-Match.
pub(super) fn form(
    action: &str,
    sess: &Session,
    inputs: &[Input],
    values: &Fields,
    errors: &[FieldError],
    submit: &str,
) -> Markup {
    let error_of = |name: &str| {
        errors
            .iter()
            .filter(|e| e.field == name || e.field.starts_with(&format!("{name}.")))
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let unplaced: Vec<&FieldError> = errors
        .iter()
        .filter(|e| {
            !inputs
                .iter()
                .any(|i| e.field == i.name || e.field.starts_with(&format!("{}.", i.name)))
        })
        .collect();
    if !sess.may(action) {
        return html! { p.hint { "Your role cannot change this." } };
    }
    html! {
        form.edit method="post" action=(action) {
            input type="hidden" name="csrf" value=(sess.csrf);
            @if let Some(v) = values.get("version") { input type="hidden" name="version" value=(v); }
            @for e in &unplaced {
                @if e.field.is_empty() || e.field == "version" { p.error.form-error role="alert" { (e.reason) } }
                @else { p.error.form-error role="alert" { (e.field) ": " (e.reason) } }
            }
            @for i in inputs {
                @let value = values.get(i.name).cloned().unwrap_or_default();
                @let err = error_of(i.name);
                div.field {
                    label for=(i.name) { (i.label) }
                    @match &i.kind {
                        InputKind::Text => input id=(i.name) name=(i.name) value=(value);
                        InputKind::Secret => input id=(i.name) name=(i.name) type="password" autocomplete="new-password";
                        InputKind::SecretLines => textarea id=(i.name) name=(i.name) rows="4" autocomplete="off" spellcheck="false" {}
                        InputKind::Lines => textarea id=(i.name) name=(i.name) rows="3" spellcheck="false" { (value) },
                        InputKind::Select(options) => select id=(i.name) name=(i.name) {
                            @for o in options { option value=(o) selected[*o == value] { (o) } }
                        },
                        InputKind::Check => input id=(i.name) name=(i.name) type="checkbox" value="true" checked[value == "true"];
                    }
                    @if !i.hint.is_empty() { small.hint { (i.hint) } }
                    @if !err.is_empty() { p.error id={(i.name) "-error"} role="alert" { (err) } }
                }
            }
            button type="submit" { (submit) }
        }
    }
}

/// Turns an API answer into "go there" or the form again with its errors.
pub(super) fn outcome<T>(r: Result<T, ApiError>, ok: &str) -> Result<Response, Vec<FieldError>> {
    match r {
        Ok(_) => Ok(Redirect::to(ok).into_response()),
        Err(ApiError::Invalid(errs)) => Err(errs),
        Err(e) => Err(vec![FieldError {
            // A concurrent change is about the version the form started from.
            field: match e {
                ApiError::Precondition(_) => "version".into(),
                _ => String::new(),
            },
            reason: reason(&e),
        }]),
    }
}

/// What an API refusal tells the person at the form; a concurrent change says what to do.
pub(super) fn reason(e: &ApiError) -> String {
    match e {
        ApiError::Precondition(m) => format!(
            "Changed meanwhile, nothing was saved: {m}. Reload the page to see what it is now."
        ),
        e => e.to_string(),
    }
}

/// The If-Match of an edit or delete: the `version` its page was read at, if the form sent one.
pub(super) fn if_match(f: &Fields) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = f.get("version").and_then(|v| v.trim().parse::<i64>().ok())
        && let Ok(v) = HeaderValue::from_str(&format!("\"{v}\""))
    {
        h.insert(header::IF_MATCH, v);
    }
    h
}

/// The response status of a form shown again: 412 when it was changed meanwhile, 422 with
/// other errors, else 200.
pub(super) fn status_of(errors: &[FieldError]) -> StatusCode {
    if errors.iter().any(|e| e.field == "version") {
        StatusCode::PRECONDITION_FAILED
    } else if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// The path of the delete step of `noun` (`plan`, `source`, `endpoint`) `name`.
pub(super) fn delete_path(noun: &str, name: &str) -> String {
    format!("/ui/{noun}s/{name}/delete")
}

/// A link to the delete step, for a session that may take it.
pub(super) fn delete_link(sess: &Session, noun: &str, name: &str) -> Markup {
    let action = delete_path(noun, name);
    html! {
        @if sess.may(&action) { a.button.delete href=(action) { "Delete " (noun) "…" } }
    }
}

/// "Plan a uses" or "Plans a, b use": the plans in `names`, and the verb that goes with them.
pub(super) fn plans_that(names: &[String], one: &str, many: &str) -> String {
    match names {
        [one_plan] => format!("Plan {one_plan} {one}"),
        more => format!("Plans {} {many}", more.join(", ")),
    }
}

/// Whether the delete form came with the name typed again.
pub(super) fn confirmed(f: &Fields, name: &str) -> bool {
    f.get("confirm").map(|c| c.trim()) == Some(name)
}

/// The step before a delete, a page of its own that works without JavaScript: what is lost
/// and what stays (`what`), then a form that needs the name typed again and carries the
/// version read here (a change in between refuses the delete). `refused` is why the last try
/// did not delete, with its status.
pub(super) fn confirm_delete(
    sess: &Session,
    noun: &str,
    name: &str,
    version: i64,
    back: &str,
    what: Markup,
    refused: Option<(StatusCode, String)>,
) -> Response {
    let action = delete_path(noun, name);
    if !sess.may(&action) {
        return error_page(
            StatusCode::FORBIDDEN,
            &format!("your role cannot delete a {noun}"),
        );
    }
    let status = refused.as_ref().map_or(StatusCode::OK, |r| r.0);
    let body = html! {
        h1 { "Delete " (noun) " " (name) "?" }
        section #consequences { (what) }
        @if let Some((_, why)) = &refused { p.error #delete-error role="alert" { (why) } }
        form.edit.confirm method="post" action=(action) {
            input type="hidden" name="csrf" value=(sess.csrf);
            input type="hidden" name="version" value=(version);
            div.field {
                label for="confirm" { "Type " code { (name) } " to confirm" }
                input #confirm name="confirm" required autocomplete="off" spellcheck="false" pattern=(name);
            }
            button.delete type="submit" { "Delete " (noun) " " (name) }
            " " a href=(back) { "Cancel" }
        }
    };
    (
        status,
        page(&format!("Delete {noun} {name}"), Some(sess), body),
    )
        .into_response()
}

/// Why the API refused a delete, with its status (409 while something uses it, 412 when it
/// changed since the confirmation was shown), for the confirmation shown again.
pub(super) fn delete_refused(e: &ApiError) -> (StatusCode, String) {
    (e.status_code(), reason(e))
}

/// A form field that is empty means "not given".
pub(super) fn opt(f: &Fields, k: &str) -> Value {
    match f.get(k).map(|v| v.trim()) {
        None | Some("") => Value::Null,
        Some(v) => Value::String(v.to_string()),
    }
}

pub(super) fn parse_input<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        vec![FieldError {
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        }]
    })
}

pub(super) async fn names(s: &AppState, kind: Kind) -> Vec<String> {
    s.store
        .list(kind)
        .await
        .map(|rs| rs.into_iter().map(|r| r.name).collect())
        .unwrap_or_default()
}

/// Secrets are write-only: a form shown again never carries them back.
pub(super) fn without_secrets(mut f: Fields) -> Fields {
    for k in [
        "password",
        "secret_access_key",
        "storage_password",
        "ssh_key",
        "csrf",
    ] {
        f.remove(k);
    }
    f
}

/// `env=prod, site=berlin` as the API's labels.
pub(super) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, Vec<FieldError>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(vec![FieldError {
                field: "labels".into(),
                reason: format!("`{part}` is not key=value"),
            }]);
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

pub(super) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

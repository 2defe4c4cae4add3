//! What the UI's forms share: inputs and the form that shows them with their field errors,
//! turning an API answer into "go there" or the form again, and reading fields into the API's
//! input. Every form goes through the API's own handlers, so validation is the API's.

use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::plan::FieldError;
use holdfast_store::Kind;
use maud::{Markup, html};
use serde_json::Value;

use super::session::{Fields, Session};
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

pub(super) fn check<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
    Input {
        name,
        label,
        kind: InputKind::Check,
        hint,
    }
}

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
            @for e in &unplaced { p.error role="alert" { (e.field) ": " (e.reason) } }
            @for i in inputs {
                @let value = values.get(i.name).cloned().unwrap_or_default();
                @let err = error_of(i.name);
                div.field {
                    label for=(i.name) { (i.label) }
                    @match &i.kind {
                        InputKind::Text => input id=(i.name) name=(i.name) value=(value);
                        InputKind::Secret => input id=(i.name) name=(i.name) type="password" autocomplete="new-password";
                        InputKind::SecretLines => textarea id=(i.name) name=(i.name) rows="4" autocomplete="off" spellcheck="false" {}
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
            field: String::new(),
            reason: e.to_string(),
        }]),
    }
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

//! The UI's notifiers page: where alerts go (create, edit, delete, "send a test"), each with
//! the outcome of its last delivery, through the API's own handlers.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::plan::FieldError;
use maud::html;
use serde_json::{Value, json};

use super::form::{
    Input, InputKind, check, form, if_match, opt, outcome, parse_input, secret, select, status_of,
    text,
};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::access::Perm;
use crate::api::notifiers::{
    DeliveryView, TestReport, list_notifiers, notifier_deliveries, save_notifier, test_notifier,
};
use crate::notify::NotifierView;

const KINDS: &[&str] = &[
    "webhook",
    "email",
    "slack",
    "discord",
    "teams",
    "telegram",
    "ntfy",
    "gotify",
    "pagerduty",
    "heartbeat",
];
const SECRETS: &[&str] = &["url", "secret", "token", "password", "csrf"];

fn inputs() -> Vec<Input<'static>> {
    vec![
        text("name", "Name", "lowercase letters, digits and -"),
        select(
            "kind",
            "Kind",
            KINDS.iter().map(|k| k.to_string()).collect(),
        ),
        secret(
            "url",
            "URL",
            "webhook, Slack, Discord, Teams, ntfy topic, Gotify server or heartbeat URL (write-only)",
        ),
        secret(
            "secret",
            "Signing secret",
            "webhook: HMAC-SHA256 of the body in X-Holdfast-Signature",
        ),
        secret(
            "token",
            "Token",
            "Telegram bot token, ntfy or Gotify token, PagerDuty routing key",
        ),
        text("chat_id", "Telegram chat", ""),
        text("smtp_host", "SMTP server", "email"),
        text("smtp_port", "SMTP port", "587 STARTTLS, 465 TLS"),
        select(
            "smtp_security",
            "SMTP security",
            vec!["starttls".into(), "tls".into(), "none".into()],
        ),
        text("username", "SMTP login", ""),
        secret("password", "SMTP password", ""),
        text("from", "From", "Holdfast <backups@example.com>"),
        text("to", "To", "recipients, separated by commas"),
        select(
            "style",
            "Heartbeat style",
            vec!["healthchecks".into(), "uptime-kuma".into()],
        ),
        check(
            "default",
            "Default",
            "gets the events of plans that name no notifier, and agents' events",
        ),
        text(
            "group_secs",
            "Group within (s)",
            "messages for people: events this close together go out as one",
        ),
        text(
            "max_per_hour",
            "At most per hour",
            "more wait; nothing is dropped",
        ),
    ]
}

fn input_json(f: &Fields, name: &str) -> Value {
    let num = |k: &str| match f.get(k).map(|v| v.trim()) {
        None | Some("") => Value::Null,
        Some(v) => v
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.into())),
    };
    let kind = f.get("kind").cloned().unwrap_or_default();
    let email = kind == "email";
    let mut v = json!({"name": name, "kind": kind,
        "url": opt(f, "url"), "secret": opt(f, "secret"), "token": opt(f, "token"), "chat_id": opt(f, "chat_id"),
        "default": f.get("default").is_some_and(|v| v == "true")});
    if email {
        v["smtp_host"] = opt(f, "smtp_host");
        v["smtp_port"] = num("smtp_port");
        v["smtp_security"] = f
            .get("smtp_security")
            .cloned()
            .map_or(Value::Null, Value::String);
        v["username"] = opt(f, "username");
        v["password"] = opt(f, "password");
        v["from"] = opt(f, "from");
        v["to"] = f
            .get("to")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Value::String(t.into()))
                    .collect()
            })
            .unwrap_or(Value::Array(vec![]));
    }
    if kind == "heartbeat"
        && let Some(s) = f.get("style")
    {
        v["style"] = Value::String(s.clone());
    }
    for k in ["group_secs", "max_per_hour"] {
        if let n @ Value::Number(_) = num(k) {
            v[k] = n;
        } else if let s @ Value::String(_) = num(k) {
            v[k] = s;
        }
    }
    // Fields that do not apply to the kind are left out rather than refused.
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
    }
    v
}

pub async fn notifiers(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    notifiers_page(&s, &sess, &Fields::new(), &[], None).await
}

async fn notifiers_page(
    s: &Arc<AppState>,
    sess: &Session,
    values: &Fields,
    errors: &[FieldError],
    report: Option<(String, TestReport)>,
) -> Response {
    let list: Vec<NotifierView> = match list_notifiers(State(s.clone())).await {
        Ok(Json(l)) => l,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Notifiers" }
        p.hint { "Where alerts go. A plan names its notifiers under " code { "alerts.notify" } "; plans that name none use the default ones." }
        @if let Some((name, r)) = &report {
            section #test-report {
                h2 { "Test of " (name) ": " @if r.ok { span.badge.ok { "sent" } } @else { span.badge.failed { "failed" } } }
                p { @if let Some(st) = &r.status { "The receiver answered " code { (st) } ". " } @if let Some(e) = &r.error { span.error { (e) } } }
            }
        }
        table #notifiers {
            thead { tr { th { "Name" } th { "Kind" } th { "Sends to" } th { "Last delivery" } th {} } }
            tbody { @for n in &list {
                tr data-notifier=(n.name) {
                    td { a href={"/ui/notifiers/" (n.name)} { (n.name) } @if n.default { " " span.badge { "default" } } }
                    td { (n.kind.as_str()) }
                    td { code { @if let Some(h) = &n.smtp_host { (h) } @else { (n.url_hint.clone().unwrap_or_default()) } } }
                    td.delivery { @match n.last_delivery.as_deref() {
                        Some("sent") => span.badge.succeeded { "sent" },
                        Some(st @ ("retrying" | "failed")) => { span.badge.failed { (st) } " " span.error { (n.last_error.clone().unwrap_or_default()) } },
                        Some(st) => span.badge { (st) },
                        None => span.hint { "nothing sent yet" },
                    } }
                    td { @if sess.can(Perm::Configure) {
                        form.inline method="post" action={"/ui/notifiers/" (n.name) "/test"} {
                            input type="hidden" name="csrf" value=(sess.csrf);
                            button.test { "Send a test" }
                        }
                        form.inline method="post" action={"/ui/notifiers/" (n.name) "/delete"}
                            data-confirm={"Delete notifier " (n.name) "? Its undelivered messages are dropped."} {
                            input type="hidden" name="csrf" value=(sess.csrf);
                            button.delete { "Delete" }
                        }
                    } }
                }
            } }
        }
        h2 { "New notifier" }
        (form("/ui/notifiers", sess, &inputs(), values, errors, "Create notifier"))
    };
    (status, page("Notifiers", Some(sess), body)).into_response()
}

fn without_secrets(mut f: Fields) -> Fields {
    for k in SECRETS {
        f.remove(*k);
    }
    f
}

pub async fn create_notifier(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let r = match parse_input(input_json(&f, f.get("name").map_or("", String::as_str))) {
        Ok(input) => outcome(
            save_notifier(&s, false, input, None, &HeaderMap::new()).await,
            "/ui/notifiers",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => notifiers_page(&s, &sess, &without_secrets(f), &errs, None).await,
    }
}

/// The edit form of one notifier: its settings filled in, its secrets blank (kept unless given).
pub async fn notifier(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    let view = match crate::api::notifiers::get_notifier(State(s.clone()), Path(name.clone())).await
    {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let bytes = axum::body::to_bytes(view.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut f = Fields::new();
    if let Some(v) = v["version"].as_i64() {
        f.insert("version".into(), v.to_string());
    }
    for k in [
        "kind",
        "chat_id",
        "smtp_host",
        "smtp_security",
        "username",
        "from",
        "style",
    ] {
        if let Some(x) = v[k].as_str() {
            f.insert(k.into(), x.into());
        }
    }
    for k in ["smtp_port", "group_secs", "max_per_hour"] {
        if let Some(x) = v[k].as_u64() {
            f.insert(k.into(), x.to_string());
        }
    }
    let to: Vec<&str> = v["to"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    f.insert("to".into(), to.join(", "));
    if v["default"] == true {
        f.insert("default".into(), "true".into());
    }
    let deliveries = recent(&s, &name).await;
    edit(&sess, &name, &f, &[], &deliveries)
}

/// The notifier's newest deliveries, for its page.
async fn recent(s: &Arc<AppState>, name: &str) -> Vec<DeliveryView> {
    let q = axum::extract::Query(crate::api::notifiers::Limit { limit: 20 });
    match notifier_deliveries(State(s.clone()), Path(name.to_string()), q).await {
        Ok(Json(d)) => d,
        Err(_) => Vec::new(),
    }
}

fn edit(
    sess: &Session,
    name: &str,
    values: &Fields,
    errors: &[FieldError],
    deliveries: &[DeliveryView],
) -> Response {
    let inputs: Vec<Input> = inputs()
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
    let status = status_of(errors);
    let body = html! {
        h1 { "Notifier " (name) }
        (form(&format!("/ui/notifiers/{name}"), sess, &inputs, values, errors, "Save"))
        h2 { "Deliveries" }
        @if deliveries.is_empty() { p.hint { "Nothing sent yet." } } @else {
            table #deliveries {
                thead { tr { th { "Event" } th { "State" } th { "Tries" } th { "Answer" } th { "Last try" } } }
                tbody { @for d in deliveries {
                    tr data-delivery=(d.id) {
                        td { (d.event) }
                        td { span class={"badge " (d.state)} { (d.state) }
                             @if let Some(n) = &d.next_at { " " small { "next try " (super::when_text(n)) } } }
                        td { (d.attempts) }
                        td { (d.last_status.clone().unwrap_or_default())
                             @if let Some(e) = &d.last_error { " " span.error { (e) } } }
                        td { @if let Some(t) = d.tries.last() { (super::when_text(&t.at)) } }
                    }
                } }
            }
        }
    };
    (status, page(&format!("Notifier {name}"), Some(sess), body)).into_response()
}

pub async fn save(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let r = match parse_input(input_json(&f, &name)) {
        Ok(input) => outcome(
            save_notifier(&s, false, input, Some(&name), &if_match(&f)).await,
            "/ui/notifiers",
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            let deliveries = recent(&s, &name).await;
            edit(&sess, &name, &without_secrets(f), &errs, &deliveries)
        }
    }
}

pub async fn test(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, .. }: Posted,
) -> Response {
    match test_notifier(State(s.clone()), Path(name.clone())).await {
        Ok(Json(report)) => {
            notifiers_page(&s, &sess, &Fields::new(), &[], Some((name, report))).await
        }
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

pub async fn delete(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, .. }: Posted,
) -> Response {
    match crate::api::notifiers::delete_notifier(State(s.clone()), Path(name), HeaderMap::new())
        .await
    {
        Ok(_) => Redirect::to("/ui/notifiers").into_response(),
        Err(e) => {
            let err = vec![FieldError {
                field: String::new(),
                reason: e.to_string(),
            }];
            notifiers_page(&s, &sess, &Fields::new(), &err, None).await
        }
    }
}

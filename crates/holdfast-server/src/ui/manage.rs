//! The UI's forms: endpoints (create, test), sources (create), plans (create with a cron
//! preview, restore points, restore), agents. Every form goes through the API's own handlers,
//! so validation is the API's, and its field errors are shown beside their fields.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use holdfast_core::Schedule;
use holdfast_core::plan::{FieldError, PlanSpec};
use holdfast_store::Kind;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::access::Perm;
use crate::api::{ApiError, Body};

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

fn secret_lines<'a>(name: &'a str, label: &'a str, hint: &'a str) -> Input<'a> {
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

async fn names(s: &AppState, kind: Kind) -> Vec<String> {
    s.store
        .list(kind)
        .await
        .map(|rs| rs.into_iter().map(|r| r.name).collect())
        .unwrap_or_default()
}

// ----- endpoints -----

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
        "prune_timezone": f.get("prune_timezone").cloned().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "UTC".into())})
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

/// Secrets are write-only: a form shown again never carries them back.
fn without_secrets(mut f: Fields) -> Fields {
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
    for k in [
        "kind",
        "url",
        "access_key_id",
        "user",
        "prune_schedule",
        "prune_timezone",
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
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Endpoint " (name) }
        (form(&format!("/ui/endpoints/{name}"), sess, &inputs, values, errors, "Save"))
        form.inline method="post" action={"/ui/endpoints/" (name) "/test"} {
            input type="hidden" name="csrf" value=(sess.csrf);
            button.test { "Test connection" }
        }
    };
    (status, page(&format!("Endpoint {name}"), Some(sess), body)).into_response()
}

pub async fn save_endpoint(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let r = match parse_input(endpoint_json(&f, &name)) {
        Ok(input) => outcome(
            crate::api::endpoints::save_endpoint(&s, false, input, Some(&name), &HeaderMap::new())
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

// ----- sources -----

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

// ----- plans -----

pub async fn new_plan(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    let mut f = Fields::new();
    f.insert("timezone".into(), "UTC".into());
    f.insert("schedule".into(), "0 3 * * *".into());
    // The API's default retention, so a plan made here keeps what one made elsewhere keeps.
    if let holdfast_core::plan::Retention::Gfs(k) = holdfast_core::plan::Retention::default() {
        for (field, n) in [
            ("keep_last", k.last),
            ("keep_daily", k.daily),
            ("keep_weekly", k.weekly),
            ("keep_monthly", k.monthly),
        ] {
            if let Some(n) = n {
                f.insert(field.into(), n.to_string());
            }
        }
    }
    plan_form(&s, &sess, &f, &[]).await
}

async fn plan_form(
    s: &AppState,
    sess: &Session,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    let sources = names(s, Kind::Source).await;
    let endpoints = names(s, Kind::Endpoint).await;
    let inputs = vec![
        text("name", "Name", "lowercase letters, digits and -"),
        select("source", "Source", sources),
        select("endpoint", "Endpoint", endpoints),
        text(
            "schedule",
            "Schedule",
            "5-field cron (minute hour day month weekday) or @daily, @hourly …",
        ),
        text("timezone", "Time zone", "IANA name, e.g. Europe/Berlin"),
        text(
            "keep_last",
            "Keep the last",
            "backups (retention; empty: none by count)",
        ),
        text("keep_daily", "Keep daily", "one per day for this many days"),
        text("keep_weekly", "Keep weekly", ""),
        text("keep_monthly", "Keep monthly", ""),
        check("paused", "Paused", ""),
    ];
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "New plan" }
        (form("/ui/plans", sess, &inputs, values, errors, "Create plan"))
        section.preview {
            h2 { "Next runs" }
            ol #next-runs {}
            p.error #cron-error role="status" {}
        }
    };
    (status, page("New plan", Some(sess), body)).into_response()
}

pub async fn create_plan(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let mut keep = serde_json::Map::new();
    keep.insert("style".into(), "gfs".into());
    let mut bad = vec![];
    for (field, rule) in [
        ("keep_last", "last"),
        ("keep_daily", "daily"),
        ("keep_weekly", "weekly"),
        ("keep_monthly", "monthly"),
    ] {
        match f.get(field).map_or("", |v| v.trim()) {
            "" => {}
            v => match v.parse::<u32>() {
                Ok(n) => {
                    keep.insert(rule.into(), n.into());
                }
                Err(_) => bad.push(FieldError {
                    field: field.into(),
                    reason: "a whole number".into(),
                }),
            },
        }
    }
    let r = match bad.is_empty() {
        false => Err(bad),
        true => {
            let name = f.get("name").cloned().unwrap_or_default();
            let v = json!({"name": name,
                "source": f.get("source").cloned().unwrap_or_default(),
                "endpoint": f.get("endpoint").cloned().unwrap_or_default(),
                "schedule": f.get("schedule").cloned().unwrap_or_default(),
                "timezone": f.get("timezone").cloned().unwrap_or_default(),
                "paused": f.get("paused").is_some_and(|v| v == "true"),
                "retention": keep});
            match parse_input::<PlanSpec>(v) {
                Ok(spec) => outcome(
                    crate::api::plans::save_plan(
                        &s,
                        false,
                        spec,
                        None,
                        &HeaderMap::new(),
                        &sess.who,
                    )
                    .await,
                    &format!("/ui/plans/{name}"),
                ),
                Err(e) => Err(e),
            }
        }
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            let errs: Vec<FieldError> = errs
                .into_iter()
                .map(|mut e| {
                    if let Some(rule) = e.field.strip_prefix("retention.") {
                        e.field = format!("keep_{rule}");
                    } else if e.field == "retention" {
                        e.field = "keep_last".into();
                    }
                    e
                })
                .collect();
            plan_form(&s, &sess, &without_secrets(f), &errs).await
        }
    }
}

#[derive(Deserialize)]
pub struct CronQuery {
    schedule: String,
    timezone: String,
}

/// The next five runs of a schedule in a time zone, for the plan form as the user types.
pub async fn cron_preview(_: Session, Query(q): Query<CronQuery>) -> Response {
    match Schedule::parse(&q.schedule, &q.timezone) {
        Ok(sched) => {
            let now = jiff::Timestamp::now();
            let runs: Vec<String> = sched
                .upcoming(now, 5)
                .iter()
                .map(|z| z.strftime("%a %Y-%m-%d %H:%M %Z").to_string())
                .collect();
            Json(json!({"runs": runs})).into_response()
        }
        Err(e) => {
            let field = if e.what.starts_with("timezone") {
                "timezone"
            } else {
                "schedule"
            };
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"field": field, "error": e.to_string()})),
            )
                .into_response()
        }
    }
}

pub async fn plan(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    plan_page(&s, &sess, &name, &Fields::new(), &[]).await
}

async fn plan_page(
    s: &Arc<AppState>,
    sess: &Session,
    name: &str,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    let Ok(r) = s.store.must_get(Kind::Plan, name).await else {
        return error_page(StatusCode::NOT_FOUND, &format!("no plan named `{name}`"));
    };
    let spec: PlanSpec = serde_json::from_str(&r.spec).unwrap_or_else(|_| unreachable!());
    let points = crate::api::restores::restore_points(
        State(s.clone()),
        Ok(Query(crate::api::restores::RestorePointQuery {
            plan: Some(name.to_string()),
            endpoint: None,
        })),
    )
    .await;
    let sources = names(s, Kind::Source).await;
    let mut values = values.clone();
    values
        .entry("target_source".into())
        .or_insert_with(|| spec.source.clone());
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! {
        h1 { "Plan " (name) }
        @let paused = r.plan.as_ref().is_some_and(|c| c.paused);
        p { (spec.source) " → " (spec.endpoint) " · " code { (spec.schedule) } " " (spec.timezone)
            @if paused { " · " span.badge.stale #paused { "paused" } } }
        @if sess.may(&format!("/ui/plans/{name}/pause")) {
            form.inline method="post" action={"/ui/plans/" (name) (if paused { "/resume" } else { "/pause" })} {
                input type="hidden" name="csrf" value=(sess.csrf);
                button #pause { (if paused { "Resume" } else { "Pause" }) }
            }
            " "
        }
        @if sess.may(&format!("/ui/plans/{name}/run")) {
            form.inline method="post" action={"/ui/plans/" (name) "/run"} {
                input type="hidden" name="csrf" value=(sess.csrf);
                button.run { "Run now" }
            }
        }
        p { a href={"/ui/jobs?plan=" (name)} { "Jobs of this plan" } }
        h2 { "Settings" }
        table #settings {
            tbody {
                tr { th { "Next runs" } td { @if paused { "paused" } @else {
                    @let next = holdfast_core::Schedule::parse(&spec.schedule, &spec.timezone)
                        .map(|sc| sc.upcoming(jiff::Timestamp::now(), 5))
                        .unwrap_or_default();
                    @if next.is_empty() { "none" }
                    ul { @for z in &next { li { (z.strftime("%a %Y-%m-%d %H:%M %Z")) } } }
                } } }
                tr { th { "Retention" } td #retention { (retention_text(&spec.retention)) } }
                tr { th { "Copy" } td #copy { @match &spec.copy {
                    Some(c) => { "to endpoint " (c.endpoint) @if let Some(r) = &c.retention { ", keeping " (retention_text(r)) } @else { ", with the plan's retention" } },
                    None => "none",
                } } }
                tr { th { "Hooks" } td #hooks {
                    @let hooks = holdfast_core::lifecycle::Step::ALL.iter()
                        .filter_map(|st| spec.hooks.get(*st).map(|h| (st, h))).collect::<Vec<_>>();
                    @if hooks.is_empty() { "none" }
                    ul { @for (st, h) in &hooks { li { strong { (st) } " (timeout " (h.timeout_secs) " s): " code { (super::short(&h.run, 120)) } } } }
                } }
                tr { th { "Retries" } td { (spec.retry.attempts) " attempts, waiting " (spec.retry.base_secs) " s doubling to " (spec.retry.cap_secs) " s" } }
            }
        }
        h2 { "Restore points" }
        @match &points {
            Err(e) => p.error role="alert" { (e.to_string()) },
            Ok(Json(points)) if points.is_empty() => p { "No backups yet." },
            Ok(Json(points)) => {
                p #stored { (points.len()) " restore points; together they added "
                    (super::bytes(points.iter().map(|p| p.added_bytes as i64).sum())) " to the repository, for "
                    (super::bytes(points.iter().map(|p| p.bytes as i64).sum())) " of dumps" }
                table #restore-points {
                    thead { tr { th { "Restore point" } th { "Taken" } th { "Database" } th { "Size" } th { "Restore to…" } } }
                    tbody { @for p in points {
                        tr data-point=(p.short_id) {
                            td { code { (p.short_id) } } td { (super::when_text(&p.time)) }
                            td { (p.database.clone().unwrap_or_default()) }
                            td { (super::bytes(p.bytes as i64)) }
                            td {
                                @let inputs = vec![
                                    select("target_source", "Into source", sources.clone()),
                                    text("database", "Database", "a new name restores beside it; empty: the source's own (needs Overwrite)"),
                                    check("create", "Create the database", ""),
                                    check("force", "Overwrite what is there", "restored into a temporary database, swapped in only when it succeeded"),
                                ];
                                details open[!errors.is_empty() && values.get("point") == Some(&p.id)] {
                                    summary { "Restore…" }
                                    div.restore data-point=(p.short_id) {
                                        (form(&format!("/ui/plans/{name}/restore?point={}", p.id), sess, &inputs, &values, errors, "Restore"))
                                    }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    (status, page(&format!("Plan {name}"), Some(sess), body)).into_response()
}

#[derive(Deserialize)]
pub struct PointQuery {
    point: String,
}

pub async fn restore(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<PointQuery>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let v = json!({"plan": name, "restore_point": q.point,
        "target_source": opt(&f, "target_source"), "database": opt(&f, "database"),
        "create": f.get("create").is_some_and(|v| v == "true"),
        "force": f.get("force").is_some_and(|v| v == "true")});
    let r = match parse_input(v) {
        Ok(input) => {
            match crate::api::restores::create_restore(
                State(s.clone()),
                axum::Extension(sess.who.clone()),
                Body(input),
            )
            .await
            {
                Ok((_, Json(j))) => Ok(Redirect::to(&format!("/ui/jobs/{}", j.id)).into_response()),
                Err(e) => outcome::<()>(Err(e), ""),
            }
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            let mut f = without_secrets(f);
            f.insert("point".into(), q.point.clone());
            plan_page(&s, &sess, &name, &f, &errs).await
        }
    }
}

/// Pause or resume a plan (`paused` says which).
async fn set_paused(s: Arc<AppState>, name: String, paused: bool) -> Response {
    let r = if paused {
        crate::api::plans::pause_plan(State(s.clone()), Path(name.clone())).await
    } else {
        crate::api::plans::resume_plan(State(s.clone()), Path(name.clone())).await
    };
    match r {
        Ok(_) => Redirect::to(&format!("/ui/plans/{name}")).into_response(),
        Err(e) => error_page(StatusCode::CONFLICT, &e.to_string()),
    }
}

pub async fn pause(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_paused(s, name, true).await
}

pub async fn resume(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Posted,
) -> Response {
    set_paused(s, name, false).await
}

// ----- agents -----

/// A retention policy in words.
fn retention_text(r: &holdfast_core::plan::Retention) -> String {
    match r {
        holdfast_core::plan::Retention::Gfs(k) => {
            let parts: Vec<String> = [
                ("last", k.last),
                ("hourly", k.hourly),
                ("daily", k.daily),
                ("weekly", k.weekly),
                ("monthly", k.monthly),
                ("yearly", k.yearly),
            ]
            .iter()
            .filter_map(|(w, n)| n.map(|n| format!("{n} {w}")))
            .chain(k.within.as_ref().map(|w| format!("everything within {w}")))
            .collect();
            if parts.is_empty() {
                "everything".into()
            } else {
                parts.join(", ")
            }
        }
        holdfast_core::plan::Retention::Period { period, unit } => match unit {
            holdfast_core::plan::PeriodUnit::Days => format!("everything within {period} days"),
            holdfast_core::plan::PeriodUnit::Hours => format!("everything within {period} hours"),
            holdfast_core::plan::PeriodUnit::Files => format!("the last {period}"),
        },
    }
}

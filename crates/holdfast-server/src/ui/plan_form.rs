//! The UI's plan form, one for a new plan and for editing one: source, endpoint, schedule (with
//! the next runs as the user types), time zone, retention, paused, and the hooks for a session
//! that may set shell commands. An edit starts from the stored plan, so what the form does not
//! show (copy, alerts, retries, compression; the hooks for a session without `commands`) stays
//! as it is, and it carries the version it started from as If-Match.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_core::KeepPolicy;
use holdfast_core::Schedule;
use holdfast_core::lifecycle::{Hook, Step};
use holdfast_core::plan::{FieldError, PlanSpec, Retention};
use holdfast_store::Kind;
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::form::{
    Input, check, form, if_match, labels_text, lines, names, outcome, parse_input, parse_labels,
    select, status_of, text,
};
use super::session::{Fields, Posted, Session};
use super::{error_page, page};
use crate::AppState;
use crate::access::Perm;

/// A step's key in the API's `hooks` (`pre_backup_lock`).
fn hook_key(st: Step) -> String {
    st.as_str().replace('-', "_")
}

/// Each hook's fields: its script, its timeout, and its label.
static HOOK_FIELDS: LazyLock<Vec<(String, String, String)>> = LazyLock::new(|| {
    Step::ALL
        .iter()
        .map(|st| {
            let key = hook_key(*st);
            (
                format!("hook_{key}"),
                format!("hook_{key}_timeout"),
                format!("Hook {st}"),
            )
        })
        .collect()
});

fn plan_inputs(
    sess: &Session,
    sources: Vec<String>,
    endpoints: Vec<String>,
) -> Vec<Input<'static>> {
    let mut inputs = vec![
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
            "labels",
            "Labels",
            "key=value, separated by commas (team=payments): users and tokens scoped to labels see the plans carrying them",
        ),
        text(
            "keep_last",
            "Keep the last",
            "backups (retention; empty: none by count)",
        ),
        text(
            "keep_hourly",
            "Keep hourly",
            "one per hour for this many hours",
        ),
        text("keep_daily", "Keep daily", "one per day for this many days"),
        text("keep_weekly", "Keep weekly", ""),
        text("keep_monthly", "Keep monthly", ""),
        text("keep_yearly", "Keep yearly", ""),
        text(
            "keep_within",
            "Keep everything within",
            "a duration: 7d, 36h, 2w3d",
        ),
        check("paused", "Paused", ""),
    ];
    if sess.can(Perm::Commands) {
        for (run, timeout, label) in HOOK_FIELDS.iter() {
            inputs.push(lines(
                run,
                label,
                "shell script run on the agent; empty: none",
            ));
            inputs.push(text(timeout, "… its timeout (s)", "empty: 600"));
        }
    }
    inputs
}

/// The form's fields of a stored plan.
fn fields_of(spec: &PlanSpec, paused: bool, version: i64) -> Fields {
    let mut f = Fields::new();
    f.insert("version".into(), version.to_string());
    for (k, v) in [
        ("source", &spec.source),
        ("endpoint", &spec.endpoint),
        ("schedule", &spec.schedule),
        ("timezone", &spec.timezone),
    ] {
        f.insert(k.into(), v.clone());
    }
    if paused {
        f.insert("paused".into(), "true".into());
    }
    f.insert("labels".into(), labels_text(&spec.labels));
    keep_fields(&spec.retention.keep_policy(), &mut f);
    for st in Step::ALL {
        if let Some(h) = spec.hooks.get(st) {
            let key = hook_key(st);
            f.insert(format!("hook_{key}"), h.run.clone());
            f.insert(format!("hook_{key}_timeout"), h.timeout_secs.to_string());
        }
    }
    f
}

fn keep_fields(k: &KeepPolicy, f: &mut Fields) {
    for (field, n) in [
        ("keep_last", k.last),
        ("keep_hourly", k.hourly),
        ("keep_daily", k.daily),
        ("keep_weekly", k.weekly),
        ("keep_monthly", k.monthly),
        ("keep_yearly", k.yearly),
    ] {
        if let Some(n) = n {
            f.insert(field.into(), n.to_string());
        }
    }
    if let Some(w) = &k.within {
        f.insert("keep_within".into(), w.clone());
    }
}

/// The retention rules of the form.
fn keep_of(f: &Fields, bad: &mut Vec<FieldError>) -> KeepPolicy {
    let mut num = |field: &str| match f.get(field).map_or("", |v| v.trim()) {
        "" => None,
        v => v.parse::<u32>().map_err(|_| bad.push(whole(field))).ok(),
    };
    KeepPolicy {
        last: num("keep_last"),
        hourly: num("keep_hourly"),
        daily: num("keep_daily"),
        weekly: num("keep_weekly"),
        monthly: num("keep_monthly"),
        yearly: num("keep_yearly"),
        within: f
            .get("keep_within")
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty()),
    }
}

fn whole(field: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "a whole number".into(),
    }
}

/// The plan a form means: the stored one (or a new one) with what the form shows laid over it.
/// Retention the form leaves as it showed it stays as stored (also in the `period` style);
/// hooks are read only when the form showed them.
fn spec_of(f: &Fields, name: &str, stored: Option<&PlanSpec>) -> Result<PlanSpec, Vec<FieldError>> {
    let mut v = stored.map_or_else(
        || json!({}),
        |sp| serde_json::to_value(sp).unwrap_or_default(),
    );
    v["name"] = name.into();
    for k in ["source", "endpoint", "schedule", "timezone"] {
        if let Some(x) = f.get(k) {
            v[k] = Value::String(x.clone());
        }
    }
    v["paused"] = f.get("paused").is_some_and(|x| x == "true").into();
    let mut bad = vec![];
    if let Some(t) = f.get("labels") {
        match parse_labels(t) {
            Ok(l) => v["labels"] = serde_json::to_value(l).unwrap_or_default(),
            Err(e) => bad.extend(e),
        }
    }
    if f.contains_key("keep_last") {
        let keep = keep_of(f, &mut bad);
        if stored.is_none_or(|sp| sp.retention.keep_policy() != keep) {
            v["retention"] = serde_json::to_value(Retention::Gfs(keep)).unwrap_or_default();
        }
    }
    if f.keys().any(|k| k.starts_with("hook_")) {
        let mut hooks = serde_json::Map::new();
        for st in Step::ALL {
            let key = hook_key(st);
            // Browsers send a textarea's lines with CRLF.
            let run = f
                .get(&format!("hook_{key}"))
                .map(|r| r.replace("\r\n", "\n"))
                .unwrap_or_default();
            if run.trim().is_empty() {
                continue;
            }
            let field = format!("hook_{key}_timeout");
            let timeout = match f.get(&field).map_or("", |t| t.trim()) {
                "" => None,
                t => t.parse::<u64>().map_err(|_| bad.push(whole(&field))).ok(),
            };
            let kept = stored.and_then(|sp| sp.hooks.get(st)).filter(|h: &&Hook| {
                h.run.trim() == run.trim() && timeout.is_none_or(|t| t == h.timeout_secs)
            });
            let hook = match kept {
                Some(h) => serde_json::to_value(h).unwrap_or_default(),
                None => match timeout {
                    Some(t) => json!({"run": run, "timeout_secs": t}),
                    None => json!({"run": run}),
                },
            };
            hooks.insert(key, hook);
        }
        v["hooks"] = Value::Object(hooks);
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    parse_input::<PlanSpec>(v)
}

/// The API's field names as the form's: `retention.daily` is `keep_daily`, `hooks.backup.run`
/// is `hook_backup`.
fn form_errors(errs: Vec<FieldError>) -> Vec<FieldError> {
    errs.into_iter()
        .map(|mut e| {
            if let Some(rule) = e.field.strip_prefix("retention.") {
                e.field = format!("keep_{rule}");
            } else if e.field == "retention" {
                e.field = "keep_last".into();
            } else if let Some(h) = e.field.strip_prefix("hooks.") {
                let (step, rest) = h.split_once('.').unwrap_or((h, ""));
                e.field = match rest {
                    "timeout_secs" => format!("hook_{step}_timeout"),
                    _ => format!("hook_{step}"),
                };
            }
            e
        })
        .collect()
}

/// The page of the plan form: a new plan (`name` is `None`) or an edit of plan `name`.
async fn form_page(
    s: &AppState,
    sess: &Session,
    name: Option<&str>,
    values: &Fields,
    errors: &[FieldError],
) -> Response {
    let sources = names(s, Kind::Source).await;
    let endpoints = names(s, Kind::Endpoint).await;
    let mut inputs = plan_inputs(sess, sources, endpoints);
    let (title, action, submit) = match name {
        None => (
            "New plan".to_string(),
            "/ui/plans".to_string(),
            "Create plan",
        ),
        Some(n) => {
            inputs.retain(|i| i.name != "name");
            (
                format!("Edit plan {n}"),
                format!("/ui/plans/{n}/edit"),
                "Save",
            )
        }
    };
    let body = html! {
        h1 { (title) }
        @if let Some(n) = name {
            p.hint { "Its copy, alerts, retries and compression stay as they are (the "
                a href={"/ui/plans/" (n)} { "plan's page" } " shows them; the API and "
                code { "holdfast apply" } " change them)."
                @if !sess.can(Perm::Commands) { " Its hooks too: setting shell commands needs the commands permission." } }
        }
        (form(&action, sess, &inputs, values, errors, submit))
        section.preview {
            h2 { "Next runs" }
            ol #next-runs {}
            p.error #cron-error role="status" {}
        }
    };
    (status_of(errors), page(&title, Some(sess), body)).into_response()
}

pub async fn new_plan(State(s): State<Arc<AppState>>, sess: Session) -> Response {
    let mut f = Fields::new();
    f.insert("timezone".into(), "UTC".into());
    f.insert("schedule".into(), "0 3 * * *".into());
    // A scoped session's plans carry its labels.
    if let Some(l) = sess.who.scope().labels() {
        f.insert("labels".into(), labels_text(l));
    }
    // The API's default retention, so a plan made here keeps what one made elsewhere keeps.
    keep_fields(&Retention::default().keep_policy(), &mut f);
    form_page(&s, &sess, None, &f, &[]).await
}

pub async fn create_plan(
    State(s): State<Arc<AppState>>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let name = f.get("name").cloned().unwrap_or_default();
    submit(&s, &sess, f, &name, None).await
}

/// The stored plan, whether it is paused, and its version.
/// The stored plan (its spec, whether it is paused, its version), or the page that says why not.
pub(super) async fn stored(s: &AppState, name: &str) -> Result<(PlanSpec, bool, i64), Response> {
    let not_found = || error_page(StatusCode::NOT_FOUND, &format!("no plan named `{name}`"));
    let r = match s.store.get(Kind::Plan, name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    };
    let spec: PlanSpec = serde_json::from_str(&r.spec).map_err(|_| not_found())?;
    let paused = r.plan.as_ref().is_some_and(|c| c.paused);
    Ok((spec, paused, r.version))
}

/// The edit form of one plan, filled with what is stored.
pub async fn edit_plan(
    State(s): State<Arc<AppState>>,
    sess: Session,
    Path(name): Path<String>,
) -> Response {
    match stored(&s, &name).await {
        Ok((spec, paused, version)) => {
            let f = fields_of(&spec, paused, version);
            form_page(&s, &sess, Some(&name), &f, &[]).await
        }
        Err(page) => page,
    }
}

pub async fn save_plan(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Posted { sess, fields: f }: Posted,
) -> Response {
    let (before, _, _) = match stored(&s, &name).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    submit(&s, &sess, f, &name, Some(&before)).await
}

/// Saves what the form means (a new plan, or the stored `before` changed) through the API:
/// the plan's page, or the form again with the API's field errors.
async fn submit(
    s: &Arc<AppState>,
    sess: &Session,
    mut f: Fields,
    name: &str,
    before: Option<&PlanSpec>,
) -> Response {
    let (path, headers) = match before {
        Some(_) => (Some(name), if_match(&f)),
        None => (None, HeaderMap::new()),
    };
    let r = match spec_of(&f, name, before) {
        Ok(spec) => outcome(
            crate::api::plans::save_plan(s, false, spec, path, &headers, &sess.who).await,
            &format!("/ui/plans/{name}"),
        ),
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => r,
        Err(errs) => {
            f.remove("csrf");
            form_page(s, sess, path, &f, &form_errors(errs)).await
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

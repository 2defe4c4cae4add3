//! `/api/v1/notifiers`: where alerts go (create, read, replace with If-Match, delete), a test
//! message, and each notifier's deliveries; `/api/v1/events`: what the server noticed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use holdfast_core::alert::EventKind;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Kind, NewResource, Resource};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::{WriteOpts, invalid, merge_secrets, name_matches, parse, spec_json, upsert};
use super::{ApiError, ApiResult, Body, ErrorBody, if_match, tagged};
use crate::AppState;
use crate::model::rfc3339;
use crate::notify::model::{NotifierInput, NotifierSecrets, NotifierView, StoredNotifier};
use crate::notify::{Notification, send};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_notifiers, create_notifier))
        .routes(routes!(get_notifier, put_notifier, delete_notifier))
        .routes(routes!(test_notifier))
        .routes(routes!(notifier_deliveries))
        .routes(routes!(list_events))
}

async fn notifier_view(r: &Resource, s: &AppState) -> ApiResult<NotifierView> {
    let n: StoredNotifier = parse(r)?;
    let secrets: NotifierSecrets = match &r.secrets {
        Some(sealed) => s.open_secrets(Kind::Notifier, &r.name, sealed)?,
        None => Default::default(),
    };
    let last = s
        .store
        .deliveries(Some(&r.name), 1)
        .await?
        .into_iter()
        .next();
    let (last_delivery, last_error) = match last {
        Some((d, _)) => {
            let word = match d.state.as_str() {
                "queued" | "sending" if d.attempts > 0 => "retrying".to_string(),
                other => other.to_string(),
            };
            (Some(word), d.last_error)
        }
        None => (None, None),
    };
    Ok(NotifierView {
        name: r.name.clone(),
        kind: n.kind,
        url_hint: n.url_hint,
        url_set: secrets.url.is_some(),
        secret_set: secrets.secret.is_some(),
        token_set: secrets.token.is_some(),
        password_set: secrets.password.is_some(),
        chat_id: n.chat_id,
        headers: n.header_names,
        smtp_host: n.smtp_host,
        smtp_port: n.smtp_port,
        smtp_security: n.smtp_security,
        username: n.username,
        from: n.from,
        to: n.to,
        style: n.style,
        default: n.default,
        group_secs: n.group_secs,
        max_per_hour: n.max_per_hour,
        last_delivery,
        last_error,
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/notifiers", security(("token" = ["read"])), tag = "notifiers",
    responses((status = 200, body = [NotifierView])))]
pub async fn list_notifiers(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<NotifierView>>> {
    let mut out = Vec::new();
    for r in s.store.list(Kind::Notifier).await? {
        out.push(notifier_view(&r, &s).await?);
    }
    Ok(Json(out))
}

pub(crate) async fn save_notifier(
    s: &AppState,
    dry_run: bool,
    input: NotifierInput,
    path_name: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &input.name)?;
    }
    let existing = s.store.get(Kind::Notifier, &input.name).await?;
    let creating = existing.is_none() || path_name.is_none();
    invalid(input.validate(creating))?;
    let (name, mut spec, secrets) = input.split();
    if let Some(old) = existing
        .as_ref()
        .and_then(|r| serde_json::from_str::<StoredNotifier>(&r.spec).ok())
    {
        // Secrets left out keep their stored values, and with them what the view shows.
        if secrets.url.is_none() {
            spec.url_hint = old.url_hint;
        }
        if secrets.headers.is_none() {
            spec.header_names = old.header_names;
        }
    }
    let sealed = merge_secrets(s, Kind::Notifier, &name, existing.as_ref(), &secrets)?;
    // What the notifier will send with: the stored secrets with the new ones over them.
    let effective: NotifierSecrets =
        match (&sealed, existing.as_ref().and_then(|r| r.secrets.as_ref())) {
            (Some(new), _) => s.open_secrets(Kind::Notifier, &name, new)?,
            (None, Some(old)) => s.open_secrets(Kind::Notifier, &name, old)?,
            (None, None) => NotifierSecrets::default(),
        };
    if let Err((field, reason)) = send::reachable(&spec, &effective).await {
        return Err(ApiError::field(field, reason));
    }
    let new = NewResource {
        name,
        spec: spec_json(&spec),
        secrets: sealed,
        plan: None,
    };
    let (status, r) = upsert(
        s,
        Kind::Notifier,
        &new,
        path_name,
        existing.as_ref(),
        headers,
        dry_run,
    )
    .await?;
    Ok(tagged(status, r.version, notifier_view(&r, s).await?))
}

#[utoipa::path(post, path = "/notifiers", security(("token" = ["configure"])), tag = "notifiers", request_body = NotifierInput,
    description = "Creates a notifier. Its receiver is checked first: an SMTP server is connected to (and logged in to), an HTTP receiver's host and port must accept a connection; a failure is a 422 naming the field.",
    responses((status = 201, body = NotifierView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_notifier(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(input): Body<NotifierInput>,
) -> ApiResult<Response> {
    save_notifier(&s, false, input, None, &headers).await
}

#[utoipa::path(get, path = "/notifiers/{name}", security(("token" = ["read"])), tag = "notifiers",
    responses((status = 200, body = NotifierView), (status = 404, body = ErrorBody)))]
pub async fn get_notifier(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Notifier, &name).await?;
    Ok(tagged(
        StatusCode::OK,
        r.version,
        notifier_view(&r, &s).await?,
    ))
}

#[utoipa::path(put, path = "/notifiers/{name}", security(("token" = ["configure"])), tag = "notifiers", params(WriteOpts), request_body = NotifierInput,
    description = "Creates or replaces a notifier. Secrets left out keep their stored values. Send If-Match with the ETag of a GET to refuse a concurrent change (412).",
    responses((status = 200, body = NotifierView), (status = 201, body = NotifierView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_notifier(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(input): Body<NotifierInput>,
) -> ApiResult<Response> {
    save_notifier(&s, opts.dry_run, input, Some(&name), &headers).await
}

#[utoipa::path(delete, path = "/notifiers/{name}", security(("token" = ["configure"])), tag = "notifiers",
    description = "Deletes a notifier that no plan routes to. Its undelivered messages are dropped.",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_notifier(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    s.store.must_get(Kind::Notifier, &name).await?;
    let users: Vec<String> = s
        .store
        .list(Kind::Plan)
        .await?
        .into_iter()
        .filter(|p| {
            serde_json::from_str::<PlanSpec>(&p.spec)
                .is_ok_and(|spec| spec.alerts.notify.iter().any(|r| r.notifier == name))
        })
        .map(|p| p.name)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "notifier `{name}` is named by plan(s) {}; take it out of their `alerts.notify` first",
            users.join(", ")
        )));
    }
    s.store
        .delete(Kind::Notifier, &name, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How a test message went.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestReport {
    pub ok: bool,
    /// The receiver's answer: `HTTP 200`, `SMTP 250`.
    pub status: Option<String>,
    pub error: Option<String>,
}

#[utoipa::path(post, path = "/notifiers/{name}/test", security(("token" = ["configure"])), tag = "notifiers",
    description = "Sends a `test` event to the notifier now, outside the outbox, and reports the receiver's answer.",
    responses((status = 200, body = TestReport), (status = 404, body = ErrorBody)))]
pub async fn test_notifier(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<TestReport>> {
    let r = s.store.must_get(Kind::Notifier, &name).await?;
    let n: StoredNotifier = parse(&r)?;
    let secrets: NotifierSecrets = match &r.secrets {
        Some(sealed) => s.open_secrets(Kind::Notifier, &name, sealed)?,
        None => Default::default(),
    };
    let now = s.now();
    let mut note = Notification::new(
        EventKind::Test,
        format!("Test notification from Holdfast to `{name}`"),
        rfc3339(now),
    );
    note.text = "If you read this, Holdfast's alerts reach you here.".into();
    let key = format!("holdfast-test-{name}-{now}");
    Ok(Json(
        match s.sender.send(&n, &secrets, &[note], &key).await {
            Ok(status) => TestReport {
                ok: true,
                status: Some(status),
                error: None,
            },
            Err(e) => TestReport {
                ok: false,
                status: e.status,
                error: Some(e.error),
            },
        },
    ))
}

/// One delivery of one event to one notifier.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: i64,
    #[schema(value_type = String)]
    pub event: String,
    pub notifier: String,
    /// `queued` (waiting, or retrying after a failure), `sending`, `sent` or `failed` (given
    /// up).
    pub state: String,
    pub attempts: i64,
    /// When it is tried next (queued ones).
    pub next_at: Option<String>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub tries: Vec<AttemptView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub at: String,
    pub ok: bool,
    pub status: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// How many, newest first (1 to 500; default 50).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default = "fifty")]
    pub limit: i64,
}

fn fifty() -> i64 {
    50
}

impl Limit {
    fn get(&self) -> ApiResult<i64> {
        if (1..=500).contains(&self.limit) {
            Ok(self.limit)
        } else {
            Err(ApiError::field(
                "limit",
                format!("{} is out of range; 1 to 500", self.limit),
            ))
        }
    }
}

#[utoipa::path(get, path = "/notifiers/{name}/deliveries", security(("token" = ["read"])), tag = "notifiers", params(Limit),
    description = "The notifier's newest deliveries with every attempt: the receiver's answer or the error.",
    responses((status = 200, body = [DeliveryView]), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn notifier_deliveries(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Vec<DeliveryView>>> {
    let limit = q.get()?;
    s.store.must_get(Kind::Notifier, &name).await?;
    let mut out = Vec::new();
    for (d, e) in s.store.deliveries(Some(&name), limit).await? {
        let tries = s
            .store
            .delivery_attempts(d.id)
            .await?
            .into_iter()
            .map(|a| AttemptView {
                at: rfc3339(a.at),
                ok: a.ok,
                status: a.status,
                error: a.error,
            })
            .collect();
        out.push(DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event: e.kind,
            notifier: d.notifier,
            next_at: (d.state == "queued").then(|| rfc3339(d.next_at)),
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            sent_at: d.sent_at.map(rfc3339),
            tries,
        });
    }
    Ok(Json(out))
}

/// Something the server noticed, as notifiers receive it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub notification: Notification,
    /// False for news that only heartbeats get (a start, a success, a failure the plan's
    /// `after_failures` or `repeat` held back).
    pub alert: bool,
}

#[utoipa::path(get, path = "/events", security(("token" = ["read"])), tag = "notifiers", params(Limit),
    description = "The newest events, newest first.",
    responses((status = 200, body = [EventView]), (status = 422, body = ErrorBody)))]
pub async fn list_events(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<crate::access::Principal>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Vec<EventView>>> {
    let limit = q.get()?;
    // A scoped caller sees its plans' events (none of the server-wide ones, such as an
    // agent gone offline).
    let visible = crate::access::scope::visible_plans(&s.store, &who).await?;
    let out = s
        .store
        .events(limit)
        .await?
        .into_iter()
        .filter(|e| {
            visible
                .as_ref()
                .is_none_or(|v| e.plan.as_ref().is_some_and(|p| v.contains(p)))
        })
        .filter_map(|e| {
            let mut n: Notification = serde_json::from_str(&e.payload).ok()?;
            n.id = e.id;
            Some(EventView {
                notification: n,
                alert: e.alert,
            })
        })
        .collect();
    Ok(Json(out))
}

//! `/api/v1/sources`: the databases, folders and commands to back up (create, read, replace
//! with If-Match, delete).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use holdfast_store::{Kind, NewResource, Resource};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::resources::{WriteOpts, merge_secrets, name_matches, parse, spec_json, upsert};
use super::{ApiError, ApiResult, Body, ErrorBody, if_match, tagged};
use crate::AppState;
use crate::access::{Perm, Principal};
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_sources, create_source))
        .routes(routes!(get_source, put_source, delete_source))
}

fn source_view(r: &Resource) -> ApiResult<SourceView> {
    let s: StoredSource = parse(r)?;
    Ok(SourceView {
        name: r.name.clone(),
        kind: s.kind,
        url: s.url,
        command: s.command,
        labels: s.labels,
        single_stream: s.single_stream,
        all_databases: s.all_databases,
        // Whether the sealed secrets hold a password is not worth a decryption per listing.
        password_set: r.secrets.is_some(),
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    })
}

#[utoipa::path(get, path = "/sources", security(("token" = ["read"])), tag = "sources",
    responses((status = 200, body = [SourceView])))]
pub async fn list_sources(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<SourceView>>> {
    let rows = s.store.list(Kind::Source).await?;
    rows.iter()
        .map(source_view)
        .collect::<ApiResult<_>>()
        .map(Json)
}

pub(crate) async fn save_source(
    s: &AppState,
    dry_run: bool,
    input: SourceInput,
    path_name: Option<&str>,
    headers: &HeaderMap,
    who: &Principal,
) -> ApiResult<Response> {
    if let Some(p) = path_name {
        name_matches(p, &input.name)?;
    }
    let (name, spec, secrets) = input.validate().map_err(ApiError::Invalid)?;
    let existing = s.store.get(Kind::Source, &name).await?;
    if spec.command.is_some() || spec.url.starts_with("cmd:") {
        let before = existing
            .as_ref()
            .and_then(|r| serde_json::from_str::<StoredSource>(&r.spec).ok());
        // Also its labels: they choose the agents the command runs on.
        let same = before.is_some_and(|b| {
            b.url == spec.url && b.command == spec.command && b.labels == spec.labels
        });
        if !same {
            who.require(
                Perm::Commands,
                "a new or changed `cmd:` source (a shell command, and where it runs)",
            )?;
        }
    }
    if let Some(why) = crate::access::server_path(s, &spec.url) {
        return Err(ApiError::field("url", why));
    }
    let sealed = if secrets.password.is_some() || existing.is_some() {
        merge_secrets(s, Kind::Source, &name, existing.as_ref(), &secrets)?
    } else {
        None
    };
    let new = NewResource {
        name,
        spec: spec_json(&spec),
        secrets: sealed,
        plan: None,
    };
    let (status, r) = upsert(
        s,
        Kind::Source,
        &new,
        path_name,
        existing.as_ref(),
        headers,
        dry_run,
    )
    .await?;
    Ok(tagged(status, r.version, source_view(&r)?))
}

#[utoipa::path(post, path = "/sources", security(("token" = ["configure"])), tag = "sources", request_body = SourceInput,
    responses((status = 201, body = SourceView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_source(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    Body(input): Body<SourceInput>,
) -> ApiResult<Response> {
    save_source(&s, false, input, None, &headers, &who).await
}

#[utoipa::path(get, path = "/sources/{name}", security(("token" = ["read"])), tag = "sources",
    responses((status = 200, body = SourceView), (status = 404, body = ErrorBody)))]
pub async fn get_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let r = s.store.must_get(Kind::Source, &name).await?;
    Ok(tagged(StatusCode::OK, r.version, source_view(&r)?))
}

#[utoipa::path(put, path = "/sources/{name}", security(("token" = ["configure"])), tag = "sources", params(WriteOpts), request_body = SourceInput,
    responses((status = 200, body = SourceView), (status = 201, body = SourceView), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_source(
    State(s): State<Arc<AppState>>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(name): Path<String>,
    Query(opts): Query<WriteOpts>,
    headers: HeaderMap,
    Body(input): Body<SourceInput>,
) -> ApiResult<Response> {
    save_source(&s, opts.dry_run, input, Some(&name), &headers, &who).await
}

#[utoipa::path(delete, path = "/sources/{name}", security(("token" = ["configure"])), tag = "sources",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_source(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    for p in s.store.list(Kind::Plan).await? {
        if let Ok(spec) = serde_json::from_str::<holdfast_core::plan::PlanSpec>(&p.spec)
            && spec.verify.and_then(|v| v.into).as_deref() == Some(name.as_str())
        {
            return Err(ApiError::Conflict(format!(
                "source `{name}` is the scratch server plan `{}` restores its drills into; \
                 change the plan's verify.into first",
                p.name
            )));
        }
    }
    s.store
        .delete(Kind::Source, &name, if_match(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

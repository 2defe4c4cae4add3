//! The REST API under `/api/v1`: routing, authentication, errors, and the OpenAPI document.

pub(crate) mod agents;
pub(crate) mod jobs;
pub(crate) mod resources;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use holdfast_core::plan::FieldError;
use holdfast_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;

/// Every error the API answers with: a message that names the thing and what to do, and for
/// validation errors each bad field with its reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

#[derive(Debug)]
pub enum ApiError {
    Invalid(Vec<FieldError>),
    NotFound(String),
    Conflict(String),
    Precondition(String),
    Unauthorized,
    BadRequest(String),
    /// The storage endpoint or the source failed (the API itself is fine).
    BadGateway(String),
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError {
            field: field.into(),
            reason: reason.into(),
        }])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Exists { .. } | StoreError::InUse { .. } => Self::Conflict(e.to_string()),
            StoreError::VersionMismatch { .. } => Self::Precondition(e.to_string()),
            StoreError::Db(_) => {
                tracing::error!("{e}");
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::secrets::OpenError> for ApiError {
    fn from(e: crate::secrets::OpenError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(fields) => {
                let msg: Vec<String> = fields
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.reason))
                    .collect();
                f.write_str(&msg.join("; "))
            }
            Self::Unauthorized => f.write_str(
                "missing, unknown or revoked API token: send `Authorization: Bearer TOKEN` \
                 (the admin token is printed at the server's first start)",
            ),
            Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Precondition(m)
            | Self::BadRequest(m)
            | Self::BadGateway(m)
            | Self::Internal(m) => f.write_str(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = self.to_string();
        let fields = match self {
            Self::Invalid(fields) => fields,
            _ => vec![],
        };
        let mut resp = (status, axum::Json(ErrorBody { error, fields })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose every problem (syntax, a missing or unknown field, a wrong type) is a 422
/// naming the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(Body)
            .map_err(|e| ApiError::Invalid(vec![json_field_error(&e)]))
    }
}

fn json_field_error(e: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let inner = e.inner();
    let mut reason = inner.to_string();
    if let Some(i) = reason.find(" at line ") {
        reason.truncate(i);
    }
    let path = e.path().to_string();
    let parent = if path == "." { String::new() } else { path };
    let named = |prefix: &str| {
        reason.strip_prefix(prefix).and_then(|r| {
            let r = r.strip_prefix('`')?;
            Some(r[..r.find('`')?].to_string())
        })
    };
    let field = if let Some(f) = named("unknown field ").or_else(|| named("missing field ")) {
        let sub = parent.rsplit_once('.').map_or("", |(p, _)| p);
        // serde_path_to_error reports an unknown field's own name as the last path segment.
        let base = if reason.starts_with("unknown field") && parent.ends_with(&f) {
            sub.to_string()
        } else {
            parent.clone()
        };
        if base.is_empty() {
            f
        } else {
            format!("{base}.{f}")
        }
    } else if inner.is_syntax() || inner.is_eof() {
        reason = format!("the body is not valid JSON: {reason}");
        "body".into()
    } else if parent.is_empty() {
        "body".into()
    } else {
        parent
    };
    FieldError { field, reason }
}

/// The `If-Match` version, if the client sent one (`"3"`, `W/"3"` or `*`).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    s.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "If-Match `{s}` is not an ETag this server sent; use the ETag header of a GET"
            ))
        })
}

/// A JSON answer with the resource's version as its ETag.
pub fn tagged<T: Serialize>(status: StatusCode, version: i64, body: T) -> Response {
    (
        status,
        [(header::ETAG, format!("\"{version}\""))],
        axum::Json(body),
    )
        .into_response()
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    let hash = crate::secrets::hash_token(token);
    if state.internal_token_hash.as_deref() == Some(hash.as_str()) {
        return next.run(req).await;
    }
    match state.store.token_by_hash(&hash).await {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.count(holdfast_store::Kind::Plan).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metadata store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

async fn openapi_json() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such API path; the API is described at /api/v1/openapi.json".into())
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Holdfast API", description = "Backups of databases into restic-format repositories: storage endpoints, sources, plans, jobs, restore points and restores."),
    modifiers(&BearerAuth),
    security(("token" = [])),
    paths(
        resources::list_endpoints, resources::create_endpoint, resources::get_endpoint,
        resources::put_endpoint, resources::delete_endpoint, resources::test_endpoint,
        resources::prune_endpoint,
        resources::list_sources, resources::create_source, resources::get_source,
        resources::put_source, resources::delete_source,
        resources::list_plans, resources::create_plan, resources::get_plan,
        resources::put_plan, resources::delete_plan, resources::pause_plan,
        resources::resume_plan, resources::run_plan,
        jobs::list_jobs, jobs::get_job, jobs::job_log, jobs::cancel_job,
        jobs::restore_points, jobs::create_restore,
        jobs::list_tokens, jobs::create_token, jobs::revoke_token,
        agents::list_agents, agents::register_agent, agents::claim, agents::heartbeat,
        agents::log, agents::step, agents::finish,
    ),
    components(schemas(ErrorBody, FieldError))
)]
pub struct ApiDoc;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi_json))
        .route(
            "/endpoints",
            get(resources::list_endpoints).post(resources::create_endpoint),
        )
        .route(
            "/endpoints/{name}",
            get(resources::get_endpoint)
                .put(resources::put_endpoint)
                .delete(resources::delete_endpoint),
        )
        .route("/endpoints/{name}/test", post(resources::test_endpoint))
        .route("/endpoints/{name}/prune", post(resources::prune_endpoint))
        .route(
            "/sources",
            get(resources::list_sources).post(resources::create_source),
        )
        .route(
            "/sources/{name}",
            get(resources::get_source)
                .put(resources::put_source)
                .delete(resources::delete_source),
        )
        .route(
            "/plans",
            get(resources::list_plans).post(resources::create_plan),
        )
        .route(
            "/plans/{name}",
            get(resources::get_plan)
                .put(resources::put_plan)
                .delete(resources::delete_plan),
        )
        .route("/plans/{name}/pause", post(resources::pause_plan))
        .route("/plans/{name}/resume", post(resources::resume_plan))
        .route("/plans/{name}/run", post(resources::run_plan))
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/log", get(jobs::job_log))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/restore-points", get(jobs::restore_points))
        .route("/restores", post(jobs::create_restore))
        .route("/tokens", get(jobs::list_tokens).post(jobs::create_token))
        .route("/tokens/{id}", axum::routing::delete(jobs::revoke_token))
        .route(
            "/agents",
            get(agents::list_agents).post(agents::register_agent),
        )
        .route("/agents/{name}/claim", post(agents::claim))
        .route(
            "/agents/{name}/jobs/{id}/heartbeat",
            post(agents::heartbeat),
        )
        .route("/agents/{name}/jobs/{id}/log", post(agents::log))
        .route("/agents/{name}/jobs/{id}/steps", post(agents::step))
        .route("/agents/{name}/jobs/{id}/finish", post(agents::finish))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", api)
        .merge(crate::ui::router())
        .with_state(state)
}

//! The REST API under `/api/v1`: routing, authentication, errors, and the OpenAPI document.

pub(crate) mod agents;
pub(crate) mod drills;
mod ticket;
pub(crate) use ticket::access_of;
mod audit;
mod document;
pub(crate) mod endpoints;
pub(crate) mod enrolments;
pub(crate) mod jobs;
pub(crate) mod notifiers;
pub(crate) mod plans;
mod resources;
pub(crate) mod restores;
pub(crate) mod sources;
pub(crate) mod tokens;
pub(crate) mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use holdfast_core::plan::FieldError;
use holdfast_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// Every error the API answers with: a message that names the thing and what to do, and for
/// validation errors each bad field with its reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    /// For a 500: the id under which the server logged the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug)]
pub enum ApiError {
    Invalid(Vec<FieldError>),
    NotFound(String),
    Conflict(String),
    Precondition(String),
    /// No credential, or one that is unknown, revoked or expired: why.
    Unauthorized(String),
    /// A credential that may not do this: what it lacks.
    Forbidden(String),
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
            StoreError::Exists { .. } | StoreError::InUse { .. } | StoreError::LastAdmin => {
                Self::Conflict(e.to_string())
            }
            StoreError::VersionMismatch { .. } => Self::Precondition(e.to_string()),
            StoreError::Db(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::secrets::OpenError> for ApiError {
    fn from(e: crate::secrets::OpenError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
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
            Self::Unauthorized(why) => write!(
                f,
                "{why}: send `Authorization: Bearer TOKEN` with a live token (the admin token \
                 is printed at the server's first start; more come from POST /api/v1/tokens)"
            ),
            Self::NotFound(m)
            | Self::Forbidden(m)
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
        // The cause of a 500 (a database's error text, say) goes to the log only; the client
        // gets the id to find it there.
        let (error, request_id) = match &self {
            Self::Internal(cause) => {
                let id = hex::encode(crate::secrets::random_bytes::<8>());
                tracing::error!(request_id = %id, "internal error: {cause}");
                (
                    format!(
                        "internal server error; the server's log has the cause under request id {id}"
                    ),
                    Some(id),
                )
            }
            _ => (self.to_string(), None),
        };
        let fields = match self {
            Self::Invalid(fields) => fields,
            _ => vec![],
        };
        let body = ErrorBody {
            error,
            fields,
            request_id,
        };
        let mut resp = (status, axum::Json(body)).into_response();
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
        decode_json(&bytes).map(Body)
    }
}

/// Reads a JSON body as [`Body`] does: every problem a 422 naming the field.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| ApiError::Invalid(vec![json_field_error(&e)]))
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

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.count(holdfast_store::Kind::Plan).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!("healthz: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata store unavailable\n",
            )
                .into_response()
        }
    }
}

/// The server's health: its metadata store and its background workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or why the metadata store cannot be read.
    pub store: String,
    pub workers: Vec<crate::worker::WorkerStatus>,
}

#[utoipa::path(get, path = "/health", security(("token" = ["read"])), tag = "health",
    description = "The metadata store and every background worker (scheduler, reaper, embedded agent): runs, last run, last error, restarts. `/healthz` (no token) answers only ok or 503.",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (status, store) = match state.store.count(holdfast_store::Kind::Plan).await {
        Ok(_) => (StatusCode::OK, "ok".to_string()),
        Err(e) => {
            tracing::error!("health: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the metadata store cannot be read (the server's log has the cause)".to_string(),
            )
        }
    };
    let body = Health {
        store,
        workers: state.workers.status(),
    };
    (status, axum::Json(body)).into_response()
}

async fn openapi_json() -> Response {
    axum::Json(openapi()).into_response()
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

/// The document's frame: its title, the bearer scheme and the shared schemas. Its paths come
/// from the routers themselves ([`api_routes`]), so each route is declared once.
#[derive(OpenApi)]
#[openapi(
    info(title = "Holdfast API", description = "Backups of databases into restic-format repositories: storage endpoints, sources, plans, jobs, restore points and restores."),
    modifiers(&BearerAuth),
    security(("token" = [])),
    components(schemas(ErrorBody, FieldError))
)]
struct ApiDoc;

/// Every documented route under `/api/v1`, with its OpenAPI entry.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(endpoints::router())
        .merge(sources::router())
        .merge(plans::router())
        .merge(drills::router())
        .merge(jobs::router())
        .merge(restores::router())
        .merge(tokens::router())
        .merge(agents::router())
        .merge(enrolments::router())
        .merge(users::router())
        .merge(audit::router())
        .merge(notifiers::router())
        .routes(routes!(health))
}

/// The API's OpenAPI 3.1 document, built from the routers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        document::conform(
            OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi())
                .nest("/api/v1", api_routes())
                .into_openapi(),
        )
    })
    .clone()
}

pub fn router(state: Arc<AppState>) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(crate::metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::layer,
        ));
    let api = api_routes()
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::layer,
        ))
        .layer(axum::middleware::from_fn(document::json_errors));
    let (api, _) = OpenApiRouter::new().nest("/api/v1", api).split_for_parts();
    Router::new()
        .route("/healthz", get(healthz))
        .merge(metrics)
        .merge(api)
        .merge(crate::proxy::router())
        .merge(
            crate::ui::router().layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::audit::ui_layer,
            )),
        )
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// What every answer carries so that a browser treats it safely: the UI's pages load only
/// their own script and style, are never framed, never sniffed, never sent as a referrer,
/// and no answer (pages, API) is kept in a cache.
async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; \
             object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

//! `/api/v1/tokens`: API tokens (stored as hashes; a new token is shown once), revoke.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiResult, Body, ErrorBody};
use crate::AppState;
use crate::model::*;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

fn token_view(t: (i64, String, i64, Option<i64>)) -> TokenView {
    TokenView {
        id: t.0,
        name: t.1,
        created_at: rfc3339(t.2),
        revoked_at: t.3.map(rfc3339),
        token: None,
    }
}

#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, body = [TokenView])))]
pub async fn list_tokens(State(s): State<Arc<AppState>>) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = s.store.tokens().await?;
    Ok(Json(tokens.into_iter().map(token_view).collect()))
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = TokenInput,
    description = "Creates an API token. The answer holds the token; it is shown only this once.",
    responses((status = 201, body = TokenView), (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<Arc<AppState>>,
    Body(input): Body<TokenInput>,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    if input.name.trim().is_empty() || input.name.chars().count() > 100 {
        return Err(ApiError::field(
            "name",
            "1 to 100 characters, saying who or what uses the token",
        ));
    }
    let token = crate::secrets::new_token();
    let now = s.now();
    let id = s
        .store
        .insert_token(&input.name, &crate::secrets::hash_token(&token), now)
        .await?;
    let mut v = token_view((id, input.name, now, None));
    v.token = Some(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    description = "Revokes a token at once.",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("token `{id}` not found")))?;
    if s.store.revoke_token(n, s.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no live token with id {n} (it may be revoked already)"
        )))
    }
}

//! What the endpoints, sources and plans modules share: reading a stored spec, keeping
//! write-only secrets, and one create-or-replace path (POST, PUT with If-Match, dry runs).

use axum::http::{HeaderMap, StatusCode};
use holdfast_core::plan::FieldError;
use holdfast_store::{Kind, NewResource, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, ApiResult, if_match};
use crate::AppState;

pub(super) fn parse<T: DeserializeOwned>(r: &Resource) -> ApiResult<T> {
    serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::Internal(format!("stored {} is unreadable: {e}", r.name)))
}

pub(super) fn spec_json<T: Serialize>(t: &T) -> String {
    serde_json::to_string(t).expect("specs serialize")
}

/// Seals the secrets given in `new` over those stored in `old`: a field left out keeps its
/// stored value. `None` keeps what is stored: nothing was given, or only the stored values.
pub(super) fn merge_secrets<T: Serialize>(
    state: &AppState,
    kind: Kind,
    name: &str,
    old: Option<&Resource>,
    new: &T,
) -> ApiResult<Option<String>> {
    let new = serde_json::to_value(new).expect("secrets serialize");
    let given: serde_json::Map<String, serde_json::Value> = new
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if given.is_empty() && old.is_some() {
        return Ok(None);
    }
    let stored = match old.and_then(|r| r.secrets.as_deref()) {
        Some(sealed) => Some(state.open_secrets::<serde_json::Value>(kind, name, sealed)?),
        None => None,
    };
    let mut merged = stored
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if let Some(m) = merged.as_object_mut() {
        m.extend(given);
    }
    if stored.as_ref() == Some(&merged) {
        return Ok(None);
    }
    Ok(Some(state.seal(kind, name, &merged)))
}

pub(super) fn name_matches(path: &str, body: &str) -> ApiResult<()> {
    if path == body {
        Ok(())
    } else {
        Err(ApiError::field(
            "name",
            format!(
                "`{body}` differs from the name in the URL (`{path}`); renaming is not supported"
            ),
        ))
    }
}

pub(super) fn invalid(errs: Vec<FieldError>) -> ApiResult<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errs))
    }
}

/// Creates the resource (POST, or PUT of a new name) or replaces it (PUT, honouring If-Match).
/// A PUT that changes nothing writes nothing: the version (ETag) stays, so `holdfast apply`
/// is idempotent and can tell what changed.
pub(super) async fn upsert(
    s: &AppState,
    kind: Kind,
    new: &NewResource,
    path_name: Option<&str>,
    existing: Option<&Resource>,
    headers: &HeaderMap,
    dry_run: bool,
) -> ApiResult<(StatusCode, Resource)> {
    // What the write would store, for a dry run.
    let would_be = |old: Option<&Resource>| Resource {
        name: new.name.clone(),
        spec: new.spec.clone(),
        secrets: new
            .secrets
            .clone()
            .or_else(|| old.and_then(|o| o.secrets.clone())),
        version: old.map_or(1, |o| o.version + 1),
        created_at: old.map_or(s.now(), |o| o.created_at),
        updated_at: s.now(),
        plan: new.plan.clone(),
    };
    if let (Some(_), Some(old)) = (path_name, existing) {
        let if_version = if_match(headers)?;
        if if_version.is_some_and(|v| v != old.version) && dry_run {
            return Err(holdfast_store::StoreError::VersionMismatch {
                kind: kind.noun(),
                name: new.name.clone(),
                current: old.version,
            }
            .into());
        }
        let same = old.spec == new.spec && new.secrets.is_none() && old.plan == new.plan;
        if same && if_version.is_none_or(|v| v == old.version) {
            return Ok((StatusCode::OK, old.clone()));
        }
        if dry_run {
            return Ok((StatusCode::OK, would_be(Some(old))));
        }
        let r = s.store.update(kind, new, if_version, s.now()).await?;
        Ok((StatusCode::OK, r))
    } else if dry_run {
        if existing.is_some() {
            return Err(holdfast_store::StoreError::Exists {
                kind: kind.noun(),
                name: new.name.clone(),
            }
            .into());
        }
        Ok((StatusCode::CREATED, would_be(None)))
    } else {
        Ok((
            StatusCode::CREATED,
            s.store.create(kind, new, s.now()).await?,
        ))
    }
}

/// Options of a create or replace.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteOpts {
    /// Validate and answer with what would be stored, without storing it.
    #[serde(default)]
    pub dry_run: bool,
}

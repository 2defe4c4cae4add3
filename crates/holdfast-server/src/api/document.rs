//! The OpenAPI document as a generated client needs it, and error answers as it describes
//! them.
//!
//! utoipa writes a `#[serde(flatten)]` field as `allOf: [Inner, {...}]`; when `Inner` refuses
//! unknown fields (`additionalProperties: false`), nothing can validate against the whole, so
//! a generated client rejects every answer (`PlanView`) and every GFS retention. Each such
//! `allOf` of plain objects is merged here into one object. Every operation also documents
//! the errors every route can answer (401; 400, 404 and 422 where it has query or path
//! parameters or a body), once, instead of in each route.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ErrorBody;

/// The document, with flattened types merged and the common errors on every operation.
pub(super) fn conform(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    // Components first (a merged component is then merged again where it is referenced).
    for _ in 0..4 {
        let schemas = v["components"]["schemas"].clone();
        merge_all_of(&mut v["components"]["schemas"], &schemas);
    }
    let schemas = v["components"]["schemas"].clone();
    merge_all_of(&mut v["paths"], &schemas);
    if let Some(paths) = v["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    add_errors(op);
                }
            }
        }
    }
    serde_json::from_value(v).expect("the adjusted OpenAPI document reads back")
}

/// Replaces, anywhere under `v`, an `allOf` whose members are all plain object schemas
/// (directly or by `$ref` into `schemas`) with one object holding all their properties.
fn merge_all_of(v: &mut Value, schemas: &Value) {
    match v {
        Value::Object(obj) => {
            if let Some(merged) = obj.get("allOf").and_then(|a| merged_object(a, schemas)) {
                obj.remove("allOf");
                for (k, val) in merged {
                    if k != "description" || !obj.contains_key("description") {
                        obj.insert(k, val);
                    }
                }
            }
            for val in obj.values_mut() {
                merge_all_of(val, schemas);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| merge_all_of(i, schemas)),
        _ => {}
    }
}

fn merged_object(all_of: &Value, schemas: &Value) -> Option<Map<String, Value>> {
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    let mut closed = false;
    let mut description = None;
    for member in all_of.as_array()? {
        let member = match member.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas.get(r.strip_prefix("#/components/schemas/")?)?,
            None => member,
        };
        let m = member.as_object()?;
        // Only plain objects: a member that is a oneOf, an array or another allOf stays as is.
        if m.get("type").and_then(Value::as_str) != Some("object")
            || ["oneOf", "anyOf", "allOf"]
                .iter()
                .any(|k| m.contains_key(*k))
        {
            return None;
        }
        for (k, p) in m
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            properties.insert(k.clone(), p.clone());
        }
        for r in m
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
        closed |= m.get("additionalProperties") == Some(&Value::Bool(false));
        if description.is_none() {
            description = m.get("description").cloned();
        }
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    if let Some(d) = description {
        out.insert("description".into(), d);
    }
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    out.insert("properties".into(), Value::Object(properties));
    if closed {
        out.insert("additionalProperties".into(), json!(false));
    }
    Some(out)
}

/// Documents on `op` the errors any route can answer.
fn add_errors(op: &mut Value) {
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has_in = |place: &str| params.iter().any(|p| p["in"] == place);
    let has_body = op.get("requestBody").is_some();
    let scope = op["security"][0]["token"][0]
        .as_str()
        .unwrap_or("admin")
        .to_string();
    let mut add = |status: &str, description: &str| {
        let responses = &mut op["responses"];
        if responses.get(status).is_none() {
            responses[status] = json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            });
        }
    };
    add(
        "401",
        "Missing, unknown, revoked or expired token: send `Authorization: Bearer TOKEN`.",
    );
    add(
        "403",
        &format!(
            "The credential may not do this: the route needs `{scope}` (see the `token` \
             security requirement), or what the body asks for needs more."
        ),
    );
    if has_in("query") || has_body {
        add(
            "400",
            "A query parameter out of its range or of the wrong type, or a body that cannot be read.",
        );
    }
    if has_in("path") {
        add("404", "No such resource.");
    }
    if has_body {
        add(
            "422",
            "The body is not valid JSON or not the documented shape; `fields` names each bad field.",
        );
    }
}

/// Every error the API answers is an [`ErrorBody`], also those axum's extractors and router
/// answer themselves in plain text (a query string of the wrong type, a method not allowed).
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = (
        status,
        axum::Json(ErrorBody {
            error,
            fields: vec![],
            request_id: None,
        }),
    )
        .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

//! The repository proxy: restic's REST protocol (rest-server's HTTP API) at `/proxy/`, so
//! that agents of an endpoint with `agent_access: server` open the repository as an ordinary
//! `rest:` repository and never hold a storage credential. The server forwards each request to
//! the real storage through the same backends as everything else, and enforces what the
//! job's capability allows (rules.rs): a backup reads, lists and adds files that are not there
//! yet, each hashing to its name, a snapshot only of its own plan made during its run; a
//! restore only reads; nothing is ever deleted or overwritten here. Every refusal is a 403
//! with the reason, an audit entry, a `security.violation` event and a metric.
//!
//! Memory: an upload is held whole (one pack, 16 MiB as Holdfast writes them, at most
//! [`MAX_FILE`]) while its hash is checked, and at most [`UPLOADS`] are in flight at once.

mod capability;
pub mod rules;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use holdfast_engine::Repo;
use holdfast_engine::repo::raw::{FileType, file_id, file_type};
use sha2::{Digest, Sha256};

pub use capability::Capability;
use rules::{Access, Op, Refusal};

use crate::AppState;
use crate::notify::evaluate::{blank, security_violation};

/// The largest file an agent may upload (restic's largest pack size, and some room).
pub const MAX_FILE: usize = 130 * 1024 * 1024;

/// Uploads held in memory at once, over all jobs.
pub const UPLOADS: usize = 8;

/// What the proxy keeps between requests.
pub struct ProxyState {
    uploads: tokio::sync::Semaphore,
    /// Refusals since the start, by reason (`holdfast_proxy_denied_total`).
    pub denied: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for ProxyState {
    fn default() -> Self {
        Self {
            uploads: tokio::sync::Semaphore::new(UPLOADS),
            denied: Mutex::default(),
        }
    }
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/proxy/", post(create))
        .route("/proxy/{tpe}/", get(list))
        .route("/proxy/{tpe}", any(config))
        .route("/proxy/{tpe}/{name}", any(file))
}

/// What one request is about, for the audit log and the answer.
struct Ask<'a> {
    method: &'a Method,
    tpe: &'a str,
    name: Option<&'a str>,
    remote: Option<String>,
}

impl Ask<'_> {
    fn resource(&self, endpoint: Option<&str>) -> String {
        let ep = endpoint.unwrap_or("?");
        match self.name {
            Some(n) => format!("endpoints/{ep}/{}/{n}", self.tpe),
            None => format!("endpoints/{ep}/{}", self.tpe),
        }
    }
}

async fn create(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let ask = Ask {
        method: req.method(),
        tpe: "",
        name: None,
        remote: crate::audit::remote(req.extensions()),
    };
    match capability::verify(&s, req.headers()).await {
        Err((cap, r)) => refuse(&s, cap.as_ref(), &ask, r).await,
        Ok((cap, _)) => {
            let r = rules::decide(cap.access, Op::Create, None).unwrap_err();
            refuse(&s, Some(&cap), &ask, r).await
        }
    }
}

async fn list(State(s): State<Arc<AppState>>, Path(tpe): Path<String>, req: Request) -> Response {
    let ask = Ask {
        method: req.method(),
        tpe: &tpe,
        name: None,
        remote: crate::audit::remote(req.extensions()),
    };
    let cap = match capability::verify(&s, req.headers()).await {
        Ok((cap, _)) => cap,
        Err((cap, r)) => return refuse(&s, cap.as_ref(), &ask, r).await,
    };
    let v2 = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/vnd.x.restic.rest.v2"));
    // Holdfast keeps no lock files: the list of them is empty.
    let files = match file_type(&tpe) {
        Some(t) if t != FileType::Config => {
            match storage(&s, &cap, move |r| r.files().list(t)).await {
                Ok(f) => f,
                Err(resp) => return resp,
            }
        }
        _ if tpe == "locks" => vec![],
        _ => return not_found(&format!("no file type `{tpe}`")),
    };
    let (body, ctype) = if v2 {
        let v: Vec<_> = files
            .iter()
            .map(|(n, size)| serde_json::json!({"name": n, "size": size}))
            .collect();
        (v.into(), "application/vnd.x.restic.rest.v2")
    } else {
        let v: Vec<_> = files.iter().map(|(n, _)| n.clone()).collect();
        (
            serde_json::Value::from(v),
            "application/vnd.x.restic.rest.v1",
        )
    };
    ([(header::CONTENT_TYPE, ctype)], body.to_string()).into_response()
}

async fn config(State(s): State<Arc<AppState>>, Path(tpe): Path<String>, req: Request) -> Response {
    if tpe != "config" {
        return not_found(&format!("no file `{tpe}`"));
    }
    handle(s, tpe, None, req).await
}

async fn file(
    State(s): State<Arc<AppState>>,
    Path((tpe, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(s, tpe, Some(name), req).await
}

async fn handle(s: Arc<AppState>, tpe: String, name: Option<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ask = Ask {
        method: &parts.method,
        tpe: &tpe,
        name: name.as_deref(),
        remote: crate::audit::remote(&parts.extensions),
    };
    let (cap, job) = match capability::verify(&s, &parts.headers).await {
        Ok(v) => v,
        Err((cap, r)) => return refuse(&s, cap.as_ref(), &ask, r).await,
    };
    let t = file_type(&tpe);
    if t.is_none() && tpe != "locks" {
        return not_found(&format!("no file type `{tpe}`"));
    }
    let id = match (t, &name) {
        (Some(FileType::Config), None) => rustic_id_of_config(),
        (Some(FileType::Config), Some(_)) | (_, None) => {
            return not_found("no such file");
        }
        (_, Some(n)) => match file_id(n) {
            Some(id) => id,
            None => {
                let r = Refusal::new(
                    "bad-name",
                    format!("`{n}` is not a file name (64 lowercase hex digits)"),
                );
                return refuse(&s, Some(&cap), &ask, r).await;
            }
        },
    };
    let op = match parts.method {
        Method::GET | Method::HEAD => Op::Read,
        Method::POST => Op::Add,
        Method::DELETE => Op::Delete,
        _ => return (StatusCode::METHOD_NOT_ALLOWED, "HEAD, GET, POST or DELETE").into_response(),
    };
    if let Err(r) = rules::decide(cap.access, op, t) {
        return refuse(&s, Some(&cap), &ask, r).await;
    }
    // Locks: reads only (there are none), and adding them was refused above.
    let Some(t) = t else {
        return not_found("no such lock");
    };
    match op {
        Op::Read => read(&s, &cap, t, id, &parts.method, &parts.headers).await,
        Op::Add => add(&s, &cap, &job, &ask, t, id, body).await,
        Op::Delete | Op::Create => unreachable!("refused by the rules"),
    }
}

/// The config file's id: rustic names it by the default id.
fn rustic_id_of_config() -> holdfast_engine::repo::raw::Id {
    holdfast_engine::repo::raw::Id::default()
}

async fn read(
    s: &AppState,
    cap: &Capability,
    t: FileType,
    id: holdfast_engine::repo::raw::Id,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    if method == Method::HEAD {
        return match storage(s, cap, move |r| r.files().exists(t, &id)).await {
            Ok(true) => StatusCode::OK.into_response(),
            Ok(false) => not_found("no such file"),
            Err(resp) => resp,
        };
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    match storage(s, cap, move |r| {
        let files = r.files();
        match files.read(t, &id, range) {
            Ok(b) => Ok(Some(b)),
            // A read that fails for a file that is not there is a 404, not an outage.
            Err(e) => match files.exists(t, &id) {
                Ok(false) => Ok(None),
                _ => Err(e),
            },
        }
    })
    .await
    {
        Ok(Some(b)) => {
            let status = if range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
                b,
            )
                .into_response()
        }
        Ok(None) => not_found("no such file"),
        Err(resp) => resp,
    }
}

/// `bytes=START-END` as (offset, length).
fn parse_range(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then(|| (a, b - a + 1))
}

async fn add(
    s: &AppState,
    cap: &Capability,
    job: &holdfast_store::Job,
    ask: &Ask<'_>,
    t: FileType,
    id: holdfast_engine::repo::raw::Id,
    body: Body,
) -> Response {
    let Ok(_permit) = s.proxy.uploads.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the server is stopping").into_response();
    };
    let data: Bytes = match axum::body::to_bytes(body, MAX_FILE).await {
        Ok(d) => d,
        Err(e) => {
            let r = Refusal::new(
                "too-large",
                format!(
                    "the upload could not be read whole ({e}); files are at most {} MiB",
                    MAX_FILE >> 20
                ),
            );
            return refuse(s, Some(cap), ask, r).await;
        }
    };
    let name = id.to_hex().to_string();
    let hash = hex::encode(Sha256::digest(&data));
    if hash != name {
        let r = Refusal::new(
            "content-hash",
            format!("the content's SHA-256 is {hash}, not its name {name}"),
        );
        return refuse(s, Some(cap), ask, r).await;
    }
    match storage(s, cap, move |r| r.files().exists(t, &id)).await {
        Ok(true) => {
            let r = Refusal::new(
                "exists",
                format!("{}/{name} exists already; nothing is overwritten", ask.tpe),
            );
            return refuse(s, Some(cap), ask, r).await;
        }
        Ok(false) => {}
        Err(resp) => return resp,
    }
    if t == FileType::Snapshot {
        let d = data.clone();
        let facts = match storage(s, cap, move |r| Ok(r.files().snapshot_facts(&d))).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                let r = Refusal::new("snapshot-unreadable", e.to_string());
                return refuse(s, Some(cap), ask, r).await;
            }
            Err(resp) => return resp,
        };
        let now = s.now();
        let originals = match &cap.copy_of {
            None => None,
            Some(main) => {
                let main = Capability {
                    endpoint: main.clone(),
                    ..cap.clone()
                };
                match storage(s, &main, |r| r.files().all_snapshot_facts()).await {
                    Ok(f) => Some(f),
                    Err(resp) => return resp,
                }
            }
        };
        let origin = match &originals {
            Some(o) => rules::Origin::CopyOf(o),
            None => rules::Origin::Run {
                started: job.started_at.unwrap_or(now),
                now,
            },
        };
        let original =
            match rules::check_snapshot(&facts, &cap.plan, cap.source_kind.as_deref(), origin) {
                Ok(o) => o,
                Err(r) => return refuse(s, Some(cap), ask, r).await,
            };
        // A copy is judged by when its original was received (or, for one that came in
        // directly, by the original's own time, which the copy has been checked to carry):
        // copies made in one go arrive in no particular order.
        let received_at = match (original, &cap.copy_of) {
            (Some(id), Some(main)) => match s.store.received(main).await {
                Ok(r) => r
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| facts.time.as_millisecond()),
                Err(e) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the server cannot read when it received `{id}` ({e}); try again"),
                    )
                        .into_response();
                }
            },
            _ => now,
        };
        // Recorded before the file is stored: no snapshot comes through here without it.
        if let Err(e) = s
            .store
            .record_received(&cap.endpoint, &name, &cap.plan, cap.job, received_at)
            .await
        {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server cannot record the snapshot now ({e}); try again"),
            )
                .into_response();
        }
    }
    match storage(s, cap, move |r| r.files().write(t, &id, data)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(resp) => resp,
    }
}

/// Runs `f` on the capability's endpoint's repository, on a blocking thread; a storage error
/// is a 502 that names the endpoint.
async fn storage<T: Send + 'static>(
    s: &AppState,
    cap: &Capability,
    f: impl FnOnce(&Repo) -> holdfast_engine::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let repo = s
        .repo(&cap.endpoint)
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())?;
    match tokio::task::spawn_blocking(move || f(&repo)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((StatusCode::BAD_GATEWAY, e.to_string()).into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, why.to_string()).into_response()
}

/// A refusal: counted, logged, audited, and (once per job attempt and reason) a
/// `security.violation` event; the client gets a 403 with the reason.
async fn refuse(s: &AppState, cap: Option<&Capability>, ask: &Ask<'_>, r: Refusal) -> Response {
    *s.proxy.denied.lock().unwrap().entry(r.reason).or_default() += 1;
    let actor = cap.map_or_else(|| "unauthenticated".to_string(), Capability::actor);
    let resource = ask.resource(cap.map(|c| c.endpoint.as_str()));
    tracing::warn!(%actor, %resource, reason = r.reason, "repository proxy refused: {}", r.message);
    crate::audit::record(
        s,
        crate::audit::Entry {
            actor: actor.clone(),
            action: format!("proxy.{}", ask.method.as_str().to_ascii_lowercase()),
            resource: Some(resource.clone()),
            outcome: format!("403: {}", r.reason),
            detail: Some(serde_json::json!({ "reason": r.reason, "message": r.message })),
            remote: ask.remote.clone(),
        },
    )
    .await;
    // Not a sign of an attack: a capability that cannot be checked now (a store error), one
    // used after its job ended or lost its lease (a cancel, a partition), a request without
    // any (a scanner; audited and counted all the same).
    if !matches!(r.reason, "unchecked" | "expired" | "no-capability") {
        let now = s.now();
        let mut n = blank(holdfast_core::alert::EventKind::SecurityViolation, now);
        n.title = format!("Security violation: {actor} was refused");
        n.text = format!(
            "The repository proxy refused {} {resource} from {actor}{}: {}. If no one on that host \
             did this, treat the host as compromised.",
            ask.method,
            ask.remote
                .as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default(),
            r.message
        );
        n.error = Some(r.message.clone());
        n.agent = cap.map(|c| c.agent.clone());
        n.plan = cap.map(|c| c.plan.clone());
        n.endpoint = cap.map(|c| c.endpoint.clone());
        n.job = cap.map(|c| c.job);
        let dedup = match cap {
            Some(c) => format!("violation:{}:{}:{}", c.job, c.attempt, r.reason),
            // Without a capability: at most one event per reason, peer and hour.
            None => format!(
                "violation:{}:{}:{}",
                ask.remote.as_deref().unwrap_or("?"),
                r.reason,
                now / 3_600_000
            ),
        };
        let subject = cap.map_or("proxy", |c| c.agent.as_str()).to_string();
        if let Err(e) = security_violation(s, n, &subject, dedup).await {
            tracing::error!("cannot record the security.violation event: {e}");
        }
    }
    let status = if r.reason == "no-capability" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    let mut resp = (status, format!("{}: {}\n", r.reason, r.message)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"holdfast repository proxy\""),
        );
    }
    resp
}

/// The capability for `access` to `endpoint` in job `job`'s current attempt, held by `agent`.
pub fn capability_for(
    job: &holdfast_store::Job,
    agent: &str,
    endpoint: &str,
    access: Access,
    plan: &str,
    source_kind: Option<String>,
) -> Capability {
    Capability {
        job: job.id,
        attempt: job.attempt,
        agent: agent.to_string(),
        endpoint: endpoint.to_string(),
        access,
        plan: plan.to_string(),
        source_kind,
        copy_of: None,
    }
}

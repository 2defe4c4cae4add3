//! `holdfast serve`: the REST API (with its OpenAPI document), the cron scheduler, the job
//! queue's reaper, and the API agents use, over the metadata store. Its embedded agent is a
//! `holdfast-agent` like any other, talking to this server over loopback.
//!
//! **Architecture invariant:** this is the only crate that serves HTTP. It reads and writes
//! metadata only through `holdfast-store`, and moves data only through `holdfast-engine`.

pub mod api;
pub mod model;
pub mod repository;
pub mod scheduler;
pub mod secrets;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::agent::{RepoTicket, Secret, SourceTicket};
use holdfast_core::plan::Compression;
use holdfast_engine::{Repo, RepoConfig};
use holdfast_store::{Kind, NewResource, Resource, Store};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::ApiError;
use crate::model::{EndpointKind, EndpointSecrets, SourceSecrets, StoredEndpoint, StoredSource};
use crate::secrets::Sealer;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// SQLite database, server key and default repository live here.
    pub data_dir: PathBuf,
    /// `postgres://...` to keep the metadata in PostgreSQL; default SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The key that seals stored secrets (created when missing); default `data_dir/server.key`.
    pub server_key_file: Option<PathBuf>,
    /// Used as the admin token on first start instead of a random one.
    pub admin_token: Option<String>,
    /// Jobs the embedded agent runs at once (0: no embedded agent; this replica runs no jobs).
    pub workers: usize,
    /// Labels of the embedded agent (sources with other labels run on other agents).
    pub agent_labels: std::collections::BTreeMap<String, String>,
    /// How long a claimed job stays with its worker without a heartbeat.
    pub lease: Duration,
    /// How often a waiting agent's claim looks for jobs queued by other replicas.
    pub poll: Duration,
    /// How often the scheduler looks for due plans and expired leases.
    pub tick: Duration,
    /// Names this replica's embedded agent.
    pub replica: String,
}

/// Shared by every request handler and background task.
pub struct AppState {
    pub store: Store,
    pub config: ServerConfig,
    sealer: Sealer,
    /// Wakes waiting claims when a job is queued here.
    pub wake: Notify,
    /// The embedded agent's token (its hash): made at each start, never stored.
    pub internal_token_hash: Option<String>,
    /// Open repositories by endpoint name, with the endpoint version they were opened for.
    repos: Mutex<HashMap<String, (i64, Arc<Repo>)>>,
    /// One repository creation at a time.
    creating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish()
    }
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig, server_key: &[u8; 32]) -> Self {
        Self {
            sealer: Sealer::new(server_key),
            store,
            config,
            wake: Notify::new(),
            internal_token_hash: None,
            repos: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }

    /// When the endpoint's repository is pruned next, from now; `None` when pruning is off.
    pub fn next_prune(&self, spec: &StoredEndpoint) -> Option<i64> {
        let now = jiff::Timestamp::from_millisecond(self.now()).unwrap_or_default();
        spec.prune()?
            .next_after(now)
            .map(|z| z.timestamp().as_millisecond())
    }

    /// Records when the endpoint's repository is pruned next.
    pub async fn schedule_prune(
        &self,
        name: &str,
        spec: &StoredEndpoint,
    ) -> Result<(), holdfast_store::StoreError> {
        self.store.set_next_prune(name, self.next_prune(spec)).await
    }

    fn context(kind: Kind, name: &str) -> String {
        format!("{}/{name}", kind.noun())
    }

    pub fn seal<T: Serialize>(&self, kind: Kind, name: &str, secrets: &T) -> String {
        let json = serde_json::to_vec(secrets).expect("secrets serialize");
        self.sealer.seal(&Self::context(kind, name), &json)
    }

    pub fn open_secrets<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
        sealed: &str,
    ) -> Result<T, ApiError> {
        let ctx = Self::context(kind, name);
        let plain = self.sealer.open(&ctx, sealed)?;
        serde_json::from_slice(&plain)
            .map_err(|e| ApiError::Internal(format!("stored secrets of {ctx} are unreadable: {e}")))
    }

    /// How to reach an endpoint's repository, secrets included, as agents get it.
    pub fn repo_ticket(
        &self,
        ep: &Resource,
        compression: Option<Compression>,
    ) -> Result<RepoTicket, ApiError> {
        let spec: StoredEndpoint = serde_json::from_str(&ep.spec)
            .map_err(|e| ApiError::Internal(format!("stored endpoint is unreadable: {e}")))?;
        let secrets: EndpointSecrets = match &ep.secrets {
            Some(s) => self.open_secrets(Kind::Endpoint, &ep.name, s)?,
            None => EndpointSecrets::default(),
        };
        let password = secrets.password.ok_or_else(|| {
            ApiError::field(
                "password",
                format!("endpoint `{}` has no repository password; set one", ep.name),
            )
        })?;
        Ok(RepoTicket {
            endpoint: ep.name.clone(),
            url: spec.url,
            password: Secret(password),
            access_key_id: spec.access_key_id,
            secret_access_key: secrets.secret_access_key.map(Secret),
            user: spec.user,
            storage_password: secrets.storage_password.map(Secret),
            ssh_key: secrets.ssh_key.map(Secret),
            // Applies when Holdfast creates the repository; restic keeps one setting per
            // repository.
            compression: match compression {
                Some(Compression::Level(l)) => Some(l),
                Some(Compression::Off) => Some(0),
                _ => None,
            },
        })
    }

    /// How the server itself reaches an endpoint's repository (restore points, `test`).
    pub fn repo_config(
        &self,
        ep: &Resource,
        compression: Option<Compression>,
    ) -> Result<RepoConfig, ApiError> {
        RepoConfig::from_ticket(&self.repo_ticket(ep, compression)?)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// A source's connection, password included, as agents get it; `database` replaces its
    /// database name (restores).
    pub fn source_ticket(
        &self,
        src: &Resource,
        database: Option<String>,
    ) -> Result<SourceTicket, ApiError> {
        let stored: StoredSource = serde_json::from_str(&src.spec).map_err(|e| {
            ApiError::Internal(format!("stored source `{}` is unreadable: {e}", src.name))
        })?;
        let secrets: SourceSecrets = match &src.secrets {
            Some(x) => self.open_secrets(Kind::Source, &src.name, x)?,
            None => SourceSecrets::default(),
        };
        Ok(SourceTicket {
            name: src.name.clone(),
            kind: stored.kind.to_string(),
            url: stored.url,
            command: stored.command,
            password: secrets.password.map(Secret),
            single_stream: stored.single_stream,
            all_databases: stored.all_databases,
            database,
        })
    }

    /// An open handle on an endpoint's repository, cached until the endpoint changes (here or
    /// on another replica: the cache is checked against the stored version).
    pub async fn repo(&self, endpoint: &str) -> Result<Arc<Repo>, ApiError> {
        let ep = self.store.must_get(Kind::Endpoint, endpoint).await?;
        if let Some((version, r)) = self.repos.lock().unwrap().get(endpoint)
            && *version == ep.version
        {
            return Ok(r.clone());
        }
        let cfg = self.repo_config(&ep, None)?;
        let repo = tokio::task::spawn_blocking(move || Repo::open(&cfg))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::BadGateway(format!("endpoint `{endpoint}`: {e}")))?;
        let repo = Arc::new(repo);
        self.repos
            .lock()
            .unwrap()
            .insert(endpoint.to_string(), (ep.version, repo.clone()));
        Ok(repo)
    }

    /// Creates the endpoint's repository when there is none yet, one creation at a time: two
    /// agents creating it at once would each write their own key and config, and one of them
    /// would lose. Failing to reach the storage from here is not an error (it may be reachable
    /// only from the agents, which then create it themselves).
    pub async fn ensure_repository(&self, ep: &Resource, compression: Option<Compression>) {
        let cached = |s: &Self| {
            s.repos
                .lock()
                .unwrap()
                .get(&ep.name)
                .is_some_and(|(v, _)| *v == ep.version)
        };
        if cached(self) {
            return;
        }
        let _one = self.creating.lock().await;
        if cached(self) {
            return;
        }
        let cfg = match self.repo_config(ep, compression) {
            Ok(c) => c,
            Err(e) => return tracing::warn!(endpoint = %ep.name, "{e}"),
        };
        let opened = tokio::task::spawn_blocking(move || match Repo::open(&cfg) {
            Err(holdfast_engine::Error::RepoNotFound { .. }) => {
                Repo::init(&cfg)?;
                Repo::open(&cfg)
            }
            other => other,
        })
        .await;
        match opened {
            Ok(Ok(repo)) => {
                self.repos
                    .lock()
                    .unwrap()
                    .insert(ep.name.clone(), (ep.version, Arc::new(repo)));
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %ep.name, "cannot open or create the repository from the server: {e}")
            }
            Err(e) => tracing::warn!(endpoint = %ep.name, "{e}"),
        }
    }

    pub fn forget_repo(&self, endpoint: &str) {
        self.repos.lock().unwrap().remove(endpoint);
    }
}

/// What the first start set up, for the operator to see once.
async fn first_start(state: &AppState) -> Result<(), String> {
    let store = &state.store;
    let now = state.now();
    if store.tokens().await.map_err(|e| e.to_string())?.is_empty()
        && store
            .set_setting_once("admin-token", "created")
            .await
            .map_err(|e| e.to_string())?
    {
        let (token, shown) = match &state.config.admin_token {
            Some(t) => (t.clone(), false),
            None => (secrets::new_token(), true),
        };
        store
            .insert_token("admin", &secrets::hash_token(&token), now)
            .await
            .map_err(|e| e.to_string())?;
        if shown {
            eprintln!(
                "holdfast: first start. Admin API token (shown only now; keep it):\n\n    {token}\n"
            );
        } else {
            eprintln!(
                "holdfast: first start; the admin API token is the one in HOLDFAST_ADMIN_TOKEN"
            );
        }
    }
    if store
        .count(Kind::Endpoint)
        .await
        .map_err(|e| e.to_string())?
        == 0
        && store
            .set_setting_once("default-endpoint", "local")
            .await
            .map_err(|e| e.to_string())?
    {
        let dir = state.config.data_dir.join("repository");
        let pw_file = state.config.data_dir.join("repository.password");
        let password = match std::fs::read_to_string(&pw_file) {
            Ok(p) => p.trim().to_string(),
            Err(_) => {
                let p = secrets::new_password();
                secrets::write_private(&pw_file, &format!("{p}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", pw_file.display()))?;
                p
            }
        };
        let spec = StoredEndpoint {
            kind: EndpointKind::Local,
            url: dir.display().to_string(),
            access_key_id: None,
            user: None,
            prune_schedule: "0 4 * * 0".into(),
            prune_timezone: "UTC".into(),
        };
        let sealed = state.seal(
            Kind::Endpoint,
            "local",
            &EndpointSecrets {
                password: Some(password),
                ..Default::default()
            },
        );
        store
            .create(
                Kind::Endpoint,
                &NewResource {
                    name: "local".into(),
                    spec: serde_json::to_string(&spec).expect("spec serializes"),
                    secrets: Some(sealed),
                    plan: None,
                },
                now,
            )
            .await
            .map_err(|e| e.to_string())?;
        state
            .schedule_prune("local", &spec)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "holdfast: created storage endpoint `local` at {}; its repository password is in {} \
             (restic -r {} --password-file {} snapshots)",
            dir.display(),
            pw_file.display(),
            dir.display(),
            pw_file.display()
        );
    }
    Ok(())
}

/// Runs the server until the process is stopped.
pub async fn serve(config: ServerConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let key_file = config
        .server_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("server.key"));
    let server_key = secrets::load_or_create_key(&key_file)
        .map_err(|e| format!("server key {}: {e}", key_file.display()))?;
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("holdfast.db").display()));
    let store = Store::open(&url).await.map_err(|e| {
        format!(
            "cannot open the metadata store {}: {e}",
            holdfast_core::location::redact_url(&url)
        )
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; pick another with --listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut state = AppState::new(store, config, &server_key);
    let embedded_token = (state.config.workers > 0).then(secrets::new_token);
    state.internal_token_hash = embedded_token.as_deref().map(secrets::hash_token);
    let state = Arc::new(state);
    first_start(&state).await?;

    let sched = state.clone();
    tokio::spawn(async move {
        loop {
            let now = sched.now();
            match scheduler::tick(&sched.store, now).await {
                Ok(r) if !r.queued.is_empty() || !r.prunes.is_empty() => {
                    sched.wake.notify_waiters()
                }
                Ok(_) => {}
                Err(e) => tracing::error!("scheduler: {e}"),
            }
            let jitter = f64::from(secrets::random_bytes::<1>()[0]) / 256.0;
            match scheduler::reap(&sched.store, now, jitter).await {
                Ok(ids) if !ids.is_empty() => sched.wake.notify_waiters(),
                Ok(_) => {}
                Err(e) => tracing::error!("reaper: {e}"),
            }
            tokio::time::sleep(sched.config.tick).await;
        }
    });
    if let Some(token) = embedded_token {
        let mut local = addr;
        if local.ip().is_unspecified() {
            local.set_ip(match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let agent = holdfast_agent::AgentConfig {
            server: format!("http://{local}"),
            name: state.config.replica.clone(),
            labels: state.config.agent_labels.clone(),
            slots: u32::try_from(state.config.workers).unwrap_or(1),
            poll_secs: 20,
        };
        tokio::spawn(async move {
            if let Err(e) = holdfast_agent::run(agent, SecretString::from(token)).await {
                tracing::error!("the embedded agent stopped: {e}");
            }
        });
    }

    eprintln!("holdfast: listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("HTTP server failed: {e}"))
}

//! `holdfast serve`: the REST API (with its OpenAPI document), the cron scheduler, the job
//! queue's reaper, and the API agents use, over the metadata store. Its embedded agent is a
//! `holdfast-agent` like any other, talking to this server over loopback.
//!
//! **Architecture invariant:** this is the only crate that serves HTTP. It reads and writes
//! metadata only through `holdfast-store`, and moves data only through `holdfast-engine`.

mod api;
mod model;
mod repository;
pub mod scheduler;
mod secrets;
mod ui;
mod worker;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
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
    /// Names this replica's embedded agent; `None`: the name kept in `data_dir/agent.name`
    /// (made at the first start from the host name), the same across restarts.
    pub replica: Option<String>,
    /// At shutdown, how long the embedded agent lets running jobs finish before it hands
    /// them back to the queue.
    pub shutdown_grace: Duration,
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
    /// The background loops, for `GET /api/v1/health`.
    pub workers: worker::Workers,
    /// Raised when the server shuts down: workers stop, waiting claims answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// What each endpoint's repository holds, read in the background at most every few
    /// minutes for the UI (never on a page view's own time).
    pub endpoint_stats: Mutex<HashMap<String, EndpointStats>>,
}

/// What an endpoint's repository holds, as last read.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    /// When it was read (Unix ms); `None` while the first read runs.
    pub read_at: Option<i64>,
    pub restore_points: usize,
    /// What the restore points added to the repository: about its size.
    pub stored_bytes: u64,
    pub error: Option<String>,
}

impl AppState {
    /// The endpoint's last read stats, starting a new read in the background when they are
    /// older than five minutes (or missing).
    pub fn endpoint_stats(self: &Arc<Self>, endpoint: &str) -> Option<EndpointStats> {
        const FRESH_MS: i64 = 5 * 60 * 1000;
        let now = self.now();
        let mut cache = self.endpoint_stats.lock().unwrap();
        let current = cache.get(endpoint).cloned();
        let stale = match &current {
            None => true,
            Some(s) => s.read_at.is_some_and(|at| now - at > FRESH_MS),
        };
        if stale {
            let mut reading = current.clone().unwrap_or(EndpointStats {
                read_at: None,
                restore_points: 0,
                stored_bytes: 0,
                error: None,
            });
            reading.read_at = None;
            cache.insert(endpoint.to_string(), reading);
            let (me, name) = (self.clone(), endpoint.to_string());
            tokio::spawn(async move {
                let read = match me.repo(&name).await {
                    Ok(repo) => tokio::task::spawn_blocking(move || repo.snapshots())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                let stats = match read {
                    Ok(snaps) => EndpointStats {
                        read_at: Some(me.now()),
                        restore_points: snaps.len(),
                        stored_bytes: snaps.iter().map(|s| s.added_bytes).sum(),
                        error: None,
                    },
                    Err(e) => EndpointStats {
                        read_at: Some(me.now()),
                        restore_points: 0,
                        stored_bytes: 0,
                        error: Some(e),
                    },
                };
                me.endpoint_stats.lock().unwrap().insert(name, stats);
            });
        }
        current
    }
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
            workers: worker::Workers::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            endpoint_stats: Mutex::default(),
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

/// Why `holdfast serve` could not start (or stopped), each with an exit code of its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot use the data directory {path}: {source}; check its owner and mode, or pick another with --data-dir"
    )]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "server key {path}: {reason}; every replica needs the same readable key (--server-key-file)"
    )]
    ServerKey { path: PathBuf, reason: String },
    #[error("cannot open the metadata store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: holdfast_store::StoreError,
    },
    #[error(
        "cannot listen on {addr}: the address is in use (another holdfast serve?); stop that server or pick another address with --listen"
    )]
    AddressInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}; pick another with --listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("first start: {0}")]
    FirstStart(String),
    #[error("HOLDFAST_ADMIN_TOKEN: {0}")]
    AdminToken(String),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

impl ServeError {
    /// The process exit code `holdfast serve` ends with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::AddressInUse { .. } | Self::Listen { .. } => 30,
            Self::Store { .. } => 31,
            Self::ServerKey { .. } => 32,
            Self::DataDir { .. } | Self::FirstStart(_) => 33,
            Self::Http(_) => 34,
            Self::AdminToken(_) => 35,
        }
    }
}

/// What the first start set up, for the operator to see once (the binary prints it).
#[derive(Debug, Default)]
pub struct FirstStart {
    /// The admin token made at this start; `None` when there was one already, or it came from
    /// `HOLDFAST_ADMIN_TOKEN` (`from_env` then).
    pub admin_token: Option<String>,
    pub admin_token_from_env: bool,
    /// The `local` endpoint created at this start: its repository and password file.
    pub local_endpoint: Option<(PathBuf, PathBuf)>,
}

/// Admin tokens shorter than this are refused: they can be guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// `HOLDFAST_ADMIN_TOKEN` either works or stops the start with a reason: never ignored.
async fn check_admin_token(state: &AppState, made_now: bool) -> Result<(), ServeError> {
    let Some(t) = &state.config.admin_token else {
        return Ok(());
    };
    if made_now {
        return Ok(());
    }
    match state.store.token_by_hash(&secrets::hash_token(t)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ServeError::AdminToken(
            "it is not a live token of this server (the admin token is made at the first start \
             and revoked tokens stay revoked); unset it, or make a new admin token with \
             `holdfast admin reset-token` on this host"
                .into(),
        )),
        Err(e) => Err(ServeError::AdminToken(format!(
            "cannot check it against the metadata store: {e}"
        ))),
    }
}

/// Revokes every admin token and makes a new one, on the metadata store directly (for the
/// server host, when the admin token is lost). Returns the new token.
pub async fn reset_admin_token(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> Result<String, ServeError> {
    let url = match database_url {
        Some(u) => u.to_string(),
        None => {
            let db = data_dir.join("holdfast.db");
            if !db.exists() {
                return Err(ServeError::DataDir {
                    path: db,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no metadata store here: pass the server's --data-dir or --database-url",
                    ),
                });
            }
            format!("sqlite://{}", db.display())
        }
    };
    let store_err = |source| ServeError::Store {
        url: holdfast_core::location::redact_url(&url),
        source,
    };
    let store = Store::open(&url).await.map_err(store_err)?;
    let now = jiff::Timestamp::now().as_millisecond();
    for (id, name, _, revoked) in store.tokens().await.map_err(store_err)? {
        if name == "admin" && revoked.is_none() {
            store.revoke_token(id, now).await.map_err(store_err)?;
        }
    }
    let token = secrets::new_token();
    store
        .insert_token("admin", &secrets::hash_token(&token), now)
        .await
        .map_err(store_err)?;
    store.close().await;
    Ok(token)
}

/// What the first start set up.
async fn first_start(state: &AppState) -> Result<FirstStart, String> {
    let store = &state.store;
    let now = state.now();
    let mut done = FirstStart::default();
    if store.tokens().await.map_err(|e| e.to_string())?.is_empty()
        && store
            .set_setting_once("admin-token", "created")
            .await
            .map_err(|e| e.to_string())?
    {
        let token = match &state.config.admin_token {
            Some(t) => {
                done.admin_token_from_env = true;
                t.clone()
            }
            None => {
                let t = secrets::new_token();
                done.admin_token = Some(t.clone());
                t
            }
        };
        store
            .insert_token("admin", &secrets::hash_token(&token), now)
            .await
            .map_err(|e| e.to_string())?;
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
        done.local_endpoint = Some((dir, pw_file));
    }
    Ok(done)
}

/// Makes `dir` private to the server's user (0700), creating it when missing.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The embedded agent's name, kept in `file` so that it stays the same across restarts (a new
/// name at each start would leave a trail of offline agents): the host's name and a random
/// suffix, made at the first start.
fn embedded_agent_name(file: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(60)
        .collect();
    let host = if host.is_empty() {
        "holdfast".into()
    } else {
        host
    };
    let name = format!("{host}-{}", hex::encode(secrets::random_bytes::<3>()));
    secrets::write_private(file, &format!("{name}\n"))?;
    Ok(name)
}

/// Makes the SQLite database and its WAL and shared-memory files private (0600), creating the
/// database file when missing: SQLite gives the files it creates the database file's mode.
fn private_sqlite(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The scheduler's tick: fires due plans and prunes.
struct Tick(Arc<AppState>);

impl worker::Worker for Tick {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.0;
        let r = scheduler::tick(&s.store, s.now())
            .await
            .map_err(|e| e.to_string())?;
        if !r.queued.is_empty() || !r.prunes.is_empty() {
            s.wake.notify_waiters();
        }
        Ok(s.config.tick)
    }
}

/// The reaper: takes back jobs whose worker stopped renewing its lease.
struct Reaper(Arc<AppState>);

impl worker::Worker for Reaper {
    fn name(&self) -> &'static str {
        "reaper"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.0;
        let jitter = f64::from(secrets::random_bytes::<1>()[0]) / 256.0;
        let ids = scheduler::reap(&s.store, s.now(), jitter)
            .await
            .map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            s.wake.notify_waiters();
        }
        Ok(s.config.tick)
    }
}

/// The embedded agent, over loopback. At shutdown it stops claiming and hands its running
/// jobs back (after the grace period), so nothing is left running without a lease.
struct EmbeddedAgent {
    config: holdfast_agent::AgentConfig,
    token: SecretString,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl worker::Worker for EmbeddedAgent {
    fn name(&self) -> &'static str {
        "embedded-agent"
    }

    async fn step(&self) -> Result<Duration, String> {
        holdfast_agent::run(self.config.clone(), self.token.clone(), self.stop.clone()).await?;
        Ok(Duration::ZERO)
    }

    fn graceful(&self) -> bool {
        true
    }
}

/// A built server: its store opened and migrated, its address bound, its first start done;
/// nothing runs until [`Server::run_until_stopped`].
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    embedded_token: Option<String>,
    first_start: FirstStart,
}

impl Server {
    pub async fn build(config: ServerConfig) -> Result<Self, ServeError> {
        private_dir(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let key_file = config
            .server_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("server.key"));
        let server_key =
            secrets::load_or_create_key(&key_file).map_err(|reason| ServeError::ServerKey {
                path: key_file.clone(),
                reason: reason.to_string(),
            })?;
        let url = match &config.database_url {
            Some(u) => u.clone(),
            None => {
                let db = config.data_dir.join("holdfast.db");
                private_sqlite(&db).map_err(|source| ServeError::DataDir {
                    path: db.clone(),
                    source,
                })?;
                format!("sqlite://{}", db.display())
            }
        };
        let store = Store::open(&url)
            .await
            .map_err(|source| ServeError::Store {
                url: holdfast_core::location::redact_url(&url),
                source,
            })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => ServeError::AddressInUse {
                    addr: config.listen,
                },
                _ => ServeError::Listen {
                    addr: config.listen,
                    source,
                },
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
        if let Some(t) = &config.admin_token
            && t.len() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(ServeError::AdminToken(format!(
                "it is {} characters long; use at least {MIN_ADMIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`), \
                 or unset it and let the first start make one",
                t.len()
            )));
        }
        let mut config = config;
        if config.replica.is_none() {
            let file = config.data_dir.join("agent.name");
            config.replica =
                Some(
                    embedded_agent_name(&file).map_err(|source| ServeError::DataDir {
                        path: file.clone(),
                        source,
                    })?,
                );
        }
        let mut state = AppState::new(store, config, &server_key);
        let embedded_token = (state.config.workers > 0).then(secrets::new_token);
        state.internal_token_hash = embedded_token.as_deref().map(secrets::hash_token);
        let state = Arc::new(state);
        let first_start = first_start(&state).await.map_err(ServeError::FirstStart)?;
        check_admin_token(
            &state,
            first_start.admin_token.is_some() || first_start.admin_token_from_env,
        )
        .await?;
        Ok(Self {
            state,
            listener,
            addr,
            embedded_token,
            first_start,
        })
    }

    /// The address the API listens on (the port the OS picked for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn first_start(&self) -> &FirstStart {
        &self.first_start
    }

    /// Serves until `shutdown` resolves, then stops gracefully: the embedded agent stops
    /// claiming and hands its running jobs back (finishing them if they end within the grace
    /// period), in-flight requests finish, and the workers stop.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            state,
            listener,
            addr,
            embedded_token,
            ..
        } = self;
        let stop = state.stopping.subscribe();
        let workers = &state.workers;
        let mut loops = vec![
            workers.spawn(
                Tick(state.clone()),
                worker::Restart::default(),
                stop.clone(),
            ),
            workers.spawn(
                Reaper(state.clone()),
                worker::Restart::default(),
                stop.clone(),
            ),
        ];
        let mut agent = None;
        if let Some(token) = embedded_token {
            let mut local = addr;
            if local.ip().is_unspecified() {
                local.set_ip(match local {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let config = holdfast_agent::AgentConfig {
                server: format!("http://{local}"),
                name: state.config.replica.clone().unwrap_or_default(),
                labels: state.config.agent_labels.clone(),
                slots: u32::try_from(state.config.workers).unwrap_or(1),
                poll_secs: 20,
                shutdown_grace: state.config.shutdown_grace,
            };
            agent = Some(workers.spawn(
                EmbeddedAgent {
                    config,
                    token: SecretString::from(token),
                    stop: stop.clone(),
                },
                worker::Restart::default(),
                stop.clone(),
            ));
        }
        tracing::info!("listening on http://{addr}");
        // The HTTP server stops accepting only after the embedded agent has handed its jobs
        // back over it.
        let (http_stop_tx, http_stop) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(
            axum::serve(listener, api::router(state.clone()))
                .with_graceful_shutdown(async move {
                    let _ = http_stop.await;
                })
                .into_future(),
        );
        shutdown.await;
        tracing::info!("shutting down: handing running jobs back");
        state.stopping.send_replace(true);
        if let Some(a) = agent {
            let _ = a.await;
        }
        let _ = http_stop_tx.send(());
        for l in loops.drain(..) {
            let _ = l.await;
        }
        match http.await {
            Ok(r) => r.map_err(ServeError::Http),
            Err(e) => Err(ServeError::Http(std::io::Error::other(e))),
        }
    }
}

/// Runs the server until `shutdown` resolves.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

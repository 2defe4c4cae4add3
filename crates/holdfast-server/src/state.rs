//! What every request handler and background task shares: the configuration, the store,
//! the sealer of secrets, open repositories, and what the UI shows of each endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::agent::{RepoTicket, Secret, SourceTicket};
use holdfast_core::plan::Compression;
use holdfast_engine::{Repo, RepoConfig};
use holdfast_store::{Kind, Resource, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::ApiError;
use crate::model::{EndpointSecrets, SourceSecrets, StoredEndpoint, StoredSource};
use crate::secrets::Sealer;
use crate::worker;

/// How often the server's own storage requests are tried again on a transient error (after
/// about 1, 2 and 4 s).
const SERVER_STORAGE_RETRIES: u32 = 3;

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
    /// Used as the `admin` account's password when it is made, instead of a random one.
    pub admin_password: Option<String>,
    /// Jobs the embedded agent runs at once (0: no embedded agent; this replica runs no jobs).
    pub workers: usize,
    /// Labels of the embedded agent (sources with other labels run on other agents).
    pub agent_labels: std::collections::BTreeMap<String, String>,
    /// What the embedded agent will run and touch (the data directory is never among it).
    pub agent_policy: holdfast_agent::Policy,
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
    /// A second address that serves only `/metrics`, without a token (bind it to loopback or
    /// a private network). On the main address `/metrics` needs an API token.
    pub metrics_listen: Option<SocketAddr>,
    /// How long the audit log keeps an entry.
    pub audit_retention: Duration,
    /// Sign-in through an OpenID provider, besides passwords and tokens.
    pub oidc: Option<crate::access::oidc::OidcConfig>,
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
    /// This server process among the replicas: owns its leases (alerts, deliveries).
    pub instance: String,
    /// Sends notifications (it keeps their connections).
    pub sender: crate::notify::Sender,
    /// Sign-in through an OpenID provider, when configured.
    pub oidc: Option<crate::access::oidc::Oidc>,
    /// The repository proxy's uploads in flight and its refusals.
    pub proxy: crate::proxy::ProxyState,
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
            wake: Notify::new(),
            internal_token_hash: None,
            repos: Mutex::default(),
            creating: tokio::sync::Mutex::new(()),
            workers: worker::Workers::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            endpoint_stats: Mutex::default(),
            instance: format!(
                "{}-{}",
                hostname(),
                hex::encode(crate::secrets::random_bytes::<4>())
            ),
            sender: crate::notify::Sender::new(),
            oidc: config.oidc.clone().map(crate::access::oidc::Oidc::new),
            proxy: crate::proxy::ProxyState::default(),
            config,
        }
    }

    /// Seals a short-lived value the browser keeps for us (bound to `context`).
    pub fn seal_for_browser(&self, context: &str, plain: &[u8]) -> String {
        self.sealer.seal(&format!("browser:{context}"), plain)
    }

    /// Seals a value the server hands out and reads back later (a proxy capability), bound
    /// to `context`.
    pub fn seal_for(&self, context: &str, plain: &[u8]) -> String {
        self.sealer.seal(&format!("issued:{context}"), plain)
    }

    /// Opens what `seal_for` sealed; `None` when it was not sealed here for `context`.
    pub fn open_sealed(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        self.sealer.open(&format!("issued:{context}"), sealed).ok()
    }

    /// Opens what `seal_for_browser` sealed; `None` when it was not sealed here for `context`.
    pub fn open_from_browser(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        self.sealer.open(&format!("browser:{context}"), sealed).ok()
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
            proxy: None,
        })
    }

    /// How the server itself reaches an endpoint's repository (restore points, `test`).
    pub fn repo_config(
        &self,
        ep: &Resource,
        compression: Option<Compression>,
    ) -> Result<RepoConfig, ApiError> {
        let mut cfg = RepoConfig::from_ticket(&self.repo_ticket(ep, compression)?)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // The server's own requests (the API's, and the proxy's for the agents, which do not
        // retry them again) give up on a storage outage within seconds, so that it shows as a
        // failed step or a 502 soon rather than after a minute of backoff.
        cfg.retries = Some(SERVER_STORAGE_RETRIES);
        Ok(cfg)
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "server".into())
}

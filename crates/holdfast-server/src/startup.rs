//! `holdfast serve`'s life: build (directories, key, store, address, first start), the bound
//! address, then run until stopped, and the errors each stage ends with.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use holdfast_store::Store;
use secrecy::SecretString;

use crate::secrets::{self};
use crate::worker;

use crate::api;
use crate::loops::{EmbeddedAgent, Reaper, Tick};
use crate::setup::{
    FirstStart, MIN_ADMIN_TOKEN_LEN, check_admin_token, embedded_agent_name, first_start,
    private_dir, private_sqlite,
};
use crate::state::{AppState, ServerConfig};

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

/// A built server: its store opened and migrated, its address bound, its first start done;
/// nothing runs until [`Server::run_until_stopped`].
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    metrics_listener: Option<tokio::net::TcpListener>,
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
        let metrics_listener =
            match config.metrics_listen {
                None => None,
                Some(m) => Some(tokio::net::TcpListener::bind(m).await.map_err(|source| {
                    match source.kind() {
                        std::io::ErrorKind::AddrInUse => ServeError::AddressInUse { addr: m },
                        _ => ServeError::Listen { addr: m, source },
                    }
                })?),
            };
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
            metrics_listener,
            embedded_token,
            first_start,
        })
    }

    /// The address the API listens on (the port the OS picked for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address that serves only `/metrics`, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
            metrics_listener,
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
            workers.spawn(
                crate::loops::Housekeeping(state.clone()),
                worker::Restart::default(),
                stop.clone(),
            ),
            workers.spawn(
                crate::notify::evaluate::Evaluator::new(state.clone()),
                worker::Restart::default(),
                stop.clone(),
            ),
            workers.spawn(
                crate::notify::deliver::Deliverer(state.clone()),
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
                credential_file: None,
                policy: {
                    let mut p = state.config.agent_policy.clone();
                    p.never.push(state.config.data_dir.clone());
                    if let Some(k) = &state.config.server_key_file {
                        p.never.push(k.clone());
                    }
                    p
                },
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
            axum::serve(
                listener,
                api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = http_stop.await;
            })
            .into_future(),
        );
        if let Some(l) = metrics_listener {
            let mut stopped = state.stopping.subscribe();
            let app = axum::Router::new()
                .route("/metrics", axum::routing::get(crate::metrics::metrics))
                .with_state(state.clone());
            tokio::spawn(
                axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .into_future(),
            );
        }
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

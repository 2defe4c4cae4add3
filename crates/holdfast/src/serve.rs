//! `holdfast serve`: its flags, the server process until SIGTERM, and what the first start
//! prints.

use std::process::ExitCode;
use std::time::Duration;

use crate::oidc;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to serve the API on.
    #[arg(long, env = "HOLDFAST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Where the SQLite metadata store, the server key and the default repository live
    /// [default: $XDG_DATA_HOME/holdfast or ~/.local/share/holdfast].
    #[arg(long, env = "HOLDFAST_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep the metadata in PostgreSQL (postgres://user@host/db) instead of SQLite, e.g. to run
    /// several replicas. Prefer the environment variable when the URL holds a password.
    #[arg(long, env = "HOLDFAST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The key that encrypts stored secrets (64 hex digits; created when missing). Every
    /// replica needs the same [default: DATA_DIR/server.key].
    #[arg(long, env = "HOLDFAST_SERVER_KEY_FILE")]
    server_key_file: Option<std::path::PathBuf>,
    /// Jobs the embedded agent runs at once (0: no embedded agent; jobs run on `holdfast
    /// agent`s or other replicas).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// KEY=VALUE label of the embedded agent (repeatable).
    #[arg(long = "agent-label", value_parser = crate::parse_tag)]
    agent_labels: Vec<(String, String)>,
    /// The embedded agent runs plans' inline hook scripts (shell commands stored on the
    /// server): only when everyone who may change plans may run commands on this host.
    #[arg(long)]
    agent_allow_hook_scripts: bool,
    /// The embedded agent runs named hooks from this directory (a hook `run = "NAME"`).
    #[arg(long)]
    agent_hooks_dir: Option<std::path::PathBuf>,
    /// The embedded agent runs `cmd:` sources and restore targets.
    #[arg(long)]
    agent_allow_commands: bool,
    /// A folder (repeatable) where the embedded agent's `file://` and `sqlite://` sources and
    /// restore targets may lie; none by default. The server's data directory never counts.
    #[arg(long = "agent-allow-path")]
    agent_allow_paths: Vec<std::path::PathBuf>,
    /// Days the audit log keeps an entry.
    #[arg(long, default_value_t = 400)]
    audit_retention_days: u64,
    /// Seconds a running job stays with its worker without a heartbeat before it is retried.
    #[arg(long, default_value_t = 60)]
    lease_secs: u64,
    /// Milliseconds between scheduler ticks.
    #[arg(long, default_value_t = 1000, hide = true)]
    tick_ms: u64,
    /// On SIGTERM or Ctrl-C, seconds the embedded agent's running jobs may go on before they
    /// are stopped and handed back to the queue (their cleanup and unlock steps still run).
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Also serve `/metrics` (Prometheus) on this address, without a token: bind it to
    /// loopback or a private network. On the main address `/metrics` needs an API token.
    #[arg(long, env = "HOLDFAST_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    oidc: oidc::OidcArgs,
}

pub(crate) fn data_dir() -> std::path::PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    base.join("holdfast")
}

/// Runs the server until SIGTERM or Ctrl-C; its errors have exit codes of their own (30 the
/// address, 31 the metadata store, 32 the server key, 33 the data directory).
pub(crate) fn serve(args: ServeArgs) -> ExitCode {
    let data_dir = args.data_dir.unwrap_or_else(data_dir);
    let admin_token = std::env::var("HOLDFAST_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let admin_password = match std::env::var_os("HOLDFAST_ADMIN_PASSWORD_FILE") {
        Some(f) => match std::fs::read_to_string(&f) {
            Ok(p) => Some(p.trim().to_string()),
            Err(e) => {
                eprintln!(
                    "holdfast: error: HOLDFAST_ADMIN_PASSWORD_FILE {}: {e}",
                    std::path::Path::new(&f).display()
                );
                return ExitCode::from(2);
            }
        },
        None => std::env::var("HOLDFAST_ADMIN_PASSWORD").ok(),
    }
    .filter(|p| !p.is_empty());
    let oidc = match args.oidc.config(args.listen) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("holdfast: error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = holdfast_server::ServerConfig {
        listen: args.listen,
        data_dir,
        database_url: args.database_url,
        server_key_file: args.server_key_file,
        admin_token,
        admin_password,
        workers: args.workers,
        agent_labels: args.agent_labels.into_iter().collect(),
        agent_policy: holdfast_agent::Policy {
            hook_scripts: args.agent_allow_hook_scripts,
            hooks_dir: args.agent_hooks_dir,
            commands: args.agent_allow_commands,
            paths: args.agent_allow_paths,
            never: vec![],
            drill_dir: None,
        },
        lease: std::time::Duration::from_secs(args.lease_secs.max(1)),
        poll: std::time::Duration::from_millis(1000),
        tick: std::time::Duration::from_millis(args.tick_ms.max(10)),
        replica: None,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics_listen: args.metrics_listen,
        audit_retention: Duration::from_secs(args.audit_retention_days.max(1) * 86_400),
        oidc,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(async {
        let server = holdfast_server::Server::build(config).await?;
        print_first_start(server.first_start(), server.addr());
        eprintln!("holdfast: listening on http://{}", server.addr());
        if let Some(m) = server.metrics_addr() {
            eprintln!("holdfast: metrics on http://{m}/metrics");
        }
        server.run_until_stopped(stop_signal()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// What the first start set up, on its own and clearly (not among log lines).
pub(crate) fn print_first_start(f: &holdfast_server::FirstStart, addr: std::net::SocketAddr) {
    if let Some(token) = &f.admin_token {
        eprintln!(
            "\nholdfast: first start. The admin API token (shown only now; keep it safe):\n\n    \
             {token}\n\nSend it as `Authorization: Bearer TOKEN` (or sign in at http://{addr}/ \
             with it). Create more tokens with POST /api/v1/tokens, and agents' enrolment \
             tokens with POST /api/v1/enrolments.\n"
        );
    } else if f.admin_token_from_env {
        eprintln!("holdfast: first start; the admin API token is the one in HOLDFAST_ADMIN_TOKEN");
    }
    match &f.admin_account {
        Some(Some(password)) => eprintln!(
            "\nholdfast: created the `admin` account. Its password (shown only now; change it \
             after signing in):\n\n    {password}\n"
        ),
        Some(None) => eprintln!(
            "holdfast: created the `admin` account with the password in HOLDFAST_ADMIN_PASSWORD"
        ),
        None => {}
    }
    if let Some((dir, pw_file)) = &f.local_endpoint {
        eprintln!(
            "holdfast: created storage endpoint `local` at {}; its repository password is in {} \
             (restic -r {} --password-file {} snapshots)",
            dir.display(),
            pw_file.display(),
            dir.display(),
            pw_file.display()
        );
    }
}

/// Resolves at SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

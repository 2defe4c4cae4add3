//! `holdfast agent`: its flags (what it serves and what its own policy lets it run and
//! touch) and the process that claims and runs jobs until SIGTERM.

use std::time::Duration;

use holdfast_engine::Error;

use crate::client;
use crate::serve::stop_signal;

#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    server: client::ServerArgs,
    /// Unique name of this agent [default: the host name].
    #[arg(long, env = "HOLDFAST_AGENT_NAME")]
    name: Option<String>,
    /// KEY=VALUE label (repeatable): sources whose labels are all among these run here.
    #[arg(long = "label", value_parser = crate::parse_tag)]
    labels: Vec<(String, String)>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Seconds one long-poll for a job waits on the server.
    #[arg(long, default_value_t = 20, hide = true)]
    poll_secs: u64,
    /// On SIGTERM or Ctrl-C, seconds running jobs may go on before they are stopped and
    /// handed back to the queue (their cleanup and unlock steps still run).
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// Where the agent keeps the credential its enrolment gave it (made 0600) [default:
    /// ~/.local/state/holdfast/agent-NAME.credential].
    #[arg(long, env = "HOLDFAST_AGENT_CREDENTIAL")]
    credential_file: Option<std::path::PathBuf>,
    /// Run plans' inline hook scripts (shell commands stored on the server): only when
    /// everyone who may change plans may run commands on this host.
    #[arg(long)]
    allow_hook_scripts: bool,
    /// Run named hooks from this directory: a hook `run = "NAME"` runs DIR/NAME.
    #[arg(long)]
    hooks_dir: Option<std::path::PathBuf>,
    /// Run `cmd:` sources and restore targets.
    #[arg(long)]
    allow_commands: bool,
    /// A folder (repeatable) where `file://` and `sqlite://` sources and restore targets may
    /// lie; none by default.
    #[arg(long = "allow-path")]
    allow_paths: Vec<std::path::PathBuf>,
    /// Where restore drills make their throwaway copies (a private directory each, removed
    /// afterwards; what a killed drill left is removed at the agent's next start). The
    /// database server's system user must be able to pass through its parents.
    #[arg(long, env = "HOLDFAST_DRILL_DIR", value_name = "DIR")]
    drill_dir: Option<std::path::PathBuf>,
}

/// Where an agent named `name` keeps its credential by default.
pub(crate) fn default_credential_file(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    base.join("holdfast")
        .join(format!("agent-{name}.credential"))
}

pub(crate) fn agent(args: AgentArgs) -> Result<(), Error> {
    let name = args.name.unwrap_or_else(holdfast_agent::default_name);
    let credential_file = args
        .credential_file
        .unwrap_or_else(|| default_credential_file(&name));
    // With a credential kept from an earlier enrolment, no token is needed.
    let token = match client::read_token(&args.server) {
        Ok(t) => t,
        Err(_) if credential_file.is_file() => secrecy::SecretString::from(String::new()),
        Err(e) => return Err(e),
    };
    let config = holdfast_agent::AgentConfig {
        server: args.server.server.clone(),
        name,
        labels: args.labels.into_iter().collect(),
        slots: args.slots.max(1),
        poll_secs: args.poll_secs,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        credential_file: Some(credential_file),
        policy: holdfast_agent::Policy {
            hook_scripts: args.allow_hook_scripts,
            hooks_dir: args.hooks_dir,
            commands: args.allow_commands,
            paths: args.allow_paths,
            never: vec![],
            drill_dir: args.drill_dir,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop_signal().await;
            let _ = stop_tx.send(true);
        });
        holdfast_agent::run(config, token, stop).await
    })
    .map_err(Error::Other)
}

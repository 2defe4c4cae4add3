//! `holdfast agent`: runs jobs next to the databases. An agent only connects out: it registers
//! with the server, long-polls for jobs whose source labels it carries, runs each through the
//! plan's lifecycle (hooks and the engine), renews the job's lease while it works, and reports
//! log lines, step records, progress and the result. The server's embedded agent is this code
//! too, talking to its own server over loopback.
//!
//! **Architecture invariant:** an agent never touches the metadata database. Everything it
//! knows about a job comes in the job's ticket; everything it learns goes back over HTTP.
//! Secrets (repository password, storage keys, database passwords) live only in memory, and
//! reach child processes only through their environment.

mod hook;
mod job;
mod link;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::agent::Hello;
use secrecy::SecretString;
use tokio::sync::watch;

use link::{Link, LinkError};
pub use policy::Policy;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// Unique per agent.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Jobs run at once.
    pub slots: u32,
    /// How long one claim waits on the server for a job (a revoked token or a server gone
    /// is noticed at the latest after this long).
    pub poll_secs: u64,
    /// At shutdown, how long running jobs may go on before they are stopped and handed back
    /// to the queue (their cleanup and unlock steps still run).
    pub shutdown_grace: Duration,
    /// Where the agent keeps the credential an enrolment gave it (0600). When the file
    /// holds one, it is used; otherwise the token given must be an enrolment token.
    pub credential_file: Option<std::path::PathBuf>,
    /// What this agent will run and touch, whatever a job asks.
    pub policy: Policy,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// This machine's name, the default agent name.
pub fn default_name() -> String {
    hostname()
}

async fn register(link: &Link, hello: &Hello) -> Result<(), String> {
    let mut wait = Duration::from_millis(500);
    loop {
        match link.register(hello).await {
            Ok(()) => return Ok(()),
            Err(LinkError::Unreachable(e)) => {
                tracing::warn!(
                    "registering: {e}; trying again in {:.0} s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(format!("registering agent `{}`: {e}", hello.name)),
        }
    }
}

/// The agent's own credential: the one kept in its credential file, or the one an
/// enrolment with `token` gives now (then kept there).
async fn credential(
    config: &AgentConfig,
    token: SecretString,
    hello: &Hello,
) -> Result<SecretString, String> {
    use secrecy::ExposeSecret;
    if let Some(f) = &config.credential_file {
        match std::fs::read_to_string(f) {
            Ok(c) if !c.trim().is_empty() => return Ok(SecretString::from(c.trim().to_string())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("credential file {}: {e}", f.display())),
        }
    }
    if !token.expose_secret().starts_with("hf_enrol_") {
        return Ok(token);
    }
    let Some(file) = &config.credential_file else {
        return Err(
            "an enrolment token needs --credential-file, where the agent keeps the \
                    credential it is given"
                .into(),
        );
    };
    let link = Link::new(&config.server, token, &config.name, 1)?;
    let enrolled = link
        .enrol(hello)
        .await
        .map_err(|e| format!("enrolling agent `{}`: {e}", hello.name))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("credential file {}: {e}", file.display()))?;
    }
    write_private(file, &enrolled.credential)
        .map_err(|e| format!("credential file {}: {e}", file.display()))?;
    tracing::info!(agent = %hello.name, file = %file.display(), "agent enrolled; its credential is kept in the file");
    Ok(SecretString::from(enrolled.credential))
}

/// Writes `contents` to `path`, readable by this user only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

/// One slot: claims and runs jobs, one at a time, until a fatal error or `stop`.
async fn slot(
    link: Arc<Link>,
    hello: Arc<Hello>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    policy: Arc<Policy>,
) -> Result<(), String> {
    let mut wait = Duration::from_millis(500);
    loop {
        let claimed = tokio::select! {
            c = link.claim() => c,
            _ = stop.wait_for(|v| *v) => return Ok(()),
        };
        match claimed {
            Ok(Some(ticket)) => {
                wait = Duration::from_millis(500);
                tracing::info!(job = ticket.job, kind = %ticket.kind(), attempt = ticket.attempt, "job claimed");
                job::run(link.clone(), ticket, stop.clone(), grace, policy.clone()).await;
            }
            Ok(None) => wait = Duration::from_millis(500),
            // The server forgot this agent (its metadata was recreated): introduce it again.
            Err(LinkError::Unknown(_)) => register(&link, &hello).await?,
            Err(LinkError::Unreachable(e)) => {
                tracing::warn!(
                    "claiming a job: {e}; trying again in {:.1} s",
                    wait.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|v| *v) => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(format!("agent `{}`: {e}", hello.name)),
        }
    }
}

/// Runs the agent until a fatal error (its token refused, say), or until `stop` is raised:
/// then it claims nothing more, lets running jobs go on for the grace period, stops the
/// rest (their cleanup and unlock steps run) and hands them back to the queue.
pub async fn run(
    config: AgentConfig,
    token: SecretString,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    if config.name.is_empty()
        || !config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(format!(
            "agent name `{}`: use letters, digits, `-`, `_`, `.` and `:`",
            config.name
        ));
    }
    let hello = Arc::new(Hello {
        name: config.name.clone(),
        labels: config.labels.clone(),
        version: holdfast_engine::VERSION.to_string(),
        hostname: hostname(),
        slots: config.slots.max(1),
    });
    // A restore drill killed with the agent left a throwaway server and its directory.
    let root = config.policy.drills_root();
    for removed in tokio::task::spawn_blocking(move || holdfast_engine::drill::sweep(&root))
        .await
        .unwrap_or_default()
    {
        tracing::warn!("leftovers of an interrupted restore drill: {removed}");
    }
    let token = credential(&config, token, &hello).await?;
    let link = Arc::new(Link::new(
        &config.server,
        token,
        &config.name,
        config.poll_secs.clamp(1, 60),
    )?);
    register(&link, &hello).await?;
    tracing::info!(agent = %config.name, labels = ?config.labels, "agent registered");
    let policy = Arc::new(config.policy.clone());
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..hello.slots {
        slots.spawn(slot(
            link.clone(),
            hello.clone(),
            stop.clone(),
            config.shutdown_grace,
            policy.clone(),
        ));
    }
    while let Some(r) = slots.join_next().await {
        match r {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
            Err(e) => return Err(format!("an agent slot failed: {e}")),
        }
    }
    Ok(())
}

//! Running one hook: `sh -c SCRIPT` in the job's private work directory, in a process group of
//! its own (so a timeout or a cancel kills everything it started), with the job's context in
//! its environment and its output in the job log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use holdfast_core::lifecycle::{Hook, NO_RETRY_EXIT, Step};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::job::{Failure, JobLog};

/// Resolves once `stop` is raised (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers' futures stay `Send`.
pub async fn stopped(mut stop: watch::Receiver<bool>) -> bool {
    stop.wait_for(|v| *v).await.is_ok()
}

/// Kills the hook's process group (the hook and whatever it started); a hook that already
/// ended has no pid, and nothing is signalled.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid
        && let Err(e) = holdfast_engine::process::kill_group(pid)
    {
        tracing::debug!(pid, "cannot kill the hook's process group: {e}");
    }
}

async fn pump(r: impl AsyncRead + Unpin, log: JobLog, prefix: String) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        log.line(format!("{prefix}{l}"));
    }
}

pub struct HookEnv<'a> {
    pub vars: &'a [(String, String)],
    /// Passed in the environment, never on a command line.
    pub secret_vars: &'a [(String, String)],
    pub work_dir: &'a Path,
}

/// Runs `hook` for `step`. A non-zero exit is a transient failure (the step is retried),
/// except [`NO_RETRY_EXIT`] and the shell's "cannot run" codes 126 and 127.
pub async fn run(
    step: Step,
    hook: &Hook,
    env: &HookEnv<'_>,
    log: &JobLog,
    stop: watch::Receiver<bool>,
) -> Result<(), Failure> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    // A cleared environment: the allowed basics, then the job's context and nothing else of
    // the agent's (its API token, storage keys, repository passwords).
    cmd.arg("-c")
        .arg(&hook.run)
        .env_clear()
        .envs(holdfast_engine::process::inherited_env(&[]))
        .current_dir(env.work_dir)
        .env("HOLDFAST_STEP", step.as_str())
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .envs(env.secret_vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::permanent(format!("{step} hook could not start /bin/sh: {e}")))?;
    let pid = child.id();
    let prefix = format!("[{step}] ");
    let out = tokio::spawn(pump(
        child.stdout.take().expect("piped"),
        log.clone(),
        prefix.clone(),
    ));
    let err = tokio::spawn(pump(
        child.stderr.take().expect("piped"),
        log.clone(),
        prefix,
    ));
    let timeout = Duration::from_secs(hook.timeout_secs);
    let status = tokio::select! {
        s = child.wait() => s,
        _ = tokio::time::sleep(timeout) => {
            kill_group(pid);
            let _ = child.wait().await;
            return Err(Failure::transient(format!(
                "{step} hook timed out after {} s and was killed", hook.timeout_secs
            )));
        }
        true = stopped(stop) => {
            kill_group(pid);
            let _ = child.wait().await;
            return Err(Failure::permanent(format!("{step} hook stopped: the job is cancelled")));
        }
    };
    // A process the hook left running in the background may hold its output open: the hook's
    // exit is what counts, so read what is there and move on.
    for p in [out, err] {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    let status =
        status.map_err(|e| Failure::transient(format!("waiting for the {step} hook: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(c) if c == NO_RETRY_EXIT => Err(Failure::permanent(format!(
            "{step} hook exited with status {c} (do not retry)"
        ))),
        Some(c @ (126 | 127)) => Err(Failure::permanent(format!(
            "{step} hook could not run its command (status {c}: not found or not executable)"
        ))),
        Some(c) => Err(Failure::transient(format!(
            "{step} hook exited with status {c}"
        ))),
        None => Err(Failure::transient(format!(
            "{step} hook was killed by a signal"
        ))),
    }
}

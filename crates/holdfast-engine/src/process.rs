//! Child processes: dump tools whose stdout streams into the repository, restore tools whose
//! stdin is fed from it, and short queries whose output we parse.
//!
//! Secrets reach children through their environment (`PGPASSWORD`, `MYSQL_PWD`,
//! `REDISCLI_AUTH`), never through their command line, which any user can read in `ps`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;
use crate::repo::Gate;

/// The variables of Holdfast's own environment that a child inherits: what locates the user,
/// the tools and the locale. Everything else (API tokens, storage keys, repository passwords,
/// whatever the operator exported for Holdfast) stays with Holdfast; a child gets on top only
/// what is set for it on purpose ([`Cmd::env`], [`Cmd::secret_env`], [`Cmd::inherit`]).
const INHERITED: [&str; 7] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"];

/// Whether a child inherits Holdfast's variable `key`: the [`INHERITED`] ones, `LC_*`, and
/// those starting with one of `prefixes` (a tool's own settings, such as libpq's `PG*`).
fn inherited(key: &OsStr, prefixes: &[&str]) -> bool {
    let Some(k) = key.to_str() else { return false };
    INHERITED.contains(&k) || k.starts_with("LC_") || prefixes.iter().any(|p| k.starts_with(p))
}

/// What a child process starts from: Holdfast's environment filtered by [`inherited`].
pub fn inherited_env(prefixes: &[&str]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| inherited(k, prefixes))
        .collect()
}

/// Kills the process group `pgid` (a hook and whatever it started) with SIGKILL, without a
/// shell. A group id of 0 or 1 would mean the caller's own group or every process: refused.
pub fn kill_group(pgid: u32) -> io::Result<()> {
    let raw = i32::try_from(pgid)
        .map_err(|_| io::Error::other(format!("no such process group {pgid}")))?;
    if raw <= 1 {
        return Err(io::Error::other(format!(
            "refusing to signal process group {raw}"
        )));
    }
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(io::Error::from)
}

/// How many of the last stderr lines of a tool are kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// A command to run: program, arguments, and environment (secrets kept apart so they are never
/// shown). `step` names it in messages, e.g. "pg_dump of table public.orders".
#[derive(Clone)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    secret_env: Vec<(String, SecretString)>,
    /// Prefixes of Holdfast's own variables this tool also inherits (its own settings).
    inherit: Vec<&'static str>,
    pub step: String,
    /// Output ending that means failure although the tool exits 0, and what it means.
    bad_ending: Option<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Arguments never hold secrets (see the module docs); the secret env is not shown.
        f.debug_struct("Cmd")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
pub struct Failure {
    /// "exit status 1", "killed by signal 9", or "could not start: ...".
    pub status: String,
    /// The last lines the tool wrote to stderr.
    pub stderr: String,
    /// The program could not be started because it does not exist.
    pub not_found: bool,
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>, step: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            secret_env: Vec::new(),
            inherit: Vec::new(),
            step: step.into(),
            bad_ending: None,
        }
    }

    /// Treats output ending in `ending` as a failure (`meaning` says what it means), for tools
    /// that report some errors only in their output (sqlite3's `.dump`).
    pub fn fail_on_ending(mut self, ending: &'static str, meaning: &'static str) -> Self {
        self.bad_ending = Some((ending, meaning));
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn secret_env(mut self, k: &str, v: Option<&SecretString>) -> Self {
        if let Some(v) = v {
            self.secret_env.push((k.to_string(), v.clone()));
        }
        self
    }

    /// Lets the tool inherit Holdfast's variables that start with `prefix`: its own
    /// settings, such as libpq's `PGSSLMODE` or `PGPASSFILE`.
    pub fn inherit(mut self, prefix: &'static str) -> Self {
        self.inherit.push(prefix);
        self
    }

    pub fn with_step(mut self, step: impl Into<String>) -> Self {
        self.step = step.into();
        self
    }

    pub fn to_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        // Tools start from a cleared environment: they get their own secrets below, never
        // Holdfast's.
        c.env_clear();
        c.envs(inherited_env(&self.inherit));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in &self.secret_env {
            c.env(k, v.expose_secret());
        }
        // Each tool leads a process group of its own, so that stopping it stops whatever it
        // started too (a `cmd:` source's shell and its children).
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c
    }

    fn spawn(&self, stdin: Stdio, stdout: Stdio) -> Result<(Child, JoinHandle<String>), Failure> {
        let mut child = self
            .to_command()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure {
                status: format!("could not start {}: {e}", self.program.display()),
                stderr: String::new(),
                not_found: e.kind() == io::ErrorKind::NotFound,
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok((child, spawn_tail(stderr)))
    }

    /// Runs to completion and returns stdout (trimmed), or how it failed.
    pub fn output(&self) -> Result<String, Failure> {
        let out = self
            .to_command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failure {
                status: format!("could not start {}: {e}", self.program.display()),
                stderr: String::new(),
                not_found: e.kind() == io::ErrorKind::NotFound,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(Failure {
                status: describe(out.status),
                stderr: tail_of(&String::from_utf8_lossy(&out.stderr)),
                not_found: false,
            })
        }
    }

    /// Starts the tool with its stdout piped to the returned reader. The reader fails (and
    /// records the failure in `gate`) when the tool exits non-zero or is killed.
    pub fn spawn_reader(&self, source_name: &str, gate: Arc<Gate>) -> io::Result<ChildReader> {
        match self.spawn(Stdio::null(), Stdio::piped()) {
            Ok((mut child, stderr)) => {
                let stdout = child.stdout.take().expect("stdout is piped");
                gate.started(child.id());
                Ok(ChildReader {
                    child,
                    stdout,
                    tail: Vec::new(),
                    bad_ending: self.bad_ending,
                    stderr: Some(stderr),
                    gate,
                    step: self.step.clone(),
                    source_name: source_name.to_string(),
                    done: false,
                })
            }
            Err(f) => {
                let msg = f.status.clone();
                gate.fail(failure_to_dump_error(source_name, &self.step, f));
                Err(io::Error::other(msg))
            }
        }
    }

    /// Starts the tool with its stdin fed by the returned writer; its stdout is discarded.
    pub fn spawn_writer(&self, target: &str) -> crate::Result<ChildWriter> {
        let (mut child, stderr) = self
            .spawn(Stdio::piped(), Stdio::null())
            .map_err(|f| restore_error(target, &self.step, f))?;
        Ok(ChildWriter {
            stdin: child.stdin.take(),
            tool_stopped_reading: false,
            child,
            stderr: Some(stderr),
            step: self.step.clone(),
            target: target.to_string(),
        })
    }
}

fn failure_to_dump_error(source_name: &str, step: &str, f: Failure) -> Error {
    if f.not_found {
        Error::ToolMissing {
            tool: step.to_string(),
            hint: f.status,
        }
    } else {
        Error::DumpFailed {
            source_name: source_name.to_string(),
            step: step.to_string(),
            status: f.status,
            stderr: f.stderr,
        }
    }
}

fn restore_error(target: &str, step: &str, f: Failure) -> Error {
    if f.not_found {
        Error::ToolMissing {
            tool: step.to_string(),
            hint: f.status,
        }
    } else {
        Error::RestoreFailed {
            target: target.to_string(),
            step: step.to_string(),
            status: f.status,
            stderr: f.stderr,
        }
    }
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

fn tail_of(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
}

/// Reads a child's stderr on a thread, keeping the last lines.
fn spawn_tail(stderr: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).into_owned();
            tracing::debug!(target: "holdfast::tool", "{line}");
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Vec::from(tail).join("\n")
    })
}

/// The stdout of a running dump tool. See [`Cmd::spawn_reader`].
pub struct ChildReader {
    child: Child,
    stdout: ChildStdout,
    /// The last bytes read, to check `bad_ending`.
    tail: Vec<u8>,
    bad_ending: Option<(&'static str, &'static str)>,
    stderr: Option<JoinHandle<String>>,
    gate: Arc<Gate>,
    step: String,
    source_name: String,
    done: bool,
}

impl ChildReader {
    /// Stops the tool and whatever it started.
    fn kill(&mut self) {
        let _ = kill_group(self.child.id());
        let _ = self.child.kill();
    }

    /// Reaps the tool, telling the gate first that its process group is gone.
    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.gate.ended(self.child.id());
        self.child.wait()
    }

    fn finish(&mut self) -> io::Result<()> {
        let status = self.wait()?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let bad = self
            .bad_ending
            .filter(|(ending, _)| self.tail.ends_with(ending.as_bytes()));
        if status.success() && bad.is_none() {
            self.done = true;
            self.gate.completed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        } else {
            let status = match bad {
                Some((_, meaning)) => meaning.to_string(),
                None => describe(status),
            };
            let err = failure_to_dump_error(
                &self.source_name,
                &self.step,
                Failure {
                    status,
                    stderr,
                    not_found: false,
                },
            );
            let msg = err.to_string();
            self.gate.fail(err);
            Err(io::Error::other(msg))
        }
    }
}

impl Read for ChildReader {
    /// Fills `buf` completely unless the stream ends, so a reader asking for a large block
    /// (the writer's chunker asks for a chunk's minimum size at once) gets it in one call
    /// even though a dump tool writes into its pipe in small pieces.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_some(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

impl ChildReader {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.gate.is_failed() {
            self.kill();
            return Err(io::Error::other("backup aborted: another stream failed"));
        }
        match self.stdout.read(buf) {
            Ok(0) => self.finish().map(|()| 0),
            Ok(n) => {
                self.gate.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if let Some((ending, _)) = self.bad_ending {
                    self.tail.extend_from_slice(&buf[..n]);
                    let keep = ending.len();
                    if self.tail.len() > keep {
                        self.tail.drain(..self.tail.len() - keep);
                    }
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.gate.fail(Error::DumpFailed {
                    source_name: self.source_name.clone(),
                    step: self.step.clone(),
                    status: format!("reading its output failed: {e}"),
                    stderr: String::new(),
                });
                self.kill();
                Err(e)
            }
        }
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before the end: whatever the reason, the stream is incomplete.
            self.gate.fail(Error::DumpFailed {
                source_name: self.source_name.clone(),
                step: self.step.clone(),
                status: EARLY_STOP.into(),
                stderr: String::new(),
            });
            self.kill();
            let _ = self.wait();
        }
    }
}

/// The stdin of a running restore tool. Call [`ChildWriter::finish`] to learn whether it worked.
pub struct ChildWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    /// A write into the tool failed: it stopped reading (exited, or closed its stdin).
    tool_stopped_reading: bool,
    stderr: Option<JoinHandle<String>>,
    step: String,
    target: String,
}

impl ChildWriter {
    /// Closes stdin, waits for the tool, and turns a non-zero exit into a [`Error::RestoreFailed`]
    /// carrying the tool's stderr.
    pub fn finish(mut self) -> crate::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| Error::Other(e.to_string()))?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(restore_error(
                &self.target,
                &self.step,
                Failure {
                    status: describe(status),
                    stderr,
                    not_found: false,
                },
            ))
        }
    }

    /// Like [`ChildWriter::finish`], for a tool fed by `write_result`'s producer. When the tool
    /// stopped reading by itself (its pipe broke), its own failure is the news. When the input
    /// failed (the repository could not be read), the tool is killed first, so that it cannot
    /// take the end of its stdin for the end of the data (psql would commit a truncated table).
    pub fn finish_after(mut self, write_result: crate::Result<()>) -> crate::Result<()> {
        match write_result {
            Ok(()) => self.finish(),
            Err(e) if self.tool_stopped_reading => self.finish().and(Err(e)),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.finish();
                Err(e)
            }
        }
    }
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let res = self
            .stdin
            .as_mut()
            .expect("stdin open until finish")
            .write(buf);
        self.tool_stopped_reading |= res.is_err();
        res
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stdin
            .as_mut()
            .expect("stdin open until finish")
            .flush()
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            let _ = self.child.wait();
        }
    }
}

const EARLY_STOP: &str = "stopped before the end of its output";

/// Whether a failure only says a stream was abandoned (the cause is elsewhere).
pub fn is_early_stop(e: &Error) -> bool {
    matches!(e, Error::DumpFailed { status, .. } if status == EARLY_STOP)
}

/// Finds a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The first line a tool prints for `--version`, e.g. "pg_dump (PostgreSQL) 15.19".
pub fn tool_version(program: &std::path::Path) -> Option<String> {
    Cmd::new(program, "version")
        .arg("--version")
        .output()
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_fills_the_buffer_across_short_writes() {
        // Three separate writes reach the pipe; one read still returns all of them (see
        // `ChildReader::read`).
        let gate = Arc::new(Gate::default());
        gate.expected.store(1, Ordering::SeqCst);
        let mut r = Cmd::new("/bin/sh", "test")
            .args([
                "-c",
                "printf ab; printf cd >/dev/null; printf ef; exec printf gh",
            ])
            .spawn_reader("test", gate.clone())
            .unwrap();
        let mut buf = [0u8; 6];
        assert_eq!(r.read(&mut buf).unwrap(), 6);
        assert_eq!(&buf, b"abefgh");
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert_eq!(gate.completed.load(Ordering::SeqCst), 1);
        assert!(!gate.is_failed());
    }

    #[test]
    fn non_zero_exit_fails_the_gate_with_the_tools_stderr() {
        let gate = Arc::new(Gate::default());
        let mut r = Cmd::new("/bin/sh", "the dump")
            .args(["-c", "printf data; echo 'no space left' >&2; exit 5"])
            .spawn_reader("src", gate.clone())
            .unwrap();
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("exit status 5"), "{err}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(gate.is_failed());
    }
}

//! Throwaway servers for restore drills, and the sweep of those an interrupted drill left.
//!
//! Each drill works in a private directory `drill-<pid>-<n>` under the drills' root, which holds
//! an `owner` file (the drilling process's pid and start time) and, once a server runs, a
//! `server` file (its pid, which leads its own process group). Servers listen on a Unix socket
//! inside that directory only (no TCP port at all), run at low CPU priority, and as an
//! unprivileged user when the drill runs as root (PostgreSQL refuses root; MariaDB and Redis
//! should not need it). Dropping a [`Scratch`] stops its server and removes the directory;
//! [`sweep`] does the same for directories whose owner is gone (an agent killed mid-drill).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User, geteuid};

use crate::error::{Error, Result};
use crate::process::which;

/// How long a throwaway server may take to start (or to load its data, for Redis).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A drill's private directory, and the throwaway server in it.
pub(crate) struct Scratch {
    pub dir: PathBuf,
    child: Option<Child>,
    /// The user the server runs as (when the drill runs as root).
    run_as: Option<User>,
    what: String,
}

impl Scratch {
    /// A new private directory under `root`, owned by `run_as` when given.
    pub fn new(root: &Path, run_as: Option<User>) -> Result<Self> {
        let io = |p: &Path, e: std::io::Error| Error::Other(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        if let Some(u) = &run_as
            && let Some(closed) = closed_to(root, u)
        {
            return Err(Error::Other(format!(
                "the throwaway server runs as the system user `{}`, who cannot pass through \
                 {} (on the way to {}); give drills a directory that user can reach \
                 (--scratch-dir for `holdfast verify`, --drill-dir or HOLDFAST_DRILL_DIR for \
                 an agent), such as /var/tmp/holdfast-drills",
                u.name,
                closed.display(),
                root.display()
            )));
        }
        // Others may pass through the root (a server's user must reach its directory) but
        // not list it; each drill's directory is private.
        set_mode(root, 0o711)?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = root.join(format!("drill-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
        set_mode(&dir, 0o700)?;
        let owner = identity(std::process::id()).unwrap_or_default();
        std::fs::write(dir.join("owner"), owner).map_err(|e| io(&dir, e))?;
        let s = Self {
            dir,
            child: None,
            run_as,
            what: String::new(),
        };
        if let Some(u) = &s.run_as {
            chown(&s.dir, u)?;
        }
        Ok(s)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A command run as the server's user, at low priority, in its own process group.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.dir)
            .stdin(Stdio::null())
            .process_group(0)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", &self.dir);
        if let Some(u) = &self.run_as {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        c
    }

    /// Runs a set-up step (`initdb`, `mariadb-install-db`) to its end.
    pub fn run(&self, mut cmd: Command, step: &str) -> Result<()> {
        let out = cmd
            .output()
            .map_err(|e| Error::Other(format!("{step}: could not start: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(Error::Other(format!(
            "{step} failed ({}): {}",
            crate::process::describe(out.status),
            last_lines(&msg, 5)
        )))
    }

    /// The command of a server: [`Self::command`], at low CPU priority (`nice`) and idle I/O
    /// priority (`ionice -c 3`, when installed), so that the drill does not slow the
    /// machine's real work.
    pub fn server_command(&self, program: &Path) -> Command {
        let mut chain: Vec<std::ffi::OsString> = Vec::new();
        if let Some(nice) = which("nice") {
            chain.extend([nice.into_os_string(), "-n".into(), "10".into()]);
        }
        if let Some(ionice) = which("ionice") {
            chain.extend([ionice.into_os_string(), "-c".into(), "3".into()]);
        }
        chain.push(program.as_os_str().to_owned());
        let mut c = self.command(Path::new(&chain[0]));
        c.args(&chain[1..]);
        c
    }

    /// Starts the server made by [`Self::server_command`]; its output goes to `server.log`.
    pub fn start(&mut self, mut cmd: Command, what: String) -> Result<()> {
        let log = self.path("server.log");
        let file = std::fs::File::create(&log)
            .map_err(|e| Error::Other(format!("{}: {e}", log.display())))?;
        if let Some(u) = &self.run_as {
            chown(&log, u)?;
        }
        let err = file
            .try_clone()
            .map_err(|e| Error::Other(format!("{}: {e}", log.display())))?;
        let child = cmd
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Other(format!("starting {what}: {e}")))?;
        std::fs::write(self.path("server"), child.id().to_string())
            .map_err(|e| Error::Other(format!("{}: {e}", self.dir.display())))?;
        self.child = Some(child);
        self.what = what;
        Ok(())
    }

    /// Waits until `ready` says the server answers; fails when it exited or took too long.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::Other(format!(
                    "{} exited while starting ({}): {}",
                    self.what,
                    crate::process::describe(status),
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "{} did not answer within {} s: {}",
                    self.what,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path("server.log")) {
            let _ = f.read_to_string(&mut s);
        }
        last_lines(s.trim(), 5)
    }

    /// Stops the server (politely, then by force).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        // PostgreSQL's fast shutdown is SIGINT; MariaDB and Redis stop on SIGTERM.
        let _ = killpg(group, Signal::SIGINT);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(
                "could not remove the drill's directory {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Removes what interrupted drills left under `root`: for each directory whose owner process is
/// gone, its server's process group is killed and the directory removed. Returns what was
/// removed, one line each.
pub fn sweep(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return removed;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("drill-") || !dir.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(identity)
            .is_some_and(|now| now == owner.trim());
        if alive {
            continue;
        }
        let mut what = format!("removed {}", dir.display());
        if let Some(pid) = std::fs::read_to_string(dir.join("server"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            && is_server_of(pid, &dir)
        {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            what.push_str(&format!(" and killed its server (pid {pid})"));
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(what),
            Err(e) => tracing::warn!("could not remove {}: {e}", dir.display()),
        }
    }
    removed
}

/// Whether `pid` runs (a zombie waiting for its parent does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.chars().next()
        })
        .is_some_and(|state| state != 'Z')
}

/// Whether `pid` is a server started in `dir` (not a process that reused the number): its
/// command line or working directory names the directory.
fn is_server_of(pid: i32, dir: &Path) -> bool {
    let d = dir.to_string_lossy();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(d.as_ref()) || cwd == dir
}

/// A process's pid and start time (which a later process with the same pid does not share).
fn identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), closed by `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// The unprivileged user a server runs as when the drill runs as root: the first of `names`
/// that exists. `None` when not root.
pub(crate) fn run_as(names: &[&str], engine: &str) -> Result<Option<User>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    for n in names {
        if let Ok(Some(u)) = User::from_name(n) {
            return Ok(Some(u));
        }
    }
    Err(Error::Other(format!(
        "a restore drill run as root starts its throwaway {engine} as the system user `{}`, \
         which does not exist; create it (the server package does), or run the agent as an \
         unprivileged user",
        names[0]
    )))
}

/// The first parent of `root` that `user` may not pass through (no search permission for
/// it as owner, group or other), if any.
fn closed_to(root: &Path, user: &User) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    root.ancestors().skip(1).find_map(|dir| {
        let m = std::fs::metadata(dir).ok()?;
        let mode = m.mode();
        let may = if m.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if m.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!may).then(|| dir.to_path_buf())
    })
}

/// Free bytes on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::Other(format!("{}: {e}", p.display())))
}

pub(crate) fn chown(p: &Path, u: &User) -> Result<()> {
    std::os::unix::fs::chown(p, Some(u.uid.as_raw()), Some(u.gid.as_raw()))
        .map_err(|e| Error::Other(format!("{}: {e}", p.display())))
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_whose_owner_is_gone_is_swept_with_its_server() {
        let root = tempfile::tempdir().unwrap();
        // A live drill of this process is left alone.
        let mine = Scratch::new(root.path(), None).unwrap();
        // A dead owner's directory with a server still running in it.
        let dead = root.path().join("drill-1-0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("owner"), "999999999 1").unwrap();
        let mut server = Command::new("sleep")
            .arg("600")
            .current_dir(&dead)
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(dead.join("server"), server.id().to_string()).unwrap();
        let removed = sweep(root.path());
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].contains("killed its server"), "{removed:?}");
        assert!(!dead.exists());
        assert!(mine.dir.exists());
        // The server is gone (reaped here, as its parent).
        let status = server.wait().unwrap();
        assert!(!status.success());
        let dir = mine.dir.clone();
        drop(mine);
        assert!(!dir.exists());
    }
}

//! Redis: an RDB snapshot taken with `redis-cli --rdb -` (the server forks and streams it).
//! Restoring means placing the file where a stopped server loads it, so a Redis snapshot is
//! restored into a directory (`file:///var/lib/redis`), as `dump.rdb`.

use std::process::Stdio;

use holdfast_core::SourceKind;
use secrecy::SecretString;

use super::{BackupOptions, BackupSet, RestoreOptions, SourceDriver, Stream, base_meta};
use crate::error::{Error, Result};
use crate::process::{Cmd, Failure, describe, tool_version, which};
use crate::repo::{SnapshotInfo, SnapshotReader};

pub struct Redis {
    host: String,
    port: u16,
    password: Option<SecretString>,
}

impl Redis {
    pub fn new(host: String, port: u16, password: Option<SecretString>) -> Self {
        Self {
            host,
            port,
            password,
        }
    }

    fn name(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    fn cli(&self, step: &str) -> Result<Cmd> {
        let cli = which("redis-cli").ok_or_else(|| Error::ToolMissing {
            tool: "redis-cli".into(),
            hint: "install the Redis tools (Debian: redis-tools)".into(),
        })?;
        Ok(Cmd::new(cli, step)
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .secret_env("REDISCLI_AUTH", self.password.as_ref()))
    }

    /// Asks the server what it is (`INFO server`). redis-cli exits 0 even when the server
    /// refuses the login or answers with an error: it says `AUTH failed: ...` on stderr, goes
    /// on without the login, and prints the server's reply (`NOAUTH ...`) as output. So both
    /// are read here.
    fn info(&self) -> Result<String> {
        let cmd = self.cli("redis-cli INFO")?.args(["INFO", "server"]);
        let out = cmd
            .to_command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                self.classify(Failure {
                    status: format!("could not start {}: {e}", cmd.program.display()),
                    stderr: String::new(),
                    not_found: e.kind() == std::io::ErrorKind::NotFound,
                })
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let answered = stdout.contains("redis_version");
        if out.status.success() && answered && !stderr.contains("AUTH failed") {
            return Ok(stdout);
        }
        let reply = if answered { "" } else { stdout.as_str() };
        Err(self.classify(Failure {
            status: if out.status.success() {
                "no INFO reply".into()
            } else {
                describe(out.status)
            },
            stderr: format!("{stderr}\n{reply}").trim().to_string(),
            not_found: false,
        }))
    }

    fn classify(&self, f: Failure) -> Error {
        let e = format!("{} {}", f.stderr, f.status);
        if e.contains("called without any password configured") {
            // A password for a server that has none: as permanent as a wrong one.
            Error::SourceAuth {
                source_name: self.name(),
                detail: format!(
                    "Redis at {}:{} has no password set, but a password was given; remove it \
                     from the source, or set `requirepass` on the server",
                    self.host, self.port
                ),
            }
        } else if [
            "AUTH failed",
            "NOAUTH",
            "WRONGPASS",
            "invalid password",
            "invalid username-password",
        ]
        .iter()
        .any(|n| e.contains(n))
        {
            let detail = f
                .stderr
                .lines()
                .find(|l| l.contains("AUTH") || l.contains("WRONGPASS") || l.contains("password"))
                .unwrap_or(&f.stderr)
                .trim()
                .to_string();
            Error::SourceAuth {
                source_name: self.name(),
                detail,
            }
        } else {
            Error::SourceUnreachable {
                source_name: self.name(),
                detail: format!(
                    "{}; is Redis running at {}:{}?",
                    f.stderr.trim(),
                    self.host,
                    self.port
                ),
            }
        }
    }
}

impl SourceDriver for Redis {
    fn backup_set(&self, opts: &BackupOptions) -> Result<BackupSet> {
        let info = self.info()?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string());
        let cli = self.cli(&format!("redis-cli --rdb from {}", self.name()))?;
        let mut meta = base_meta(SourceKind::Redis, "single", opts);
        meta.db_host = Some(format!("{}:{}", self.host, self.port));
        meta.server_version = version;
        meta.tool = tool_version(&cli.program);
        Ok(BackupSet {
            source_name: self.name(),
            label: format!("redis:{}:{}", self.host, self.port),
            dir: "redis".into(),
            hostname: None,
            streams: vec![Stream {
                name: "dump.rdb".into(),
                cmd: cli.args(["--rdb", "-"]),
            }],
            meta,
            keepalive: None,
        })
    }

    fn restore(
        &self,
        _snap: &SnapshotInfo,
        _files: &SnapshotReader,
        _opts: &RestoreOptions,
    ) -> Result<()> {
        Err(Error::Input(holdfast_core::InputError::new(
            format!("restore target `{}`", self.name()),
            "Redis loads an RDB file only at start-up; restore into a directory \
             (file:///var/lib/redis) and start redis-server with --dir pointing there",
        )))
    }
}

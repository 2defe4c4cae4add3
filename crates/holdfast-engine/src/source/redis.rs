//! Redis: an RDB snapshot taken with `redis-cli --rdb -` (the server forks and streams it).
//! Restoring means placing the file where a stopped server loads it, so a Redis snapshot is
//! restored into a directory (`file:///var/lib/redis`), as `dump.rdb`.

use holdfast_core::SourceKind;
use secrecy::SecretString;

use super::{BackupOptions, BackupSet, RestoreOptions, SourceDriver, Stream, base_meta};
use crate::error::{Error, Result};
use crate::process::{Cmd, Failure, tool_version, which};
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

    fn classify(&self, f: Failure) -> Error {
        let e = format!("{} {}", f.stderr, f.status);
        if e.contains("NOAUTH") || e.contains("WRONGPASS") || e.contains("invalid password") {
            Error::SourceAuth {
                source_name: self.name(),
                detail: f.stderr,
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
        // redis-cli exits 0 even when the server answers with an error: read the reply.
        let info = self
            .cli("redis-cli INFO")?
            .args(["INFO", "server"])
            .output()
            .map_err(|f| self.classify(f))?;
        if !info.contains("redis_version") {
            return Err(self.classify(Failure {
                status: "no INFO reply".into(),
                stderr: info,
                not_found: false,
            }));
        }
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

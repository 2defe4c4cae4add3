//! The endpoint check behind the server's `test` action: is the storage reachable, does it
//! accept the login, can Holdfast write there, and how much space is left (where the kind tells).
//! It talks to the storage through OpenDAL directly, with the same options as the repository
//! (or through Holdfast's own FTP backend).

use std::collections::BTreeMap;

use holdfast_core::{RepoLocation, StorageKind};
use serde::Serialize;

use crate::error::Error;
use crate::repo::{Repo, RepoConfig};

/// One check and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// What the checks need from a storage: a look at the repository's directory (which shows
/// whether the storage answers and takes the login), and a write, read-back and removal.
trait Probe {
    fn look(&self) -> Result<(), LookFailed>;
    fn round_trip(&self, name: &str, data: &[u8]) -> Result<bool, Error>;
}

/// Why a look at the storage failed.
enum LookFailed {
    /// The request failed, or the storage refused it: what the error says.
    Error(Error),
    /// Something answered, but not as the storage does: the check that failed, and why.
    Answered(&'static str, String),
}

impl From<Error> for LookFailed {
    fn from(e: Error) -> Self {
        Self::Error(e)
    }
}

impl Probe for (&Storage, &RepoConfig) {
    fn look(&self) -> Result<(), LookFailed> {
        let (storage, cfg) = *self;
        if cfg.location.kind() == StorageKind::S3 {
            return s3_listing(storage, cfg);
        }
        storage
            .op
            .exists("config")
            .map(|_| ())
            .map_err(|e| opendal_err(cfg, e).into())
    }

    fn round_trip(&self, name: &str, data: &[u8]) -> Result<bool, Error> {
        let op = &self.0.op;
        op.write(name, data.to_vec())
            .and_then(|_| op.read(name))
            .and_then(|b| {
                let same = b.to_vec() == data;
                op.delete(name).map(|()| same)
            })
            .map_err(|e| opendal_err(self.1, e))
    }
}

/// S3: a signed listing of the repository's prefix. Any web server answers a `HEAD` of a
/// missing object with 404, so only a listing in S3's own format shows that an S3 server
/// checked the signature and accepted it.
fn s3_listing(storage: &Storage, cfg: &RepoConfig) -> Result<(), LookFailed> {
    let e = match storage
        .op
        .lister("/")
        .and_then(|mut l| l.next().transpose())
    {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let (bucket, endpoint) = match &cfg.location {
        RepoLocation::S3 {
            bucket, endpoint, ..
        } => (bucket.as_str(), endpoint.as_deref()),
        _ => ("", None),
    };
    let endpoint = endpoint.unwrap_or("the S3 endpoint");
    let text = e.to_string();
    // OpenDAL names the HTTP answer, when there was one, as `status: 404`.
    let status = text
        .split("status: ")
        .nth(1)
        .map(|t| {
            t.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty());
    let s3_error = e.message().starts_with("S3Error");
    if e.message() == "deserialize xml" {
        return Err(LookFailed::Answered(
            "authenticated",
            format!(
                "{endpoint} is not an S3 server: it answered a signed S3 listing with something \
                 other than S3's XML; check the endpoint= address of the URL"
            ),
        ));
    }
    match status.as_deref() {
        Some("401" | "403") | None => Err(opendal_err(cfg, e).into()),
        Some(_) if s3_error && e.message().contains("NoSuchBucket") => Err(LookFailed::Answered(
            "bucket",
            format!(
                "{endpoint} has no bucket `{bucket}`: create it first (e.g. `aws s3 mb`), or \
                 check the bucket name in the URL"
            ),
        )),
        Some(_) if s3_error => Err(opendal_err(cfg, e).into()),
        Some(code) => Err(LookFailed::Answered(
            "authenticated",
            format!(
                "{endpoint} is not an S3 server: it answered a signed S3 listing with HTTP \
                 {code} and no S3 error; check the endpoint= address of the URL (and \
                 path-style=true for servers that need it)"
            ),
        )),
    }
}

impl Probe for (&crate::ftp::FtpBackend, &RepoConfig) {
    fn look(&self) -> Result<(), LookFailed> {
        use rustic_core::{ReadBackend, repofile::FileType};
        self.0
            .list_with_size(FileType::Config)
            .map(|_| ())
            .map_err(|e| rustic_err(self.1, &e).into())
    }

    fn round_trip(&self, name: &str, data: &[u8]) -> Result<bool, Error> {
        self.0
            .probe_write(name, data)
            .map_err(|e| rustic_err(self.1, &e))
    }
}

fn opendal_err(cfg: &RepoConfig, e: opendal::Error) -> Error {
    Error::storage(cfg.describe(), cfg.location.kind(), e.to_string())
}

fn rustic_err(cfg: &RepoConfig, e: &rustic_core::RusticError) -> Error {
    Error::storage(cfg.describe(), cfg.location.kind(), crate::repo::detail(e))
}

/// Checks the storage itself (not yet the repository): `reachable`, `authenticated` (or
/// `host-key`), `writable` and `free-space`. Stops at the first failure.
pub fn storage_checks(cfg: &RepoConfig) -> Vec<Check> {
    if let Some(ftp) = &Repo::ftp(cfg) {
        return run(cfg, &(ftp, cfg));
    }
    match operator(cfg) {
        Ok(storage) => run(cfg, &(&storage, cfg)),
        Err(e) => unreachable(e),
    }
}

/// The checks when the storage could not even be looked at: what the error says it was.
fn unreachable(e: Error) -> Vec<Check> {
    match &e {
        Error::StorageAuth { .. } => vec![
            check("reachable", true, "the storage answered"),
            check("authenticated", false, e.to_string()),
        ],
        Error::HostKey { .. } => vec![
            check("reachable", true, "the SFTP server answered"),
            check("host-key", false, e.to_string()),
        ],
        _ => vec![check("reachable", false, e.to_string())],
    }
}

fn run(cfg: &RepoConfig, storage: &dyn Probe) -> Vec<Check> {
    match storage.look() {
        Ok(()) => {}
        Err(LookFailed::Error(e)) => return unreachable(e),
        Err(LookFailed::Answered(failed, detail)) => {
            return vec![
                check("reachable", true, format!("{} answered", cfg.location)),
                check(failed, false, detail),
            ];
        }
    }
    let mut out = vec![
        check("reachable", true, format!("{} answered", cfg.location)),
        check(
            "authenticated",
            true,
            match cfg.location.kind() {
                StorageKind::Local => "the directory can be read".to_string(),
                k => format!("the {k} storage accepted the login"),
            },
        ),
    ];
    let name = format!("holdfast-write-test-{}-{}", std::process::id(), nanos());
    match storage.round_trip(&name, b"holdfast write test") {
        Ok(true) => out.push(check(
            "writable",
            true,
            "a test file was written, read back and removed",
        )),
        Ok(false) => {
            out.push(check(
                "writable",
                false,
                "a test file read back with other content than was written",
            ));
            return out;
        }
        Err(e) => {
            out.push(check("writable", false, e.to_string()));
            return out;
        }
    }
    out.push(match free_space(&cfg.location) {
        Some(bytes) => check(
            "free-space",
            true,
            format!(
                "{bytes} bytes ({:.1} GiB) free",
                bytes as f64 / 1073741824.0
            ),
        ),
        None => check(
            "free-space",
            true,
            format!("{} storage does not report free space", cfg.location.kind()),
        ),
    });
    out
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// An operator on the storage, with what it needs while it lives (dropped in this order).
struct Storage {
    op: opendal::blocking::Operator,
    _keyfile: Option<tempfile::NamedTempFile>,
    _rt: tokio::runtime::Runtime,
}

fn operator(cfg: &RepoConfig) -> Result<Storage, Error> {
    let (repository, options, keyfile) = cfg.backend_options()?;
    let (scheme, options): (String, BTreeMap<String, String>) = match &cfg.location {
        RepoLocation::Local(p) => (
            "fs".into(),
            BTreeMap::from([("root".into(), p.display().to_string())]),
        ),
        _ => (
            repository
                .strip_prefix("opendal:")
                .unwrap_or(&repository)
                .to_string(),
            options,
        ),
    };
    let storage = |e| opendal_err(cfg, e);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("starting the storage check: {e}")))?;
    let op = {
        let _guard = rt.enter();
        let op = opendal::Operator::via_iter(&scheme, options).map_err(storage)?;
        opendal::blocking::Operator::new(op).map_err(storage)?
    };
    Ok(Storage {
        op,
        _keyfile: keyfile,
        _rt: rt,
    })
}

/// Free bytes where the kind tells: the file system of a local repository.
fn free_space(location: &RepoLocation) -> Option<u64> {
    let RepoLocation::Local(p) = location else {
        return None;
    };
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

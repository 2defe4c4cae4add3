//! The endpoint check behind the server's `test` action: is the storage reachable, does it
//! accept the login, can Holdfast write there, and how much space is left (where the kind tells).
//! It talks to the storage through OpenDAL directly, with the same options as the repository.

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

/// Checks the storage itself (not yet the repository): `reachable`, `authenticated`,
/// `writable` and `free-space`. Stops at the first failure.
pub fn storage_checks(cfg: &RepoConfig) -> Vec<Check> {
    let mut out = vec![];
    let failed = |out: &mut Vec<Check>, e: Error| match &e {
        Error::StorageAuth { .. } => {
            out.push(check("reachable", true, "the storage answered"));
            out.push(check("authenticated", false, e.to_string()));
        }
        Error::HostKey { .. } => {
            out.push(check("reachable", true, "the SFTP server answered"));
            out.push(check("host-key", false, e.to_string()));
        }
        _ => out.push(check("reachable", false, e.to_string())),
    };
    if let Ok(Some(ftp)) = Repo::ftp(cfg) {
        return ftp_checks(cfg, &ftp, &mut out);
    }
    let storage = match operator(cfg) {
        Ok(o) => o,
        Err(e) => {
            failed(&mut out, e);
            return out;
        }
    };
    let op = &storage.op;
    let err =
        |e: opendal::Error| Error::storage(cfg.describe(), cfg.location.kind(), format!("{e}"));
    match op.exists("config") {
        Ok(_) => {
            out.push(check(
                "reachable",
                true,
                format!("{} answered", cfg.location),
            ));
            out.push(check(
                "authenticated",
                true,
                match cfg.location.kind() {
                    StorageKind::Local => "the directory can be read".to_string(),
                    k => format!("the {k} storage accepted the login"),
                },
            ));
        }
        Err(e) => {
            failed(&mut out, err(e));
            return out;
        }
    }
    let probe = format!(
        "holdfast-write-test-{}-{}",
        std::process::id(),
        jiff_nanos()
    );
    let written = op
        .write(&probe, b"holdfast write test".to_vec())
        .and_then(|_| op.read(&probe))
        .and_then(|b| {
            let same = b.to_vec() == b"holdfast write test";
            op.delete(&probe).map(|()| same)
        });
    out.push(writable(written.map_err(|e| err(e).to_string())));
    if !out.last().is_some_and(|c| c.ok) {
        return out;
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

/// The same checks through Holdfast's own FTP client.
fn ftp_checks(cfg: &RepoConfig, ftp: &crate::ftp::FtpBackend, out: &mut Vec<Check>) -> Vec<Check> {
    use rustic_core::{ReadBackend, repofile::FileType};
    let storage = |e: Box<rustic_core::RusticError>| {
        Error::storage(cfg.describe(), cfg.location.kind(), e.display_log())
    };
    match ftp.list_with_size(FileType::Config) {
        Ok(_) => {
            out.push(check(
                "reachable",
                true,
                format!("{} answered", cfg.location),
            ));
            out.push(check(
                "authenticated",
                true,
                "the FTP server accepted the login",
            ));
        }
        Err(e) => {
            match storage(e) {
                e @ Error::StorageAuth { .. } => {
                    out.push(check("reachable", true, "the FTP server answered"));
                    out.push(check("authenticated", false, e.to_string()));
                }
                e => out.push(check("reachable", false, e.to_string())),
            }
            return std::mem::take(out);
        }
    }
    let name = format!(
        "holdfast-write-test-{}-{}",
        std::process::id(),
        jiff_nanos()
    );
    out.push(writable(
        ftp.probe_write(&name).map_err(|e| storage(e).to_string()),
    ));
    if !out.last().is_some_and(|c| c.ok) {
        return std::mem::take(out);
    }
    out.push(check(
        "free-space",
        true,
        "ftp storage does not report free space",
    ));
    std::mem::take(out)
}

/// The `writable` check from a write, read-back and removal: whether the bytes came back.
fn writable(r: Result<bool, String>) -> Check {
    match r {
        Ok(true) => check(
            "writable",
            true,
            "a test file was written, read back and removed",
        ),
        Ok(false) => check(
            "writable",
            false,
            "a test file read back with other content than was written",
        ),
        Err(e) => check("writable", false, e),
    }
}

fn jiff_nanos() -> u128 {
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
    let (repository, options, keyfile) = Repo::backend_options(cfg)?;
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
    let storage =
        |e: opendal::Error| Error::storage(cfg.describe(), cfg.location.kind(), format!("{e}"));
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

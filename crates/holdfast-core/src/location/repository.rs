//! Repository locations: where a repository lives (a directory, S3, Swift, SFTP, FTP, WebDAV).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::source::{percent_decode, redact_url};
use crate::InputError;

/// The kinds of storage a repository can live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
    Swift,
    Sftp,
    Ftp,
    Webdav,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3 => "s3",
            Self::Swift => "swift",
            Self::Sftp => "sftp",
            Self::Ftp => "ftp",
            Self::Webdav => "webdav",
        }
    }

    /// What the storage login of this kind consists of, for messages ("check the …").
    pub fn credential(self) -> &'static str {
        match self {
            Self::Local => "file permissions",
            Self::S3 => "access_key_id and secret_access_key",
            Self::Swift => "user and storage_password (the Swift key or Keystone password)",
            Self::Sftp => "user and ssh_key",
            Self::Ftp | Self::Webdav => "user and storage_password",
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How strictly an SFTP server's host key is checked against the agent's `~/.ssh/known_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownHosts {
    /// The key must already be known (the default).
    Strict,
    /// An unknown host's key is added; a changed key is still refused.
    AcceptNew,
    /// No check at all (tests and trusted networks only).
    Off,
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A directory on this machine: a plain path, or `local:PATH`.
    Local(PathBuf),
    /// `s3://bucket/prefix?endpoint=URL&region=R&path-style=true|false`
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        /// Path-style addressing (`endpoint/bucket/key`); needed by most self-hosted servers.
        path_style: bool,
    },
    /// `swift://container/prefix?auth=URL[&project=P&domain=D&region=R]`: TempAuth (v1) unless
    /// the auth URL ends in `/v3` (Keystone).
    Swift {
        container: String,
        prefix: String,
        auth_url: String,
        /// Keystone project (tenant) name.
        project: Option<String>,
        /// Keystone domain of the user and project (default `Default`).
        domain: Option<String>,
        /// Keystone region of the object-store endpoint; the first one when unset.
        region: Option<String>,
    },
    /// `sftp://[user@]host[:port]/absolute/path?known-hosts=strict|accept-new|off`
    Sftp {
        user: Option<String>,
        host: String,
        port: u16,
        path: String,
        known_hosts: KnownHosts,
    },
    /// `ftp://[user@]host[:port]/path` (plain FTP; Holdfast's own client, see the engine).
    Ftp {
        user: Option<String>,
        host: String,
        port: u16,
        path: String,
    },
    /// `webdav://[user@]host[:port]/path` (HTTP) or `webdavs://` (HTTPS).
    Webdav {
        tls: bool,
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
}

const SCHEMES: &str = "a directory path, s3://bucket/prefix, swift://container/prefix?auth=URL, \
                       sftp://user@host:port/path, ftp://user@host:port/path, \
                       webdav:// or webdavs://user@host:port/path";

impl RepoLocation {
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let what = || format!("repository `{}`", redact_url(s));
        if s.is_empty() {
            return Err(InputError::new(what(), format!("empty; give {SCHEMES}")));
        }
        if let Some(path) = s.strip_prefix("local:") {
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if !s.contains("://") {
            return Ok(Self::Local(PathBuf::from(s)));
        }
        let url = Url::parse(s).map_err(|e| InputError::new(what(), e.to_string()))?;
        if url.password().is_some() {
            return Err(InputError::new(
                what(),
                "put no password in a repository URL (it would show in logs and process \
                 lists); give it as the endpoint's storage_password or in \
                 HOLDFAST_STORAGE_PASSWORD",
            ));
        }
        let user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let host = || {
            url.host_str()
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .ok_or_else(|| InputError::new(what(), "no host"))
        };
        let path = percent_decode(url.path());
        let params = |known: &[&str]| -> Result<BTreeMap<String, String>, InputError> {
            let mut m = BTreeMap::new();
            for (k, v) in url.query_pairs() {
                let k = k.replace('_', "-");
                if !known.contains(&k.as_str()) {
                    return Err(InputError::new(
                        what(),
                        format!("unknown parameter `{k}`; known: {}", known.join(", ")),
                    ));
                }
                m.insert(k, v.into_owned());
            }
            Ok(m)
        };
        match url.scheme() {
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| InputError::new(what(), "no bucket: write s3://bucket/prefix"))?
                    .to_string();
                let mut p = params(&["endpoint", "region", "path-style"])?;
                let path_style = match p.remove("path-style").as_deref() {
                    None | Some("true" | "1" | "yes") => true,
                    Some("false" | "0" | "no") => false,
                    Some(_) => {
                        return Err(InputError::new(what(), "path-style must be true or false"));
                    }
                };
                Ok(Self::S3 {
                    bucket,
                    prefix: url.path().trim_matches('/').to_string(),
                    endpoint: p.remove("endpoint"),
                    region: p.remove("region"),
                    path_style,
                })
            }
            "swift" => {
                let container = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| {
                        InputError::new(what(), "no container: write swift://container/prefix")
                    })?
                    .to_string();
                let mut p = params(&["auth", "project", "domain", "region"])?;
                let auth_url = p.remove("auth").ok_or_else(|| {
                    InputError::new(
                        what(),
                        "no auth URL: add ?auth=http://proxy:8080/auth/v1.0 (TempAuth) or \
                         ?auth=https://keystone:5000/v3&project=NAME (Keystone)",
                    )
                })?;
                Url::parse(&auth_url).map_err(|e| {
                    InputError::new(what(), format!("auth `{auth_url}` is not a URL: {e}"))
                })?;
                Ok(Self::Swift {
                    container,
                    prefix: url.path().trim_matches('/').to_string(),
                    auth_url,
                    project: p.remove("project"),
                    domain: p.remove("domain"),
                    region: p.remove("region"),
                })
            }
            "sftp" => {
                let mut p = params(&["known-hosts"])?;
                let known_hosts = match p.remove("known-hosts").as_deref() {
                    None | Some("strict") => KnownHosts::Strict,
                    Some("accept-new") => KnownHosts::AcceptNew,
                    Some("off") => KnownHosts::Off,
                    Some(o) => {
                        return Err(InputError::new(
                            what(),
                            format!("known-hosts `{o}`: use strict, accept-new or off"),
                        ));
                    }
                };
                if path.trim_matches('/').is_empty() {
                    return Err(InputError::new(
                        what(),
                        "no path: write sftp://user@host:port/absolute/path",
                    ));
                }
                Ok(Self::Sftp {
                    user,
                    host: host()?,
                    port: url.port().unwrap_or(22),
                    path: path.trim_end_matches('/').to_string(),
                    known_hosts,
                })
            }
            "ftps" => Err(InputError::new(
                what(),
                "FTPS is not available yet (plain ftp:// is); use sftp://, webdavs:// or \
                 s3:// where the network is not trusted",
            )),
            "ftp" => {
                params(&[])?;
                Ok(Self::Ftp {
                    user,
                    host: host()?,
                    port: url.port().unwrap_or(21),
                    path: path.trim_end_matches('/').to_string(),
                })
            }
            "webdav" | "webdavs" | "dav" | "davs" => {
                params(&[])?;
                Ok(Self::Webdav {
                    tls: url.scheme().ends_with('s'),
                    user,
                    host: host()?,
                    port: url.port(),
                    path: path.trim_end_matches('/').to_string(),
                })
            }
            "file" => Ok(Self::Local(url.to_file_path().map_err(|()| {
                InputError::new(what(), "expected file:///absolute/path")
            })?)),
            other => Err(InputError::new(
                what(),
                format!("unknown scheme `{other}`; use {SCHEMES}"),
            )),
        }
    }

    pub fn kind(&self) -> StorageKind {
        match self {
            Self::Local(_) => StorageKind::Local,
            Self::S3 { .. } => StorageKind::S3,
            Self::Swift { .. } => StorageKind::Swift,
            Self::Sftp { .. } => StorageKind::Sftp,
            Self::Ftp { .. } => StorageKind::Ftp,
            Self::Webdav { .. } => StorageKind::Webdav,
        }
    }

    /// The login name the URL carries (SFTP, FTP, WebDAV).
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::Sftp { user, .. } | Self::Ftp { user, .. } | Self::Webdav { user, .. } => {
                user.as_deref()
            }
            _ => None,
        }
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = |u: &Option<String>| u.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => {
                write!(f, "s3://{bucket}/{prefix}")?;
                if let Some(e) = endpoint {
                    write!(f, " at {e}")?;
                }
                Ok(())
            }
            Self::Swift {
                container,
                prefix,
                auth_url,
                ..
            } => write!(f, "swift://{container}/{prefix} (auth {auth_url})"),
            Self::Sftp {
                user: u,
                host,
                port,
                path,
                ..
            } => write!(f, "sftp://{}{host}:{port}{path}", user(u)),
            Self::Ftp {
                user: u,
                host,
                port,
                path,
            } => write!(f, "ftp://{}{host}:{port}{path}", user(u)),
            Self::Webdav {
                tls,
                user: u,
                host,
                port,
                path,
            } => {
                let s = if *tls { "webdavs" } else { "webdav" };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                write!(f, "{s}://{}{host}{port}{path}", user(u))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_locations() {
        assert_eq!(
            RepoLocation::parse("./repo").unwrap(),
            RepoLocation::Local("./repo".into())
        );
        let r = RepoLocation::parse("s3://bkt/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1")
            .unwrap();
        assert_eq!(r.kind(), StorageKind::S3);
        let e = RepoLocation::parse("s3://bkt/p?bogus=1").unwrap_err();
        assert!(e.reason.contains("endpoint"), "{e}");
    }

    #[test]
    fn network_storage_locations() {
        let sftp =
            RepoLocation::parse("sftp://backup@10.0.0.5:2222/srv/repo?known-hosts=accept-new")
                .unwrap();
        assert_eq!(sftp.to_string(), "sftp://backup@10.0.0.5:2222/srv/repo");

        let ftp = RepoLocation::parse("ftp://u@files.example/b/r").unwrap();
        assert_eq!(ftp.kind(), StorageKind::Ftp);
        assert_eq!(ftp.to_string(), "ftp://u@files.example:21/b/r");
        let e = RepoLocation::parse("ftps://u@files.example/b/r").unwrap_err();
        assert!(e.reason.contains("sftp://"), "{e}");

        let swift =
            RepoLocation::parse("swift://backups/db?auth=http://127.0.0.1:8080/auth/v1.0").unwrap();
        assert_eq!(swift.kind(), StorageKind::Swift);
        assert_eq!(sftp.kind(), StorageKind::Sftp);

        let e = RepoLocation::parse("swift://backups/db").unwrap_err();
        assert!(e.reason.contains("auth="), "{e}");
        let e = RepoLocation::parse("ftp://u:hunter2@h/p").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.reason.contains("storage_password"), "{e}");
        let e = RepoLocation::parse("sftp://u@h/p?known-hosts=maybe").unwrap_err();
        assert!(e.reason.contains("accept-new"), "{e}");
        let e = RepoLocation::parse("gopher://h/p").unwrap_err();
        assert!(e.reason.contains("sftp://"), "{e}");
    }
}

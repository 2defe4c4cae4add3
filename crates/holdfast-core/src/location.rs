//! Where data comes from (sources) and where it goes (repositories), parsed from the URLs users
//! write on the command line and in config files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use crate::InputError;

/// The kinds of source Holdfast can back up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    Mysql,
    Sqlite,
    Redis,
    Folder,
    Command,
}

impl SourceKind {
    pub const ALL: [SourceKind; 6] = [
        Self::Postgres,
        Self::Mysql,
        Self::Sqlite,
        Self::Redis,
        Self::Folder,
        Self::Command,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
            Self::Redis => "redis",
            Self::Folder => "folder",
            Self::Command => "command",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network database address. The password never shows in `Debug` or `Display`.
#[derive(Debug, Clone)]
pub struct DbAddr {
    /// Empty means the client tool's default (the local Unix socket).
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// `None` means "all databases" where the driver supports it.
    pub database: Option<String>,
    /// Extra query parameters (e.g. `sslmode=require`), passed to the client tools.
    pub params: BTreeMap<String, String>,
}

/// A parsed source (backup) or target (restore) URL.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// `postgres://user[:password]@host[:port]/db[?sslmode=...]`
    Postgres(DbAddr),
    /// `mysql://user[:password]@host[:port]/db` (also `mariadb://`)
    Mysql(DbAddr),
    /// `sqlite:///path/to/db`
    Sqlite { path: PathBuf },
    /// `redis://[:password@]host[:port]`
    Redis {
        host: String,
        port: u16,
        password: Option<SecretString>,
    },
    /// `file:///dir`
    Folder { path: PathBuf },
    /// `cmd:` or `cmd:NAME`; the command itself is given separately (`--command`).
    Command { name: String, command: String },
}

impl SourceSpec {
    /// Parses a source or target URL. `command` is the shell command for `cmd:` URLs.
    pub fn parse(s: &str, command: Option<&str>) -> Result<Self, InputError> {
        let what = || format!("source `{}`", redact_url(s));
        if let Some(rest) = s.strip_prefix("cmd:") {
            let command = command.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                InputError::new(what(), "a `cmd:` source needs the command in --command")
            })?;
            let name = if rest.is_empty() { "stdout" } else { rest };
            if name.contains('/') || name == "." || name == ".." {
                return Err(InputError::new(
                    what(),
                    "the name after `cmd:` must be a plain file name",
                ));
            }
            return Ok(Self::Command {
                name: name.to_string(),
                command: command.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(InputError::new(
                    what(),
                    "expected sqlite:///path/to/database.db",
                ));
            }
            return Ok(Self::Sqlite {
                path: PathBuf::from(percent_decode(path)),
            });
        }
        let url = Url::parse(s).map_err(|e| {
            InputError::new(
                what(),
                format!(
                    "not a URL ({e}); expected one of postgres://user@host:port/db, \
                     mysql://user@host:port/db, sqlite:///path, redis://host:port, file:///dir, cmd:"
                ),
            )
        })?;
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres(db_addr(&url, &what)?)),
            "mysql" | "mariadb" => Ok(Self::Mysql(db_addr(&url, &what)?)),
            "redis" => Ok(Self::Redis {
                host: url.host_str().unwrap_or("127.0.0.1").to_string(),
                port: url.port().unwrap_or(6379),
                password: url
                    .password()
                    .map(|p| SecretString::from(percent_decode(p))),
            }),
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| InputError::new(what(), "expected file:///absolute/path"))?;
                Ok(Self::Folder { path })
            }
            other => Err(InputError::new(
                what(),
                format!(
                    "unknown scheme `{other}`; use postgres://, mysql://, sqlite://, redis://, file:// or cmd:"
                ),
            )),
        }
    }

    /// Sets the password when the URL carries none (it may come from a file or the
    /// environment instead, keeping it out of process lists).
    pub fn with_default_password(mut self, password: SecretString) -> Self {
        match &mut self {
            Self::Postgres(a) | Self::Mysql(a) if a.password.is_none() => {
                a.password = Some(password)
            }
            Self::Redis { password: p, .. } if p.is_none() => *p = Some(password),
            _ => {}
        }
        self
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Postgres(_) => SourceKind::Postgres,
            Self::Mysql(_) => SourceKind::Mysql,
            Self::Sqlite { .. } => SourceKind::Sqlite,
            Self::Redis { .. } => SourceKind::Redis,
            Self::Folder { .. } => SourceKind::Folder,
            Self::Command { .. } => SourceKind::Command,
        }
    }
}

/// Shows the URL without its password.
impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |f: &mut fmt::Formatter<'_>, scheme: &str, a: &DbAddr| {
            write!(f, "{scheme}://")?;
            if let Some(u) = &a.user {
                write!(f, "{u}@")?;
            }
            write!(f, "{}", a.host)?;
            if let Some(p) = a.port {
                write!(f, ":{p}")?;
            }
            write!(f, "/{}", a.database.as_deref().unwrap_or(""))
        };
        match self {
            Self::Postgres(a) => addr(f, "postgres", a),
            Self::Mysql(a) => addr(f, "mysql", a),
            Self::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            Self::Redis { host, port, .. } => write!(f, "redis://{host}:{port}"),
            Self::Folder { path } => write!(f, "file://{}", path.display()),
            Self::Command { name, .. } => write!(f, "cmd:{name}"),
        }
    }
}

fn db_addr(url: &Url, what: &dyn Fn() -> String) -> Result<DbAddr, InputError> {
    // An empty host (`postgres:///db`) means the client's default: the local socket.
    let host = url.host_str().map(percent_decode).unwrap_or_default();
    let database = url.path().trim_start_matches('/');
    let database = (!database.is_empty()).then(|| percent_decode(database));
    if database.as_deref().is_some_and(|d| d.contains('/')) {
        return Err(InputError::new(
            what(),
            "the database name is the URL path and may not contain `/`",
        ));
    }
    Ok(DbAddr {
        host,
        port: url.port(),
        user: (!url.username().is_empty()).then(|| percent_decode(url.username())),
        password: url
            .password()
            .map(|p| SecretString::from(percent_decode(p))),
        database,
        params: url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Replaces the password in anything URL-shaped with `***`, for messages. Works on text, so
/// that even a URL too broken to parse does not show its password.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return s.to_string();
    };
    format!(
        "{}{}:***{}",
        &s[..scheme_end + 3],
        &authority[..colon],
        &rest[at..]
    )
}

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

    /// The `rustic_backend` repository string and options for this location, without
    /// credentials. Swift's endpoint and token come from a login the engine does first.
    pub fn backend(&self) -> (String, BTreeMap<String, String>) {
        let mut o = BTreeMap::new();
        let root = |p: &str| format!("/{}", p.trim_matches('/'));
        match self {
            Self::Local(p) => return (format!("local:{}", p.display()), o),
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
            } => {
                o.insert("bucket".into(), bucket.clone());
                o.insert("root".into(), root(prefix));
                if let Some(e) = endpoint {
                    o.insert("endpoint".into(), e.clone());
                }
                o.insert(
                    "region".into(),
                    region.clone().unwrap_or_else(|| "us-east-1".into()),
                );
                if !path_style {
                    o.insert("enable_virtual_host_style".into(), "true".into());
                }
            }
            Self::Swift {
                container, prefix, ..
            } => {
                o.insert("container".into(), container.clone());
                o.insert("root".into(), root(prefix));
            }
            Self::Sftp {
                user,
                host,
                port,
                path,
                known_hosts,
            } => {
                o.insert("endpoint".into(), format!("ssh://{host}:{port}"));
                o.insert("root".into(), path.clone());
                if let Some(u) = user {
                    o.insert("user".into(), u.clone());
                }
                let strategy = match known_hosts {
                    KnownHosts::Strict => "strict",
                    KnownHosts::AcceptNew => "add",
                    KnownHosts::Off => "accept",
                };
                o.insert("known_hosts_strategy".into(), strategy.into());
            }
            // Not through rustic_backend: the engine has its own FTP backend.
            Self::Ftp {
                host, port, path, ..
            } => {
                o.insert("endpoint".into(), format!("ftp://{host}:{port}"));
                o.insert("root".into(), root(path));
                return ("ftp".into(), o);
            }
            Self::Webdav {
                tls,
                user,
                host,
                port,
                path,
            } => {
                let scheme = if *tls { "https" } else { "http" };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                o.insert("endpoint".into(), format!("{scheme}://{host}{port}"));
                o.insert(
                    "root".into(),
                    format!("{}/", root(path).trim_end_matches('/')),
                );
                if let Some(u) = user {
                    o.insert("username".into(), u.clone());
                }
            }
        }
        (format!("opendal:{}", self.kind()), o)
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
    use secrecy::ExposeSecret;

    #[test]
    fn postgres_url_with_password_is_parsed_and_redacted() {
        let s = SourceSpec::parse(
            "postgres://app:s%40cret@db.local:5433/shop?sslmode=require",
            None,
        )
        .unwrap();
        let SourceSpec::Postgres(a) = &s else {
            panic!()
        };
        assert_eq!(a.host, "db.local");
        assert_eq!(a.port, Some(5433));
        assert_eq!(a.user.as_deref(), Some("app"));
        assert_eq!(a.password.as_ref().unwrap().expose_secret(), "s@cret");
        assert_eq!(a.database.as_deref(), Some("shop"));
        assert_eq!(a.params["sslmode"], "require");
        let shown = format!("{s} {s:?}");
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret"),
            "{shown}"
        );
    }

    #[test]
    fn every_kind_parses() {
        let k = |u: &str| SourceSpec::parse(u, Some("echo hi")).unwrap().kind();
        assert_eq!(k("postgresql://u@h/db"), SourceKind::Postgres);
        assert_eq!(k("mariadb://root@127.0.0.1:3306/db"), SourceKind::Mysql);
        assert_eq!(k("sqlite:///var/lib/app.db"), SourceKind::Sqlite);
        assert_eq!(k("redis://127.0.0.1:6379"), SourceKind::Redis);
        assert_eq!(k("file:///etc"), SourceKind::Folder);
        assert_eq!(k("cmd:etcd.snap"), SourceKind::Command);
        let SourceSpec::Sqlite { path } =
            SourceSpec::parse("sqlite:///var/lib/app.db", None).unwrap()
        else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("/var/lib/app.db"));
        let SourceSpec::Postgres(a) = SourceSpec::parse("postgres:///shop", None).unwrap() else {
            panic!()
        };
        assert_eq!((a.host.as_str(), a.database.as_deref()), ("", Some("shop")));
    }

    #[test]
    fn bad_sources_say_what_to_write() {
        let e = SourceSpec::parse("mongodb://h/db", None).unwrap_err();
        assert!(e.reason.contains("postgres://"), "{e}");
        let e = SourceSpec::parse("cmd:", None).unwrap_err();
        assert!(e.reason.contains("--command"), "{e}");
        let e = SourceSpec::parse("postgres://u:pw@/db", None).unwrap_err();
        assert!(!e.to_string().contains(":pw@"), "{e}");
        assert_eq!(redact_url("x://u:p@ss@h:1/d?q"), "x://u:***@h:1/d?q");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("/plain/path"), "/plain/path");
    }

    #[test]
    fn repo_locations() {
        assert_eq!(
            RepoLocation::parse("./repo").unwrap(),
            RepoLocation::Local("./repo".into())
        );
        let r = RepoLocation::parse("s3://bkt/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1")
            .unwrap();
        let (name, o) = r.backend();
        assert_eq!(name, "opendal:s3");
        assert_eq!(o["bucket"], "bkt");
        assert_eq!(o["root"], "/a/b");
        assert_eq!(o["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["region"], "eu-west-1");
        assert!(!o.contains_key("enable_virtual_host_style"));
        let e = RepoLocation::parse("s3://bkt/p?bogus=1").unwrap_err();
        assert!(e.reason.contains("endpoint"), "{e}");
    }

    #[test]
    fn network_storage_locations() {
        let sftp =
            RepoLocation::parse("sftp://backup@10.0.0.5:2222/srv/repo?known-hosts=accept-new")
                .unwrap();
        let (name, o) = sftp.backend();
        assert_eq!(name, "opendal:sftp");
        assert_eq!(o["endpoint"], "ssh://10.0.0.5:2222");
        assert_eq!(o["root"], "/srv/repo");
        assert_eq!(o["user"], "backup");
        assert_eq!(o["known_hosts_strategy"], "add");
        assert_eq!(sftp.to_string(), "sftp://backup@10.0.0.5:2222/srv/repo");

        let ftp = RepoLocation::parse("ftp://u@files.example/b/r").unwrap();
        assert_eq!(ftp.kind(), StorageKind::Ftp);
        assert_eq!(ftp.to_string(), "ftp://u@files.example:21/b/r");
        let e = RepoLocation::parse("ftps://u@files.example/b/r").unwrap_err();
        assert!(e.reason.contains("sftp://"), "{e}");

        let dav = RepoLocation::parse("webdav://u@127.0.0.1:8080/dav/repo").unwrap();
        let (name, o) = dav.backend();
        assert_eq!(name, "opendal:webdav");
        assert_eq!(o["endpoint"], "http://127.0.0.1:8080");
        assert_eq!(o["root"], "/dav/repo/");
        assert_eq!(o["username"], "u");

        let swift =
            RepoLocation::parse("swift://backups/db?auth=http://127.0.0.1:8080/auth/v1.0").unwrap();
        assert_eq!(swift.kind(), StorageKind::Swift);
        let (_, o) = swift.backend();
        assert_eq!(
            (o["container"].as_str(), o["root"].as_str()),
            ("backups", "/db")
        );

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

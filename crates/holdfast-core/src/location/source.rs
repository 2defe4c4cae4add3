//! Sources: the databases, folders and commands a backup reads, from their URLs.

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

impl DbAddr {
    /// The server as `host:port`, with this host's names (and a Unix socket) as `localhost`.
    fn server_key(&self, default_port: u16) -> String {
        let host = self.host.trim_matches(['[', ']']).to_ascii_lowercase();
        let local = host.is_empty()
            || host.starts_with('/')
            || self.params.contains_key("socket")
            || matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "0.0.0.0");
        let host = if local { "localhost" } else { host.as_str() };
        format!("{host}:{}", self.port.unwrap_or(default_port))
    }
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

    /// Whether a drill target `self` is the server and database of `source`: what a drill
    /// must never restore into. Names of this host (`localhost`, `127.0.0.1`, `::1`, a Unix
    /// socket) count as one and a missing port is the kind's default. A source of every
    /// database is matched by anything on its server; a PostgreSQL target without a database
    /// connects to `postgres`.
    pub fn is_database_of(&self, source: &SourceSpec) -> bool {
        let same = |t: &DbAddr, s: &DbAddr, port: u16, default_db: Option<&str>| {
            t.server_key(port) == s.server_key(port)
                && (s.database.is_none()
                    || t.database.as_deref().or(default_db) == s.database.as_deref())
        };
        match (self, source) {
            (Self::Postgres(t), Self::Postgres(s)) => same(t, s, 5432, Some("postgres")),
            (Self::Mysql(t), Self::Mysql(s)) => same(t, s, 3306, None),
            _ => false,
        }
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

pub(super) fn percent_decode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_target_is_found_to_be_its_source_under_other_names_of_this_host() {
        let p = |u: &str| SourceSpec::parse(u, None).unwrap();
        let shop = p("postgres://app@127.0.0.1/shop");
        assert!(p("postgres://other@localhost:5432/shop").is_database_of(&shop));
        assert!(p("postgres:///shop").is_database_of(&shop));
        assert!(p("postgres://[::1]/shop").is_database_of(&shop));
        assert!(!p("postgres://127.0.0.1/scratch").is_database_of(&shop));
        assert!(!p("postgres://127.0.0.1/").is_database_of(&shop));
        assert!(p("postgres://127.0.0.1/").is_database_of(&p("postgres://h@localhost/postgres")));
        assert!(!p("postgres://127.0.0.1:5433/shop").is_database_of(&shop));
        assert!(!p("postgres://db2.example/shop").is_database_of(&shop));
        assert!(!p("mysql://127.0.0.1/shop").is_database_of(&shop));
        // A source of every database is matched by anything on its server.
        assert!(p("postgres://localhost/scratch").is_database_of(&p("postgres://127.0.0.1/")));
        let my = p("mysql://root@127.0.0.1/shop");
        assert!(p("mysql://localhost:3306/shop").is_database_of(&my));
        assert!(!p("mysql://localhost:3306/").is_database_of(&my));
        assert!(!p("mysql://h2/shop").is_database_of(&my));
    }
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
}

//! How to reach and unlock a repository, and how a location maps onto rustic_backend's
//! options (credentials included).

use std::collections::BTreeMap;
use std::io::Write;

use holdfast_core::{KnownHosts, RepoLocation};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// How to reach and unlock a repository.
#[derive(Clone)]
pub struct RepoConfig {
    pub location: RepoLocation,
    pub password: SecretString,
    /// The storage login; empty parts let the backend find them (e.g. S3's environment).
    pub creds: StorageCreds,
    /// Storage-layer retries on transient errors (rustic_backend's `retry`); `None` is the default.
    pub retries: Option<u32>,
    /// zstd level for new data; `None` is restic's default (3).
    pub compression: Option<i32>,
    /// The endpoint's name, for messages.
    pub endpoint: Option<String>,
    /// Set when the repository is reached through the server's repository proxy, not at
    /// `location` itself (which then only names it in messages).
    pub proxy: Option<ProxyAccess>,
}

/// The server's repository proxy: restic's REST protocol at `url`, with a job's capability.
#[derive(Clone)]
pub struct ProxyAccess {
    /// `http://server:8420/proxy/`.
    pub url: String,
    pub user: String,
    pub capability: SecretString,
}

impl RepoConfig {
    /// How an agent talking to the server at `server` (`http://host:8420`) reaches the
    /// repository a job's ticket names: directly, or through that server's proxy.
    pub fn from_ticket_via(t: &holdfast_core::agent::RepoTicket, server: &str) -> Result<Self> {
        let mut cfg = Self::from_ticket(t)?;
        if let Some(p) = &t.proxy {
            cfg.proxy = Some(ProxyAccess {
                url: format!(
                    "{}/{}/",
                    server.trim_end_matches('/'),
                    p.path.trim_matches('/')
                ),
                user: p.user.clone(),
                capability: SecretString::from(p.capability.0.clone()),
            });
        }
        Ok(cfg)
    }

    /// How to reach the repository a job's ticket names, with the credentials it carries
    /// (a ticket for the proxy carries none: see [`Self::from_ticket_via`]).
    pub fn from_ticket(t: &holdfast_core::agent::RepoTicket) -> Result<Self> {
        let location = RepoLocation::parse(&t.url).map_err(|e| {
            holdfast_core::InputError::new(format!("endpoint `{}`", t.endpoint), e.to_string())
        })?;
        let mut cfg = Self::new(location, SecretString::from(t.password.0.clone()));
        let secret = |s: &holdfast_core::agent::Secret| SecretString::from(s.0.clone());
        cfg.creds = StorageCreds {
            user: t.access_key_id.clone().or_else(|| t.user.clone()),
            secret: t
                .secret_access_key
                .as_ref()
                .or(t.storage_password.as_ref())
                .map(secret),
            ssh_key: t.ssh_key.as_ref().map(secret),
        };
        cfg.compression = t.compression;
        cfg.endpoint = Some(t.endpoint.clone());
        Ok(cfg)
    }

    pub fn new(location: RepoLocation, password: SecretString) -> Self {
        Self {
            location,
            password,
            creds: StorageCreds::default(),
            retries: None,
            compression: None,
            endpoint: None,
            proxy: None,
        }
    }

    /// How messages name the repository: the endpoint and its location.
    pub fn describe(&self) -> String {
        let via = if self.proxy.is_some() {
            ", through the server"
        } else {
            ""
        };
        match &self.endpoint {
            Some(e) => format!("endpoint `{e}` ({}{via})", self.location),
            None => format!("{}{via}", self.location),
        }
    }
}

/// The login to a repository's storage. What each part means depends on the kind.
#[derive(Clone, Default)]
pub struct StorageCreds {
    /// S3's access key id; the login for Swift, and for SFTP and WebDAV when the URL names no
    /// user.
    pub user: Option<String>,
    /// S3's secret access key; Swift's key (TempAuth) or password (Keystone); the WebDAV
    /// password.
    pub secret: Option<SecretString>,
    /// An SFTP private key (OpenSSH format); without one, ssh uses the agent's own keys.
    pub ssh_key: Option<SecretString>,
}

impl RepoConfig {
    /// The `rustic_backend` repository string and options, credentials included (after a
    /// login, for Swift), and the private file holding an SSH key while it is needed.
    pub(crate) fn backend_options(
        &self,
    ) -> Result<(
        String,
        BTreeMap<String, String>,
        Option<tempfile::NamedTempFile>,
    )> {
        let cfg = self;
        if let Some(p) = &cfg.proxy {
            // The server retries against the storage itself (as an agent reaching it
            // directly would); retrying each of its answers again here would multiply the
            // time a storage outage takes to fail the step. The step's own retries cover a
            // blip between agent and server.
            let options = BTreeMap::from([("retry".to_string(), "off".to_string())]);
            return Ok((proxy_repository(p)?, options, None));
        }
        let (repository, mut options) = location_options(&cfg.location);
        let c = &cfg.creds;
        let secret = || c.secret.as_ref().map(|s| s.expose_secret().to_string());
        let mut keyfile = None;
        match &cfg.location {
            RepoLocation::Local(_) => {}
            RepoLocation::S3 { .. } => {
                if let (Some(id), Some(key)) = (&c.user, secret()) {
                    options.insert("access_key_id".into(), id.clone());
                    options.insert("secret_access_key".into(), key);
                }
            }
            RepoLocation::Swift { .. } => {
                let login = crate::swift::login(cfg)?;
                options.insert("endpoint".into(), login.storage_url);
                options.insert("token".into(), login.token);
            }
            RepoLocation::Sftp { .. } => {
                if !options.contains_key("user")
                    && let Some(u) = &c.user
                {
                    options.insert("user".into(), u.clone());
                }
                if let Some(key) = &c.ssh_key {
                    let mut f = tempfile::NamedTempFile::new().map_err(|e| {
                        Error::Other(format!("writing the SSH key to a private file: {e}"))
                    })?;
                    let mut text = key.expose_secret().trim_end().to_string();
                    text.push('\n');
                    f.write_all(text.as_bytes()).map_err(|e| {
                        Error::Other(format!("writing the SSH key to a private file: {e}"))
                    })?;
                    options.insert("key".into(), f.path().display().to_string());
                    keyfile = Some(f);
                }
            }
            // Not through rustic_backend: see `Repo::ftp`.
            RepoLocation::Ftp { .. } => {}
            RepoLocation::Webdav { .. } => {
                if !options.contains_key("username")
                    && let Some(u) = &c.user
                {
                    options.insert("username".into(), u.clone());
                }
                if let Some(p) = secret() {
                    options.insert("password".into(), p);
                }
            }
        }
        Ok((repository, options, keyfile))
    }
}

/// rustic_backend's REST repository for the server's proxy: the capability travels as the
/// URL's basic credentials (rustic masks them in its messages; reqwest sends them as a header).
fn proxy_repository(p: &ProxyAccess) -> Result<String> {
    let mut url = url::Url::parse(&p.url)
        .map_err(|e| Error::Other(format!("the server's proxy address `{}`: {e}", p.url)))?;
    if url.set_username(&p.user).is_err()
        || url
            .set_password(Some(p.capability.expose_secret()))
            .is_err()
    {
        return Err(Error::Other(format!(
            "the server's proxy address `{}` cannot carry credentials",
            p.url
        )));
    }
    Ok(format!("rest:{url}"))
}

/// The `rustic_backend` repository string and options for `location`, without credentials.
/// Swift's endpoint and token come from a login first (see [`RepoConfig::backend_options`]).
fn location_options(location: &RepoLocation) -> (String, BTreeMap<String, String>) {
    let mut o = BTreeMap::new();
    let root = |p: &str| format!("/{}", p.trim_matches('/'));
    match location {
        RepoLocation::Local(p) => return (format!("local:{}", p.display()), o),
        RepoLocation::S3 {
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
        RepoLocation::Swift {
            container, prefix, ..
        } => {
            o.insert("container".into(), container.clone());
            o.insert("root".into(), root(prefix));
        }
        RepoLocation::Sftp {
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
        RepoLocation::Ftp {
            host, port, path, ..
        } => {
            o.insert("endpoint".into(), format!("ftp://{host}:{port}"));
            o.insert("root".into(), root(path));
            return ("ftp".into(), o);
        }
        RepoLocation::Webdav {
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
    (format!("opendal:{}", location.kind()), o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_location_maps_onto_its_backend_options() {
        let s3 =
            RepoLocation::parse("s3://bkt/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1")
                .unwrap();
        let (name, o) = location_options(&s3);
        assert_eq!(name, "opendal:s3");
        assert_eq!(o["bucket"], "bkt");
        assert_eq!(o["root"], "/a/b");
        assert_eq!(o["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["region"], "eu-west-1");
        assert!(!o.contains_key("enable_virtual_host_style"));

        let sftp =
            RepoLocation::parse("sftp://backup@10.0.0.5:2222/srv/repo?known-hosts=accept-new")
                .unwrap();
        let (name, o) = location_options(&sftp);
        assert_eq!(name, "opendal:sftp");
        assert_eq!(o["endpoint"], "ssh://10.0.0.5:2222");
        assert_eq!(o["root"], "/srv/repo");
        assert_eq!(o["user"], "backup");
        assert_eq!(o["known_hosts_strategy"], "add");

        let dav = RepoLocation::parse("webdav://u@127.0.0.1:8080/dav/repo").unwrap();
        let (name, o) = location_options(&dav);
        assert_eq!(name, "opendal:webdav");
        assert_eq!(o["endpoint"], "http://127.0.0.1:8080");
        assert_eq!(o["root"], "/dav/repo/");
        assert_eq!(o["username"], "u");

        let swift =
            RepoLocation::parse("swift://backups/db?auth=http://127.0.0.1:8080/auth/v1.0").unwrap();
        let (_, o) = location_options(&swift);
        assert_eq!(
            (o["container"].as_str(), o["root"].as_str()),
            ("backups", "/db")
        );
    }
}

//! A small client of the server's REST API, for the commands that talk to a running
//! `holdfast serve` (`apply`, `export`).
//!
//! The token comes from `HOLDFAST_TOKEN` or a file, never from a command-line argument, so it
//! does not show in the process list.

use std::path::PathBuf;

use holdfast_core::InputError;
use holdfast_engine::Error;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "HOLDFAST_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// File holding the API token. Otherwise HOLDFAST_TOKEN.
    #[arg(long, env = "HOLDFAST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// An answer with a body: the JSON and the resource's version (from its ETag), if any.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub version: Option<i64>,
}

/// The API token: from `--token-file`, else `HOLDFAST_TOKEN`.
pub fn read_token(args: &ServerArgs) -> Result<SecretString, Error> {
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| InputError::new(format!("token file {}", f.display()), e.to_string()))?
            .trim()
            .to_string(),
        None => std::env::var("HOLDFAST_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(InputError::new(
            "API token",
            "not given: set HOLDFAST_TOKEN or pass --token-file (holdfast serve prints the \
             admin token at its first start; more come from POST /api/v1/tokens)",
        )
        .into());
    }
    Ok(SecretString::from(token))
}

impl Client {
    pub fn new(args: &ServerArgs) -> Result<Self, Error> {
        let token = read_token(args)?;
        let base = args.server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(InputError::new(
                "--server",
                format!("`{base}` is not an http:// or https:// URL"),
            )
            .into());
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { base, token, http })
    }

    /// Sends a request; `Ok(None)` for 404, an error naming the server's reason for any other
    /// failure.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Answer>, Error> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "cannot connect; is `holdfast serve` running there? (--server, HOLDFAST_SERVER)"
                    .to_string()
            } else if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                without_url(&e)
            };
            Error::Other(format!("server {}: {why}", self.base))
        })?;
        let status = resp.status();
        let version = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok());
        let text = resp.text().await.map_err(|e| {
            Error::Other(format!(
                "server {}: reading the answer: {}",
                self.base,
                without_url(&e)
            ))
        })?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(Some(Answer {
                status,
                body,
                version,
            }));
        }
        Err(Error::Other(match status {
            StatusCode::UNAUTHORIZED => format!(
                "server {}: the token was refused (401); check HOLDFAST_TOKEN or --token-file",
                self.base
            ),
            _ => format!("{method} {path}: {} ({status})", describe(&body)),
        }))
    }

    pub async fn get(&self, path: &str) -> Result<Option<Answer>, Error> {
        self.call(Method::GET, path, None).await
    }

    pub async fn list(&self, path: &str) -> Result<Vec<Value>, Error> {
        match self.get(path).await? {
            Some(Answer {
                body: Value::Array(items),
                ..
            }) => Ok(items),
            _ => Err(Error::Other(format!(
                "GET {path}: the server did not answer with a list; is {} a Holdfast server?",
                self.base
            ))),
        }
    }
}

/// The server's error body (`{error, fields:[{field, reason}]}`) as one line.
pub fn describe(body: &Value) -> String {
    let msg = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let fields: Vec<String> = body
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(format!(
                "{}: {}",
                f.get("field")?.as_str()?,
                f.get("reason")?.as_str()?
            ))
        })
        .collect();
    if fields.is_empty() {
        msg
    } else {
        format!("{msg}: {}", fields.join("; "))
    }
}

/// reqwest's error text without the URL it appends (ours is already named).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url()
        && let Some(i) = s.find(&format!(" ({u})"))
    {
        s.truncate(i);
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

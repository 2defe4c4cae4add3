//! Sending one message to one notifier: an HTTP request (webhook, chat services, PagerDuty,
//! heartbeats) or an email over SMTP. The answer is the receiver's (an HTTP status, an SMTP
//! reply), and an error never carries a secret: URLs are left out of HTTP errors (a Slack or
//! Telegram URL holds its credential) and SMTP errors name the server, not the login.

use std::time::Duration;

use hmac::{Hmac, Mac};
use holdfast_core::alert::EventKind;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Sha256;

use super::message::{Digest, Notification, heartbeat_url, pagerduty};
use super::model::{NotifierKind, NotifierSecrets, SmtpSecurity, StoredNotifier};

/// Why a message did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// The receiver's answer, if there was one (`HTTP 500`, `SMTP 535`).
    pub status: Option<String>,
    pub error: String,
    /// Trying again will not help (a 4xx other than 408/429, a refused login).
    pub permanent: bool,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.status {
            Some(s) => write!(f, "{s}: {}", self.error),
            None => f.write_str(&self.error),
        }
    }
}

fn err(error: impl Into<String>) -> SendError {
    SendError {
        status: None,
        error: error.into(),
        permanent: false,
    }
}

/// How long one send may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Sends messages; one per server (it keeps connections).
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        Self { http }
    }

    /// Sends `batch` (one event, or several for kinds that group) to the notifier. `key`
    /// identifies the delivery across retries (`Idempotency-Key`, the email's Message-ID).
    /// The answer is the receiver's status.
    pub async fn send(
        &self,
        n: &StoredNotifier,
        secrets: &NotifierSecrets,
        batch: &[Notification],
        key: &str,
    ) -> Result<String, SendError> {
        let url = secrets.url.as_deref().unwrap_or_default();
        let token = secrets.token.as_deref().unwrap_or_default();
        let digest = Digest(batch);
        let first = batch.first().ok_or_else(|| err("nothing to send"))?;
        let post = |url: &str| self.http.post(url).header("Idempotency-Key", key);
        let req = match n.kind {
            NotifierKind::Email => return send_email(n, secrets, &digest, key).await,
            NotifierKind::Webhook => {
                let body = serde_json::to_vec(first).expect("notification serializes");
                let ts = jiff::Timestamp::now().as_second().to_string();
                let mut r = post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Holdfast-Event", first.event.as_str())
                    .header("X-Holdfast-Delivery", key)
                    .header("X-Holdfast-Timestamp", &ts);
                if let Some(secret) = &secrets.secret {
                    r = r.header("X-Holdfast-Signature", signature(secret, &ts, &body));
                }
                for (k, v) in secrets.headers.iter().flatten() {
                    r = r.header(k, v);
                }
                r.body(body)
            }
            NotifierKind::Slack => post(url).json(&digest.slack()),
            NotifierKind::Discord => post(url).json(&digest.discord()),
            NotifierKind::Teams => post(url).json(&digest.teams()),
            NotifierKind::Telegram => {
                let api = if url.is_empty() {
                    "https://api.telegram.org"
                } else {
                    url
                };
                let chat = n.chat_id.as_deref().unwrap_or_default();
                post(&format!(
                    "{}/bot{token}/sendMessage",
                    api.trim_end_matches('/')
                ))
                .json(&digest.telegram(chat))
            }
            NotifierKind::Gotify => post(&format!("{}/message", url.trim_end_matches('/')))
                .header("X-Gotify-Key", token)
                .json(&digest.gotify()),
            NotifierKind::Ntfy => {
                let mut r = post(url).body(digest.text());
                for (k, v) in digest.ntfy_headers() {
                    r = r.header(k, v);
                }
                if !token.is_empty() {
                    r = r.bearer_auth(token);
                }
                r
            }
            NotifierKind::Pagerduty => {
                let api = if url.is_empty() {
                    "https://events.pagerduty.com"
                } else {
                    url
                };
                post(&format!("{}/v2/enqueue", api.trim_end_matches('/')))
                    .json(&pagerduty(first, token))
            }
            NotifierKind::Heartbeat => {
                let Some(ping) = heartbeat_url(url, n.style, first) else {
                    return Ok("nothing to ping for this event".into());
                };
                let body = if first.event == EventKind::BackupStarted {
                    String::new()
                } else {
                    first.plain_text()
                };
                post(&ping).body(body)
            }
        };
        let resp = req.send().await.map_err(|e| err(http_error(e)))?;
        let status = resp.status();
        let label = format!("HTTP {}", status.as_u16());
        if status.is_success() {
            return Ok(label);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(SendError {
            status: Some(label),
            error: format!("the receiver refused it: {}", snippet(&body)),
            permanent: status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429),
        })
    }
}

/// `sha256=HEX` of HMAC-SHA256(secret, "TIMESTAMP.BODY"): receivers recompute it with the
/// shared secret and the `X-Holdfast-Timestamp` header (and refuse old timestamps).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An HTTP error without its URL (which may hold a credential), with its cause.
fn http_error(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut s = format!("{what}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s.chars().take(500).collect()
}

fn snippet(body: &str) -> String {
    let b: String = body.trim().chars().take(200).collect();
    if b.is_empty() {
        "(empty answer)".into()
    } else {
        b
    }
}

async fn send_email(
    n: &StoredNotifier,
    secrets: &NotifierSecrets,
    digest: &Digest<'_>,
    key: &str,
) -> Result<String, SendError> {
    let host = n.smtp_host.as_deref().unwrap_or_default();
    let port = n.smtp_port();
    let at = format!("SMTP server {host}:{port}");
    let builder = match n.smtp_security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| err(format!("{at}: {e}")))?;
    let mut builder = builder.port(port).timeout(Some(TIMEOUT));
    if let (Some(u), Some(p)) = (&n.username, &secrets.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let transport = builder.build();
    let mailbox = |s: &str| {
        s.parse::<lettre::message::Mailbox>()
            .map_err(|e| SendError {
                status: None,
                error: format!("`{s}` is not an email address: {e}"),
                permanent: true,
            })
    };
    let mut m = Message::builder()
        .from(mailbox(n.from.as_deref().unwrap_or_default())?)
        .subject(digest.email_subject())
        .message_id(Some(format!("<{key}@holdfast>")))
        .header(ContentType::TEXT_PLAIN);
    for to in &n.to {
        m = m.to(mailbox(to)?);
    }
    let msg = m
        .body(digest.text())
        .map_err(|e| err(format!("cannot build the message: {e}")))?;
    let Ok(sent) = tokio::time::timeout(TIMEOUT, transport.send(msg)).await else {
        return Err(err(format!(
            "{at}: no answer within {} s",
            TIMEOUT.as_secs()
        )));
    };
    match sent {
        Ok(r) => Ok(format!("SMTP {}", r.code())),
        Err(e) => Err(SendError {
            status: e.status().map(|c| format!("SMTP {c}")),
            error: format!("{at}: {e}"),
            permanent: e.is_permanent(),
        }),
    }
}

/// Whether the notifier's receiver answers: the SMTP server accepts a connection (and the
/// login), an HTTP receiver's host and port accept a TCP connection. The error names the
/// field to fix.
pub async fn reachable(
    n: &StoredNotifier,
    secrets: &NotifierSecrets,
) -> Result<(), (&'static str, String)> {
    if n.kind == NotifierKind::Email {
        let host = n.smtp_host.as_deref().unwrap_or_default();
        let port = n.smtp_port();
        let builder = match n.smtp_security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| ("smtp_host", e.to_string()))?;
        let mut builder = builder.port(port).timeout(Some(Duration::from_secs(10)));
        if let (Some(u), Some(p)) = (&n.username, &secrets.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        let check = builder.build::<Tokio1Executor>();
        let answer = tokio::time::timeout(Duration::from_secs(15), check.test_connection()).await;
        let Ok(answer) = answer else {
            return Err((
                "smtp_host",
                format!("the SMTP server {host}:{port} did not answer within 15 s"),
            ));
        };
        return match answer {
            Ok(true) => Ok(()),
            Ok(false) => Err((
                "smtp_host",
                format!("the SMTP server {host}:{port} does not answer"),
            )),
            Err(e) if e.status().is_some_and(|c| c.to_string().starts_with("53")) => Err((
                "password",
                format!(
                    "the SMTP server {host}:{port} refused the login of `{}`: {e}",
                    n.username.as_deref().unwrap_or_default()
                ),
            )),
            Err(e) => Err((
                "smtp_host",
                format!("cannot reach the SMTP server {host}:{port}: {e}"),
            )),
        };
    }
    let url = match (secrets.url.as_deref(), n.kind) {
        (Some(u), _) => u.to_string(),
        (None, NotifierKind::Telegram) => "https://api.telegram.org".into(),
        (None, NotifierKind::Pagerduty) => "https://events.pagerduty.com".into(),
        (None, _) => return Err(("url", "required: where to send".into())),
    };
    let u = url::Url::parse(&url).map_err(|e| ("url", e.to_string()))?;
    let host = u.host_str().unwrap_or_default().to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let shown = format!("{}://{host}:{port}", u.scheme());
    let connect = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(("url", format!("cannot connect to {shown}: {e}"))),
        Err(_) => Err((
            "url",
            format!("{shown} did not accept a connection within 5 s"),
        )),
    }
}

//! Notifiers as clients write them (`NotifierInput`, secrets included), as the store keeps them
//! (`StoredNotifier` without secrets, `NotifierSecrets` sealed) and as clients read them
//! (`NotifierView`: never a secret, only whether one is set and the URL's host).

use std::collections::BTreeMap;

use holdfast_core::plan::{FieldError, valid_name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a notifier sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// An HTTP POST of the event as JSON (the `Notification` schema), signed with HMAC-SHA256
    /// when a `secret` is set.
    Webhook,
    /// SMTP, with STARTTLS or TLS, to several recipients.
    Email,
    /// A Slack incoming webhook URL.
    Slack,
    /// A Discord channel webhook URL.
    Discord,
    /// A Microsoft Teams incoming webhook (Workflows) URL; an Adaptive Card is posted.
    Teams,
    /// A Telegram bot: `token` and `chat_id`.
    Telegram,
    /// An ntfy topic URL (`https://ntfy.sh/my-topic`), with an access `token` if it needs one.
    Ntfy,
    /// A Gotify server URL and an application `token`.
    Gotify,
    /// PagerDuty Events API v2: the integration's routing key as `token`. An incident opens
    /// once per plan and resolves on recovery.
    Pagerduty,
    /// A dead man's switch (healthchecks.io, Uptime Kuma): `/start` when a backup starts, the
    /// URL on success, `/fail` on failure. Routed per plan.
    Heartbeat,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Teams => "teams",
            Self::Telegram => "telegram",
            Self::Ntfy => "ntfy",
            Self::Gotify => "gotify",
            Self::Pagerduty => "pagerduty",
            Self::Heartbeat => "heartbeat",
        }
    }

    /// Messages for people: events arriving close together go out as one.
    pub fn groups(self) -> bool {
        matches!(
            self,
            Self::Email
                | Self::Slack
                | Self::Discord
                | Self::Teams
                | Self::Telegram
                | Self::Ntfy
                | Self::Gotify
        )
    }

    /// Which kinds need a `url`, and which have a default one.
    fn url_rule(self) -> UrlRule {
        match self {
            Self::Email => UrlRule::None,
            Self::Telegram | Self::Pagerduty => UrlRule::Optional,
            _ => UrlRule::Required,
        }
    }
}

enum UrlRule {
    Required,
    /// The service's own API unless set.
    Optional,
    None,
}

/// How a heartbeat URL is pinged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HeartbeatStyle {
    /// healthchecks.io and compatible: `URL/start`, `URL`, `URL/fail`.
    #[default]
    Healthchecks,
    /// Uptime Kuma push monitors: `URL?status=up|down&msg=...`; no start ping.
    UptimeKuma,
}

/// How an email notifier reaches its SMTP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

/// A notifier as clients write it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifierInput {
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")]
    pub name: String,
    pub kind: NotifierKind,
    /// Where to send (`https://...`). Write-only: chat webhook and heartbeat URLs are
    /// credentials. Telegram and PagerDuty: the API's address, when not the public one.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: the shared secret of the `X-Holdfast-Signature` header. Write-only.
    #[serde(default)]
    pub secret: Option<String>,
    /// Telegram bot token, ntfy access token, Gotify application token, PagerDuty routing key.
    /// Write-only.
    #[serde(default)]
    pub token: Option<String>,
    /// Telegram: the chat to post to.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// Webhook: extra request headers (an `Authorization` header, say). Write-only values.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Email: the SMTP server's host name.
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// Email: default 587 (STARTTLS), 465 (TLS), 25 (none).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_security: SmtpSecurity,
    /// Email: the SMTP login.
    #[serde(default)]
    pub username: Option<String>,
    /// Email: the SMTP password. Write-only.
    #[serde(default)]
    pub password: Option<String>,
    /// Email: the sender, `Holdfast <backups@example.com>`.
    #[serde(default)]
    pub from: Option<String>,
    /// Email: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Heartbeat: how the URL is pinged.
    #[serde(default)]
    pub style: HeartbeatStyle,
    /// Gets the events of plans that name no notifiers, and the agents' events.
    #[serde(default)]
    pub default: bool,
    /// Messages for people (email and chat): events within this many seconds go out as one.
    #[serde(default = "group_secs")]
    #[schema(maximum = 3600)]
    pub group_secs: u32,
    /// At most this many messages an hour; more wait (nothing is dropped).
    #[serde(default = "per_hour")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_per_hour: u32,
}

fn group_secs() -> u32 {
    10
}
fn per_hour() -> u32 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredNotifier {
    pub kind: NotifierKind,
    /// The URL's scheme and host, for people to recognise it.
    pub url_hint: Option<String>,
    pub chat_id: Option<String>,
    /// Header names only (their values are secrets).
    #[serde(default)]
    pub header_names: Vec<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_security: SmtpSecurity,
    pub username: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub style: HeartbeatStyle,
    #[serde(default)]
    pub default: bool,
    pub group_secs: u32,
    pub max_per_hour: u32,
}

impl StoredNotifier {
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.smtp_security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotifierSecrets {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub token: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A notifier as clients read it: no secret, only whether each is set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotifierView {
    pub name: String,
    pub kind: NotifierKind,
    /// The URL's scheme and host (the URL itself is write-only).
    pub url_hint: Option<String>,
    pub url_set: bool,
    pub secret_set: bool,
    pub token_set: bool,
    pub password_set: bool,
    pub chat_id: Option<String>,
    /// The names of the extra headers (their values are write-only).
    pub headers: Vec<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_security: SmtpSecurity,
    pub username: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub style: HeartbeatStyle,
    pub default: bool,
    pub group_secs: u32,
    pub max_per_hour: u32,
    /// The last delivery's outcome: `sent`, `failed`, or `retrying` while it keeps failing.
    pub last_delivery: Option<String>,
    pub last_error: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

fn field(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `scheme://host[:port]` of a URL, for people to recognise it without the secret parts.
pub fn url_hint(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// An email address (or `Name <address>`) lettre accepts.
pub fn mailbox_problem(s: &str) -> Option<String> {
    s.parse::<lettre::message::Mailbox>()
        .err()
        .map(|e| format!("`{s}` is not an email address ({e})"))
}

const HEADER_RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "idempotency-key",
    "x-holdfast-event",
    "x-holdfast-delivery",
    "x-holdfast-signature",
    "x-holdfast-timestamp",
];

impl NotifierInput {
    /// Every problem, by field. `creating`: secrets that are required must be given (on a
    /// replace, one left out keeps its stored value).
    pub fn validate(&self, creating: bool) -> Vec<FieldError> {
        use NotifierKind as K;
        let mut errs = Vec::new();
        if !valid_name(&self.name) {
            errs.push(field(
                "name",
                "1 to 63 characters: lowercase letters, digits and `-`, starting with a letter",
            ));
        }
        let kind = self.kind;
        match (&self.url, kind.url_rule()) {
            (Some(_), UrlRule::None) => errs.push(field(
                "url",
                format!("does not apply to {} notifiers", kind.as_str()),
            )),
            (None, UrlRule::Required) if creating => errs.push(field(
                "url",
                format!("required for {} notifiers: where to send", kind.as_str()),
            )),
            (Some(u), _) => match url::Url::parse(u) {
                Err(e) => errs.push(field(
                    "url",
                    format!("is not a URL ({e}); write it like https://host/path"),
                )),
                Ok(p) if !matches!(p.scheme(), "http" | "https") => errs.push(field(
                    "url",
                    format!("must be http:// or https://, not {}://", p.scheme()),
                )),
                Ok(p) if p.host_str().is_none() => errs.push(field("url", "names no host")),
                Ok(_) if u.len() > 2048 => {
                    errs.push(field("url", "is longer than 2048 characters"))
                }
                Ok(_) => {}
            },
            _ => {}
        }
        let only = |name: &str, set: bool, kinds: &[K]| {
            (set && !kinds.contains(&kind)).then(|| {
                field(
                    name,
                    format!(
                        "does not apply to {} notifiers (only to {})",
                        kind.as_str(),
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        };
        errs.extend(
            [
                only("secret", self.secret.is_some(), &[K::Webhook]),
                only(
                    "token",
                    self.token.is_some(),
                    &[K::Telegram, K::Ntfy, K::Gotify, K::Pagerduty],
                ),
                only("chat_id", self.chat_id.is_some(), &[K::Telegram]),
                only("headers", self.headers.is_some(), &[K::Webhook]),
                only("smtp_host", self.smtp_host.is_some(), &[K::Email]),
                only("smtp_port", self.smtp_port.is_some(), &[K::Email]),
                only("username", self.username.is_some(), &[K::Email]),
                only("password", self.password.is_some(), &[K::Email]),
                only("from", self.from.is_some(), &[K::Email]),
                only("to", !self.to.is_empty(), &[K::Email]),
            ]
            .into_iter()
            .flatten(),
        );
        if creating {
            let need =
                |name: &str, set: bool, why: &str| (!set).then(|| field(name, why.to_string()));
            errs.extend(
                match kind {
                    K::Telegram => vec![
                        need(
                            "token",
                            self.token.is_some(),
                            "required: the bot token from @BotFather",
                        ),
                        need(
                            "chat_id",
                            self.chat_id.is_some(),
                            "required: the chat to post to",
                        ),
                    ],
                    K::Gotify => vec![need(
                        "token",
                        self.token.is_some(),
                        "required: the application token",
                    )],
                    K::Pagerduty => vec![need(
                        "token",
                        self.token.is_some(),
                        "required: the integration's routing key (Events API v2)",
                    )],
                    K::Email => vec![
                        need(
                            "smtp_host",
                            self.smtp_host.is_some(),
                            "required: the SMTP server",
                        ),
                        need("from", self.from.is_some(), "required: the sender address"),
                        need(
                            "to",
                            !self.to.is_empty(),
                            "required: at least one recipient",
                        ),
                    ],
                    _ => vec![],
                }
                .into_iter()
                .flatten(),
            );
        }
        if let Some(h) = &self.smtp_host
            && (h.trim().is_empty() || h.len() > 253 || h.contains(['/', ' ', ':']))
        {
            errs.push(field(
                "smtp_host",
                "give a host name or address, without a port or scheme",
            ));
        }
        if self.smtp_port == Some(0) {
            errs.push(field(
                "smtp_port",
                "0 is not a port; 587 for STARTTLS, 465 for TLS",
            ));
        }
        if self.username.is_some() != self.password.is_some() && creating {
            errs.push(field("password", "give username and password together"));
        }
        if let Some(p) = self.from.as_deref().and_then(mailbox_problem) {
            errs.push(field("from", p));
        }
        if self.to.len() > 50 {
            errs.push(field("to", "at most 50 recipients; use a mailing list"));
        }
        for (i, t) in self.to.iter().enumerate() {
            if let Some(p) = mailbox_problem(t) {
                errs.push(field(&format!("to[{i}]"), p));
            }
        }
        for (name, value) in self.headers.iter().flatten() {
            let lower = name.to_ascii_lowercase();
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push(field("headers", format!("`{name}` is not a header name")));
            } else if HEADER_RESERVED.contains(&lower.as_str()) {
                errs.push(field("headers", format!("`{name}` is set by Holdfast")));
            } else if axum::http::HeaderValue::from_str(value).is_err() {
                errs.push(field(
                    "headers",
                    format!("the value of `{name}` is not a valid header value"),
                ));
            }
        }
        if let Some(c) = &self.chat_id
            && (c.is_empty() || c.len() > 64)
        {
            errs.push(field(
                "chat_id",
                "a chat id like `-1001234567890` or `@channel`",
            ));
        }
        for (name, v) in [
            ("secret", &self.secret),
            ("token", &self.token),
            ("password", &self.password),
        ] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 4096) {
                errs.push(field(name, "1 to 4096 characters"));
            }
        }
        if self.group_secs > 3600 {
            errs.push(field(
                "group_secs",
                format!("{} is more than an hour (3600)", self.group_secs),
            ));
        }
        if !(1..=10_000).contains(&self.max_per_hour) {
            errs.push(field(
                "max_per_hour",
                format!("{} is out of range; 1 to 10000", self.max_per_hour),
            ));
        }
        errs
    }

    pub fn split(self) -> (String, StoredNotifier, NotifierSecrets) {
        let header_names = self
            .headers
            .as_ref()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        (
            self.name,
            StoredNotifier {
                kind: self.kind,
                url_hint: self.url.as_deref().and_then(url_hint),
                chat_id: self.chat_id,
                header_names,
                smtp_host: self.smtp_host,
                smtp_port: self.smtp_port,
                smtp_security: self.smtp_security,
                username: self.username,
                from: self.from,
                to: self.to,
                style: self.style,
                default: self.default,
                group_secs: self.group_secs,
                max_per_hour: self.max_per_hour,
            },
            NotifierSecrets {
                url: self.url,
                secret: self.secret,
                token: self.token,
                password: self.password,
                headers: self.headers,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> NotifierInput {
        serde_json::from_value(json).unwrap()
    }

    fn fields(n: &NotifierInput) -> Vec<String> {
        n.validate(true).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn each_kind_names_what_it_lacks() {
        let n =
            input(serde_json::json!({"name": "ops", "kind": "email", "to": ["not an address"]}));
        assert_eq!(fields(&n), ["smtp_host", "from", "to[0]"]);
        let n = input(serde_json::json!({"name": "tg", "kind": "telegram"}));
        assert_eq!(fields(&n), ["token", "chat_id"]);
        let n = input(serde_json::json!({"name": "hook", "kind": "webhook", "url": "ftp://x/y"}));
        assert_eq!(fields(&n), ["url"]);
        let n = input(
            serde_json::json!({"name": "hook", "kind": "webhook", "url": "https://x/y",
            "headers": {"X-Holdfast-Signature": "mine"}, "max_per_hour": 0, "chat_id": "1"}),
        );
        assert_eq!(fields(&n), ["chat_id", "headers", "max_per_hour"]);
        let ok = input(
            serde_json::json!({"name": "hc", "kind": "heartbeat", "url": "https://hc-ping.com/uuid"}),
        );
        assert!(fields(&ok).is_empty());
    }

    #[test]
    fn the_view_keeps_only_the_host_of_a_secret_url() {
        assert_eq!(
            url_hint("https://hooks.slack.com/services/T000/B000/XXXX").as_deref(),
            Some("https://hooks.slack.com")
        );
        assert_eq!(
            url_hint("http://127.0.0.1:8080/x?y").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }
}

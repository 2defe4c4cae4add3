//! What a notification says, and how each kind of receiver wants it: the webhook's JSON (the
//! `Notification` schema), the chat services' documented bodies, PagerDuty's Events API v2, an
//! email's subject and text, and a heartbeat's ping URL. Pure: no I/O.

use holdfast_core::alert::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::model::HeartbeatStyle;

/// One event, as a webhook receives it (the body of its POST) and as every other format is
/// made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// What happened: `backup.failed`, `backup.recovered`, `backup.missed`, `backup.stale`, ...
    #[schema(value_type = String, example = "backup.failed")]
    pub event: EventKind,
    /// The event's id: the same in every retry of its delivery (with the notifier's name it
    /// is the `Idempotency-Key`).
    pub id: i64,
    /// When the server noticed it (RFC 3339).
    pub at: String,
    /// A headline: "Backup failed: plan `orders`".
    pub title: String,
    /// One or two sentences for people.
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The job the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed backups of the plan in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
    /// When the plan last succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<i64>,
    /// The median bytes read of the plan's last successful backups (size anomalies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_bytes_read: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

impl Notification {
    /// An event with its headline as its text and no facts yet; `at` is RFC 3339.
    pub fn new(event: EventKind, title: impl Into<String>, at: impl Into<String>) -> Self {
        let title = title.into();
        Self {
            event,
            id: 0,
            at: at.into(),
            text: title.clone(),
            title,
            plan: None,
            endpoint: None,
            source: None,
            agent: None,
            job: None,
            error: None,
            consecutive_failures: None,
            last_success: None,
            bytes_read: None,
            median_bytes_read: None,
            duration_secs: None,
            snapshot_id: None,
        }
    }

    /// The PagerDuty incident this event opens or resolves: one per plan (or agent).
    pub fn incident_key(&self) -> String {
        match (&self.plan, &self.agent) {
            (Some(p), _) => format!("holdfast/plan/{p}"),
            (None, Some(a)) => format!("holdfast/agent/{a}"),
            _ => format!("holdfast/{}", self.event),
        }
    }

    /// Lines for people: the text, then the facts.
    fn facts(&self) -> Vec<(String, String)> {
        let mut f = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                f.push((k.to_string(), v));
            }
        };
        add("Plan", self.plan.clone());
        add("Source", self.source.clone());
        add("Endpoint", self.endpoint.clone());
        add("Agent", self.agent.clone());
        add("Job", self.job.map(|j| j.to_string()));
        add("Error", self.error.clone());
        add(
            "Failures in a row",
            self.consecutive_failures.map(|n| n.to_string()),
        );
        add("Last success", self.last_success.clone());
        add("Bytes read", self.bytes_read.map(|b| b.to_string()));
        add(
            "Usual bytes read",
            self.median_bytes_read.map(|b| b.to_string()),
        );
        add("Duration", self.duration_secs.map(|d| format!("{d:.1} s")));
        add("Restore point", self.snapshot_id.clone());
        add("At", Some(self.at.clone()));
        f
    }

    pub fn plain_text(&self) -> String {
        let mut s = format!("{}\n\n{}\n", self.title, self.text);
        for (k, v) in self.facts() {
            s.push_str(&format!("\n{k}: {v}"));
        }
        s
    }
}

/// Several events as one message for people (those that arrived within the notifier's
/// grouping window).
pub struct Digest<'a>(pub &'a [Notification]);

impl Digest<'_> {
    pub fn title(&self) -> String {
        match self.0 {
            [one] => one.title.clone(),
            many => {
                let bad = many.iter().filter(|n| !n.event.is_good()).count();
                format!("Holdfast: {} events ({bad} problems)", many.len())
            }
        }
    }

    pub fn is_good(&self) -> bool {
        self.0.iter().all(|n| n.event.is_good())
    }

    pub fn text(&self) -> String {
        match self.0 {
            [one] => one.plain_text(),
            many => many
                .iter()
                .map(|n| n.plain_text())
                .collect::<Vec<_>>()
                .join("\n\n----\n\n"),
        }
    }

    /// Markdown-ish short lines, one per event (Slack, Discord, Telegram).
    fn lines(&self) -> String {
        self.0
            .iter()
            .map(|n| {
                let mut l = format!(
                    "{} {}",
                    if n.event.is_good() { "✅" } else { "❌" },
                    n.title
                );
                if n.text != n.title {
                    l.push_str(&format!("\n{}", n.text));
                }
                l
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    pub fn email_subject(&self) -> String {
        format!("[Holdfast] {}", self.title())
    }

    /// Slack's incoming-webhook body: `text` (the fallback) and one section block per event.
    /// <https://api.slack.com/messaging/webhooks>
    pub fn slack(&self) -> Value {
        let blocks: Vec<Value> = self
            .0
            .iter()
            .take(40)
            .map(|n| {
                json!({"type": "section", "text": {"type": "mrkdwn",
                    "text": clip(&format!("*{}*\n{}", n.title, n.text), 3000)}})
            })
            .collect();
        json!({"text": clip(&self.title(), 3000), "blocks": blocks})
    }

    /// Discord's webhook body: `content` (≤ 2000 characters) and an embed per event (≤ 10).
    /// <https://discord.com/developers/docs/resources/webhook#execute-webhook>
    pub fn discord(&self) -> Value {
        let embeds: Vec<Value> = self
            .0
            .iter()
            .take(10)
            .map(|n| {
                json!({"title": clip(&n.title, 256), "description": clip(&n.text, 4096),
                    "color": if n.event.is_good() { 0x2e7d32 } else { 0xc62828 },
                    "timestamp": n.at})
            })
            .collect();
        json!({"content": clip(&self.title(), 2000), "embeds": embeds,
            "allowed_mentions": {"parse": []}})
    }

    /// Teams (Workflows incoming webhook): a message with one Adaptive Card.
    /// <https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using>
    pub fn teams(&self) -> Value {
        let mut body = vec![
            json!({"type": "TextBlock", "text": self.title(), "weight": "Bolder",
            "size": "Medium", "wrap": true,
            "color": if self.is_good() { "Good" } else { "Attention" }}),
        ];
        for n in self.0.iter().take(20) {
            body.push(json!({"type": "TextBlock", "text": n.text, "wrap": true}));
            body.push(json!({"type": "FactSet", "facts": n.facts().into_iter()
                .map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()}));
        }
        json!({"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard", "version": "1.4", "body": body}}]})
    }

    /// Telegram's `sendMessage` (plain text: nothing to escape, ≤ 4096 characters).
    /// <https://core.telegram.org/bots/api#sendmessage>
    pub fn telegram(&self, chat_id: &str) -> Value {
        json!({"chat_id": chat_id, "text": clip(&self.lines(), 4096),
            "disable_web_page_preview": true})
    }

    /// Gotify's `POST /message`. <https://gotify.net/api-docs>
    pub fn gotify(&self) -> Value {
        json!({"title": self.title(), "message": self.text(),
            "priority": if self.is_good() { 4 } else { 8 }})
    }

    /// ntfy's publish headers: title, priority and tags; the body is the text.
    /// <https://docs.ntfy.sh/publish/>
    pub fn ntfy_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Title", ascii(&self.title())),
            (
                "Priority",
                if self.is_good() { "default" } else { "high" }.into(),
            ),
            (
                "Tags",
                if self.is_good() {
                    "white_check_mark"
                } else {
                    "warning"
                }
                .into(),
            ),
        ]
    }
}

/// PagerDuty Events API v2: `trigger` for a problem, `resolve` on recovery, with the plan's
/// incident key so that an incident opens once. <https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>
pub fn pagerduty(n: &Notification, routing_key: &str) -> Value {
    let action = if n.event.is_good() {
        "resolve"
    } else {
        "trigger"
    };
    let severity = match n.event {
        EventKind::BackupFailed | EventKind::BackupStale | EventKind::RestoreFailed => "error",
        e if e.is_good() => "info",
        _ => "warning",
    };
    let mut body = json!({"routing_key": routing_key, "event_action": action,
        "dedup_key": n.incident_key()});
    if action == "trigger" {
        body["payload"] = json!({"summary": clip(&n.title, 1024), "source": "holdfast",
            "severity": severity, "timestamp": n.at, "component": n.plan, "group": n.endpoint,
            "class": n.event.as_str(), "custom_details": n});
    }
    body
}

/// The URL a heartbeat pings for this event, or `None` when the style has no ping for it.
pub fn heartbeat_url(base: &str, style: HeartbeatStyle, n: &Notification) -> Option<String> {
    let base = base.trim_end_matches('/');
    match style {
        HeartbeatStyle::Healthchecks => match n.event {
            EventKind::BackupStarted => Some(format!("{base}/start")),
            EventKind::BackupSucceeded | EventKind::Test => Some(base.to_string()),
            EventKind::BackupFailed => Some(format!("{base}/fail")),
            _ => None,
        },
        HeartbeatStyle::UptimeKuma => {
            let status = match n.event {
                EventKind::BackupSucceeded | EventKind::Test => "up",
                EventKind::BackupFailed => "down",
                _ => return None,
            };
            let mut u = url::Url::parse(base).ok()?;
            u.query_pairs_mut()
                .append_pair("status", status)
                .append_pair("msg", &clip(&n.title, 200))
                .append_pair(
                    "ping",
                    &n.duration_secs
                        .map(|d| format!("{:.0}", d * 1000.0))
                        .unwrap_or_default(),
                );
            Some(u.to_string())
        }
    }
}

fn clip(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

/// Header values must be visible ASCII.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Notification {
        Notification {
            event: EventKind::BackupFailed,
            id: 7,
            at: "2026-01-01T03:00:00Z".into(),
            title: "Backup failed: plan `orders`".into(),
            text: "The backup of `orders` failed after 3 attempts.".into(),
            plan: Some("orders".into()),
            endpoint: Some("s3".into()),
            source: Some("pg".into()),
            agent: None,
            job: Some(12),
            error: Some("pg_dump: connection refused".into()),
            consecutive_failures: Some(1),
            last_success: None,
            bytes_read: None,
            median_bytes_read: None,
            duration_secs: Some(1.5),
            snapshot_id: None,
        }
    }

    #[test]
    fn pagerduty_opens_one_incident_per_plan_and_resolves_it() {
        let f = pagerduty(&failed(), "KEY");
        assert_eq!(f["event_action"], "trigger");
        assert_eq!(f["dedup_key"], "holdfast/plan/orders");
        assert_eq!(f["payload"]["severity"], "error");
        let mut r = failed();
        r.event = EventKind::BackupRecovered;
        let r = pagerduty(&r, "KEY");
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], "holdfast/plan/orders");
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn heartbeat_urls_follow_each_style() {
        let mut n = failed();
        let hc = |n: &Notification| {
            heartbeat_url("https://hc-ping.com/abc/", HeartbeatStyle::Healthchecks, n)
        };
        assert_eq!(hc(&n).as_deref(), Some("https://hc-ping.com/abc/fail"));
        n.event = EventKind::BackupStarted;
        assert_eq!(hc(&n).as_deref(), Some("https://hc-ping.com/abc/start"));
        n.event = EventKind::BackupSucceeded;
        assert_eq!(hc(&n).as_deref(), Some("https://hc-ping.com/abc"));
        n.event = EventKind::BackupStale;
        assert_eq!(hc(&n), None);
        n.event = EventKind::BackupSucceeded;
        let kuma =
            heartbeat_url("https://kuma/api/push/T", HeartbeatStyle::UptimeKuma, &n).unwrap();
        assert!(
            kuma.starts_with("https://kuma/api/push/T?status=up&msg="),
            "{kuma}"
        );
        n.event = EventKind::BackupStarted;
        assert_eq!(
            heartbeat_url("https://kuma/api/push/T", HeartbeatStyle::UptimeKuma, &n),
            None
        );
    }

    #[test]
    fn chat_bodies_stay_within_each_services_limits() {
        let mut n = failed();
        n.text = "x".repeat(10_000);
        let many = vec![n; 30];
        let d = Digest(&many);
        let discord = d.discord();
        assert_eq!(discord["embeds"].as_array().unwrap().len(), 10);
        assert!(
            discord["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 4096
        );
        assert!(d.telegram("1")["text"].as_str().unwrap().chars().count() <= 4096);
        assert!(
            d.slack()["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 3000
        );
        assert_eq!(d.title(), "Holdfast: 30 events (30 problems)");
    }
}
